"""Shared fixtures: real processes on a virtual board in a temporary folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ENDPOINTS = ("rpmsg-client-sample", "rpmsg-sink", "rpmsg-source", "rpmsg-tty")
REPO = Path(__file__).resolve().parent.parent


def wait_for(pred: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    """Poll ``pred`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Procs:
    """Starts processes and makes sure they are gone after the test."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}

    def start(self, *argv: str, log: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "ab") as out:
            p = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT, env=self.env)
        self.procs.append(p)
        return p

    def sim(self, board: Path, *extra: str) -> subprocess.Popen[bytes]:
        return self.start("-m", "rprocd.cli.ctl", "sim", "--board", str(board), *extra, log="sim.log")

    def daemon(self, board: Path, runtime: Path, *extra: str) -> subprocess.Popen[bytes]:
        return self.start(
            "-m", "rprocd.cli.daemon", "--board", str(board), "--runtime-dir", str(runtime), *extra, log="rprocd.log"
        )

    def stop(self, p: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def log(self, name: str) -> str:
        try:
            return (self.tmp / name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    p.close()


class Board:
    """A virtual board with the simulated remote and rprocd on it."""

    def __init__(self, procs: Procs, tmp: Path):
        self.procs = procs
        self.dir = tmp / "board"
        self.runtime = tmp / "run"
        self.ept_dir = self.runtime / "main" / "ept"

    def endpoints(self) -> set[str]:
        try:
            return {p.name for p in self.ept_dir.iterdir()}
        except FileNotFoundError:
            return set()

    def wait_endpoints(self, names: tuple[str, ...] = ENDPOINTS, timeout: float = 20.0) -> None:
        try:
            wait_for(lambda: set(names) <= self.endpoints(), timeout, f"endpoints {names}")
        except AssertionError as e:
            logs = "\n".join(f"--- {n}\n{self.procs.log(n)[-3000:]}" for n in ("sim.log", "rprocd.log"))
            raise AssertionError(f"{e}; present: {sorted(self.endpoints())}\n{logs}") from None

    def connect(self, name: str) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(30)
        s.connect(str(self.ept_dir / name))
        return s


@pytest.fixture
def board(procs: Procs, tmp_path: Path) -> Board:
    return Board(procs, tmp_path)


@pytest.fixture
def running(board: Board) -> Board:
    """Remote first, then rprocd; all four endpoints present."""
    board.procs.sim(board.dir)
    board.procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    return board
