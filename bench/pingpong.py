"""The raw wake-up round trip of two Python processes: 4-byte datagrams, blocking sockets.

The Python twin of ``bench/pingpong.c`` (``python -m bench.pingpong DIR
[--duration S] [--cpus A,B]`` prints one JSON line): two processes ping-pong one 4-byte
word over ``AF_UNIX`` ``SOCK_DGRAM`` sockets, as the board's doorbells are,
both sleeping in a blocking ``recv``.  What a Python process on this machine
pays to be woken, at the least.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path

WORD = struct.Struct("<I")
STOP = 0xFFFFFFFF
WARMUP = 200


def percentile(sorted_ns: list[int], p: float) -> float:
    """Nearest rank on sorted samples, in microseconds (same as the C programs)."""
    if not sorted_ns:
        return 0.0
    return sorted_ns[int(p * (len(sorted_ns) - 1) + 0.5)] / 1000.0


def run(directory: Path, duration: float, cpus: tuple[int, int] | None = None) -> dict[str, float | int]:
    directory.mkdir(parents=True, exist_ok=True)
    ping, pong = str(directory / "pyping.sock"), str(directory / "pypong.sock")
    socks = []
    for path in (ping, pong):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        s.bind(path)
        socks.append(s)
    a, b = socks
    pid = os.fork()
    if pid == 0:  # pong
        if cpus is not None:
            os.sched_setaffinity(0, {cpus[1]})
        a.close()
        recv, sendto = b.recv, b.sendto
        while True:
            w = recv(4)
            if w == WORD.pack(STOP):
                os._exit(0)
            sendto(w, ping)
    if cpus is not None:
        os.sched_setaffinity(0, {cpus[0]})
    b.close()
    samples: list[int] = []
    clock = time.perf_counter_ns
    recv, sendto = a.recv, a.sendto
    end = time.monotonic() + duration
    i = 0
    while time.monotonic() < end or len(samples) < 1000:
        w = WORD.pack(i & 0x7FFFFFFF)
        t = clock()
        sendto(w, pong)
        recv(4)
        d = clock() - t
        if i >= WARMUP:
            samples.append(d)
        i += 1
    sendto(WORD.pack(STOP), pong)
    os.waitpid(pid, 0)
    a.close()
    for path in (ping, pong):
        os.unlink(path)
    samples.sort()
    return {
        "n": len(samples),
        "p50_us": percentile(samples, 0.5),
        "p90_us": percentile(samples, 0.9),
        "p99_us": percentile(samples, 0.99),
        "max_us": percentile(samples, 1.0),
        "mean_us": sum(samples) / len(samples) / 1000.0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pingpong", description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path, help="a folder for the two sockets")
    p.add_argument("--duration", type=float, default=1.0)
    p.add_argument("--cpus", metavar="A,B", help="pin the ping side to CPU A, the pong side to CPU B")
    args = p.parse_args(argv)
    cpus = None
    if args.cpus:
        a, b = (int(x) for x in args.cpus.split(","))
        cpus = (a, b)
    print(json.dumps(run(args.dir, args.duration, cpus)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
