"""The code base stays ruff- and mypy-clean (the same checks as ``make lint``)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff() -> None:
    r = run("ruff", "check", ".")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("ruff", "format", "--check", "rprocd", "tests", "bench")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy() -> None:
    r = run("mypy", "rprocd", "tests", "bench")
    assert r.returncode == 0, r.stdout + r.stderr
