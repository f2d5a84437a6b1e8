"""The socket export: in-process with a stub transport (delivery, parking, the read path's edge cases),
and against the daemon on a virtual board (half-closed clients, the README's socat example)."""

from __future__ import annotations

import asyncio
import fcntl
import select
import socket
import subprocess
import termios
from collections.abc import Callable
from pathlib import Path

import pytest

from rprocd.exports.sockets import EndpointPolicy, SocketExport
from rprocd.memory import span_over
from rprocd.native import sockio
from rprocd.rpmsg import HDR_SIZE, Channel, Lengths, TxResult
from rprocd.vring import UsedRecord
from tests.conftest import Board, wait_for
from tests.traffic import endpoint_stats, stats


class Stub:
    max_payload = 496

    def __init__(self) -> None:
        self.free = 0
        self.sent: list[bytes] = []
        self.waits = 0
        self.flushes = 0
        self.flushed_at: list[int] = []  # len(sent) at each flush
        self.on_flush: Callable[[], None] = lambda: None

    def send(self, ch: Channel, payload: memoryview) -> TxResult:
        if self.free <= 0:
            return TxResult.NO_BUFFER
        self.free -= 1
        self.sent.append(bytes(payload))
        return TxResult.SENT

    def send_batch(self, ch: Channel, records: memoryview, stride: int, lens: Lengths, count: int) -> int:
        """RemoteHost.send_many's contract (RpmsgBus.send_many): in order, stops at an oversized record or no buffer."""
        done = 0
        while done < count and lens[done] <= self.max_payload and self.free > 0:
            self.free -= 1
            o = done * stride + HDR_SIZE
            self.sent.append(bytes(records[o : o + lens[done]]))
            done += 1
        return done

    def tx_available(self) -> bool:
        return self.free > 0

    def tx_credits(self) -> int:
        return self.free

    def request_flush(self) -> None:
        pass

    def flush(self) -> None:
        self.flushes += 1
        self.flushed_at.append(len(self.sent))
        self.on_flush()

    def wait_for_tx(self) -> None:
        self.waits += 1

    def rx_unblocked(self) -> None:
        pass


def setup(tmp_path: Path, n: int) -> tuple[asyncio.AbstractEventLoop, SocketExport, Stub, Channel, list[socket.socket]]:
    loop = asyncio.new_event_loop()
    stub = Stub()
    exp = SocketExport(loop, tmp_path / "ept", stub, lambda name: EndpointPolicy())
    ch = Channel(name="tty", remote=1024, local=1024, raw_name=b"tty")
    ex = exp.add(ch)
    assert ex is not None
    clients = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(str(ex.path))
        clients.append(s)
    exp._accept(ex)
    assert len(ex.clients) == n
    return loop, exp, stub, ch, clients


def test_a_client_that_died_does_not_cost_the_next_one_its_message(tmp_path: Path) -> None:
    loop, exp, _stub, ch, (a, b, c) = setup(tmp_path, 3)
    b.close()  # the daemon has not seen the EOF yet: the send to it fails inside deliver()
    exp.deliver(ch, b"one")
    exp.deliver(ch, b"two")
    for s in (a, c):
        s.settimeout(5)
        assert s.recv(100) == b"one" and s.recv(100) == b"two"
    assert exp.exports[ch.local].stats.clients == 2
    exp.close()
    loop.close()


class _Watched:
    """The export's send batch, looking after every call at what the record says and what the clients hold."""

    def __init__(self, batch: sockio.Batch, check: Callable[[], None]) -> None:
        self._b, self._check = batch, check

    def __getattr__(self, name: str) -> object:
        return getattr(self._b, name)

    def send(self, *args: int) -> int:
        r = self._b.send(*args)
        self._check()
        return r

    def send_recorded(self, *args: int) -> int:
        r = self._b.send_recorded(*args)
        self._check()
        return r


