"""The arm64 QEMU bed, short version (docs/hwtest.md): OPT-IN, slow.

Boots Debian's arm64 kernel under qemu-system-aarch64 (TCG), with the real
uio_pdrv_genirq bound to device-tree nodes written as docs/hardware.md says,
rprocd in the guest, the simulated remote on the host sharing the guest's RAM,
and the devmem_check plugin watching every access to the window.  It asserts
the negative control (one unaligned load, one DC ZVA: each reported exactly
once), the attach with 4 endpoints, 100 echoes, and no Device-memory
violation from rprocd.

Cold it downloads about 300 MB from Debian's archive into build/hwtest/ and
takes a few minutes; warm, about 2 minutes on 2 cores.  It lives outside
tests/ so that `make test` never collects (or skips) it: run it with
`python3 -m pytest -q hwtest/test_hwtest.py`, or `make hwtest-short`.
Host packages: hwtest/hwtest.mk's HWTEST_HOST_PACKAGES.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent  # hwtest/ is one level down, like tests/


@pytest.mark.timeout(3600)
def test_hwtest_short() -> None:
    r = subprocess.run(
        ["make", "-f", "hwtest/hwtest.mk", "hwtest-short"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = r.stdout
    if r.returncode:
        sys.stdout.write(out[-30000:])  # run.py printed the console, plugin, remote and bridge logs
    assert r.returncode == 0, "the bed failed: " + "; ".join(
        ln for ln in out.splitlines() if ln.startswith("HWTEST FAILED")
    )
    for expected in (
        "HWTEST detector phase unaligned: 1 violation(s), as expected",
        "HWTEST detector phase dczva: 1 violation(s), as expected",
        "HWTEST detector phase rprocd: 0 violation(s), as expected",
        "HWTEST attached endpoints=4",
        "HWTEST echo ok n=100",
        "HWTEST passed",
    ):
        assert expected in out
