"""In the guest: start rprocd on the real UIO devices and check it end to end.

Run by the initramfs' /init (short version) as ``bedtest.py short|full``.
Prints ``HWTEST <what> ok ...`` or ``HWTEST FAIL <what>: <why>`` lines that
hwtest/run.py asserts on; exits non-zero on the first failure.
"""

from __future__ import annotations

import faulthandler
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, "/opt/rprocd")

from rprocd.client import Control, Endpoint  # noqa: E402

RUN = Path("/run/rprocd")
EPTS = ("rpmsg-client-sample", "rpmsg-tty", "rpmsg-sink", "rpmsg-source")


def say(*a: object) -> None:
    print("HWTEST", *a, flush=True)


FAILED = False


def fail(what: str, why: str, fatal: bool = True) -> None:
    global FAILED
    FAILED = True
    say("FAIL", f"{what}: {why}")
    if fatal:
        sys.exit(1)


def wait_for(what: str, cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            fail(what, f"not within {timeout:.0f} s")
        time.sleep(0.2)


SYSTEMD = False  # mode "systemd": rprocd is the installed package's unit, the client is not root
CLIENT = ("hwclient", "rprocd")


class as_client:
    """Connect with the credentials of a non-root member of the rprocd group (SO_PEERCRED, file modes)."""

    def __enter__(self) -> None:
        if not SYSTEMD:
            return
        import grp
        import pwd

        pw, gr = pwd.getpwnam(CLIENT[0]), grp.getgrnam(CLIENT[1])
        os.setgroups([gr.gr_gid])
        os.setegid(pw.pw_gid)
        os.seteuid(pw.pw_uid)

    def __exit__(self, *exc: object) -> None:
        if not SYSTEMD:
            return
        os.seteuid(0)
        os.setegid(0)
        os.setgroups([])


def open_ep(name: str) -> Endpoint:
    with as_client():
        return Endpoint.open(name, runtime_dir=RUN)


def systemctl(*args: str) -> str:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=120).stdout.strip()


def phase(what: str) -> None:
    """A console line at each step: when the bed hangs, the last one says where."""
    say(f"phase {what} uptime={time.clock_gettime(time.CLOCK_BOOTTIME):.1f}")


# The whole script's budget in the guest (the host's --timeout is longer): past it, the
# watchdog prints where every thread is and rprocd's journal, and ends the script, so that a
# hang is reported with its place instead of as the host's "did not finish".
BUDGET = {"short": 600, "restart": 600, "kill9": 600}


def processes() -> list[str]:
    """Every user process with its state, CPU time and kernel wait channel (minbase has no ps)."""
    out = []
    for d in sorted(Path("/proc").glob("[0-9]*"), key=lambda d: int(d.name)):
        try:
            stat = (d / "stat").read_text()
            args = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            wchan = (d / "wchan").read_text()
        except OSError:
            continue
        if not args:
            continue  # a kernel thread
        f = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        out.append(f"{d.name} {f[0]} cpu={cpu:.1f}s wchan={wchan or '-'} {args}")
    return out


def start_watchdog(mode: str) -> None:
    budget = BUDGET.get(mode, 1500)

    def fire() -> None:
        say("FAIL", f"watchdog: the guest script did not finish within {budget} s; its threads:")
        faulthandler.dump_traceback(all_threads=True)
        for line in processes():
            say("watchdog:", line)
        if SYSTEMD:
            try:
                out = systemctl("status", "--no-pager", "-l", "rprocd")
            except subprocess.TimeoutExpired as e:
                out = repr(e)
            for line in out.splitlines():
                say("watchdog:", line)
        dump_rprocd_log()
        os._exit(1)

    t = threading.Timer(budget, fire)
    t.daemon = True
    t.start()


class Unit:
    """rprocd run by systemd, with the interface of the Popen the initramfs mode uses."""

    @property
    def pid(self) -> int:
        return int(systemctl("show", "-p", "MainPID", "--value", "rprocd") or 0)

    def kill(self) -> None:
        self.old = self.pid
        subprocess.run(["systemctl", "kill", "-s", "KILL", "rprocd"], check=True, timeout=120)

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def terminate(self) -> None:
        subprocess.run(["systemctl", "stop", "rprocd"], check=True, timeout=120)