@pytest.mark.parametrize("full", [False, True], ids=["both-take-all", "source-client-full"])
def test_a_run_for_two_endpoints_is_recorded_only_as_far_as_it_is_handed_over(tmp_path: Path, full: bool) -> None:
    """An echo and a stream interleave in one run (E0 S0 E1 S1 ...): after every system call that hands
    messages over, the record (what a successor would skip after a SIGKILL) covers only messages already
    in their client's socket. Per-client batches (all of E, then all of S) would record the whole run
    before S left: a kill between the two sendmmsg lost the echoes' or the stream's share (issue 16)."""
    assert sockio.LIB is not None  # the native helper makes the record inside its sendmmsg call
    loop = asyncio.new_event_loop()
    exp = SocketExport(loop, tmp_path / "ept", Stub(), lambda name: EndpointPolicy())
    chans = [Channel(name=n, remote=1024 + i, local=1024 + i, raw_name=n.encode()) for i, n in enumerate("es")]
    clients = []
    for ch in chans:
        ex = exp.add(ch)
        assert ex is not None
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(str(ex.path))
        s.setblocking(False)
        exp._accept(ex)
        clients.append(s)
    if full:  # the stream's client socket is full but for a little room: S0 (and S1?) fit, then it refuses
        daemon_end = exp.exports[chans[1].local].clients[0].sock
        daemon_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        while True:
            try:
                daemon_end.send(b"x" * 200)
            except BlockingIOError:
                break
        clients[1].recv(1000)
    span = span_over(bytearray(64))
    record = UsedRecord(span, 0, span.words(2, 0, 1)[1], 0)
    n = 8
    run = [(chans[i % 2], b"%s%d" % (b"es"[i % 2 : i % 2 + 1], i)) for i in range(n)]
    got: list[bytes] = []

    def check() -> None:
        for c in clients:
            while True:
                try:
                    got.append(c.recv(1000))
                except BlockingIOError:
                    break
        recorded = span.load16(0)
        assert all(p in got for _ch, p in run[:recorded]), (recorded, got)

    assert exp._sbatch is not None
    exp._sbatch = _Watched(exp._sbatch, check)  # type: ignore[assignment]
    for ch, p in run:
        exp.stage(ch, p)
    exp.prepare_deliveries()
    record.arm(n)
    unsent = exp.flush_deliveries(record)
    record.commit()
    check()
    got = [p for p in got if not p.startswith(b"x")]
    if full:  # S0 .. S(k-1) out, Sk refused: the record stops at Sk; what follows waits in rprocd's queues
        k = sum(p.startswith(b"s") for p in got)
        assert k < n // 2
        assert span.load16(0) == 2 * k + 1 and unsent == n - (2 * k + 1)
        assert sorted(got) == sorted(p for _ch, p in run[: 2 * k + 1])
    else:
        assert span.load16(0) == n and unsent == 0 and sorted(got) == sorted(p for _ch, p in run)
    exp.close()
    loop.close()


def test_writers_park_in_order_when_no_buffer_is_free(tmp_path: Path) -> None:
    loop, exp, stub, ch, clients = setup(tmp_path, 3)
    ex = exp.exports[ch.local]
    for i, s in enumerate(clients):
        s.send(bytes([i]) * 3)
    for c in ex.clients:  # every client becomes readable; no buffer is free
        exp._readable(ex, c)
    assert exp.paused and stub.waits == 1  # one request for buffers, however many writers wait
    assert not any(c.reading for c in ex.clients)
    assert stub.sent == []  # nothing read while parked
    stub.free = 2
    exp.resume()  # serves the parked writers in order until the buffers run out again
    assert stub.sent == [b"\0\0\0", b"\1\1\1"]
    assert exp.paused and [c.reading for c in ex.clients] == [True, False, False]  # 1 parks again: no buffer
    stub.free = 2
    exp.resume()
    assert stub.sent == [b"\0\0\0", b"\1\1\1", b"\2\2\2"]  # nothing lost, in the order they waited
    assert not exp.paused and all(c.reading for c in ex.clients)
    exp.close()
    loop.close()


# -- half-close, empty records and end of file (both read paths) ---------------------------------


@pytest.fixture(params=["native", "batched", "python"])
def read_path(request: pytest.FixtureRequest) -> str:
    """recvmmsg and a record at a time to the transport, recvmmsg and runs (send_many), or recv per record."""
    if request.param != "python" and sockio.LIB is None:
        pytest.fail("the native sockio helper did not build (is a C compiler installed?)")
    return str(request.param)


