"""rprocd.client: both APIs against a running daemon and the simulated remote."""

from __future__ import annotations

import asyncio
import signal
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from rprocd.client import (
    MAX_PAYLOAD,
    AsyncControl,
    AsyncEndpoint,
    Control,
    ControlError,
    Endpoint,
    EndpointClosed,
    EndpointNotFound,
    _unread,
    endpoint_path,
)

from .conftest import Board, wait_for
from .launch_daemon import Rig

N = 1000
WINDOW = 16  # messages in flight: more than the 8 transmit buffers, so backpressure is exercised


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with Rig(tmp_path_factory.mktemp("client")) as r:
        yield r


def message(i: int) -> bytes:
    return struct.pack("<I", i) + bytes([i % 251]) * (i % (MAX_PAYLOAD - 3))


def test_blocking_echo_1000(rig: Rig) -> None:
    with Endpoint.open("rpmsg-client-sample", runtime_dir=rig.runtime) as ept:
        got: list[bytes] = []
        sent = 0
        while len(got) < N:
            while sent < N and sent - len(got) < WINDOW:
                ept.send(message(sent), timeout=10)
                sent += 1
            got.append(ept.recv(timeout=10))
    assert got == [message(i) for i in range(N)]


def test_async_echo_1000(rig: Rig) -> None:
    async def main() -> list[bytes]:
        async with await AsyncEndpoint.open("rpmsg-tty", runtime_dir=rig.runtime) as ept:
            window = asyncio.Semaphore(WINDOW)

            async def sender() -> None:
                for i in range(N):
                    await window.acquire()
                    await ept.send(message(i))

            async def receiver() -> list[bytes]:
                out = []
                for _ in range(N):
                    out.append(await ept.recv(timeout=10))
                    window.release()
                return out

            async with asyncio.timeout(60):
                _, got = await asyncio.gather(sender(), receiver())
            return got

    assert asyncio.run(main()) == [message(i) for i in range(N)]


def test_edges_empty_full_oversized_and_missing(rig: Rig) -> None:
    with Endpoint.open("rpmsg-tty", runtime_dir=rig.runtime) as ept:
        assert ept.request(b"") == b""  # an empty message is a message, not the end
        assert ept.request(b"z" * MAX_PAYLOAD) == b"z" * MAX_PAYLOAD
        with pytest.raises(ValueError, match="exceeds"):
            ept.send(b"z" * (MAX_PAYLOAD + 1))
        with pytest.raises(TimeoutError):
            ept.recv(timeout=0.05)
    with pytest.raises(EndpointNotFound):
        Endpoint.open("no-such-endpoint", runtime_dir=rig.runtime)
    assert endpoint_path("a/../b", runtime_dir="/r") == endpoint_path("a%2F..%2Fb", runtime_dir="/r").parent / (
        "a%2F..%2Fb"
    )
    assert endpoint_path("../x", runtime_dir="/r").parent.name == "ept"


def test_blocking_control_and_endpoint_closed(rig: Rig) -> None:
    with Control(rig.runtime) as c:
        (st,) = c.status("main")
        assert st["state"] == "attached"
        sample = next(e for e in c.endpoints() if e["name"] == "rpmsg-client-sample")
        ep = c.create_endpoint("client-lib", dst=sample["remote"])
        assert ep["name"] == "client-lib"
        with Endpoint.open("client-lib", runtime_dir=rig.runtime) as ept:
            assert ept.request(b"hi") == b"hi"
            c.destroy_endpoint("client-lib")
            with pytest.raises(EndpointClosed):
                ept.recv(timeout=5)
            assert list(ept) == []
        with pytest.raises(ControlError) as e:
            c.destroy_endpoint("client-lib")
        assert e.value.code == "no-such-endpoint"


def test_async_control(rig: Rig) -> None:
    async def main() -> None:
        async with await AsyncControl.connect(rig.runtime) as c:
            eps = (await c.request("endpoints", remote="main"))["endpoints"]
            sample = next(e for e in eps if e["name"] == "rpmsg-client-sample")
            await c.create_endpoint("client-async", dst=sample["remote"])
            async with await AsyncEndpoint.open("client-async", runtime_dir=rig.runtime) as ept:
                assert await ept.request(b"async hi") == b"async hi"
                await c.destroy_endpoint("client-async")
                with pytest.raises(EndpointClosed):
                    await ept.recv(timeout=5)
            with pytest.raises(ControlError):
                await c.request("status", remote="nope")

    asyncio.run(main())


# -- drain(): after it returns, a SIGKILL of rprocd loses nothing this client wrote ----------------


def _sink_count(runtime: Path) -> int:
    def connect() -> Endpoint | None:
        try:
            return Endpoint.open("rpmsg-sink", runtime_dir=runtime)
        except (EndpointNotFound, ConnectionRefusedError):
            return None

    ept = wait_for(connect, 20, "the sink endpoint")
    assert isinstance(ept, Endpoint)
    with ept:
        return int(ept.request(b"STAT", timeout=20).split()[0])


def test_drain_then_sigkill_loses_nothing(board: Board) -> None:
    """A slow remote keeps most records waiting in the socket; drain() returns only once all are in the ring."""
    procs = board.procs
    procs.sim(board.dir, "--delay-us", "3000")
    daemon = procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    with Endpoint.open("rpmsg-sink", runtime_dir=board.runtime) as ept:
        for i in range(60):
            ept.send(struct.pack("<I", i))
        ept.drain(timeout=30)
        procs.stop(daemon, signal.SIGKILL)  # at once: the remote is still consuming the last ones
    procs.daemon(board.dir, board.runtime)
    assert _sink_count(board.runtime) == 60


def test_drain_raises_when_rprocd_dies_first(board: Board) -> None:
    procs = board.procs
    procs.sim(board.dir, "--delay-us", "50000")
    daemon = procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    with Endpoint.open("rpmsg-sink", runtime_dir=board.runtime) as ept:
        for i in range(30):
            ept.send(struct.pack("<I", i))
        with pytest.raises(TimeoutError):
            ept.drain(timeout=0.05)  # 8 buffers, 50 ms each: most are still in the socket
        procs.stop(daemon, signal.SIGKILL)
        with pytest.raises(EndpointClosed):
            ept.drain(timeout=10)


def test_async_drain(board: Board) -> None:
    procs = board.procs
    procs.sim(board.dir, "--delay-us", "2000")
    procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()

    async def main() -> None:
        async with await AsyncEndpoint.open("rpmsg-sink", runtime_dir=board.runtime) as ept:
            for i in range(40):
                await ept.send(struct.pack("<I", i))
            await ept.drain(timeout=30)
            assert not _unread(ept.sock)

    asyncio.run(main())
    assert _sink_count(board.runtime) == 40
