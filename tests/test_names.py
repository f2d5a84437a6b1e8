"""Hostile endpoint names can never leave their directory or form a topic wildcard."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rprocd.names import safe_name


def test_plain_names_unchanged() -> None:
    for n in ("rpmsg-tty", "rpmsg-client-sample", "rpmsg_sink.1"):
        assert safe_name(n) == n


def test_hostile_names_escaped() -> None:
    assert safe_name("..") == "%2E."
    assert safe_name("../etc/passwd") == "%2E.%2Fetc%2Fpasswd"
    assert safe_name("a/b") == "a%2Fb"
    assert safe_name("x#+") == "x%23%2B"
    assert safe_name(b"\xff\x01") == "%FF%01"
    assert safe_name("") == "%00"


@given(st.binary(min_size=1, max_size=31))
def test_safe_names_are_single_safe_components(raw: bytes) -> None:
    s = safe_name(raw)
    assert "/" not in s and "#" not in s and "+" not in s and "\0" not in s
    assert not s.startswith(".")
    assert all(0x20 < ord(c) < 0x7F for c in s)


@given(st.binary(min_size=1, max_size=31), st.binary(min_size=1, max_size=31))
def test_injective(a: bytes, b: bytes) -> None:
    if a != b:
        assert safe_name(a) != safe_name(b)