def start_rprocd() -> subprocess.Popen:
    if SYSTEMD:  # systemd restarts it after kill -9 (Restart=on-failure); wait for a new MainPID
        unit = PROC if isinstance(PROC, Unit) else Unit()
        old = getattr(unit, "old", 0)

        def restarted() -> bool:
            return systemctl("is-active", "rprocd") == "active" and unit.pid not in (0, old)

        wait_for("systemd restart", restarted, 120)
        return unit  # type: ignore[return-value]

    env = dict(os.environ, PYTHONPATH="/opt/rprocd", RPROCD_CACHE_DIR="/tmp/rprocd-cache")
    with open("/tmp/rprocd.log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "rprocd.cli.daemon", "-c", "/etc/rprocd/rprocd.toml"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def endpoints_up() -> bool:
    return all((RUN / "main" / "ept" / e).exists() for e in EPTS)


def echoes(n: int) -> None:
    phase(f"echo n={n}")
    t0 = time.monotonic()
    with open_ep("rpmsg-client-sample") as ep:
        for i in range(n):
            msg = struct.pack("<I", i) + bytes((i + k) & 0xFF for k in range(i % 480))
            got = ep.request(msg, timeout=30)
            if got != msg:
                fail("echo", f"reply {i} differs ({len(got)} bytes, sent {len(msg)})")
    dt = time.monotonic() - t0
    say(f"echo ok n={n} seconds={dt:.1f} per_msg_ms={1000 * dt / n:.1f}")


def sink(n: int, size: int = 496) -> None:
    phase(f"sink n={n}")
    t0 = time.monotonic()
    payload = bytes(range(256)) * 2
    with open_ep("rpmsg-sink") as ep:
        for _ in range(n):
            ep.send(payload[:size], timeout=60)
        stat = ep.request(b"STAT", timeout=60)
    if stat.rstrip(b"\0") != f"{n} {n * size}".encode():
        fail("sink", f"STAT {stat!r}, expected {n} {n * size}")
    say(f"sink ok n={n} size={size} stat={stat.decode()!r} seconds={time.monotonic() - t0:.1f}")


def source(n: int, size: int = 64) -> None:
    phase(f"source n={n}")
    t0 = time.monotonic()
    with open_ep("rpmsg-source") as ep:
        ep.send(f"{n} {size}".encode(), timeout=30)
        for i in range(n):
            m = ep.recv(timeout=60)
            (seq,) = struct.unpack_from("<I", m)
            if seq != i or len(m) != size:
                fail("source", f"message {i}: seq {seq}, {len(m)} bytes")
    say(f"source ok n={n} size={size} seconds={time.monotonic() - t0:.1f}")


def kill9_resume(n: int = 3000, size: int = 64, kill_at: int = 500) -> subprocess.Popen:
    """kill -9 rprocd mid-stream, start it again (as systemd's Restart= would): the stream goes on.

    The client keeps reading what its socket already holds, then reconnects to
    the new daemon's socket; every sequence number must arrive once, in order.
    """
    global PROC
    phase(f"kill9 n={n}")
    seen: list[int] = []
    ep = open_ep("rpmsg-source")
    ep.send(f"{n} {size}".encode(), timeout=30)
    while len(seen) < kill_at:
        seen.append(struct.unpack_from("<I", ep.recv(timeout=60))[0])
    PROC.kill()
    PROC.wait()
    say(f"kill9 rprocd killed after {len(seen)} messages")
    try:
        while True:
            seen.append(struct.unpack_from("<I", ep.recv(timeout=5))[0])
    except Exception as e:  # EOF or timeout once the old daemon's socket is drained
        say(f"kill9 old socket drained at {len(seen)} ({type(e).__name__})")
    ep.close()
    t0 = time.monotonic()
    PROC = start_rprocd()
    # The reader's own connection is the probe: a probe connection that closes again would
    # take along what the resumed daemon hands it (the stream goes to whoever is connected).
    ep2 = connect_when_live("rpmsg-source", 300)
    say(f"kill9 rprocd restarted, endpoints back in {time.monotonic() - t0:.1f} s")
    with ep2:
        while len(seen) < n:
            try:
                seen.append(struct.unpack_from("<I", ep2.recv(timeout=60))[0])
            except Exception as e:
                say(f"kill9 stream stopped after {len(seen)} of {n} ({e!r}); last seq {seen[-1]}")
                break
    missing = sorted(set(range(n)) - set(seen))
    dup = len(seen) - len(set(seen))
    order = [(a, b) for a, b in zip(seen, seen[1:], strict=False) if b <= a]
    if missing or dup or order:
        fail(
            "kill9",
            f"{len(missing)} lost {missing[:10]}, {dup} duplicated, {len(order)} out of order {order[:5]}"
            f" (killed after {kill_at})",
            fatal=False,  # go on: the remote restart is a check of its own
        )
        return PROC
    say(f"kill9 ok n={n} continuous across the restart")
    return PROC


def connect_when_live(name: str, timeout: float) -> Endpoint:
    """Connect once the new daemon listens: a socket file may be the killed daemon's (refused)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_ep(name)
        except OSError as e:  # EndpointNotFound, ConnectionRefusedError
            if time.monotonic() > deadline:
                fail(name, f"no live endpoint within {timeout:.0f} s ({e!r})")
            time.sleep(0.2)


def echo_works() -> bool:
    try:
        with open_ep("rpmsg-client-sample") as ep:
            return ep.request(b"ping", timeout=5) == b"ping"
    except Exception:
        return False


def remote_state() -> dict:
    """rprocd's own account of the remote (control ``status``): state, attach_count, sessions_lost."""
    with as_client():
        ctl = Control(runtime_dir=RUN)
    with ctl:
        return ctl.status("main")[0]


def remote_restart() -> None:
    """Ask the host to restart the remote (it writes a fresh table): rprocd must re-attach.

    rprocd's counters say when it did: the old session lost, a new one
    attached.  (Watching the echoes for an outage missed it when rprocd
    re-attached between two of them: the gap is a fraction of a second.)
    """
    phase("remote-restart")
    before = remote_state()
    say("request remote-restart")
    t0 = time.monotonic()

    def reattached() -> bool:
        now = remote_state()
        return (
            now["sessions_lost"] > before["sessions_lost"]
            and now["attach_count"] > before["attach_count"]
            and now["state"] == "attached"
        )

    wait_for("re-attach", lambda: reattached() and endpoints_up() and echo_works(), 300)
    now = remote_state()
    say(
        f"reattach ok seconds={time.monotonic() - t0:.1f} sessions_lost={before['sessions_lost']}->"
        f"{now['sessions_lost']} attach_count={before['attach_count']}->{now['attach_count']}"
    )
    echoes(100)


PROC: subprocess.Popen


def dump_rprocd_log() -> None:
    """rprocd's log (the unit's journal under systemd) on the console, as RPROCD lines."""
    log = Path("/tmp/rprocd.log")
    if SYSTEMD:
        cmd = ["journalctl", "-u", "rprocd", "--no-pager", "-o", "short-monotonic"]
        try:
            log.write_bytes(subprocess.run(cmd, capture_output=True, timeout=120).stdout)
        except subprocess.TimeoutExpired:
            say("FAIL journalctl -u rprocd did not answer within 120 s")
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            print("RPROCD", line, flush=True)


def main() -> int:
    socket.setdefaulttimeout(120)  # a connect to a daemon that does not accept must not hang the bed
    mode = sys.argv[1] if len(sys.argv) > 1 else "short"
    t0 = time.monotonic()
    global PROC, SYSTEMD
    SYSTEMD = mode == "systemd"
    start_watchdog(mode)
    phase(f"start mode={mode}")
    if SYSTEMD:
        PROC = Unit()  # type: ignore[assignment]
        wait_for("rprocd active", lambda: systemctl("is-active", "rprocd") == "active", 300)
    proc = PROC = start_rprocd()
    wait_for("attach", endpoints_up, 300)
    say(f"attached endpoints={len(EPTS)} seconds={time.monotonic() - t0:.1f}")
    if SYSTEMD:
        status = systemctl("show", "-p", "StatusText", "--value", "rprocd")
        say(f"systemd is-active={systemctl('is-active', 'rprocd')} status={status!r}")
        if "attached" not in status or "4 endpoints" not in status:
            fail("systemd status", f"STATUS is {status!r}")
    echoes(100 if mode in ("short", "restart", "kill9") else 1000)
    if mode == "restart":
        remote_restart()
    elif mode == "kill9":
        kill9_resume()
    elif mode != "short":  # full and systemd
        sink(10_000)
        source(10_000)
        kill9_resume()
        remote_restart()
    phase("stop rprocd")
    proc = PROC
    proc.terminate()
    try:
        rc = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    say(f"rprocd stopped rc={rc}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    rc = 1
    try:
        rc = main()
    except Exception as e:  # say it on the console in the form run.py reports
        say("FAIL", f"bedtest: {e!r}")
        raise
    finally:
        dump_rprocd_log()
    sys.exit(rc)
