"""Memory barriers between the last ring write and the doorbell write.

Pure Python cannot issue ``dmb``/``dsb``.  This module loads a tiny C helper
(``barrier.c``: ``dmb oshst`` on arm64, the barrier of Linux's ``writel``)
through :mod:`ctypes`: a prebuilt ``_barrier.so`` beside this file (packaging
builds it: ``python -m rprocd.native build``), else one compiled on first use
into a cache folder when a C compiler is present.  Without either,
:func:`wmb` is a no-op and :data:`KIND` says so; docs/hardware.md states the
trade-off and the mitigation.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("rprocd.native")

_HERE = Path(__file__).resolve().parent
_SOURCE = _HERE / "barrier.c"
_PREBUILT = _HERE / "_barrier.so"


def _cache_dir() -> Path:
    env = os.environ.get("RPROCD_CACHE_DIR") or os.environ.get("CACHE_DIRECTORY")  # systemd CacheDirectory=
    if env:
        return Path(env.split(":")[0])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rprocd"


def build(dest: Path | None = None, *, cc: str | None = None, source: Path = _SOURCE) -> Path | None:
    """Compile ``source`` (barrier.c) into a shared object; returns its path, or None without a compiler."""
    cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None
    src = source.read_bytes()
    if dest is None:
        tag = hashlib.sha256(src + os.uname().machine.encode()).hexdigest()[:16]
        dest = _cache_dir() / f"{source.stem}-{tag}.so"
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".so", dir=dest.parent)
    os.close(fd)
    try:
        subprocess.run(
            [cc, "-O2", "-shared", "-fPIC", "-o", tmp, str(source)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        os.replace(tmp, dest)  # atomic: a concurrent builder produces the same bytes
    except (OSError, subprocess.SubprocessError) as e:
        log.debug("building the barrier helper failed: %s", e)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        return None
    return dest


def _noop() -> None:
    """Fallback: no barrier (see docs/hardware.md, "Ordering the doorbell")."""


def _load() -> tuple[Callable[[], None], Callable[[], None], str]:
    if os.environ.get("RPROCD_NO_NATIVE"):
        return _noop, _noop, "fallback (RPROCD_NO_NATIVE set): no barrier"
    candidates = [_PREBUILT] if _PREBUILT.exists() else []
    if not candidates:
        try:
            built = build()
        except OSError as e:  # unwritable cache, read-only root ...
            log.debug("no cache for the barrier helper: %s", e)
            built = None
        if built:
            candidates.append(built)
    for path in candidates:
        try:
            lib = ctypes.CDLL(str(path))
            if lib.rprocd_barrier_abi() != 1:
                continue
            wmb, mb = lib.rprocd_wmb, lib.rprocd_mb
            wmb.restype = mb.restype = None
            wmb.argtypes = mb.argtypes = []
            return wmb, mb, f"native ({path.name})"
        except (OSError, AttributeError) as e:
            log.debug("cannot load %s: %s", path, e)
    return _noop, _noop, "fallback (no compiler, no prebuilt helper): no barrier"


wmb, mb, KIND = _load()
NATIVE = KIND.startswith("native")

__all__ = ["KIND", "NATIVE", "build", "mb", "wmb"]
