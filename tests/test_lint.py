"""The code base stays ruff- and mypy-clean (the same checks as ``make lint``)."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff() -> None:
    r = run("ruff", "check", ".")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("ruff", "format", "--check", "rprocd", "tests", "bench", "hwtest")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy() -> None:
    r = run("mypy", "rprocd", "tests", "bench", "hwtest")
    assert r.returncode == 0, r.stdout + r.stderr


def _lock() -> dict[str, str]:
    """requirements/test.txt as {normalized name: version}; every line a ``name==version`` pin."""
    pins: dict[str, str] = {}
    for line in (REPO / "requirements" / "test.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version and " " not in line, f"requirements/test.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def test_lock_pins_every_requirement_within_pyproject() -> None:
    """The lock ``make`` installs into .venv holds each of pyproject's requirements, in its range."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    wanted += project["optional-dependencies"]["fast"]
    pins = _lock()
    for spec in map(Requirement, wanted):
        name = canonicalize_name(spec.name)
        assert name in pins, f"requirements/test.txt does not pin {spec.name} (pyproject.toml wants {spec})"
        assert spec.specifier.contains(pins[name]), f"requirements/test.txt: {name}=={pins[name]} is outside {spec}"
    direct = (REPO / "requirements" / "test.in").read_text().splitlines()
    for line in direct:
        if line.strip() and not line.startswith("#"):
            pinned, _, version = line.partition("==")
            assert pins.get(canonicalize_name(pinned)) == version, f"test.in pins {line}, test.txt does not: make lock"
