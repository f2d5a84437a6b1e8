"""End to end through the UIO code path: the daemon maps the fake UIO device that *is* the virtual board's memory.

The simulated remote (``rprocctl sim``) runs on the board folder as usual.
The daemon is configured with ``backend = "uio"``: it finds ``rpmsg_shm`` in
a fake sysfs, mmaps ``/dev/uio0`` (a link to the board's ``memory`` file) at
offset 0, and so shares the remote's memory through the production UIO
backend; only its doorbell is the board's datagram sockets (``driver =
"sim"``), since a fake node cannot also be the mailbox.

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
import struct
import sys
import time
from pathlib import Path

if __name__ != "__main__":
    from tests.conftest import ENDPOINTS, Board, Procs, wait_for

    from .fake_uio import FakeMap, FakeUio

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
    fake.add_memory_device("rpmsg_shm", [FakeMap(0x200C6000, 0x8000, "rpmsg_shm", backing=board / "memory")])


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


def test_rprocd_cli_with_uio_config(procs: Procs, tmp_path: Path) -> None:
    """The same through ``rprocd -c CONFIG --runtime-dir DIR`` (the lead's CLI)."""
    board = Board(procs, tmp_path)
    board.dir.mkdir()
    fake = FakeUio(tmp_path / "uio")
    add_shm(fake, board.dir)
    cfg = write_config(tmp_path, fake.root, board.dir)
    procs.sim(board.dir)
    p = procs.start("-m", "rprocd.cli.daemon", "-c", str(cfg), "--runtime-dir", str(board.runtime), log="cli.log")

    def ready_or_exited() -> bool:
        return p.poll() is not None or set(ENDPOINTS) <= board.endpoints()

    wait_for(ready_or_exited, 30, "the daemon to attach")
    if p.poll() is not None:
        raise AssertionError(f"rprocd exited with {p.returncode}:\n{procs.log('cli.log')[-3000:]}")
    echo_round_trips(board, ROUND_TRIPS)


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
