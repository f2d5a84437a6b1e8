"""Measure rprocd's idle cost: ``python3 tests/idle_cost.py [SECONDS]`` (default 10 s per state).

Starts rprocd on a virtual board in a scratch folder and prints, for each
state, its CPU time from ``/proc/<pid>/stat`` (utime + stime, in clock ticks)
and from ``/proc/<pid>/task/*/schedstat`` (nanoseconds), and its context
switches (wake-ups): waiting for a remote, attached and idle, and attached
to a remote that was SIGKILLed.  Every process it starts is stopped by its
pid.  docs/reliability.md quotes its figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.traffic import cpu_ticks as ticks  # noqa: E402


def run_ns(pid: int) -> int:
    return sum(int((t / "schedstat").read_text().split()[0]) for t in Path(f"/proc/{pid}/task").iterdir())


def switches(pid: int) -> int:
    return sum(
        int(line.split()[1])
        for t in Path(f"/proc/{pid}/task").iterdir()
        for line in (t / "status").read_text().splitlines()
        if "ctxt_switches" in line
    )


def window(pid: int, label: str, seconds: float) -> None:
    t0, n0, s0 = ticks(pid), run_ns(pid), switches(pid)
    time.sleep(seconds)
    t1, n1, s1 = ticks(pid), run_ns(pid), switches(pid)
    ms = (n1 - n0) / 1e6
    print(
        f"{label:<42} {t1 - t0:3d} ticks ({os.sysconf('SC_CLK_TCK')}/s)  {ms:6.1f} ms CPU in {seconds:g} s"
        f" = {ms / 10 / seconds:.3f} %   {s1 - s0} context switches"
    )


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="rprocd-idle-") as tmp:
        d = Path(tmp)
        board, runtime = d / "board", d / "run"
        with open(d / "daemon.log", "wb") as dlog, open(d / "sim.log", "wb") as slog:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "rprocd.cli.daemon", "--board", str(board), "--runtime-dir", str(runtime)],
                env=env,
                stdout=dlog,
                stderr=subprocess.STDOUT,
            )
            sim: subprocess.Popen[bytes] | None = None
            try:
                while not (board / "host.sock").exists():
                    time.sleep(0.05)
                time.sleep(1)
                window(daemon.pid, "waiting for a remote", seconds)
                sim = subprocess.Popen(
                    [sys.executable, "-m", "rprocd.cli.ctl", "sim", "--board", str(board)],
                    env=env,
                    stdout=slog,
                    stderr=subprocess.STDOUT,
                )
                while not (runtime / "main" / "ept" / "rpmsg-tty").exists():
                    time.sleep(0.05)
                time.sleep(1)
                window(daemon.pid, "attached, idle", seconds)
                window(sim.pid, "(the simulated remote, attached, idle)", seconds)
                sim.kill()
                sim.wait()
                window(daemon.pid, "attached to a remote that was SIGKILLed", seconds)
            finally:
                for p in (sim, daemon):
                    if p is not None and p.poll() is None:
                        p.terminate()
                        p.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
