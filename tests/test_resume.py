"""A restarted rprocd takes over the live session instead of resetting the remote."""

from __future__ import annotations

import signal
import struct

from tests.conftest import Board, wait_for


def sink_stat(b: Board) -> bytes:
    with b.connect("rpmsg-sink") as s:
        s.send(b"STAT")
        return s.recv(100)


def sink_counts(b: Board, msgs: int, nbytes: int) -> None:
    """Wait until the remote's sink has counted ``msgs`` messages, ``nbytes`` bytes in all, never more.

    The socket contract (DESIGN.md, "Endpoint sockets"): "A record written by a
    client is sent to the remote endpoint". It says nothing of the order between
    two connections, so records written on one connection may reach the remote
    after a STAT sent on a newer one: the count is awaited, and one past it fails.
    """
    want = b"%d %d" % (msgs, nbytes)

    def reached() -> bool:
        got = sink_stat(b)
        n, total = map(int, got.split())
        assert n <= msgs and total <= nbytes, f"the sink counted {got!r}, more than {want!r}"
        return got == want

    wait_for(reached, what=f"the sink to count {want!r}")


def test_sigkill_then_resume_keeps_the_remote_session(running: Board) -> None:
    with running.connect("rpmsg-sink") as s:
        for _ in range(10):
            s.send(b"x" * 100)
    sink_counts(running, 10, 1000)
    (daemon,) = [p for p in running.procs.procs if "rprocd.cli.daemon" in " ".join(p.args)]  # type: ignore[arg-type]
    running.procs.stop(daemon, signal.SIGKILL)
    running.procs.daemon(running.dir, running.runtime)
    wait_for(lambda: "resumed the live session" in running.procs.log("rprocd.log"), what="resume")
    running.wait_endpoints()
    with running.connect("rpmsg-client-sample") as s:
        for i in range(100):
            s.send(struct.pack("<I", i))
            assert s.recv(64) == struct.pack("<I", i)
    with running.connect("rpmsg-sink") as s:
        for _ in range(5):
            s.send(b"y" * 10)
    # the remote's sink kept counting: its session was never reset (a reset would count from 0)
    sink_counts(running, 15, 1050)
    assert "resetting" not in running.procs.log("rprocd.log")


def test_clean_stop_resets_and_next_start_attaches_fresh(running: Board) -> None:
    (daemon,) = [p for p in running.procs.procs if "rprocd.cli.daemon" in " ".join(p.args)]  # type: ignore[arg-type]
    assert running.procs.stop(daemon) == 0
    wait_for(lambda: not running.endpoints(), what="sockets removed on exit")
    running.procs.daemon(running.dir, running.runtime)
    running.wait_endpoints()
    assert sink_stat(running) == b"0 0"
    assert "resumed" not in running.procs.log("rprocd.log")
