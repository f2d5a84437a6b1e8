"""PTY export: a legacy tty client (plain os.open + termios) echoes through /dev/pts."""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
import struct
import termios
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from rprocd.client import Endpoint

from .launch_daemon import Rig, control_request, wait_for


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    # rpmsg-client-sample's pty is never opened: the slow-reader test fills it
    with Rig(tmp_path_factory.mktemp("pty"), pty=["rpmsg-tty", "rpmsg-client-sample"]) as r:
        yield r


def pty_stats(rig: Rig, name: str) -> dict:
    eps = control_request(rig.runtime, "endpoints")["result"]["endpoints"]
    return next(e for e in eps if e["name"] == name)["exports"]["pty"]


def read_exactly(fd: int, n: int, timeout: float = 10) -> bytes:
    deadline = time.monotonic() + timeout
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"got {len(buf)} of {n} bytes")
        buf += os.read(fd, n - len(buf))
    return buf


def test_pty_is_symlinked_raw_and_echoes(rig: Rig) -> None:
    link = rig.runtime / "main" / "tty" / "rpmsg-tty"
    assert link.is_symlink()
    target = os.readlink(link)
    assert target.startswith("/dev/pts/")
    assert stat.S_ISCHR(os.stat(link).st_mode)
    assert not (rig.runtime / "main" / "tty" / "rpmsg-sink").exists()  # opt-in only

    fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
    try:
        attrs = termios.tcgetattr(fd)
        lflag = attrs[3]
        assert not lflag & (termios.ECHO | termios.ICANON | termios.ISIG), "the slave must start in raw mode"
        tty.setraw(fd)  # what a legacy program does anyway

        # every byte value passes unchanged: no CR/LF mapping, no ^C, no line buffering
        data = bytes(range(256))
        os.write(fd, data)
        assert read_exactly(fd, len(data)) == data

        # a larger stream, written while reading, so backpressure and chunking are exercised
        blob = os.urandom(64 * 1024)
        got = bytearray()
        sent = 0
        deadline = time.monotonic() + 20
        while len(got) < len(blob):
            assert time.monotonic() < deadline, f"echoed {len(got)} of {len(blob)} bytes"
            w = [fd] if sent < len(blob) else []
            r, w, _ = select.select([fd], w, [], 1)
            if w:
                sent += os.write(fd, blob[sent : sent + 4096])
            if r:
                got += os.read(fd, 65536)
        assert bytes(got) == blob
    finally:
        os.close(fd)
    st = pty_stats(rig, "rpmsg-tty")
    assert st["tx_bytes"] == st["rx_bytes"] == 256 + len(blob)
    assert st["rx_dropped"] == 0


def test_pty_reopen_after_close(rig: Rig) -> None:
    link = rig.runtime / "main" / "tty" / "rpmsg-tty"
    for i in range(3):
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd)
            msg = f"round {i}\r\n".encode()
            os.write(fd, msg)
            assert read_exactly(fd, len(msg)) == msg
        finally:
            os.close(fd)


def test_slow_reader_drops_are_counted_not_blocking(rig: Rig) -> None:
    """Nobody reads the pty of rpmsg-client-sample: its queue fills, drops are counted, the socket keeps working."""
    count, size = 600, 496
    with Endpoint.open("rpmsg-client-sample", runtime_dir=rig.runtime) as ept:
        echoes: list[bytes] = []

        def reader() -> None:
            for _ in range(count):
                echoes.append(ept.recv(timeout=20))

        t = threading.Thread(target=reader)
        t.start()
        for i in range(count):
            ept.send(i.to_bytes(4, "little") + bytes(size - 4), timeout=20)
        t.join(timeout=30)
        assert not t.is_alive()
    assert [int.from_bytes(e[:4], "little") for e in echoes] == list(range(count))
    st = wait_for("pty statistics", lambda: pty_stats(rig, "rpmsg-client-sample"), 5)
    assert st["rx_dropped"] > 0
    assert st["queued"] <= 256
    assert st["rx_msgs"] + st["rx_dropped"] == count


def test_exports_follow_a_remote_restart(tmp_path: Path) -> None:
    """The remote crashes and boots again: the pty and stream go away with the session and come back working."""
    with Rig(tmp_path, pty=["rpmsg-tty"], stream=["rpmsg-tty"]) as r:
        link = r.runtime / "main" / "tty" / "rpmsg-tty"
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            r.restart_sim()
            # the old pty was closed under the client: it sees a hang-up, not silence
            assert select.select([fd], [], [], 5)[0], "the old pty must report the hang-up"
            try:
                got = os.read(fd, 1)
            except OSError as e:
                assert e.errno == errno.EIO
            else:
                assert got == b""
        finally:
            os.close(fd)
        assert link.is_symlink() and os.readlink(link).startswith("/dev/pts/")
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd)
            os.write(fd, b"after restart")
            assert read_exactly(fd, 13) == b"after restart"
        finally:
            os.close(fd)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(r.runtime / "main" / "stream" / "rpmsg-tty"))
            s.sendall(struct.pack(">H", 5) + b"again")
            reply = b""
            while len(reply) < 7:
                chunk = s.recv(64)
                assert chunk, "stream closed"
                reply += chunk
            assert reply == struct.pack(">H", 5) + b"again"
        trace = control_request(r.runtime, "trace", remote="main")["result"]["text"]
        assert trace.count("*** Booting") == 1  # the new boot log, not the old one appended
