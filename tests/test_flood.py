"""A name-service flood (issue 14, part 2): capped, contained, never a busy loop, never a wedged session.

The bus-level checks drive :class:`~rprocd.rpmsg.RpmsgBus` against the
device-side rings of ``tests/test_rpmsg.py``; the end-to-end one runs the
simulated remote with ``--fault name-flood`` (5 000 names) against rprocd at
``RLIMIT_NOFILE`` 1024 and looks at what a user would: CPU, log size, the
control socket, an endpoint made before the flood.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rprocd.control import ControlServer
from rprocd.exports.sockets import SocketExport
from rprocd.files import ACCEPT_BACKOFF
from rprocd.rpmsg import Channel
from rprocd.sim.faults import FLOOD_COUNT
from tests.conftest import ENDPOINTS, REPO, Board, wait_for
from tests.stubs import AcceptingTransport
from tests.test_backpressure import config
from tests.test_rpmsg import Events, Remote, rig  # noqa: F401 - rig is a fixture
from tests.traffic import cpu_ticks, stats

ECHO = "rpmsg-client-sample"
NOFILE = 1024
MAX_CHANNELS = 2000  # past what 1024 descriptors can hold: the descriptor reserve must stop the sockets first


class Raising(Events):
    """A consumer whose channel and message handling fail (an export out of descriptors, a bug)."""

    def channel_added(self, ch: Channel) -> None:
        super().channel_added(ch)
        raise OSError(24, "Too many open files")

    def deliver(self, ch: Channel, src: int, payload: bytes) -> bool:
        raise RuntimeError("consumer bug")


def test_channels_past_the_cap_are_refused_counted_and_their_buffers_reposted(rig) -> None:  # noqa: F811
    s, remote, ev = rig
    bus = s.bus
    bus.max_channels = 3
    for i in range(20):  # more than the 8 receive buffers: a buffer not re-posted would wedge the remote
        remote.announce(b"flood-%d" % i, 2000 + i)
        bus.process_rx()
        bus.flush()
    assert [c.name for c in ev.added] == ["flood-0", "flood-1", "flood-2"]
    assert bus.stats.ns_created == 3 and bus.stats.ns_refused == 17
    assert remote.tx.avail_pending() == 8  # every buffer back with the remote


def test_a_failing_consumer_never_strands_a_receive_buffer(rig) -> None:  # noqa: F811
    s, remote, _ = rig
    bus = s.bus
    ev = Raising()
    bus.events = ev
    for i in range(12):
        remote.announce(b"ept-%d" % i, 3000 + i)
        bus.process_rx()
        bus.flush()
    assert len(bus.channels) == 12  # registered as the remote believes, though the export failed
    for i in range(12):
        remote.send(3000 + i, ev.added[i].local, b"lost to a bug")
        bus.process_rx()
        bus.flush()
    assert bus.stats.event_errors == 24
    assert remote.tx.avail_pending() == 8


def _limit_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _echo(s: socket.socket, data: bytes) -> bytes:
    s.send(data)
    return s.recv(512)


@pytest.mark.timeout(300)
def test_name_flood_at_nofile_1024(board: Board, tmp_path: Path) -> None:
    procs = board.procs
    cfg = tmp_path / "rprocd.toml"
    cap = f"[remote.main]\nmax_channels = {MAX_CHANNELS}\n"
    cfg.write_text(config(ECHO, "block", 256).replace("[remote.main]\n", cap))
    # the flood starts after 2 messages: the echo below, on a connection made before it
    procs.sim(board.dir, "--fault", "name-flood", "--fault-after", "2")
    log_path = tmp_path / "rprocd.log"
    with open(log_path, "ab") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "rprocd.cli.daemon", "--board", str(board.dir), "--runtime-dir",
             str(board.runtime), "-c", str(cfg)],
            stdout=out, stderr=subprocess.STDOUT, env=procs.env, preexec_fn=_limit_nofile,
        )  # fmt: skip
    procs.procs.append(daemon)
    board.wait_endpoints()
    early = board.connect(ECHO)
    assert _echo(early, b"before the flood") == b"before the flood"

    total = len(ENDPOINTS) + FLOOD_COUNT

    def announced() -> bool:
        bus = stats(board.runtime)["bus"]
        return bus["ns_created"] + bus["ns_refused"] == total

    wait_for(announced, 180, f"all {total} announcements handled")
    snap = stats(board.runtime)
    bus, sockets = snap["bus"], snap["sockets"]
    assert bus["ns_created"] == MAX_CHANNELS and bus["ns_refused"] == total - MAX_CHANNELS
    assert snap["state"] == "attached"
    made = sorted(n for n in board.endpoints() if n.startswith("flood-"))
    # the descriptor reserve, not EMFILE, stopped the sockets: some were made, the rest counted
    assert 500 < len(made) < NOFILE
    assert sockets["export_failures"] == MAX_CHANNELS - len(ENDPOINTS) - len(made)
    assert _fds(daemon.pid) <= NOFILE - 16

    # clients on the last endpoints that got a socket: they echo
    for name in made[-5:]:
        with board.connect(name) as s:
            assert _echo(s, name.encode()) == name.encode()
    # then more clients than descriptors are left: rprocd refuses the excess and rests its listener
    crowd = []
    for _ in range(150):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.setblocking(False)
        try:
            s.connect(str(board.ept_dir / made[-1]))
        except (BlockingIOError, ConnectionRefusedError):
            pass
        crowd.append(s)

    def paused() -> bool:
        ex = next(e for e in stats(board.runtime)["endpoints"] if e["name"] == made[-1])
        return ex["accept_pauses"] > 0

    wait_for(paused, 30, "the listener to rest after running out of descriptors")

    # the remote is quiet now: rprocd must be too, crowd and all (a spinning accept took 48-100 %)
    tck = os.sysconf("SC_CLK_TCK")
    t0, c0 = time.monotonic(), cpu_ticks(daemon.pid)
    time.sleep(3.0)  # the measurement interval, not a wait for something
    used = (cpu_ticks(daemon.pid) - c0) / tck / (time.monotonic() - t0)
    assert used < 0.05, f"rprocd used {used:.0%} of a CPU with a quiet remote"

    # the control socket answers throughout, through rprocctl
    r = subprocess.run(
        [sys.executable, "-m", "rprocd.cli.ctl", "--runtime-dir", str(board.runtime), "status"],
        capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert b"attached" in r.stdout

    # the connection made before the flood still echoes; so does a new one once the crowd is gone
    assert _echo(early, b"after the flood") == b"after the flood"
    for s in crowd:
        s.close()
    early.close()

    def echoes_again() -> bool:
        # rprocd sees the crowd's hang-ups (and accepts what its backlog still holds) in its own time;
        # until then a new client may meet the descriptor reserve and be closed, which is by design
        try:
            with board.connect(ECHO) as s:
                s.settimeout(10)
                return _echo(s, b"again") == b"again"
        except (ConnectionResetError, BrokenPipeError):
            return False

    wait_for(echoes_again, 30, "a new client to be served once the crowd is gone")
    size = log_path.stat().st_size
    assert size < 100_000, f"rprocd logged {size} bytes"
    print(f"flood: {len(made)} sockets, {sockets['export_failures']} without, cpu {used:.2%}, log {size} bytes")
    log = log_path.read_text(errors="replace")
    assert "Exception in callback" not in log and "Traceback" not in log


# -- lifecycle lines and the reason a session ended (issue 14, part 3) ---------------------------


class Exported(Events):
    """The bus's events wired to a real socket export, as the daemon wires them."""

    def __init__(self, exp: SocketExport):
        super().__init__()
        self.exp = exp

    def channel_added(self, ch: Channel) -> None:
        self.exp.add(ch)

    def channel_removed(self, ch: Channel) -> None:
        self.exp.remove(ch)


