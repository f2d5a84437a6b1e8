"""rprocd benchmarks: ``python -m bench [--quick] [--profile DIR] ...`` (``make bench``).

Starts a remote, the daemon and load generators on a virtual board in a
scratch folder, and prints a readable table and then one JSON object (one
line; also written to ``bench/out/last.json``).  See ``bench/README.md``
for what each figure means.  Exit status: 0 when every check passed
(nothing lost, nothing out of order, every process behaved), 1 otherwise.
Targets that are missed are reported, not failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .build import OUT, BuildError, build
from .procs import (
    REPO,
    BenchError,
    ClientRun,
    ProcSample,
    Rig,
    machine_busy_pct,
    machine_ticks,
    perf_command,
    perf_figures,
    run_clients,
    run_counted,
    run_json,
    set_affinity,
)
from .report import render

PHASES = ("raw", "limit", "c", "idle", "py", "scaling")
ONE_CPU, SPLIT = "_one_cpu", "_split"  # placements of the C-remote figures (suffixes of their keys)
PLACEMENTS = (("", "free"), (ONE_CPU, "one CPU"), (SPLIT, "own CPU"))
CLIENTS_NOTE = (
    "C load generators (bench/out/client from bench/client.c): one process per client, blocking SOCK_SEQPACKET "
    "sockets, a sender thread and a receiver thread for pipelined echo"
)
LIMIT_NOTE = (
    "the reference host bench/out/host (bench/host.c) driving the rings directly, same remote, same placements: "
    "no rprocd, no sockets; counted under perf stat (start-up included)"
)


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs."""

    main_s: float  # each of the main four figures through the daemon
    limit_s: float  # each figure of the remote alone
    raw_s: float  # each raw ping-pong pair
    idle_s: float
    scale_s: float
    endpoints: tuple[int, ...]
    clients: tuple[int, ...]
    repeats: int = 1  # main, limit and raw figures: the best of this many runs


FULL = Plan(0.6, 0.4, 0.4, 10.0, 0.8, (1, 8, 64), (1, 8, 32), repeats=3)
QUICK = Plan(0.25, 0.2, 0.2, 1.0, 0.2, (1, 8, 64), (1, 8, 32), repeats=1)


def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# -- aggregation ------------------------------------------------------------------------------------


def echoes(results: Sequence[dict[str, Any]], mode: str) -> int:
    return sum(int(r.get("n" if mode == "rtt" else "received", 0)) for r in results)


def lost_and_bad(results: Sequence[dict[str, Any]]) -> tuple[int, int]:
    return sum(int(r.get("lost", 0)) for r in results), sum(int(r.get("bad", 0)) for r in results)


def span(results: Sequence[dict[str, Any]]) -> float:
    t0 = min(float(r["t0"]) for r in results)
    t1 = max(float(r["t1"]) for r in results)
    return max(t1 - t0, 1e-9)


