"""Processes of a bench run: the remote, the daemon, the clients, and what /proc says about them.

Everything is started as a real process on a virtual board in a scratch
folder, the way ``tests/conftest.py`` does it (``python -m rprocd.cli.daemon
--board DIR --runtime-dir DIR``), and every process started here is stopped
here, by its own pid.
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
BASE_ENDPOINTS = ("rpmsg-client-sample", "rpmsg-tty", "rpmsg-sink", "rpmsg-source")


class BenchError(RuntimeError):
    """A run could not be done (a process died, a wait timed out)."""


# -- /proc ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    """One look at a process: CPU time (utime+stime of all its threads), context switches, memory."""

    t: float
    cpu_s: float
    vcsw: int  # voluntary context switches (the process went to sleep: one wake-up each)
    ivcsw: int
    rss_kb: int
    hwm_kb: int
    run_ns: int  # time on a CPU, all threads, from schedstat (ns; utime+stime counts 10 ms ticks)

    @staticmethod
    def of(pid: int) -> ProcSample:
        t = time.monotonic()
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2 :].split()
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
        status: dict[str, int] = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                    status[key] = int(value.split()[0])
        run_ns = 0
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    run_ns += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            pass
        return ProcSample(
            t,
            (utime + stime) / CLK_TCK,
            status.get("voluntary_ctxt_switches", 0),
            status.get("nonvoluntary_ctxt_switches", 0),
            status.get("VmRSS", 0),
            status.get("VmHWM", 0),
            run_ns,
        )


def usage(a: ProcSample, b: ProcSample, msgs: int) -> dict[str, float | int]:
    """What a process spent between two samples, per message when ``msgs``."""
    wall = max(b.t - a.t, 1e-9)
    cpu = b.cpu_s - a.cpu_s
    out: dict[str, float | int] = {
        "cpu_s": round(cpu, 4),
        "cpu_pct": round(100 * cpu / wall, 1),
        "wakeups": b.vcsw - a.vcsw,
        "preempted": b.ivcsw - a.ivcsw,
        "rss_mb": round(b.rss_kb / 1024, 1),
        "peak_rss_mb": round(b.hwm_kb / 1024, 1),
    }
    if msgs:
        out["cpu_us_per_msg"] = round(cpu / msgs * 1e6, 2)
        out["wakeups_per_msg"] = round((b.vcsw - a.vcsw) / msgs, 3)
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    total = sum(parts[:8])  # guest time is already counted in user
    return total - idle, total


def machine_busy_pct(a: tuple[int, int], b: tuple[int, int]) -> float:
    """How busy the whole machine was, in % of all its CPUs."""
    total = b[1] - a[1]
    return round(100 * (b[0] - a[0]) / total, 1) if total else 0.0


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Pin every thread of a running process."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except (ProcessLookupError, PermissionError):
            pass


# -- perf stat: syscalls, context switches and CPU time of one process over a window -------------

PERF_EVENTS = ("raw_syscalls:sys_enter", "context-switches", "task-clock")
PERF_PACKAGE = "linux-perf"  # Debian's package of perf (apt-get install -y linux-perf)


def perf_binary() -> str:
    """perf, or BenchError naming the package: the per-message counts are the bench's point."""
    perf = shutil.which("perf")
    if perf is None:
        raise BenchError(f"perf not found: apt-get install -y {PERF_PACKAGE} (the bench counts syscalls with it)")
    return perf


@functools.cache
def perf_command() -> tuple[str, ...]:
    """How to run perf here: itself as root, else through ``sudo -n`` (found out once: every window asks).

    The syscall count is a tracepoint (``raw_syscalls:sys_enter``): a normal
    user can neither read tracefs (mode 0700) nor, with Debian's
    ``kernel.perf_event_paranoid=3``, open any event. BenchError when neither works.
    """
    perf = perf_binary()
    if os.geteuid() == 0:
        return (perf,)
    sudo = shutil.which("sudo")
    if sudo is None or subprocess.run([sudo, "-n", "true"], capture_output=True).returncode != 0:
        raise BenchError("perf counts a tracepoint, which needs root: run the bench as root, or with sudo allowed")
    return (sudo, "-n", perf)


