"""The reference pair alone (bench/host.c + bench/remote.c), A/B of its variants, counted per message.

``python -m bench.pair [--variants default,early] [--bin OLD=DIR] [--repeats 3]``

Each variant is a pair of binaries and flags: ``default`` (bench/out),
``early`` (the same with ``--early-kick`` on both sides), and any
``--bin NAME=DIR`` (host and remote built elsewhere, e.g. from an older
commit).  Every repeat runs every placement and every variant one after the
other (interleaved, so that a disturbance of the shared machine hits all of
them alike), each mode under perf stat for the host and the remote over the
same window (bench/host.c --ready).  Prints one row per variant, placement
and mode: the figure's median and range over the repeats, and the host's
and the remote's syscalls, context switches and CPU µs per message.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .build import OUT, BuildError, build
from .procs import BenchError, perf_figures, run_counted, set_affinity
from .report import rate, table, us

MODES = ("rtt", "pipe", "sink", "source")


def msgs(mode: str, row: dict[str, Any]) -> int:
    if mode in ("rtt", "pipe"):
        return 2 * int(row.get("n" if mode == "rtt" else "received", 0))
    return int(row.get("sent" if mode == "sink" else "received", 0))


def run_variant(
    bindir: Path, flags: list[str], place: tuple[int, int] | None, duration: float, work: Path
) -> dict[str, dict[str, Any]]:
    """One remote, then the host once per mode; figures and counts per mode."""
    board = work / "board"
    shutil.rmtree(board, ignore_errors=True)
    remote = subprocess.Popen(
        [str(bindir / "remote"), "--board", str(board), "--quiet", *flags], stderr=subprocess.DEVNULL
    )
    out: dict[str, dict[str, Any]] = {}
    try:
        while not (board / "remote.sock").exists():
            if remote.poll() is not None:
                raise BenchError("the remote exited at start")
        if place is not None:
            set_affinity(remote.pid, {place[1]})
        for mode in MODES:
            argv = [str(bindir / "host"), "--board", str(board), "--modes", mode, "--duration", str(duration), *flags]
            if bindir == OUT:
                argv += ["--remote-pid", str(remote.pid)]
            if place is not None:
                argv = ["taskset", "-c", str(place[0]), *argv]
            rows, host, (rem,) = run_counted(argv, 60 + 8 * duration, work, also=[remote.pid])
            row = rows[0]
            if row.get("lost") or row.get("bad") or row.get("exit"):
                raise BenchError(f"{mode}: {row}")
            n = msgs(mode, row)
            out[mode] = {
                "figure": float(row["p50_us"] if mode == "rtt" else row["msgs_per_s"]),
                "host": perf_figures(host, n),
                "remote": perf_figures(rem, n),
            }
    finally:
        remote.terminate()
        remote.wait(10)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pair", description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="default,early", help="comma-separated: default, early, or --bin names")
    p.add_argument("--bin", action="append", default=[], metavar="NAME=DIR", help="a variant's host and remote")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--duration", type=float, default=0.5)
    p.add_argument("--placements", default="free,one,own", help="free, one (one CPU), own (remote on the other)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    try:
        build(verbose=False)
    except BuildError as e:
        print(e, file=sys.stderr)
        return 1
    dirs = {"default": (OUT, []), "early": (OUT, ["--early-kick"])}
    for spec in args.bin:
        name, _, d = spec.partition("=")
        dirs[name] = (Path(d), [])
    variants = [v for v in args.variants.split(",") if v]
    cpus = sorted(os.sched_getaffinity(0))
    places: dict[str, tuple[int, int] | None] = {"free": None, "one": (cpus[0], cpus[0])}
    if len(cpus) > 1:
        places["own"] = (cpus[0], cpus[1])
    wanted = [pl for pl in args.placements.split(",") if pl in places]
    work = Path(tempfile.mkdtemp(prefix="rprocd-pair-"))
    runs: dict[tuple[str, str], list[dict[str, dict[str, Any]]]] = {}
    try:
        for i in range(args.repeats):
            for pl in wanted:
                for v in variants:
                    print(f"pair: repeat {i + 1}, {pl}, {v}", file=sys.stderr, flush=True)
                    d, flags = dirs[v]
                    runs.setdefault((v, pl), []).append(run_variant(d, flags, places[pl], args.duration, work))
    except BenchError as e:
        print(f"pair: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for pl in wanted:
        for mode in MODES:
            for v in variants:
                reps = [r[mode] for r in runs[(v, pl)]]
                figs = [r["figure"] for r in reps]
                fmt = us if mode == "rtt" else rate
                med = statistics.median(figs)

                def per(side: str, key: str, reps: list[dict[str, Any]] = reps) -> str:
                    return f"{statistics.median(float(r[side][key]) for r in reps):.3f}"

                rows.append(
                    [
                        pl,
                        mode,
                        v,
                        fmt(med),
                        f"{fmt(min(figs))} .. {fmt(max(figs))}",
                        per("host", "syscalls_per_msg"),
                        per("host", "ctx_switches_per_msg"),
                        per("host", "cpu_us_per_msg"),
                        per("remote", "syscalls_per_msg"),
                        per("remote", "ctx_switches_per_msg"),
                        per("remote", "cpu_us_per_msg"),
                    ]
                )
    header = ["placement", "mode", "variant", "median", "range", "host sc/msg", "host cs/msg", "host us/msg"]
    header += ["remote sc/msg", "remote cs/msg", "remote us/msg"]
    print(table(header, rows, text=3))
    print(
        "  (per rpmsg message, an echo is two; medians over the repeats; perf stat over each mode's window; "
        "placements: one = host and remote on one CPU, own = the remote on the other CPU)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({f"{v}/{pl}": r for (v, pl), r in runs.items()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