def summarize(mode: str, run: ClientRun) -> dict[str, Any]:
    """One figure from one or many clients' results."""
    rs = run.results
    lost, bad = lost_and_bad(rs)
    out: dict[str, Any] = {"clients": len(rs), "lost": lost, "bad": bad}
    if mode == "rtt":
        n = echoes(rs, "rtt")
        p50s = sorted(float(r["p50_us"]) for r in rs)
        out.update(
            n=n,
            p50_us=p50s[len(p50s) // 2] if p50s else 0.0,
            p99_us=max((float(r["p99_us"]) for r in rs), default=0.0),
            max_us=max((float(r["max_us"]) for r in rs), default=0.0),
            mean_us=round(sum(float(r["mean_us"]) * int(r["n"]) for r in rs) / n, 2) if n else 0.0,
            round_trips_per_s=round(n / span(rs), 1) if rs else 0.0,
        )
    elif mode == "pipe":
        n = echoes(rs, "pipe")
        out.update(n=n, msgs_per_s=round(n / span(rs), 1) if rs else 0.0)
    else:
        key = "sent" if mode == "sink" else "received"
        n = sum(int(r.get(key, 0)) for r in rs)
        size = int(rs[0]["size"]) if rs else 0
        rate = n / span(rs) if rs else 0.0
        out.update(n=n, size=size, msgs_per_s=round(rate, 1), mb_per_s=round(rate * size / 1e6, 2))
        if mode == "sink":
            out["counted"] = sum(int(r.get("counted", 0)) for r in rs)
    if mode in ("rtt", "pipe") and rs:
        per = [int(r.get("n" if mode == "rtt" else "received", 0)) for r in rs]
        out["per_client_min"], out["per_client_max"] = min(per), max(per)
    out["daemon"] = run.daemon
    out["perf"] = run.perf  # the daemon's syscalls, context switches, task-clock (perf stat -p)
    out["remote"] = run.remote
    out["machine_busy_pct"] = run.machine_busy_pct
    out["wall_s"] = run.wall_s
    return out


def figure_of(mode: str, fig: dict[str, Any]) -> float:
    """The number a repeat is judged by: p50 for a round trip (lower is better), else msgs/s."""
    return float(fig["p50_us"] if mode == "rtt" else fig["msgs_per_s"])


def best_of(mode: str, figs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The best repeat (the least disturbed by whatever else the machine did), with every repeat's figure."""
    values = [figure_of(mode, f) for f in figs]
    pick = values.index(min(values) if mode == "rtt" else max(values))
    best = dict(figs[pick])
    best["repeats"] = values
    return best


def reference_msgs(mode: str, row: dict[str, Any]) -> int:
    """rpmsg messages the reference host moved in one mode (an echo is two, as through the daemon)."""
    if mode == "rtt":
        return 2 * int(row.get("n", 0))
    if mode == "pipe":
        return 2 * int(row.get("received", 0))
    return int(row.get("sent" if mode == "sink" else "received", 0))


def msgs_through_daemon(mode: str) -> Callable[[list[dict[str, Any]]], int]:
    """rpmsg messages that crossed the daemon (an echo is two: one each way)."""

    def count(results: list[dict[str, Any]]) -> int:
        if mode in ("rtt", "pipe"):
            return 2 * echoes(results, mode)
        key = "sent" if mode == "sink" else "received"
        return sum(int(r.get(key, 0)) for r in results)

    return count


# -- the phases -------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, plan: Plan, bins: dict[str, Path], work: Path):
        self.args, self.plan, self.bins, self.work = args, plan, bins, work
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.peak_rss_mb = 0.0
        self.result: dict[str, Any] = {}
        cpus = sorted(os.sched_getaffinity(0))
        self.cpu_a = cpus[0]
        self.cpu_b: int | None = cpus[1] if len(cpus) > 1 else None

    def check(self, what: str, fig: dict[str, Any]) -> None:
        if fig.get("lost") or fig.get("bad"):
            self.failures.append(f"{what}: {fig.get('lost')} lost, {fig.get('bad')} wrong")

    def rig(self, name: str, remote: str, extra: int = 0, profile_name: str = "daemon") -> Rig:
        prof = Path(self.args.profile).resolve() if self.args.profile else None
        return Rig(
            self.work / name,
            remote,
            self.bins,
            extra_echo=extra,
            profile_dir=prof,
            profiler=self.args.profiler,
            profile_name=profile_name,
        )

    def raw(self) -> dict[str, Any]:
        say("raw wake-up round trip: C pair, Python pair; on one CPU and across two")
        d = str(self.plan.raw_s)
        out: dict[str, Any] = {}
        places = [("", f"{self.cpu_a},{self.cpu_a}")]
        if self.cpu_b is not None:
            places.append(("_cross", f"{self.cpu_a},{self.cpu_b}"))
        for suffix, cpus in places:
            cs, pys = [], []
            for _ in range(self.plan.repeats):
                cs.append(
                    run_json([str(self.bins["pingpong"]), str(self.work), "--duration", d, "--cpus", cpus], 60)[0]
                )
                pys.append(
                    run_json(
                        [sys.executable, "-m", "bench.pingpong", str(self.work), "--duration", d, "--cpus", cpus],
                        60,
                        cwd=REPO,
                    )[0]
                )
            out[f"c_pair{suffix}"] = best_of("rtt", cs) | {"cpus": cpus}
            out[f"py_pair{suffix}"] = best_of("rtt", pys) | {"cpus": cpus}
        return out

    def limit(self, kind: str) -> dict[str, Any]:
        """The reference host (bench/host.c) on the same remote: each mode, per placement, under perf stat."""
        say(f"reference host (bench/host.c) on the {kind} remote, without rprocd")
        a, b = self.cpu_a, self.cpu_b
        # placement suffix -> (host CPU, remote CPUs), or None: the scheduler's choice (as main_four)
        placements: list[tuple[str, tuple[int, set[int]] | None]] = [("", None)]
        if kind == "c":
            placements.append((ONE_CPU, (a, {a})))
            if b is not None:
                placements.append((SPLIT, (a, {b})))
        out: dict[str, Any] = {}
        with self.rig(f"limit-{kind}", kind) as rig:
            rig.start_remote()
            assert rig.remote is not None
            r0 = ProcSample.of(rig.remote.pid)
            everywhere = os.sched_getaffinity(0)
            for suffix, place in placements:
                if place is not None:
                    set_affinity(rig.remote.pid, place[1])
                for mode in ("rtt", "pipe", "sink", "source"):
                    figs = []
                    for _ in range(self.plan.repeats):  # each run attaches afresh (the remote sees a new session)
                        argv = [str(self.bins["host"]), "--board", str(rig.board), "--modes", mode]
                        argv += ["--remote-pid", str(rig.remote.pid)]
                        argv += ["--duration", str(self.plan.limit_s)]
                        if place is not None:  # taskset execs the host: the same process
                            argv = ["taskset", "-c", str(place[0]), *argv]
                        rows, counts, _ = run_counted(argv, 60 + 8 * self.plan.limit_s, self.work)
                        for r in rows:
                            if r.get("exit") or r.get("lost") or r.get("bad"):
                                self.failures.append(f"reference host ({kind}) {mode}{suffix}: {r}")
                        row = next((r for r in rows if r.get("mode") == mode), None)
                        if row is None:
                            self.failures.append(f"reference host ({kind}) {mode}{suffix}: no result")
                            continue
                        row["perf"] = perf_figures(counts, reference_msgs(mode, row))
                        if row.get("timeouts"):  # a busy machine (the remote did not run), or a lost wake-up
                            self.notes.append(
                                f"reference host {kind} {mode}{suffix}: {row['timeouts']} wake-ups by its 100 ms "
                                f"timeout, {row.get('lost_wakeups', 0)} of them lost wake-ups"
                            )
                        if place is not None:
                            row["placement"] = {"host_cpu": place[0], "remote_cpu": min(place[1])}
                        figs.append(row)
                    if figs:
                        out[mode + suffix] = best_of(mode, figs)
                if place is not None:
                    set_affinity(rig.remote.pid, everywhere)
            r1 = ProcSample.of(rig.remote.pid)
        out["remote_cpu_s"] = round(r1.cpu_s - r0.cpu_s, 3)
        if set(out) < {"rtt", "pipe", "sink", "source"}:
            self.failures.append(f"reference host ({kind}): only {sorted(out)} ran")
        return out

    def main_four(self, kind: str, idle: bool) -> dict[str, Any]:
        name = "daemon" if kind == "c" else "daemon-py"
        say(f"through rprocd: {kind} remote (echo round trip, pipelined echo, sink, source)")
        d = self.plan.main_s
        out: dict[str, Any] = {}
        with self.rig(f"main-{kind}", kind, profile_name=name) as rig:
            rig.start_remote()
            rig.start_daemon()
            client = self.bins["client"]
            a, b = self.cpu_a, self.cpu_b
            modes = [
                ("rtt", "rpmsg-client-sample", ["--size", "16"]),
                ("pipe", "rpmsg-client-sample", ["--size", "16"]),
                ("sink", "rpmsg-sink", ["--size", "496"]),
                ("source", "rpmsg-source", ["--size", "496", "--chunk", "5000"]),
            ]
            # placement suffix -> (daemon CPUs, remote CPUs, client CPU), or None: the scheduler's choice
            placements: list[tuple[str, tuple[set[int], set[int], int] | None]] = [("", None)]
            if kind == "c":
                placements.append((ONE_CPU, ({a}, {a}, a)))
                if b is not None:
                    placements.append((SPLIT, ({a}, {b}, a)))
            everywhere = os.sched_getaffinity(0)
            for suffix, place in placements:
                if place is not None:
                    rig.place(place[0], place[1])
                for mode, ept, opts in modes:
                    if place is not None:
                        opts = [*opts, "--cpu", str(place[2])]
                    figs = []
                    for _ in range(self.plan.repeats):
                        run = run_clients(
                            client,
                            [(mode, rig.ept(ept), [*opts, "--duration", str(d)])],
                            rig,
                            timeout=30 + 4 * d,
                            msgs_of=msgs_through_daemon(mode),
                        )
                        what = f"{kind} remote {mode}{suffix}"
                        self.failures += [f"{what}: {f}" for f in run.failures]
                        fig = summarize(mode, run)
                        self.check(what, fig)
                        if mode == "sink" and fig.get("counted") != fig.get("n"):
                            self.failures.append(f"{what}: sent {fig.get('n')}, the sink counted {fig['counted']}")
                        if place is not None:
                            fig["placement"] = {"daemon_cpu": a, "remote_cpu": min(place[1]), "client_cpu": a}
                        figs.append(fig)
                    out[mode + suffix] = best_of(mode, figs)
                if place is not None:
                    rig.place(everywhere, everywhere)
            if idle:
                out["idle"] = self.idle(rig)
            self.track_rss(rig)
            self.notes += rig.notes
        return out

    def idle(self, rig: Rig) -> dict[str, Any]:
        assert rig.daemon is not None and rig.remote is not None
        say(f"idle daemon: {self.plan.idle_s:g} s")
        time.sleep(0.5)  # let the last clients' disconnects settle
        d0, r0 = ProcSample.of(rig.daemon.pid), ProcSample.of(rig.remote.pid)
        time.sleep(self.plan.idle_s)
        d1, r1 = ProcSample.of(rig.daemon.pid), ProcSample.of(rig.remote.pid)
        wall = d1.t - d0.t
        return {
            "seconds": round(wall, 2),
            "daemon_cpu_pct": round(100 * (d1.cpu_s - d0.cpu_s) / wall, 3),
            "daemon_cpu_pct_schedstat": round(100 * (d1.run_ns - d0.run_ns) / 1e9 / wall, 4),
            "daemon_wakeups_per_s": round((d1.vcsw - d0.vcsw) / wall, 1),
            "remote_cpu_pct": round(100 * (r1.cpu_s - r0.cpu_s) / wall, 3),
            "rss_mb": round(d1.rss_kb / 1024, 1),
            "peak_rss_mb": round(d1.hwm_kb / 1024, 1),
        }

    def track_rss(self, rig: Rig) -> None:
        if rig.daemon is not None and rig.daemon.poll() is None:
            self.peak_rss_mb = max(self.peak_rss_mb, ProcSample.of(rig.daemon.pid).hwm_kb / 1024)

    def scaling(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        d = self.plan.scale_s
        for e in self.plan.endpoints:
            say(f"scaling: {e} echo endpoint(s) x {', '.join(map(str, self.plan.clients))} clients")
            with self.rig(f"scale-{e}", "c", extra=e, profile_name=f"daemon-scale-{e}") as rig:
                rig.start_remote()
                rig.start_daemon(timeout=60)
                # All on one CPU: every wake-up a context switch, so the cost per message is the
                # daemon's software and not where the scheduler put 34 processes (see the README).
                a = self.cpu_a
                rig.place({a}, {a})
                for c in self.plan.clients:
                    per_ept = [0] * e
                    for i in range(c):
                        per_ept[i % e] += 1
                    row: dict[str, Any] = {"endpoints": e, "clients": c, "fanout": max(per_ept), "cpu": a}
                    for mode in ("rtt", "pipe"):
                        specs = [
                            (
                                mode,
                                rig.ept(f"bench-echo-{i % e}"),
                                ["--size", "16", "--tag", str(i), "--duration", str(d), "--cpu", str(a)],
                            )
                            for i in range(c)
                        ]
                        run = run_clients(
                            self.bins["client"], specs, rig, timeout=60 + 4 * d, msgs_of=msgs_through_daemon(mode)
                        )
                        self.failures += [f"scaling {e}x{c} {mode}: {f}" for f in run.failures]
                        fig = summarize(mode, run)
                        self.check(f"scaling {e} endpoints x {c} clients {mode}", fig)
                        # every echo goes to every client of its endpoint (the socket contract)
                        deliveries = sum(
                            int(r.get("n" if mode == "rtt" else "received", 0)) * per_ept[i % e]
                            for i, r in enumerate(run.results)
                        )
                        fig["deliveries"] = deliveries
                        cpu = float(run.daemon.get("cpu_s", 0.0))
                        fig["daemon_us_per_delivery"] = round(cpu / deliveries * 1e6, 2) if deliveries else None
                        row[mode] = fig
                    rows.append(row)
                self.track_rss(rig)
                self.notes += rig.notes
        return rows

    def run(self, phases: set[str]) -> dict[str, Any]:
        t0 = time.monotonic()
        res: dict[str, Any] = {
            "mode": "quick" if self.args.quick else "full",
            "machine": machine(),
            "clients": CLIENTS_NOTE,
            "limit_method": LIMIT_NOTE,
            "plan": vars(self.plan) | {"endpoints": list(self.plan.endpoints), "clients": list(self.plan.clients)},
        }
        a = machine_ticks()
        time.sleep(1.0 if not self.args.quick else 0.3)
        res["machine"]["busy_before_pct"] = busy = machine_busy_pct(a, machine_ticks())
        if busy > 15:
            self.notes.append(
                f"the machine was {busy} % busy before the run (other work on it): every figure is noisier"
            )
            say(self.notes[-1])
        if "raw" in phases:
            res["raw"] = self.raw()
        res["limit"] = {k: self.limit(k) for k in ("c", "py") if "limit" in phases and (k == "c" or "py" in phases)}
        res["daemon"] = {}
        if "c" in phases:
            res["daemon"]["c"] = self.main_four("c", idle="idle" in phases)
        if "py" in phases:
            res["daemon"]["py"] = self.main_four("py", idle=False)
        if "scaling" in phases:
            res["scaling"] = self.scaling()
        res["peak_rss_mb"] = round(self.peak_rss_mb, 1)
        res["elapsed_s"] = round(time.monotonic() - t0, 1)
        res["failures"] = self.failures
        res["notes"] = self.notes
        res["lost"] = count_lost(res)
        res["ok"] = not self.failures
        return res


def count_lost(res: dict[str, Any]) -> int:
    n = 0
    for figs in res.get("daemon", {}).values():
        for mode in ("rtt", "pipe", "sink", "source"):
            n += int(figs.get(mode, {}).get("lost", 0) or 0)
    for row in res.get("scaling", []):
        for mode in ("rtt", "pipe"):
            n += int(row.get(mode, {}).get("lost", 0) or 0)
    for figs in res.get("limit", {}).values():
        for mode in ("rtt", "pipe", "sink", "source"):
            n += max(int(figs.get(mode, {}).get("lost", 0) or 0), 0)
    return n


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "compiler": os.environ.get("CC", "gcc"),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short runs (CI: checks that it works, not how fast)")
    p.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all)",
    )
    p.add_argument("--seconds", type=float, help="override how long each main figure runs")
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="record the daemon's profile into DIR: daemon.svg for the C-remote run, daemon-py.svg and "
        "daemon-scale-E.svg for the others (.prof / .html with --profiler)",
    )
    p.add_argument(
        "--profiler",
        choices=("py-spy", "cprofile", "pyinstrument"),
        default="py-spy",
        help="py-spy record --pid (flame graph .svg, default), python -m cProfile (.prof) or pyinstrument (.html)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the JSON object to FILE")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, boards)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    unknown = phases - set(PHASES)
    if unknown:
        print(f"bench: unknown phases {sorted(unknown)} (known: {', '.join(PHASES)})", file=sys.stderr)
        return 2
    try:
        perf_command()  # a required tool: the per-message counts are what the bench is for
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    plan = QUICK if args.quick else FULL
    if args.seconds:
        plan = Plan(**(vars(plan) | {"main_s": args.seconds}))
    say("building the C programs (gcc -O2 -Wall -Wextra)")
    try:
        bins = build()
    except BuildError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="rprocd-bench-"))
    bench = Bench(args, plan, bins, work)
    try:
        res = bench.run(phases)
    except (BenchError, OSError) as e:
        print(f"bench: {e}", file=sys.stderr)
        print(f"bench: scratch folder kept: {work}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bench: interrupted; scratch folder kept: {work}", file=sys.stderr)
        return 130
    if args.keep:
        res["scratch"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    if args.profile:
        res["profile_dir"] = str(Path(args.profile).resolve())
    res["targets"] = targets(res)
    print(render(res))
    line = json.dumps(res, separators=(",", ":"))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "last.json").write_text(line + "\n")
    if args.json:
        Path(args.json).write_text(line + "\n")
    print(line)
    return 0 if res["ok"] else 1


