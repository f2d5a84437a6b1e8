"""Endpoint names from the remote, made safe for file names and MQTT topics.

A name-service name is untrusted: it may hold ``/``, ``..``, control
characters, MQTT wildcards or bytes that are not UTF-8.  :func:`safe_name`
maps it one-to-one onto ``[A-Za-z0-9_.-]`` plus ``%XX`` escapes (of its UTF-8
bytes, undecodable bytes included), so it can never leave its directory,
form a topic level or a wildcard, and two different names never collide.
"""

from __future__ import annotations

_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")


def safe_name(raw: bytes | str) -> str:
    """The escaped form of an endpoint name (``rpmsg-tty`` stays ``rpmsg-tty``)."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    out = []
    for i, b in enumerate(data):
        if b in _PLAIN and not (b == 0x2E and i == 0):  # no leading dot: no "." / ".." / hidden files
            out.append(chr(b))
        else:
            out.append(f"%{b:02X}")
    return "".join(out) or "%00"
