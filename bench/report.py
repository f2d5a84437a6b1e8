"""The readable table of a bench run (the JSON object is the record; this is its summary)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

OPENAMP = {
    "rtt": "60 us",
    "pipe": "140-230 k/s",
    "sink": "150-290 k/s",
    "source": "330-360 k/s",
}
REMOTES = {"c": "C", "py": "Py sim"}


def table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ", text: int = 1) -> str:
    """Columns padded to their widest cell; numbers right-aligned, except in the first ``text`` columns and the last."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    last = len(header) - 1
    lines = []
    for r in [header, *rows]:
        cells = [
            str(c).rjust(w) if text <= i < last and _numeric(str(c)) else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append(indent + "  ".join(cells).rstrip())
    lines.insert(1, indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _numeric(s: str) -> bool:
    return bool(s) and (s[0].isdigit() or s[0] in "-." or s.startswith("<"))


def us(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    return f"{v:.1f} us" if v < 1000 else f"{v / 1000:.2f} ms"


def rate(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    return f"{v / 1000:.1f} k/s" if v < 1e6 else f"{v / 1e6:.2f} M/s"


def ratio(a: Any, b: Any) -> str:
    try:
        return f"{float(a) / float(b):.2f}x"
    except (TypeError, ValueError, ZeroDivisionError):
        return "-"


def spread(fig: dict[str, Any], fmt: Any) -> str:
    """min-max of a figure over its repeats (the table shows the best one)."""
    reps = fig.get("repeats") or []
    if len(reps) < 2:
        return ""
    lo, hi = fmt(min(reps)), fmt(max(reps))
    unit = lo.rsplit(" ", 1)[-1]
    return f"{lo.rsplit(' ', 1)[0]}-{hi}" if hi.endswith(unit) else f"{lo}-{hi}"


def num(v: Any, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(float(v))


def render(res: dict[str, Any]) -> str:
    m = res.get("machine", {})
    out = [
        f"rprocd benchmark ({res.get('mode')} run, {res.get('elapsed_s')} s): {m.get('cpus')} CPUs "
        f"{m.get('cpu_model')}, Linux {m.get('kernel')}, Python {m.get('python')}; "
        f"machine {m.get('busy_before_pct')} % busy before the run",
        f"clients: {res.get('clients')}",
        f"remote alone: {res.get('limit_method')}",
    ]
    raw = res.get("raw", {})
    if raw:
        line = "raw wake-up round trip (2 processes, 4-byte datagrams, blocking recv), p50 (p99):"
        for key, label in (
            ("c_pair", "C on one CPU"),
            ("c_pair_cross", "C across CPUs"),
            ("py_pair", "Python on one CPU"),
            ("py_pair_cross", "Python across CPUs"),
        ):
            if key in raw:
                line += f" {label} {us(raw[key].get('p50_us'))} ({us(raw[key].get('p99_us'))});"
        reps = raw.get("c_pair", {}).get("repeats", [])
        out.append(line.rstrip(";") + (f" (best of {len(reps)} runs)" if len(reps) > 1 else ""))
    out.append("")
    vs = versus_table(res)
    if vs:
        out += [vs, ""]
    out.append(main_table(res))
    idle = res.get("daemon", {}).get("c", {}).get("idle")
    if idle:
        out.append(
            f"\nidle (C remote attached, no clients, {idle['seconds']} s): daemon CPU {idle['daemon_cpu_pct']:.3f} % "
            f"(schedstat: {idle.get('daemon_cpu_pct_schedstat', 0):.4f} %) "
            f"({idle['daemon_wakeups_per_s']} wake-ups/s), remote CPU {idle['remote_cpu_pct']:.3f} %; "
            f"daemon RSS {idle['rss_mb']} MB, peak {idle['peak_rss_mb']} MB"
        )
    if res.get("peak_rss_mb"):
        out.append(f"daemon peak RSS over the whole run (VmHWM): {res['peak_rss_mb']} MB")
    if res.get("scaling"):
        out.append("")
        out.append(scaling_table(res["scaling"]))
    if res.get("targets"):
        out.append("")
        out.append(targets_table(res["targets"]))
    out.append("")
    lost = res.get("lost", 0)
    if res.get("failures"):
        out.append(f"CHECKS FAILED ({lost} messages lost):")
        out += [f"  - {f}" for f in res["failures"]]
    else:
        out.append(f"checks: every message accounted for and in order ({lost} lost), sink counts match")
    for n in res.get("notes", []):
        out.append(f"note: {n}")
    if res.get("profile_dir"):
        out.append(f"profiles: {res['profile_dir']}")
    return "\n".join(out)


PLACES = (("", "free"), ("_one_cpu", "one CPU"), ("_split", "own CPU"))
FIGURES = (
    ("rtt", "echo round trip 16 B"),
    ("pipe", "pipelined echo 16 B"),
    ("sink", "host -> remote 496 B"),
    ("source", "remote -> host 496 B"),
)


VERSUS = (
    ("pipe", "pipelined echo 16 B"),
    ("sink", "sink 496 B"),
    ("source", "source 496 B"),
    ("rtt", "echo RTT p50"),
)


def versus_table(res: dict[str, Any]) -> str:
    """rprocd against the reference host, per workload and placement, with the per-message counts of both."""
    c = res.get("daemon", {}).get("c", {})
    ref = res.get("limit", {}).get("c", {})
    rows: list[list[str]] = []
    for mode, label in VERSUS:
        first = True
        for sfx, place in PLACES:
            f, r = c.get(mode + sfx), ref.get(mode + sfx)
            if f is None and r is None:
                continue
            f, r = f or {}, r or {}
            fp, rp = f.get("perf", {}), r.get("perf", {})
            if mode == "rtt":
                mine, theirs = us(f.get("p50_us")), us(r.get("p50_us"))
                rat = ratio(f.get("p50_us"), r.get("p50_us"))
            else:
                mine, theirs = rate(f.get("msgs_per_s")), rate(r.get("msgs_per_s"))
                rat = ratio(f.get("msgs_per_s"), r.get("msgs_per_s"))
            rows.append(
                [
                    label if first else "",
                    place,
                    mine if f else "-",
                    theirs if r else "-",
                    rat,
                    f"{num(fp.get('syscalls_per_msg'))} / {num(rp.get('syscalls_per_msg'))}",
                    f"{num(fp.get('ctx_switches_per_msg'))} / {num(rp.get('ctx_switches_per_msg'))}",
                    f"{num(fp.get('cpu_us_per_msg'))} / {num(rp.get('cpu_us_per_msg'))}",
                ]
            )
            first = False
    if not rows:
        return ""
    header = ["workload", "placement", "rprocd", "reference", "ratio", "syscalls/msg", "ctx sw/msg", "CPU us/msg"]
    note = (
        "  (C remote; reference = bench/host.c driving the rings itself, same remote, same placement, same run; "
        "ratio: rprocd / reference (for the RTT: how many times slower); per-message columns: rprocd's daemon / "
        "the reference host, from perf stat (raw_syscalls:sys_enter, context-switches, task-clock), per rpmsg "
        "message, an echo is two)"
    )
    return "rprocd against the reference host\n" + table(header, rows, text=2) + "\n" + note


def main_table(res: dict[str, Any]) -> str:
    header = [
        "figure",
        "placement",
        "remote",
        "through rprocd",
        "reference host",
        "ratio",
        "repeats",
        "vs raw C/Py",
        "daemon us/msg",
        "syscalls/msg",
        "ctx sw/msg",
        "daemon CPU",
        "daemon wakeups/msg",
        "remote CPU",
        "machine busy",
        "OpenAMP host",
    ]
    rows: list[list[str]] = []
    raw = res.get("raw", {})
    same = (raw.get("c_pair", {}).get("p50_us"), raw.get("py_pair", {}).get("p50_us"))
    cross = (raw.get("c_pair_cross", {}).get("p50_us"), raw.get("py_pair_cross", {}).get("p50_us"))
    for kind, figs in res.get("daemon", {}).items():
        lim = res.get("limit", {}).get(kind, {})
        name = REMOTES.get(kind, kind)
        for mode, label in FIGURES:
            first_row = True
            for sfx, place in PLACES:
                f = figs.get(mode + sfx)
                if f is None:
                    continue
                lr = lim.get(mode + sfx, {})
                d = f["daemon"]
                pf = f.get("perf", {})
                common = [
                    num(pf.get("cpu_us_per_msg", d.get("cpu_us_per_msg"))),
                    num(pf.get("syscalls_per_msg")),
                    num(pf.get("ctx_switches_per_msg")),
                    f"{d.get('cpu_pct')} %",
                    num(d.get("wakeups_per_msg")),
                    f"{f['remote'].get('cpu_pct')} %",
                    f"{f.get('machine_busy_pct')} %",
                    OPENAMP[mode] if first_row else "",
                ]
                if mode == "rtt":
                    base = cross if sfx == "_split" else same
                    quantiles = [("p50_us", "p50")] + ([("p99_us", "p99"), ("max_us", "max")] if not sfx else [])
                    for q, qname in quantiles:
                        top = q == "p50_us"
                        rows.append(
                            [
                                f"{label}  {qname}" if first_row else f"{'':{len(label)}}  {qname}",
                                place,
                                name,
                                us(f[q]),
                                us(lr.get(q)) if lr else "",
                                ratio(f[q], lr.get(q)) if lr else "",
                                spread(f, us) if top else "",
                                f"{ratio(f[q], base[0])} / {ratio(f[q], base[1])}" if top and base[0] else "",
                                *(common if top else [""] * len(common)),
                            ]
                        )
                        first_row = False
                    continue
                val = rate(f["msgs_per_s"]) + (f" {f['mb_per_s']:.1f} MB/s" if "mb_per_s" in f else "")
                rows.append(
                    [
                        label if first_row else "",
                        place,
                        name,
                        val,
                        rate(lr.get("msgs_per_s")) if lr else "",
                        ratio(f["msgs_per_s"], lr.get("msgs_per_s")) if lr else "",
                        spread(f, rate),
                        "",
                        *common,
                    ]
                )
                first_row = False
    note = (
        "  (each figure is the best of its repeats, whose range is shown; placement: free = the scheduler's choice, "
        "one CPU = client, daemon and remote pinned to one CPU, own CPU = the remote alone on the other CPU as on "
        "the board; reference host: bench/host.c on the same remote in the same placement (see the table above); "
        "ratio: through rprocd / reference host; vs raw: / the raw C and Python pair round trips, "
        "across CPUs for own CPU; us/msg (perf task-clock), syscalls/msg, ctx sw/msg (perf stat -p) and wakeups/msg "
        "(voluntary switches, /proc) per rpmsg message crossing the daemon, an echo is two; CPU in % of one CPU)"
    )
    return "main figures\n" + table(header, rows, text=3) + "\n" + note


def scaling_table(rows: list[dict[str, Any]]) -> str:
    header = [
        "endpoints",
        "clients",
        "fan-out",
        "rtt p50",
        "rtt p99",
        "round trips/s",
        "rtt us/msg",
        "pipelined",
        "pipe us/msg",
        "pipe us/delivery",
        "per client min/max (rtt, pipe)",
        "daemon CPU (pipe)",
        "machine busy",
    ]
    base = next((r for r in rows if r["endpoints"] == 1 and r["clients"] == 1), None)
    out = []
    for r in rows:
        rt, pp = r["rtt"], r["pipe"]
        rel = ""
        if base and base is not r:
            rel = f" ({ratio(pp['daemon'].get('cpu_us_per_msg'), base['pipe']['daemon'].get('cpu_us_per_msg'))})"
        out.append(
            [
                str(r["endpoints"]),
                str(r["clients"]),
                f"{r['fanout']}x",
                us(rt["p50_us"]),
                us(rt["p99_us"]),
                rate(rt["round_trips_per_s"]),
                num(rt["daemon"].get("cpu_us_per_msg")),
                rate(pp["msgs_per_s"]),
                num(pp["daemon"].get("cpu_us_per_msg")) + rel,
                num(pp.get("daemon_us_per_delivery")),
                f"{_minmax(rt)}, {_minmax(pp)}",
                f"{pp['daemon'].get('cpu_pct')} %",
                f"{pp.get('machine_busy_pct')} %",
            ]
        )
    note = (
        "  (C remote with --extra-echo E, client i on bench-echo-(i mod E), 16 B; daemon, remote and every client "
        "pinned to one CPU, so that costs compare like for like; fan-out > 1: clients share an "
        "endpoint and each gets every echo of it, per the socket contract; rtt p50 = median of the clients' p50s, "
        "p99 = the worst client's; per client min/max: echoes done by the least and the most served client)"
    )
    return (
        "scaling (pipelined and ping-pong echo; cost per message as endpoints and clients grow)\n"
        + table(header, out)
        + "\n"
        + note
    )


def _minmax(fig: dict[str, Any]) -> str:
    return f"{fig.get('per_client_min')}/{fig.get('per_client_max')}"


def targets_table(ts: list[dict[str, Any]]) -> str:
    places = [p for _, p in PLACES if any(p in t.get("values", {}) for t in ts)]
    rows = []
    for t in ts:
        unit = t["unit"]

        def show(v: float, unit: str = unit) -> str:
            if unit == "msgs/s":
                return rate(v)
            if unit == "us":
                return us(v)
            return f"{v:g}x" if unit == "x" else f"{v:g} {unit}"

        cells = []
        for p in places:
            if p in t["values"]:
                cells.append(f"{show(t['values'][p])} {'pass' if t['results'][p] else 'MISS'}")
            else:
                cells.append("")
        rows.append([t["name"], *cells, f"{t['op']} {show(t['target'])}", t["basis"]])
    return "targets (C remote, so that the daemon is what is measured; by placement)\n" + table(
        ["target", *places, "target", "basis"], rows
    )
