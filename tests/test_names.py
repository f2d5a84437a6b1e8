"""Hostile endpoint names can never leave their directory or form a topic wildcard."""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rprocd.exports.sockets import SocketExport
from rprocd.hoststate import HEADER, MAGIC, RECORD, HostState
from rprocd.memory import MemoryMap
from rprocd.names import MAX_SAFE, SUN_PATH, check_name, fits, safe_name
from rprocd.rpmsg import Channel
from tests.stubs import AcceptingTransport


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


# -- one validation, names that always fit, sockets that appear with their mode (issue 14, part 3) ----


@given(st.binary(min_size=1, max_size=31))
def test_every_announceable_name_fits_under_the_default_runtime_dir(raw: bytes) -> None:
    s = safe_name(raw)
    assert len(s) <= MAX_SAFE
    assert fits("/run/rprocd/main/ept", s)
    assert len(f"/run/rprocd/main/ept/{s}".encode()) < SUN_PATH


def test_long_escapes_are_shortened_readably_and_short_ones_kept() -> None:
    worst = b"\x01" * 31  # 93 characters escaped
    s = safe_name(worst)
    assert s.startswith("%01%01") and "~" in s and len(s) <= MAX_SAFE
    assert safe_name(b"a" * 31) == "a" * 31  # fits: unchanged
    assert safe_name(b"%" * 13) == "%25" * 13  # 39 characters: unchanged
    assert "~" in safe_name(b"%" * 14)  # 42: shortened
    assert safe_name(b"\x01" * 30 + b"\x02") != s  # the hash tells them apart


@given(st.binary(min_size=1, max_size=31), st.binary(min_size=1, max_size=31))
def test_shortened_names_stay_one_to_one(a: bytes, b: bytes) -> None:
    a, b = b"\xff" * 10 + a, b"\xff" * 10 + b  # both long enough to be shortened
    if a != b:
        assert safe_name(a[:31]) != safe_name(b[:31]) or a[:31] == b[:31]


def test_one_name_rule_for_name_service_and_resume() -> None:
    assert check_name(b"rpmsg-tty") is None
    assert check_name(b"x" * 31) is None
    assert "32 bytes" in str(check_name(b"N" * 32))
    assert "empty" in str(check_name(b""))
    # a saved table holding a 32-byte name without NUL (what name service refuses) is not resumed
    pa, rings = 0x1000, (0x200C8000, 0x200C9000)
    mem = bytearray(4096)
    st_ = HostState(MemoryMap([(pa, mem)]), pa, len(mem))
    body = RECORD.pack(b"N" * 32, 1024, 1024, 0)
    mem[: HEADER.size] = HEADER.pack(MAGIC, 1, *rings, 8, 1, zlib.crc32(body))
    mem[HEADER.size : HEADER.size + len(body)] = body
    why = st_.load(rings, 8)
    assert isinstance(why, str) and "name service refuses" in why and "32 bytes" in why
    mem[HEADER.size + 31] = 0  # a 31-byte name: fine
    body = bytes(mem[HEADER.size : HEADER.size + RECORD.size])
    mem[24:28] = struct.pack("<I", zlib.crc32(body))
    loaded = st_.load(rings, 8)
    assert not isinstance(loaded, str) and loaded[0].raw_name == b"N" * 31


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_endpoint_socket_appears_only_with_its_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int
) -> None:
    loop = asyncio.new_event_loop()
    exp = SocketExport(loop, tmp_path / "ept", AcceptingTransport(), mode=0o660)
    final = tmp_path / "ept" / "rpmsg-tty"
    seen: list[bool] = []
    real_chmod = os.chmod

    def chmod(path: os.PathLike[str] | str, mode: int) -> None:
        seen.append(final.exists())  # the final name must not be there while the mode is still the umask's
        real_chmod(path, mode)

    monkeypatch.setattr(os, "chmod", chmod)
    old = os.umask(umask)
    try:
        ex = exp.add(Channel(name="rpmsg-tty", remote=1024, local=1024, raw_name=b"rpmsg-tty"))
    finally:
        os.umask(old)
    try:
        assert ex is not None and seen == [False]
        assert final.is_socket() and final.stat().st_mode & 0o777 == 0o660
        assert [p.name for p in (tmp_path / "ept").iterdir()] == ["rpmsg-tty"]  # no temporary name left
        long = exp.add(Channel(name="x", remote=1025, local=1025, raw_name=b"\x01" * 31))
        assert long is not None and long.path.is_socket() and "~" in long.path.name
    finally:
        exp.close()
        loop.close()
