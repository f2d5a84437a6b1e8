"""The walking daemon end to end: real rprocd and simulated-remote processes on a virtual board."""

from __future__ import annotations

import random
import socket
import struct
import threading

from rprocd import rsc_table as rt
from rprocd.layout import TCC807X
from tests.conftest import ENDPOINTS, Board, wait_for


def test_remote_first_then_daemon(board: Board) -> None:
    board.procs.sim(board.dir)
    wait_for(lambda: (board.dir / "remote.sock").exists(), what="remote.sock")
    board.procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    assert board.endpoints() == set(ENDPOINTS)


def test_daemon_first_then_remote(board: Board) -> None:
    board.procs.daemon(board.dir, board.runtime)
    wait_for(lambda: (board.dir / "host.sock").exists(), what="host.sock")
    assert board.endpoints() == set()
    board.procs.sim(board.dir)
    board.wait_endpoints()
    assert board.endpoints() == set(ENDPOINTS)


def test_echo_10000_round_trips(running: Board) -> None:
    rnd = random.Random(1)
    with running.connect("rpmsg-client-sample") as s:
        for i in range(10_000):
            payload = rnd.randbytes(rnd.randint(1, 496)) if i % 100 else struct.pack("<I", i)
            s.send(payload)
            assert s.recv(1024) == payload


def test_empty_and_full_size_records_echo(running: Board) -> None:
    with running.connect("rpmsg-tty") as s:
        for payload in (b"", b"x" * 496, b"", b"y"):
            s.send(payload)
            assert s.recv(1024) == payload


def test_oversized_record_rejected_not_truncated(running: Board) -> None:
    with running.connect("rpmsg-sink") as s:
        s.send(b"z" * 497)
        assert s.recv(1024) == b""  # the daemon shut the connection down
    wait_for(lambda: "more than the 496" in running.procs.log("rprocd.log"), what="the rejection in the log")
    with running.connect("rpmsg-sink") as s:
        s.send(b"STAT")
        assert s.recv(100) == b"0 0"  # nothing of the oversized record reached the remote


def stream_into_sink(b: Board, count: int, size: int) -> bytes:
    with b.connect("rpmsg-sink") as s:
        payload = bytes(range(256)) * 2
        for _ in range(count):
            s.send(payload[:size])
        s.send(b"STAT")
        return s.recv(100)


def test_100000_messages_into_sink(running: Board) -> None:
    assert stream_into_sink(running, 100_000, 496) == b"100000 49600000"


def test_slow_remote_nothing_dropped(board: Board) -> None:
    board.procs.sim(board.dir, "--delay-us", "200")
    board.procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    assert stream_into_sink(board, 10_000, 496) == b"10000 4960000"


def test_source_100000_in_order(running: Board) -> None:
    with running.connect("rpmsg-source") as s:
        s.send(b"100000 496")
        for seq in range(100_000):
            msg = s.recv(1024)
            assert len(msg) == 496
            assert struct.unpack_from("<I", msg)[0] == seq


def test_pipelined_echo_both_directions_concurrently(running: Board) -> None:
    n = 20_000
    with running.connect("rpmsg-client-sample") as s:
        got: list[bytes] = []

        def reader() -> None:
            for _ in range(n):
                got.append(s.recv(1024))

        t = threading.Thread(target=reader)
        t.start()
        for i in range(n):
            s.send(struct.pack("<I", i) * 4)
        t.join(120)
        assert not t.is_alive()
    assert [struct.unpack_from("<I", m)[0] for m in got] == list(range(n))


def test_any_da_written_back_inside_vring_regions(board: Board) -> None:
    board.procs.sim(board.dir, "--any-da")
    board.procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    with board.connect("rpmsg-client-sample") as s:
        s.send(b"ping")
        assert s.recv(64) == b"ping"
    raw = (board.dir / "memory").read_bytes()
    off = TCC807X.table_pa - TCC807X.window.pa
    (vdev,) = rt.parse(raw[off : off + TCC807X.rsc_size]).vdevs
    for vr, region in zip(vdev.vrings, TCC807X.vrings, strict=True):
        assert vr.da != rt.FW_RSC_ADDR_ANY
        assert region.contains(vr.da, 0x100)
    assert vdev.status == 7


def test_clients_share_an_endpoint(running: Board) -> None:
    """A message from the remote goes to every connected client."""
    with running.connect("rpmsg-tty") as a, running.connect("rpmsg-tty") as b:
        a.send(b"hello")
        assert a.recv(64) == b"hello"
        assert b.recv(64) == b"hello"


def test_sockets_are_seqpacket(running: Board) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(running.ept_dir / "rpmsg-tty"))
        raise AssertionError("a stream socket connected to a SEQPACKET endpoint")
    except OSError:
        pass
    finally:
        s.close()
