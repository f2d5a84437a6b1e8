"""start / stop / restart of the remote through the control socket (opt-in lifecycle).

The "core" here is the simulated remote process: stopping it is a SIGKILL (a
core held in reset stops dead, its table left as it was), starting it is a new
process (a core coming out of reset boots and writes its table afresh).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from rprocd.app import RemoteSpec, serve
from rprocd.backends.sim import open_board
from rprocd.client import AsyncControl, ControlError
from rprocd.control import factory as control_factory
from rprocd.layout import TCC807X
from tests.conftest import ENDPOINTS, Board, Procs


class SimCore:
    """A Lifecycle whose core is a simulated-remote process."""

    def __init__(self, procs: Procs, board: Path):
        self.procs, self.board = procs, board
        self.proc: subprocess.Popen[bytes] | None = None
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")
        self.proc = self.procs.sim(self.board)

    def stop(self) -> None:
        self.calls.append("stop")
        if self.proc is not None:
            self.procs.stop(self.proc, signal.SIGKILL)

    async def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        pass


async def until(pred, what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_stop_start_restart(procs: Procs, tmp_path: Path) -> None:
    board, runtime = tmp_path / "board", tmp_path / "run"
    ept = runtime / "main" / "ept"
    core = SimCore(procs, board)
    core.start()

    async def lifecycle() -> SimCore:
        return core

    def endpoints() -> set[str]:
        return {p.name for p in ept.iterdir()} if ept.exists() else set()

    async def main() -> None:
        stop = asyncio.Event()
        spec = RemoteSpec(
            "main", TCC807X, lambda: open_board(str(board), TCC807X), open_lifecycle=lifecycle, reset_wait=0.05
        )
        task = asyncio.create_task(
            serve([spec], runtime, extensions=[control_factory(runtime / "control")], stop_event=stop)
        )
        await until(lambda: set(ENDPOINTS) <= endpoints(), "endpoints")
        c = await AsyncControl.connect(runtime)
        try:
            r = await c.request("lifecycle", remote="main", action="stop")
            assert r["state"] == "offline"
            await until(lambda: not endpoints(), "endpoints removed on stop")
            (status,) = (await c.request("status"))["remotes"]
            assert status["state"] == "offline"
            await c.request("lifecycle", remote="main", action="start")
            await until(lambda: set(ENDPOINTS) <= endpoints(), "endpoints after start")
            await c.request("lifecycle", remote="main", action="restart")
            await until(lambda: set(ENDPOINTS) <= endpoints(), "endpoints after restart")
            try:
                await c.request("lifecycle", remote="main", action="explode")
                raise AssertionError("a bad action was accepted")
            except ControlError as e:
                assert "start" in str(e)
        finally:
            await c.aclose()
            stop.set()
            await task

    asyncio.run(main())
    assert core.calls == ["start", "stop", "start", "stop", "start"]


def test_rprocctl_stop_without_a_lifecycle_is_one_clear_line(running: Board) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rprocd.cli.ctl", "--runtime-dir", str(running.runtime), "stop"],
        capture_output=True,
        text=True,
        env=running.procs.env,
        timeout=30,
    )
    assert out.returncode == 1
    assert out.stderr.strip() == "rprocctl stop: no lifecycle configured for main ([remote.main.lifecycle])"