def parse_perf(text: str) -> dict[str, float]:
    """``perf stat -x,`` output: value,unit,event,... per line; '<not counted>' lines are left out."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0] and (parts[0][0].isdigit()):
            out[parts[2]] = float(parts[0])
    return out


def perf_figures(counts: dict[str, float], msgs: int) -> dict[str, float | int]:
    """Totals and per-message figures of one window (task-clock is in ms)."""
    sc = int(counts.get("raw_syscalls:sys_enter", 0))
    cs = int(counts.get("context-switches", 0))
    ms = counts.get("task-clock", 0.0)
    out: dict[str, float | int] = {"syscalls": sc, "context_switches": cs, "task_clock_ms": round(ms, 3)}
    if msgs:
        out |= {
            "syscalls_per_msg": round(sc / msgs, 3),
            "ctx_switches_per_msg": round(cs / msgs, 3),
            "cpu_us_per_msg": round(ms * 1e3 / msgs, 2),
        }
    return out


class PerfWindow:
    """``perf stat -p PID`` counting only between :meth:`start` and :meth:`stop`.

    perf starts with its events disabled (``-D -1``) and is switched on and
    off through ``--control`` FIFOs, each command acknowledged, so the window
    is the workload's and not perf's own start-up.  It counts every thread of
    the process (those present at attach and, inherited, any started later).
    """

    def __init__(self, pid: int, work: Path, name: str):
        self.dir = work / f"perf-{name}-{pid}-{time.monotonic_ns()}"
        self.dir.mkdir(parents=True)
        ctl, ack, self.out = self.dir / "ctl", self.dir / "ack", self.dir / "stat.txt"
        os.mkfifo(ctl)
        os.mkfifo(ack)
        argv = [*perf_command(), "stat", "-x,", "-e", ",".join(PERF_EVENTS), "-D", "-1"]
        argv += ["--control", f"fifo:{ctl},{ack}", "-p", str(pid), "-o", str(self.out)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.ctl = self.ack = -1
        deadline = time.monotonic() + 10
        while self.ctl < 0:  # perf opens the FIFOs once it is attached
            try:
                self.ctl = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                    self.close()
                    raise BenchError(f"perf stat -p {pid} did not start: {err.strip()}") from None
                time.sleep(0.005)
        self.ack = os.open(ack, os.O_RDONLY)

    def _command(self, cmd: bytes) -> None:
        os.write(self.ctl, cmd + b"\n")
        r, _, _ = select.select([self.ack], [], [], 10)
        if not r or not os.read(self.ack, 16).startswith(b"ack"):
            raise BenchError(f"perf did not acknowledge {cmd.decode()!r}")

    def start(self) -> None:
        self._command(b"enable")

    def stop(self) -> dict[str, float]:
        """Counting off; perf exits and the window's counts are returned."""
        self._command(b"disable")
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        counts = parse_perf(self.out.read_text() if self.out.exists() else "")
        self.close()
        if "raw_syscalls:sys_enter" not in counts:
            raise BenchError(f"perf stat counted nothing (is {PERF_EVENTS[0]} available?)")
        return counts

    def close(self) -> None:
        for fd in (self.ctl, self.ack):
            if fd >= 0:
                os.close(fd)
        self.ctl = self.ack = -1
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_counted(
    argv: Sequence[str], timeout: float, work: Path, want: int = 1, also: Sequence[int] = ()
) -> tuple[list[dict[str, Any]], dict[str, float], list[dict[str, float]]]:
    """Run a ``--ready`` program (bench/host.c): counted with perf stat -p from "go" to its last result.

    The program prints ``ready`` once it is set up, runs when it reads a line,
    prints ``want`` JSON lines, and stays until its stdin closes: start-up and
    detach are outside the window.  Returns its JSON lines, the window's counts,
    and those of the processes ``also`` (e.g. the remote) over the same window.
    """
    p = subprocess.Popen([*argv, "--ready"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    perf: PerfWindow | None = None
    others: list[PerfWindow] = []
    rows: list[dict[str, Any]] = []
    try:
        assert p.stdin is not None and p.stdout is not None
        end = time.monotonic() + timeout

        def line() -> bytes:
            assert p.stdout is not None
            r, _, _ = select.select([p.stdout], [], [], max(end - time.monotonic(), 0))
            if not r:
                raise BenchError(f"{' '.join(argv)} timed out after {timeout}s")
            return p.stdout.readline()

        first = line()
        if first.strip() != b"ready":
            err = p.stderr.read().decode(errors="replace") if p.stderr else ""
            raise BenchError(f"{' '.join(argv)} did not get ready: {first!r} {err}")
        others = [PerfWindow(pid, work, "also") for pid in also]
        perf = PerfWindow(p.pid, work, "host")
        for w in others:
            w.start()
        perf.start()
        p.stdin.write(b"go\n")
        p.stdin.flush()
        while len(rows) < want:
            got = line()
            if not got:
                break
            if got.startswith(b"{"):
                rows.append(json.loads(got))
        counts = perf.stop()
        perf = None
        other_counts = [w.stop() for w in others]
        others = []
        p.stdin.close()
        p.wait(timeout=max(end - time.monotonic(), 1))
        for row in rows:
            row.setdefault("exit", p.returncode)
        if len(rows) < want:
            err = p.stderr.read().decode(errors="replace") if p.stderr else ""
            raise BenchError(f"{' '.join(argv)} exited {p.returncode} with {len(rows)} of {want} results: {err}")
        return rows, counts, other_counts
    finally:
        if perf is not None:
            perf.close()
        for w in others:
            w.close()
        if p.poll() is None:
            p.kill()
            p.wait()


# -- the rig: a remote and the daemon on one board --------------------------------------------


@dataclass
class Rig:
    """A board folder with a remote (``c``: bench/out/remote, ``py``: rprocd's simulator) and rprocd."""

    work: Path
    remote_kind: str
    bins: dict[str, Path]
    extra_echo: int = 0
    profile_dir: Path | None = None
    profiler: str = "py-spy"
    profile_name: str = "daemon"
    remote: subprocess.Popen[bytes] | None = None
    daemon: subprocess.Popen[bytes] | None = None
    spy: subprocess.Popen[bytes] | None = None
    notes: list[str] = field(default_factory=list)
    cwd: Path | None = None  # the daemon's and the remote's (``python -m`` puts it first on sys.path)

    def __post_init__(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.board = self.work / "board"
        self.runtime = self.work / "run"
        self.ept_dir = self.runtime / "main" / "ept"
        self.env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.env.pop("RPROCD_RUNTIME_DIR", None)

    def _spawn(self, argv: Sequence[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.work / log, "ab") as out:
            return subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd
            )

    @property
    def remote_name(self) -> str:
        return "C remote (bench/remote.c)" if self.remote_kind == "c" else "Python sim (rprocd.sim)"

    def start_remote(self) -> None:
        if self.remote_kind == "c":
            argv = [str(self.bins["remote"]), "--board", str(self.board)]
            if self.extra_echo:
                argv += ["--extra-echo", str(self.extra_echo)]
        else:
            if self.extra_echo:
                raise BenchError("the Python sim has no extra echo endpoints")
            argv = [sys.executable, "-m", "rprocd.cli.ctl", "sim", "--board", str(self.board), "--log-level", "warning"]
        self.remote = self._spawn(argv, "remote.log")
        self._wait(lambda: (self.board / "remote.sock").exists(), 20, "the remote's doorbell socket")

    def start_daemon(self, timeout: float = 30) -> None:
        argv = [sys.executable]
        prof = self.profile_dir
        if prof is not None and self.profiler == "cprofile":
            prof.mkdir(parents=True, exist_ok=True)
            argv += ["-m", "cProfile", "-o", str(prof / f"{self.profile_name}.prof")]
        elif prof is not None and self.profiler == "pyinstrument":
            prof.mkdir(parents=True, exist_ok=True)
            argv += ["-m", "pyinstrument", "-r", "html", "-o", str(prof / f"{self.profile_name}.html")]
        argv += ["-m", "rprocd.cli.daemon", "--board", str(self.board), "--runtime-dir", str(self.runtime)]
        self.daemon = self._spawn(argv, "daemon.log")
        if prof is not None and self.profiler == "py-spy":
            self._start_spy(prof)
        self.wait_endpoints(self.endpoint_names(), timeout)

    def _start_spy(self, prof: Path) -> None:
        assert self.daemon is not None
        spy = shutil.which("py-spy")
        if spy is None:
            self.notes.append("py-spy not found: no profile recorded")
            return
        prof.mkdir(parents=True, exist_ok=True)
        argv = [spy, "record", "--pid", str(self.daemon.pid), "-o", str(prof / f"{self.profile_name}.svg")]
        self.spy = self._spawn(argv, "py-spy.log")

    def place(self, daemon: set[int], remote: set[int]) -> None:
        """Pin the daemon and the remote to CPUs (all of them again: ``os.sched_getaffinity(0)``)."""
        assert self.daemon is not None and self.remote is not None
        set_affinity(self.daemon.pid, daemon)
        set_affinity(self.remote.pid, remote)

    def endpoint_names(self) -> list[str]:
        return [*BASE_ENDPOINTS, *(f"bench-echo-{i}" for i in range(self.extra_echo))]

    def ept(self, name: str) -> str:
        return str(self.ept_dir / name)

    def wait_endpoints(self, names: Sequence[str], timeout: float) -> None:
        want = set(names)

        def present() -> bool:
            try:
                return want <= {p.name for p in self.ept_dir.iterdir()}
            except FileNotFoundError:
                return False

        self._wait(present, timeout, f"{len(want)} endpoint sockets")

    def _wait(self, pred: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            for name, p in (("remote", self.remote), ("daemon", self.daemon)):
                if p is not None and p.poll() is not None:
                    raise BenchError(f"the {name} exited ({p.returncode}) while waiting for {what}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")
            time.sleep(0.01)

    def logs(self, tail: int = 2000) -> str:
        out = []
        for log in ("remote.log", "daemon.log", "py-spy.log"):
            try:
                text = (self.work / log).read_text(errors="replace")
            except FileNotFoundError:
                continue
            out.append(f"--- {self.work / log} ---\n{text[-tail:]}")
        return "\n".join(out)

    def stop(self) -> None:
        """Stop py-spy (it writes its flame graph), the daemon, then the remote."""
        if self.spy is not None:
            _stop(self.spy, signal.SIGINT, 20)
            if self.spy.returncode not in (0, None):
                self.notes.append(f"py-spy exited with {self.spy.returncode}; see {self.work / 'py-spy.log'}")
            self.spy = None
        for p in (self.daemon, self.remote):
            if p is not None:
                _stop(p, signal.SIGTERM, 10)
        self.daemon = self.remote = None

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop(p: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# -- running programs that print JSON ----------------------------------------------------------


def run_json(argv: Sequence[str], timeout: float, cwd: Path | None = None) -> list[dict[str, Any]]:
    """Run a program to completion; its stdout is JSON lines.  Raises BenchError on failure."""
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{' '.join(argv)} timed out after {timeout}s") from e
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode != 0 and not lines:
        raise BenchError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    for line in lines:
        line.setdefault("exit", r.returncode)
    return lines


@dataclass
class ClientRun:
    """What a group of clients did, and what the daemon and the remote spent meanwhile."""

    results: list[dict[str, Any]]
    wall_s: float
    daemon: dict[str, float | int]
    remote: dict[str, float | int]
    machine_busy_pct: float
    failures: list[str]
    perf: dict[str, float | int] = field(default_factory=dict)  # the daemon's, over the window


def _cmd(p: subprocess.Popen[bytes]) -> str:
    args = p.args
    return " ".join(map(str, args)) if isinstance(args, list | tuple) else str(args)


def run_clients(
    client: Path,
    specs: Sequence[tuple[str, str, Sequence[str]]],
    rig: Rig,
    timeout: float,
    msgs_of: Any = None,
) -> ClientRun:
    """Start every client (mode, socket path, options), let them go together, collect their JSON.

    Each client connects and says ``ready``; when all are, the daemon and
    the remote are sampled and the clients are told to go; when the last
    has finished they are sampled again.  ``msgs_of(results)`` counts the
    rpmsg messages that went through the daemon (for the per-message cost).
    """
    assert rig.daemon is not None and rig.remote is not None
    procs: list[subprocess.Popen[bytes]] = []
    perf: PerfWindow | None = None
    try:
        for mode, path, opts in specs:
            procs.append(
                subprocess.Popen(
                    [str(client), mode, path, "--ready", *opts],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    bufsize=0,  # unbuffered: select() on the pipe sees every line readline() has not taken
                )
            )
        deadline = time.monotonic() + 20
        for p in procs:
            assert p.stdout is not None
            r, _, _ = select.select([p.stdout], [], [], max(deadline - time.monotonic(), 0))
            line = p.stdout.readline() if r else b""
            if line.strip() != b"ready":
                raise BenchError(f"a client did not get ready: {line!r} {p.stderr.read() if p.stderr else ''!r}")
        perf = PerfWindow(rig.daemon.pid, rig.work, "daemon")
        perf.start()
        d0, r0, m0 = ProcSample.of(rig.daemon.pid), ProcSample.of(rig.remote.pid), machine_ticks()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
        # Each client prints its JSON line when done and then stays connected, reading, until its
        # stdin closes: nobody leaves while the others still measure.
        results: list[dict[str, Any]] = []
        failures: list[str] = []
        waiting = {p.stdout.fileno(): p for p in procs if p.stdout is not None}
        end = time.monotonic() + timeout
        while waiting:
            fds: list[int] = list(waiting)
            readable, _, _ = select.select(fds, [], [], max(end - time.monotonic(), 0))
            if not readable:
                failures += [f"client {_cmd(p)} timed out" for p in waiting.values()]
                break
            for fd in readable:
                p = waiting[fd]
                assert p.stdout is not None
                line = p.stdout.readline()
                if line.startswith(b"{"):
                    results.append(json.loads(line))
                    del waiting[fd]
                elif not line:  # exited without a result
                    del waiting[fd]
                    failures.append(f"client {_cmd(p)} gave no result")
        d1, r1, m1 = ProcSample.of(rig.daemon.pid), ProcSample.of(rig.remote.pid), machine_ticks()
        counts = perf.stop()
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
            p.stdin = None  # communicate() below must not touch it
        for p in procs:
            try:
                out, err = p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            if p.returncode:
                detail = (out.decode() + " " + err.decode()).strip()
                failures.append(f"client {_cmd(p)} exited {p.returncode} {detail}".strip())
        msgs = int(msgs_of(results)) if msgs_of else sum(int(r.get("msgs", 0)) for r in results)
        return ClientRun(
            results,
            round(d1.t - d0.t, 3),
            usage(d0, d1, msgs),
            usage(r0, r1, msgs),
            machine_busy_pct(m0, m1),
            failures,
            perf_figures(counts, msgs),
        )
    finally:
        if perf is not None:
            perf.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
