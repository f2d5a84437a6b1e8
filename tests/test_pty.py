"""PTY export: a legacy tty client (plain os.open + termios) echoes through /dev/pts."""

from __future__ import annotations

import asyncio
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
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rprocd.client import Endpoint
from rprocd.exports.pty import PtyExport
from rprocd.exports.stream import StreamExport
from rprocd.rpmsg import Channel

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


# -- backpressure, deterministically, with a stand-in host ------------------------------------


class FakeHost:
    """The part of RemoteHost the exports use, with a transmit pool the test controls."""

    def __init__(self, free: int):
        self.name = "main"
        self.loop = asyncio.get_running_loop()
        self.observers: list[object] = []
        self.channels: list[Channel] = []
        self.max_payload = 496
        self.session: object | None = object()
        self.free = free
        self.sent: list[bytes] = []
        self.waiters: list[Callable[[], None]] = []

    def tx_available(self) -> bool:
        return self.free > 0

    def send(self, ch: Channel, payload: bytes | bytearray | memoryview) -> bool:
        if not self.free:
            return False
        self.free -= 1
        self.sent.append(bytes(payload))
        return True

    def request_flush(self) -> None:
        pass

    def wait_for_tx(self, callback: Callable[[], None] | None = None) -> None:
        assert callback is not None
        self.waiters.append(callback)

    def give(self, n: int) -> None:
        """The remote frees ``n`` buffers: wake the waiters, as RemoteHost.service does."""
        self.free += n
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            w()


async def until(what: str, check: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.005)


def test_stream_backpressure_keeps_every_frame(tmp_path: Path) -> None:
    async def main() -> None:
        host = FakeHost(free=2)
        ex = StreamExport(host, tmp_path, lambda name: True, queue=4)  # type: ignore[arg-type]
        ch = Channel(name="ept", remote=0x400, local=0x401)
        ex.on_channel(host, ch, True)  # type: ignore[arg-type]
        frames = [f"frame {i}".encode() for i in range(6)]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(tmp_path / "main" / "stream" / "ept"))
            s.sendall(b"".join(struct.pack(">H", len(f)) + f for f in frames))
            s.shutdown(socket.SHUT_WR)  # hung up with frames still held back: they must still go
            await until("the pool to run dry", lambda: len(host.sent) == 2 and bool(host.waiters))
            assert ex.stats()["paused"] is True
            host.give(1)
            await until("one more frame", lambda: len(host.sent) == 3)
            host.give(10)
            await until("every frame", lambda: len(host.sent) == 6)
            assert host.sent == frames

            # remote -> a client that never reads: bounded queue, drops counted, never blocking
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow:
                slow.connect(str(tmp_path / "main" / "stream" / "ept"))
                await until("the slow client", lambda: ex.describe(ch)["clients"] >= 1)  # type: ignore[index]
                for _ in range(2000):
                    ex.on_rx(host, ch, b"x" * 496)  # type: ignore[arg-type]
                d = ex.describe(ch)
                assert d is not None and d["rx_dropped"] > 0
                assert d["rx_msgs"] + d["rx_dropped"] >= 2000
        ex.on_channel(host, ch, False)  # type: ignore[arg-type]
        assert not (tmp_path / "main" / "stream" / "ept").exists()
        ex.close()

    asyncio.run(main())


def test_pty_backpressure_keeps_every_byte(tmp_path: Path) -> None:
    async def main() -> None:
        host = FakeHost(free=0)
        ex = PtyExport(host, tmp_path, lambda name: name == "ept")  # type: ignore[arg-type]
        ch = Channel(name="ept", remote=0x400, local=0x401)
        ex.on_channel(host, ch, True)  # type: ignore[arg-type]
        ex.on_channel(host, Channel(name="other", remote=0x402, local=0x403), True)  # type: ignore[arg-type]
        assert not (tmp_path / "main" / "tty" / "other").exists()
        fd = os.open(tmp_path / "main" / "tty" / "ept", os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, b"held until a buffer is free")
            await until("the export to wait for a buffer", lambda: bool(host.waiters))
            assert host.sent == []
            host.give(8)
            await until("the bytes to go out", lambda: b"".join(host.sent) == b"held until a buffer is free")
            ex.on_rx(host, ch, b"from the remote")  # type: ignore[arg-type]
            assert read_exactly(fd, 15) == b"from the remote"
        finally:
            os.close(fd)
        ex.close()
        assert not (tmp_path / "main" / "tty" / "ept").exists()

    asyncio.run(main())