# -- targets ----------------------------------------------------------------------------------------


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target beside its figures: C remote (the daemon is what is measured), per placement.

    ``values``/``results`` are keyed by placement: ``free`` (the scheduler's
    choice), ``one CPU`` (client, daemon, remote pinned together) and ``own
    CPU`` (the remote on the other CPU); ``pass`` is the free placement's
    result where there is one, else the only one there is.
    """
    out: list[dict[str, Any]] = []
    c = res.get("daemon", {}).get("c", {})
    raw = res.get("raw", {})

    def add(name: str, values: dict[str, float], unit: str, op: str, limit: float, basis: str) -> None:
        values = {k: v for k, v in values.items() if v is not None and not math.isnan(v)}
        if not values:
            return
        results = {
            k: (v <= limit if op == "<=" else v >= limit if op == ">=" else v < limit) for k, v in values.items()
        }
        head = results.get("free", next(iter(results.values())))
        out.append(
            {
                "name": name,
                "unit": unit,
                "op": op,
                "target": limit,
                "basis": basis,
                "values": values,
                "results": results,
                "value": values.get("free", next(iter(values.values()))),
                "pass": head,
            }
        )

    def per_place(mode: str, field: str) -> dict[str, float]:
        return {label: float(c[mode + sfx][field]) for sfx, label in PLACEMENTS if mode + sfx in c}

    ref = res.get("limit", {}).get("c", {})
    for mode, label, op, limit in (
        ("pipe", "pipelined echo / reference host", ">=", 0.5),
        ("sink", "host -> remote 496 B / reference host", ">=", 0.5),
        ("source", "remote -> host 496 B / reference host", ">=", 0.5),
        ("rtt", "echo round trip p50 / reference host", "<=", 3.0),
    ):
        field = "p50_us" if mode == "rtt" else "msgs_per_s"
        vs = {
            lab: round(float(c[mode + sfx][field]) / float(ref[mode + sfx][field]), 2)
            for sfx, lab in PLACEMENTS
            if mode + sfx in c and mode + sfx in ref and float(ref[mode + sfx][field])
        }
        add(label, vs, "x", op, limit, "bench/host.c on the same remote, same placement, same run (issue 15)")
    for mode, label in (("pipe", "pipelined echo"), ("sink", "host -> remote"), ("source", "remote -> host")):
        for key, what, limit in (("syscalls_per_msg", "syscalls/msg", 0.5), ("cpu_us_per_msg", "CPU us/msg", 8.0)):
            vals = {
                lab: float(c[mode + sfx]["perf"][key])
                for sfx, lab in PLACEMENTS
                if key in c.get(mode + sfx, {}).get("perf", {})
            }
            add(
                f"daemon {what}, {label}",
                vals,
                "/msg" if key == "syscalls_per_msg" else "us",
                "<=",
                limit,
                "perf stat -p <daemon> (issue 15)",
            )
    add("echo round trip p50", per_place("rtt", "p50_us"), "us", "<=", 180.0, "3 x OpenAMP's 60 us")
    ratios: dict[str, float] = {}
    for sfx, label in PLACEMENTS:
        r = raw.get("c_pair_cross" if sfx == SPLIT else "c_pair")
        if "rtt" + sfx in c and r:
            ratios[label] = round(float(c["rtt" + sfx]["p50_us"]) / float(r["p50_us"]), 2)
    add(
        "echo round trip p50 / raw round trip",
        ratios,
        "x",
        "<=",
        3.0,
        "C pair on one CPU; across CPUs for own CPU",
    )
    add("pipelined echo", per_place("pipe", "msgs_per_s"), "msgs/s", ">=", 80_000, "0.5 x OpenAMP's 140-230 k")
    add("host -> remote 496 B", per_place("sink", "msgs_per_s"), "msgs/s", ">=", 100_000, "~0.5 x OpenAMP")
    add("remote -> host 496 B", per_place("source", "msgs_per_s"), "msgs/s", ">=", 100_000, "~0.5 x OpenAMP")
    idle = c.get("idle")
    if idle:
        pct = float(idle.get("daemon_cpu_pct_schedstat", idle["daemon_cpu_pct"]))
        add("idle CPU", {"free": pct}, "%", "<", 1.0, f"schedstat, over {idle['seconds']} s")
    if res.get("peak_rss_mb"):
        add("RSS (peak)", {"free": float(res["peak_rss_mb"])}, "MB", "<", 50.0, "VmHWM, whole run")
    rows = {(r["endpoints"], r["clients"]): r for r in res.get("scaling", [])}
    base, big = rows.get((1, 1)), rows.get((64, 32))
    if base and big:
        for mode, label in (("pipe", "pipelined"), ("rtt", "ping-pong")):
            b = base[mode]["daemon"].get("cpu_us_per_msg")
            g = big[mode]["daemon"].get("cpu_us_per_msg")
            if b and g:
                add(
                    f"cost/msg 64 endpoints x 32 clients / 1 x 1 ({label})",
                    {"one CPU": round(g / b, 2)},
                    "x",
                    "<=",
                    1.5,
                    f"{g} vs {b} us/msg",
                )
    return out


if __name__ == "__main__":
    sys.exit(main())
