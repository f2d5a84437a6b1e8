"""Endpoint names from the remote: one validation, and a safe form for file names and MQTT topics.

A name-service name is untrusted: it may hold ``/``, ``..``, control
characters, MQTT wildcards or bytes that are not UTF-8.  :func:`check_name`
is the one rule for what a name may be (name service, host-created endpoints
and the saved host state all use it).  :func:`safe_name` maps a valid name
one-to-one onto a short string of ``[A-Za-z0-9_.%~-]``, usable as a file name
and as an MQTT topic level:

* a name whose ``%XX`` escape (every byte outside ``[A-Za-z0-9_.-]``, and a
  leading ``.``, as ``%`` and two hex digits of the byte) has at most
  :data:`MAX_SAFE` characters is that escape: ``rpmsg-tty`` stays ``rpmsg-tty``;
* a longer one is the first characters of its escape (at most
  :data:`PREFIX` and never half an escape), ``~``, and 13 base32 characters
  of a 64-bit BLAKE2b hash of the raw bytes.

So a safe name never exceeds :data:`MAX_SAFE` characters (a 31-byte name
needing escapes everywhere would be 93), and under a runtime directory of
up to ``107 - 1 - MAX_SAFE`` bytes every endpoint gets a socket (``sun_path``
holds 108 bytes with the NUL).  Escapes never contain ``~`` and shortened
names always do, so the two kinds never meet; two shortened names share a
form only if their hashes collide (2^-64), and the socket export refuses
the second of such a pair instead of merging them.
"""

from __future__ import annotations

import base64
import hashlib

NAME_SIZE = 32  # the rpmsg name field, NUL included
MAX_SAFE = 40  # characters in a safe name, at most
PREFIX = MAX_SAFE - 14  # readable part of a shortened name: the rest is "~" and 13 hash characters
SUN_PATH = 108  # bytes of sockaddr_un.sun_path, the terminating NUL included

_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")


def check_name(raw: bytes) -> str | None:
    """Why ``raw`` (the bytes before the NUL) is not an endpoint name, or None when it is one.

    An rpmsg name is 1 to 31 bytes and NUL-terminated within its 32-byte field
    (``RPMSG_NAME_SIZE``); anything else is refused, wherever it comes from.
    """
    if not raw:
        return "the name is empty"
    if b"\0" in raw:
        return "the name holds a NUL"
    if len(raw) >= NAME_SIZE:
        return f"the name is {len(raw)} bytes: no NUL within the {NAME_SIZE}-byte field"
    return None


def _escape(data: bytes) -> list[str]:
    return [
        chr(b) if b in _PLAIN and not (b == 0x2E and i == 0) else f"%{b:02X}"  # no leading dot: no "." / ".."
        for i, b in enumerate(data)
    ]


def safe_name(raw: bytes | str) -> str:
    """The safe form of an endpoint name (``rpmsg-tty`` stays ``rpmsg-tty``); see the module's docstring."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    parts = _escape(data)
    if sum(map(len, parts)) <= MAX_SAFE:
        return "".join(parts) or "%00"
    prefix, n = [], 0
    for p in parts:
        if n + len(p) > PREFIX:
            break
        prefix.append(p)
        n += len(p)
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return "".join(prefix) + "~" + base64.b32encode(digest).decode().rstrip("=").lower()


def fits(directory: str, name: str) -> bool:
    """Whether ``directory/name`` fits ``sun_path``."""
    return len(f"{directory}/{name}".encode("utf-8", "surrogateescape")) < SUN_PATH
