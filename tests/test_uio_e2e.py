"""End to end through the UIO code path: the daemon maps the fake UIO device whose memory is the virtual board's.

The simulated remote (``rprocctl sim``) runs on the board folder as usual.
The daemon is configured with ``backend = "uio"``: it finds ``rpmsg_shm`` in
a fake sysfs and mmaps ``/dev/uio0`` at offset 0 through the fake kernel
(tests/fake_uio.py; its memory is the board's ``memory`` file), so it shares
the remote's memory through the production UIO backend; its doorbell is the
board's datagram sockets (``driver = "sim"``).

Both processes run under tests/native/devmem_guard.c: any memcpy, memmove,
memset (or their kin) that touches the shared window aborts them, as the
first unaligned or DC ZVA access would fault on the board's Device memory.

Two ways to run the daemon:

* ``rprocd -c CONFIG --runtime-dir DIR`` - the real command line;
* this file as a program: config -> :func:`rprocd.backends.factory.open_platform`
  -> :func:`rprocd.app.serve`, the same pieces the CLI wires together.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

if __name__ != "__main__":
    from tests.conftest import ENDPOINTS, Board, Procs, wait_for

    from .fake_uio import FakeMap, FakeUio, kernel_env

ROUND_TRIPS = 10_000


def write_config(tmp: Path, fake_root: Path, board: Path) -> Path:
    cfg = tmp / "rprocd.toml"
    cfg.write_text(
        f"""
[daemon]
runtime_dir = "{tmp / "run"}"

[remote.main]
backend = "uio"
shm       = {{ pa = 0x200c6000, size = 0x8000 }}
rsc_table = {{ pa = 0x200c6000, size = 0x2000, offset = 0x3b8, max_size = 0x1000 }}
vring0    = {{ pa = 0x200c8000, size = 0x1000 }}
vring1    = {{ pa = 0x200c9000, size = 0x1000 }}
buffers   = {{ pa = 0x200ca000, size = 0x4000 }}

[remote.main.uio]
memory = ["rpmsg_shm"]
sysfs_root = "{fake_root / "sys"}"
dev_root = "{fake_root / "dev"}"
wait_timeout = 60

