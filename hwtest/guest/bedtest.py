"""In the guest: start rprocd on the real UIO devices and check it end to end.

Run by the initramfs' /init (short version) as ``bedtest.py short|full``.
Prints ``HWTEST <what> ok ...`` or ``HWTEST FAIL <what>: <why>`` lines that
hwtest/run.py asserts on; exits non-zero on the first failure.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, "/opt/rprocd")

from rprocd.client import Endpoint  # noqa: E402

RUN = Path("/run/rprocd")
EPTS = ("rpmsg-client-sample", "rpmsg-tty", "rpmsg-sink", "rpmsg-source")


def say(*a: object) -> None:
    print("HWTEST", *a, flush=True)


def fail(what: str, why: str) -> None:
    say("FAIL", f"{what}: {why}")
    sys.exit(1)


def wait_for(what: str, cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            fail(what, f"not within {timeout:.0f} s")
        time.sleep(0.2)


def start_rprocd() -> subprocess.Popen:
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
    t0 = time.monotonic()
    with Endpoint.open("rpmsg-client-sample", runtime_dir=RUN) as ep:
        for i in range(n):
            msg = struct.pack("<I", i) + bytes((i + k) & 0xFF for k in range(i % 480))
            got = ep.request(msg, timeout=30)
            if got != msg:
                fail("echo", f"reply {i} differs ({len(got)} bytes, sent {len(msg)})")
    dt = time.monotonic() - t0
    say(f"echo ok n={n} seconds={dt:.1f} per_msg_ms={1000 * dt / n:.1f}")


def sink(n: int, size: int = 496) -> None:
    t0 = time.monotonic()
    payload = bytes(range(256)) * 2
    with Endpoint.open("rpmsg-sink", runtime_dir=RUN) as ep:
        for _ in range(n):
            ep.send(payload[:size], timeout=60)
        stat = ep.request(b"STAT", timeout=60)
    if stat.rstrip(b"\0") != f"{n} {n * size}".encode():
        fail("sink", f"STAT {stat!r}, expected {n} {n * size}")
    say(f"sink ok n={n} size={size} stat={stat.decode()!r} seconds={time.monotonic() - t0:.1f}")


def source(n: int, size: int = 64) -> None:
    t0 = time.monotonic()
    with Endpoint.open("rpmsg-source", runtime_dir=RUN) as ep:
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
    seen: list[int] = []
    ep = Endpoint.open("rpmsg-source", runtime_dir=RUN)
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
    wait_for("kill9 restart", endpoints_up, 300)
    say(f"kill9 rprocd restarted, endpoints back in {time.monotonic() - t0:.1f} s")
    with Endpoint.open("rpmsg-source", runtime_dir=RUN) as ep2:
        while len(seen) < n:
            try:
                seen.append(struct.unpack_from("<I", ep2.recv(timeout=60))[0])
            except Exception as e:
                fail("kill9", f"stream stopped after {len(seen)} of {n} ({e!r}); last seq {seen[-1]}")
    gaps = [(a, b) for a, b in zip(seen, seen[1:], strict=False) if b != a + 1]
    if seen[0] != 0 or gaps:
        fail("kill9", f"sequence not continuous: first {seen[0]}, gaps {gaps[:5]} ({len(gaps)} in all)")
    say(f"kill9 ok n={n} continuous across the restart")
    return PROC


def echo_works() -> bool:
    try:
        with Endpoint.open("rpmsg-client-sample", runtime_dir=RUN) as ep:
            return ep.request(b"ping", timeout=5) == b"ping"
    except Exception:
        return False


def remote_restart() -> None:
    """Ask the host to restart the remote (it writes a fresh table): rprocd must re-attach."""
    say("request remote-restart")
    deadline = time.monotonic() + 60
    while echo_works():  # the old session answers until the host has restarted the remote
        if time.monotonic() > deadline:
            fail("remote restart", "the remote was not restarted within 60 s")
        time.sleep(0.5)
    t0 = time.monotonic()
    wait_for("re-attach", lambda: endpoints_up() and echo_works(), 300)
    say(f"reattach ok seconds={time.monotonic() - t0:.1f}")
    echoes(100)


PROC: subprocess.Popen


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "short"
    t0 = time.monotonic()
    global PROC
    proc = PROC = start_rprocd()
    wait_for("attach", endpoints_up, 300)
    say(f"attached endpoints={len(EPTS)} seconds={time.monotonic() - t0:.1f}")
    echoes(100 if mode == "short" else 1000)
    if mode != "short":
        sink(10_000)
        source(10_000)
        kill9_resume()
        remote_restart()
    proc = PROC
    proc.terminate()
    try:
        rc = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    say(f"rprocd stopped rc={rc}")
    return 0


if __name__ == "__main__":
    try:
        rc = main()
    finally:
        log = Path("/tmp/rprocd.log")
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                print("RPROCD", line, flush=True)
    sys.exit(rc)