def test_churn_logs_little_and_counts_exactly(rig, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    s, remote, _ = rig
    bus = s.bus
    loop = asyncio.new_event_loop()
    exp = SocketExport(loop, tmp_path / "ept", AcceptingTransport())
    bus.events = Exported(exp)
    pairs = 2000
    caplog.set_level(logging.INFO)
    try:
        for i in range(pairs):
            remote.announce(b"churn-%d" % (i % 7), 4000 + i % 7)
            remote.announce(b"churn-%d" % (i % 7), 4000 + i % 7, 1)
            bus.process_rx()
            bus.flush()
    finally:
        exp.close()
        loop.close()
    assert bus.stats.ns_created == pairs and bus.stats.ns_destroyed == pairs
    assert exp.export_failures == 0 and list((tmp_path / "ept").iterdir()) == []
    text = "\n".join(r.getMessage() for r in caplog.records)
    print(f"churn: {len(text)} bytes logged for {pairs} create/destroy pairs")
    assert len(text) < 30_000, f"{len(text)} bytes logged for {pairs} create/destroy pairs"
    # the lines that are logged carry the exact counts
    assert "(1024 so far)" in text and "(1024 removed so far)" in text and "(1024 sockets made so far)" in text


def test_a_table_rewritten_with_ver_2_is_logged_as_such(rig) -> None:  # noqa: F811
    s, _, _ = rig
    assert s.lost_reason() is None
    s.mem.write_u32(s.layout.table_pa, 2)
    why = s.lost_reason()
    assert why is not None and "ver 2" in why and "DRIVER_OK" not in why
    s.mem.write_u32(s.layout.table_pa, 0)
    assert "rewriting" in str(s.lost_reason())
    s.mem.write_u32(s.layout.table_pa, 1)
    s.mem.write_u8(s.status_pa, 0)
    assert "lost DRIVER_OK" in str(s.lost_reason())


# -- accept() out of descriptors: rest, do not spin ----------------------------------------------


class _Exhausted:
    """A listener whose ``accept()`` fails as the kernel's does at RLIMIT_NOFILE (the client stays queued)."""

    def __init__(self) -> None:
        self.calls = 0

    def accept(self) -> tuple[socket.socket, object]:
        self.calls += 1
        raise OSError(errno.EMFILE, "Too many open files")


def test_control_socket_rests_when_accept_runs_out_of_descriptors(tmp_path: Path) -> None:
    async def run() -> None:
        server = ControlServer(tmp_path / "control", [])
        await server.start()
        real = server._listener
        assert real is not None
        loop = asyncio.get_running_loop()
        fake = _Exhausted()
        try:
            server._listener = fake  # type: ignore[assignment]
            server._accept()
            assert fake.calls == 1 and server.accept_pauses == 1
            # the listener is no longer watched: a waiting client cannot make the loop spin
            assert not loop.remove_reader(real.fileno())
            await asyncio.sleep(ACCEPT_BACKOFF + 0.2)  # the backoff itself is what is being checked
            assert loop.remove_reader(real.fileno())  # watched again after the pause
            loop.add_reader(real.fileno(), server._accept)
            server._listener = real
            # and it serves again
            reader, writer = await asyncio.open_unix_connection(str(tmp_path / "control"))
            writer.write(b'{"v": 1, "id": 1, "cmd": "hello"}\n')
            assert b'"ok":true' in await reader.readline()
            writer.close()
        finally:
            server._listener = real
            await server.stop()

    asyncio.run(run())