[remote.main.doorbell]
driver = "sim"
board = "{board}"
"""
    )
    return cfg


def add_shm(fake: FakeUio, board: Path) -> None:
    fake.add_memory_device("rpmsg_shm", [FakeMap(0x200C6000, 0x8000, backing=board / "memory")])


def guarded(procs: Procs, board: Path) -> Path:
    """Run what ``procs`` starts from now on under the fake kernel and the bulk-copy guard; the report file."""
    report = procs.tmp / "devmem_guard.report"
    procs.env = kernel_env(procs.env, guard=True)
    procs.env["DEVMEM_GUARD_REPORT"] = str(report)
    procs.env["DEVMEM_GUARD_PATHS"] = str(board / "memory")  # the simulated remote's mapping of it
    return report


def assert_clean(procs: Procs, report: Path, *logs: str) -> None:
    """No bulk routine touched the window, and the guard did see each process map it."""
    text = report.read_text() if report.exists() else ""
    assert not text, text + "".join(procs.log(n)[-3000:] for n in logs)
    for name in logs:
        assert "devmem_guard: guarding" in procs.log(name), f"{name}: the guard never saw the window"


def echo_round_trips(b: Board, n: int) -> float:
    rnd = random.Random(3)
    t0 = time.monotonic()
    with b.connect("rpmsg-client-sample") as s:
        for i in range(n):
            payload = rnd.randbytes(rnd.randint(1, 496)) if i % 100 else struct.pack("<I", i)
            s.send(payload)
            assert s.recv(1024) == payload
    return time.monotonic() - t0


def test_uio_backend_end_to_end_10000_echoes(procs: Procs, tmp_path: Path) -> None:
    """Daemon first (it waits for the UIO device), then the device, then the remote; 10 000 echoes."""
    board = Board(procs, tmp_path)
    board.dir.mkdir()
    fake = FakeUio(tmp_path / "uio")
    report = guarded(procs, board.dir)
    cfg = write_config(tmp_path, fake.root, board.dir)
    procs.start(str(Path(__file__)), "-c", str(cfg), "--runtime-dir", str(board.runtime), log="rprocd.log")
    wait_for(lambda: "waiting for UIO device(s) rpmsg_shm" in procs.log("rprocd.log"), 30, "the daemon to wait")
    add_shm(fake, board.dir)
    procs.sim(board.dir)
    board.wait_endpoints(ENDPOINTS, 30)
    log = procs.log("rprocd.log")
    assert "UIO rpmsg_shm(uio0) map0" in log, log[-2000:]
    elapsed = echo_round_trips(board, ROUND_TRIPS)
    print(f"\n{ROUND_TRIPS} echo round trips through the UIO backend: {elapsed:.2f} s "
          f"({elapsed / ROUND_TRIPS * 1e6:.0f} us each)")  # fmt: skip
    assert_clean(procs, report, "rprocd.log", "sim.log")
    fake.close()


def test_rprocd_cli_with_uio_config(procs: Procs, tmp_path: Path) -> None:
    """The same through ``rprocd -c CONFIG --runtime-dir DIR`` (the lead's CLI)."""
    board = Board(procs, tmp_path)
    board.dir.mkdir()
    fake = FakeUio(tmp_path / "uio")
    add_shm(fake, board.dir)
    report = guarded(procs, board.dir)
    cfg = write_config(tmp_path, fake.root, board.dir)
    procs.sim(board.dir)
    start_cli(procs, board, cfg)
    echo_round_trips(board, ROUND_TRIPS)
    assert_clean(procs, report, "cli.log", "sim.log")
    fake.close()


def start_cli(procs: Procs, board: Board, cfg: Path) -> subprocess.Popen[bytes]:
    p = procs.start("-m", "rprocd.cli.daemon", "-c", str(cfg), "--runtime-dir", str(board.runtime), log="cli.log")
    report = Path(procs.env.get("DEVMEM_GUARD_REPORT", "/nonexistent"))

    def ready_or_exited() -> bool:
        return p.poll() is not None or report.exists() or set(ENDPOINTS) <= board.endpoints()

    wait_for(ready_or_exited, 30, "the daemon to attach")
    if report.exists():
        raise AssertionError(f"the guard caught a bulk routine on shared memory:\n{report.read_text()}")
    if p.poll() is not None:
        raise AssertionError(f"rprocd exited with {p.returncode}:\n{procs.log('cli.log')[-3000:]}")
    return p


def sink_count(b: Board, n: int, size: int) -> bytes:
    """``n`` messages to the sink, then its count (asked on the same connection: in order)."""
    with b.connect("rpmsg-sink") as s:
        for _ in range(n):
            s.send(b"s" * size)
        s.send(b"STAT")
        return s.recv(100)


def source_run(b: Board, count: int, size: int) -> None:
    with b.connect("rpmsg-source") as s:
        s.send(f"{count} {size}".encode())
        for i in range(count):
            m = s.recv(1024)
            assert len(m) == size and struct.unpack_from("<I", m)[0] == i, (i, m[:8])


def test_attach_echo_sink_source_and_resume_touch_shared_memory_only_through_rprocd_memory(
    procs: Procs, tmp_path: Path
) -> None:
    """The whole life of a session on the UIO backend under the guard: attach, traffic, SIGKILL, resume, traffic."""
    board = Board(procs, tmp_path)
    board.dir.mkdir()
    fake = FakeUio(tmp_path / "uio")
    add_shm(fake, board.dir)
    report = guarded(procs, board.dir)
    cfg = write_config(tmp_path, fake.root, board.dir)
    procs.sim(board.dir)
    p = start_cli(procs, board, cfg)
    echo_round_trips(board, 300)
    assert sink_count(board, 40, 100) == b"40 4000"
    source_run(board, 50, 496)
    source_run(board, 7, 5)
    procs.stop(p, signal.SIGKILL)
    start_cli(procs, board, cfg)
    wait_for(lambda: "resumed the live session" in procs.log("cli.log"), 30, "the resume")
    echo_round_trips(board, 300)
    assert sink_count(board, 3, 17) == b"43 4051"  # the remote's session (its counters) survived
    source_run(board, 20, 64)
    assert "resetting" not in procs.log("cli.log")
    assert_clean(procs, report, "cli.log", "sim.log")
    fake.close()


# -- the launcher: config -> factory -> serve ----------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from rprocd.app import RemoteSpec, serve
    from rprocd.backends import Platform
    from rprocd.backends.factory import open_platform
    from rprocd.config import load_config

    ap = argparse.ArgumentParser(description="rprocd from a config file, through the backend factory")
    ap.add_argument("-c", "--config", required=True)
    ap.add_argument("--runtime-dir")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, overrides={"runtime_dir": args.runtime_dir})
    logging.basicConfig(level=cfg.daemon.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    async def run() -> int:
        specs = []
        for rc in cfg.remotes.values():
            platform = await open_platform(rc)

            def opener(p: Platform = platform) -> Platform:
                return p

            specs.append(RemoteSpec(rc.name, rc.layout, opener, reset_wait=rc.reset_wait_ms / 1000))
        return await serve(specs, Path(cfg.daemon.runtime_dir), socket_mode=cfg.daemon.socket_mode)

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
