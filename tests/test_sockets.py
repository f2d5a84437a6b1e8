"""The socket export in-process, with a stub transport: delivery and parking edge cases."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from rprocd.exports.sockets import EndpointPolicy, SocketExport
from rprocd.rpmsg import Channel, TxResult


class Stub:
    max_payload = 496

    def __init__(self) -> None:
        self.free = 0
        self.sent: list[bytes] = []
        self.waits = 0

    def send(self, ch: Channel, payload: memoryview) -> TxResult:
        if self.free <= 0:
            return TxResult.NO_BUFFER
        self.free -= 1
        self.sent.append(bytes(payload))
        return TxResult.SENT

    def tx_available(self) -> bool:
        return self.free > 0

    def tx_credits(self) -> int:
        return self.free

    def request_flush(self) -> None:
        pass

    def flush(self) -> None:
        pass

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
