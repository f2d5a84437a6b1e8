"""A/B of daemon variants through the same C remote and clients, interleaved, counted per message.

``python -m bench.ab --variant old=DIR --variant new=. [--variant nosup=.:RPROCD_AB_NO_SUPPRESS=1]
[--modes pipe,sink,source,rtt] [--placements one,free,own] [--repeats 3] [--seconds 0.5]``

A variant is ``NAME=TREE[:VAR=VALUE,...]``: the daemon runs from TREE's ``rprocd``
(``PYTHONPATH=TREE``, e.g. ``git worktree add /tmp/old HEAD~1``) with those
environment variables.  Every repeat starts, for each variant in turn, a fresh
C remote and daemon and runs every placement and mode (interleaved, so that a
disturbance of the shared machine hits every variant alike).  Prints per
variant, placement and mode the median and range of msgs/s (RTT: p50 µs) and
the median syscalls, context switches and CPU µs per message of the daemon
(perf stat -p over the clients' window), and the ratio of each variant's
median to the first variant's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from .__main__ import msgs_through_daemon, summarize
from .build import build
from .procs import BenchError, Rig, run_clients

MODES = {
    "rtt": ("rpmsg-client-sample", ["--size", "16"]),
    "pipe": ("rpmsg-client-sample", ["--size", "16"]),
    "sink": ("rpmsg-sink", ["--size", "496"]),
    "source": ("rpmsg-source", ["--size", "496", "--chunk", "5000"]),
}


def parse_variant(text: str) -> tuple[str, Path, dict[str, str]]:
    name, _, rest = text.partition("=")
    tree, _, envs = rest.partition(":")
    env = dict(kv.split("=", 1) for kv in envs.split(",") if kv)
    return name, Path(tree).resolve(), env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    p.add_argument("--variant", action="append", required=True, help="NAME=TREE[:VAR=VALUE,...]")
    p.add_argument("--modes", default="pipe,sink,source,rtt")
    p.add_argument("--placements", default="one,free,own")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=0.5)
    args = p.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant]
    modes = [m for m in args.modes.split(",") if m]
    cpus = sorted(os.sched_getaffinity(0))
    a, b = cpus[0], cpus[-1]
    places = {"one": ({a}, {a}, a), "free": None, "own": ({a}, {b}, a)}
    placements = [x for x in args.placements.split(",") if x]
    bins = build()
    work = Path(tempfile.mkdtemp(prefix="rprocd-ab-"))
    # results[variant][placement][mode] = list of figures
    res: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    lost = 0
    everywhere = os.sched_getaffinity(0)
    for rep in range(args.repeats):
        for name, tree, env in variants:
            print(f"ab: repeat {rep + 1}, {name}", file=sys.stderr, flush=True)
            with Rig(work / name, "c", bins, cwd=tree) as rig:
                rig.env = {**os.environ, **env, "PYTHONPATH": str(tree)}
                rig.env.pop("RPROCD_RUNTIME_DIR", None)
                rig.start_remote()
                rig.start_daemon()
                for pl in placements:
                    place = places[pl]
                    if place is not None:
                        rig.place(place[0], place[1])
                    for mode in modes:
                        ept, opts = MODES[mode]
                        if place is not None:
                            opts = [*opts, "--cpu", str(place[2])]
                        run = run_clients(
                            bins["client"],
                            [(mode, rig.ept(ept), [*opts, "--duration", str(args.seconds)])],
                            rig,
                            timeout=30 + 4 * args.seconds,
                            msgs_of=msgs_through_daemon(mode),
                        )
                        if run.failures:
                            raise BenchError(f"{name} {pl} {mode}: {run.failures}")
                        fig = summarize(mode, run)
                        lost += int(fig.get("lost", 0)) + int(fig.get("bad", 0))
                        if mode == "sink" and fig.get("counted") != fig.get("n"):
                            lost += 1
                        res.setdefault(name, {}).setdefault(pl, {}).setdefault(mode, []).append(fig)
                    if place is not None:
                        rig.place(everywhere, everywhere)
    base = variants[0][0]
    print(f"{'variant':8} {'place':5} {'mode':6} {'median':>10} {'range':>21} {'ratio':>6} "
          f"{'sys/msg':>7} {'cs/msg':>6} {'us/msg':>6} {'us ratio':>8}")  # fmt: skip
    for pl in placements:
        for mode in modes:
            for name, _tree, _env in variants:
                figs = res[name][pl][mode]
                key = "p50_us" if mode == "rtt" else "msgs_per_s"
                vals = [float(f[key]) for f in figs]
                med = statistics.median(vals)
                bvals = [float(f[key]) for f in res[base][pl][mode]]
                ratio = med / statistics.median(bvals)

                def per(k: str, figs: list[dict[str, Any]] = figs) -> float:
                    return statistics.median(float(f["perf"].get(k, 0)) for f in figs)

                us = per("cpu_us_per_msg")
                bus = statistics.median(float(f["perf"].get("cpu_us_per_msg", 0)) for f in res[base][pl][mode])
                print(
                    f"{name:8} {pl:5} {mode:6} {med:10.1f} {min(vals):10.1f}-{max(vals):10.1f} {ratio:6.2f} "
                    f"{per('syscalls_per_msg'):7.3f} {per('ctx_switches_per_msg'):6.3f} {us:6.2f} {us / bus:8.2f}"
                )
    print(f"lost or wrong: {lost}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
