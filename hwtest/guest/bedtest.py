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


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "short"
    t0 = time.monotonic()
    proc = start_rprocd()
    wait_for("attach", endpoints_up, 300)
    say(f"attached endpoints={len(EPTS)} seconds={time.monotonic() - t0:.1f}")
    echoes(100 if mode == "short" else 1000)
    if mode != "short":
        sink(10_000)
        source(10_000)
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
