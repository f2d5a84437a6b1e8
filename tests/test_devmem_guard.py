"""The bulk-copy guard (tests/native/devmem_guard.c) catches what would fault on Device memory.

tests/test_uio_e2e.py runs the daemon and the simulated remote under it and
requires a clean report; this file shows the guard fails a process that
touches the window with a libc bulk routine (writes and reads alike), and
lets rprocd.memory's accesses through, on both copy paths.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake_uio import REPO, FakeMap, FakeUio, kernel_env

CHILD = """
import mmap, os, struct, sys
from rprocd.backends.uio import MappedRegion, lookup
info = lookup(["rpmsg_shm"], sys.argv[1], sys.argv[2])["rpmsg_shm"]
region = MappedRegion(info, info.maps[0])
window = region.view
how = sys.argv[3]
print("mapped", flush=True)
if how == "slice":
    window[:] = bytes(len(window))
elif how == "pack_into":
    struct.pack_into("<IIIHH", window, 0x4000, 1, 2, 3, 4, 5)
elif how == "bytes":
    print(bytes(window[0x4000:0x4010]))
elif how == "overlap":
    window[0x4000:0x4010] = window[0x4001:0x4011]
elif how == "memory":
    from rprocd.memory import MemoryMap
    mem = MemoryMap([(info.maps[0].pa, window)], device=True)
    span = mem.span(0x200CA000, 0x1000)
    span.fill(0, 0x1000, 0)
    span.write(3, b"x" * 497)
    assert span.read(3, 497) == b"x" * 497
    mem.write_u64(0x200CA008, 7)
    mem.close()
print("done", flush=True)
"""


@pytest.fixture
def shm(tmp_path: Path) -> Iterator[tuple[FakeUio, dict[str, str]]]:
    fake = FakeUio(tmp_path / "uio")
    fake.add_memory_device("rpmsg_shm", [FakeMap(0x200C6000, 0x8000)])
    env = kernel_env(guard=True)
    env["DEVMEM_GUARD_REPORT"] = str(tmp_path / "report")
    yield fake, env
    fake.close()


def _run(fake: FakeUio, env: dict[str, str], how: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-c", CHILD, str(fake.sysfs_root), str(fake.dev_root), how]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("how", "routine"), [("slice", "memcpy"), ("pack_into", "memset"), ("bytes", "memcpy"), ("overlap", "memmove")]
)
def test_a_bulk_routine_on_the_window_is_caught(
    shm: tuple[FakeUio, dict[str, str]], tmp_path: Path, how: str, routine: str
) -> None:
    fake, env = shm
    r = _run(fake, env, how)
    assert r.returncode == -signal.SIGABRT, (r.returncode, r.stdout, r.stderr)
    assert "mapped" in r.stdout and "done" not in r.stdout
    assert f"devmem_guard: {routine}(" in r.stderr and "touches shared memory" in r.stderr, r.stderr
    assert f"devmem_guard: {routine}(" in (tmp_path / "report").read_text()
    assert "Fatal Python error: Aborted" in r.stderr  # with the Python stack of the offender


@pytest.mark.parametrize("no_native", [False, True])
def test_rprocd_memory_passes_the_guard(shm: tuple[FakeUio, dict[str, str]], tmp_path: Path, no_native: bool) -> None:
    fake, env = shm
    if no_native:
        env["RPROCD_NO_NATIVE"] = "1"  # the Python twins of the device copies
    r = _run(fake, env, "memory")
    assert r.returncode == 0 and "done" in r.stdout, (r.stdout, r.stderr)
    assert "devmem_guard: guarding" in r.stderr
    assert not (tmp_path / "report").exists()