def use_path(exp: SocketExport, stub: Stub, read_path: str) -> None:
    if read_path == "python":
        exp._batch = None
    elif read_path == "batched":
        exp._send_many = stub.send_batch


def test_empty_records_are_sent_and_eof_half_closes(tmp_path: Path, read_path: str) -> None:
    """0 bytes read is an empty record (a legal rpmsg message) or the client's shutdown: never confused."""
    loop, exp, stub, ch, (a,) = setup(tmp_path, 1)
    use_path(exp, stub, read_path)
    ex = exp.exports[ch.local]
    (c,) = ex.clients
    stub.free = 8
    for m in (b"", b"x", b"", b"yz", b""):
        a.send(m)
    a.shutdown(socket.SHUT_WR)
    exp._readable(ex, c)
    assert stub.sent == [b"", b"x", b"", b"yz", b""]  # the last one, just before the EOF, too
    assert c.eof and not c.closed and ex.clients == [c]  # half-closed: it still receives
    assert exp.deliver(ch, b"reply")
    a.settimeout(5)
    assert a.recv(100) == b"reply"
    a.close()
    wait = select.poll()
    assert exp._hup is not None
    wait.register(exp._hup.fileno(), select.POLLIN)
    assert wait.poll(5000)  # the loop would call back now
    exp._hung_up_clients()
    assert c.closed and ex.clients == []
    exp.close()
    loop.close()


def test_records_stay_in_the_socket_until_published(tmp_path: Path, read_path: str) -> None:
    """With 2 buffers free and 5 records, 2 are taken and 3 stay queued (peeked ones are rewound)."""
    loop, exp, stub, ch, (a,) = setup(tmp_path, 1)
    use_path(exp, stub, read_path)
    ex = exp.exports[ch.local]
    (c,) = ex.clients
    stub.free = 2
    for i in range(5):
        a.send(bytes([i]))
    at_flush: list[int] = []
    stub.on_flush = lambda: at_flush.append(_outq(a))
    exp._readable(ex, c)
    assert stub.sent == [b"\0", b"\1"] and exp.paused
    # published while all 5 were still in the socket; the 2 left it only then
    assert stub.flushed_at[0] == 2 and at_flush[0] * 3 == _outq(a) * 5 > 0
    stub.free = 8
    exp.resume()
    assert stub.sent == [bytes([i]) for i in range(5)]
    exp.close()
    loop.close()


def _outq(sock: socket.socket) -> int:
    buf = bytearray(4)
    fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf)
    return int.from_bytes(buf, "little", signed=True)


def test_oversized_record_disconnects_after_the_records_before_it(tmp_path: Path, read_path: str) -> None:
    loop, exp, stub, ch, (a,) = setup(tmp_path, 1)
    use_path(exp, stub, read_path)
    ex = exp.exports[ch.local]
    (c,) = ex.clients
    stub.free = 8
    a.send(b"ok")
    a.send(bytes(497))
    exp._readable(ex, c)
    assert stub.sent == [b"ok"] and c.closed and ex.stats.tx_oversized == 1
    exp.close()
    loop.close()


def test_readme_socat_example_prints_the_echo(running: Board) -> None:
    """README: ``echo -n ping | socat - UNIX-CONNECT:/run/rprocd/main/ept/rpmsg-tty,type=5``.

    socat shuts its writing side down at the end of its input, then waits
    (0.5 s, its ``-t``) for the reply: a half-closed client keeps receiving.
    """
    path = running.ept_dir / "rpmsg-tty"
    out = subprocess.run(
        f"echo -n ping | socat - UNIX-CONNECT:{path},type=5", shell=True, capture_output=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"ping"


def test_half_closed_client_gets_every_echo_then_is_dropped_when_it_closes(running: Board) -> None:
    s = running.connect("rpmsg-client-sample")
    for i in range(20):
        s.send(b"%d" % i)
    s.shutdown(socket.SHUT_WR)
    assert [s.recv(64) for _ in range(20)] == [b"%d" % i for i in range(20)]

    def clients() -> int:
        return int(endpoint_stats(stats(running.runtime), "rpmsg-client-sample")["clients"])

    assert clients() == 1
    s.close()
    wait_for(lambda: clients() == 0, 10, "the closed client to be dropped")
