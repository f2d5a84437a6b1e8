"""Run rprocd with the control socket, PTY and stream exports, and a rig for end-to-end tests.

As a program (what the tests spawn)::

    python tests/launch_daemon.py --board DIR --runtime-dir DIR [--pty EPT]... [--stream EPT]...

It is the daemon of ``rprocd --board DIR`` (tcc807x layout, virtual board)
plus the extensions of issue 8, until the lead wires them into ``rprocd``.

As a module: :class:`Rig` starts the simulated remote and this daemon as real
processes in a temporary folder, waits (with a deadline) until the remote is
attached with its endpoints, and stops both afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIM_ENDPOINTS = ("rpmsg-client-sample", "rpmsg-tty", "rpmsg-sink", "rpmsg-source")


def main(argv: list[str] | None = None) -> int:
    from rprocd import control
    from rprocd.app import RemoteSpec, serve
    from rprocd.backends.sim import open_board
    from rprocd.exports import pty, stream
    from rprocd.layout import TCC807X

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--board", required=True)
    p.add_argument("--runtime-dir", required=True)
    p.add_argument("--pty", action="append", default=[], metavar="EPT", help="export EPT as a pty too")
    p.add_argument("--stream", action="append", default=[], metavar="EPT", help="export EPT as a stream socket too")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    runtime = Path(args.runtime_dir)
    layout = TCC807X
    spec = RemoteSpec(layout.name, layout, lambda: open_board(args.board, layout))
    ptys, streams = set(args.pty), set(args.stream)
    return asyncio.run(
        serve(
            [spec],
            runtime,
            extensions=[
                control.factory(runtime / "control"),
                pty.factory(runtime, lambda host, name: name in ptys),
                stream.factory(runtime, lambda host, name: name in streams),
            ],
        )
    )


# -- the rig for tests ------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (OSError, ValueError, KeyError) as e:
            last_error = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")
        time.sleep(interval)


def control_request(runtime_dir: Path, cmd: str, **params: Any) -> dict[str, Any]:
    """One raw control-socket request (no client library: the tests check the wire format too)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(runtime_dir / "control"))
        s.sendall(json.dumps({"v": 1, "id": 1, "cmd": cmd, **params}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply: dict[str, Any] = json.loads(buf)
    return reply


class Rig:
    """A simulated remote and a daemon, as processes, in ``tmp``."""

    def __init__(self, tmp: Path, *, pty: Iterable[str] = (), stream: Iterable[str] = ()):
        self.tmp = Path(tmp)
        self.board = self.tmp / "board"
        self.runtime = self.tmp / "run"
        self.pty, self.stream = list(pty), list(stream)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 (kept open for the child)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        log.close()
        self.procs.append((name, proc))
        return proc

    def start(self, timeout: float = 20.0) -> Rig:
        self.board.mkdir(parents=True, exist_ok=True)
        self._spawn("sim", [sys.executable, "-m", "rprocd.cli.ctl", "sim", "--board", str(self.board)])
        argv = [sys.executable, str(Path(__file__)), "--board", str(self.board), "--runtime-dir", str(self.runtime)]
        for e in self.pty:
            argv += ["--pty", e]
        for e in self.stream:
            argv += ["--stream", e]
        self._spawn("daemon", argv)
        try:
            wait_for("the remote to attach with its endpoints", self._ready, timeout)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.logs()}") from None
        return self

    def restart_sim(self, timeout: float = 20.0) -> None:
        """Kill the simulated remote (as a crash would) and start it again; wait until it is attached again."""
        attaches = control_request(self.runtime, "status")["result"]["remotes"][0]["attach_count"]
        for i, (name, proc) in enumerate(self.procs):
            if name == "sim":
                proc.kill()
                proc.wait(timeout=5)
                del self.procs[i]
                break
        self._spawn("sim", [sys.executable, "-m", "rprocd.cli.ctl", "sim", "--board", str(self.board)])

        def reattached() -> bool:
            st = control_request(self.runtime, "status")["result"]["remotes"][0]
            return st["attach_count"] > attaches and self._ready()

        wait_for("the restarted remote to attach again", reattached, timeout)

    def _ready(self) -> bool:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}\n{self.logs()}")
        if not (self.runtime / "control").exists():
            return False
        eps = control_request(self.runtime, "endpoints")["result"]["endpoints"]
        names = {e["name"] for e in eps}
        return all(n in names for n in SIM_ENDPOINTS)

    def logs(self) -> str:
        out = []
        for name, _ in self.procs:
            try:
                text = (self.tmp / f"{name}.log").read_text(errors="replace")
            except FileNotFoundError:
                text = ""
            out.append(f"--- {name} log (last 3000 chars) ---\n{text[-3000:]}")
        return "\n".join(out)

    def ctl(self, *args: str, input: bytes | None = None, timeout: float = 20.0) -> subprocess.CompletedProcess[bytes]:
        """Run ``rprocctl --runtime-dir <rig> ARGS``."""
        argv = [sys.executable, "-m", "rprocd.cli.ctl", "--runtime-dir", str(self.runtime), *args]
        return subprocess.run(argv, input=input, capture_output=True, timeout=timeout, env=self.env)

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> Rig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
