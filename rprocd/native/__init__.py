"""Native helpers: barriers and device copies pure Python cannot issue.

``barrier.c`` holds the memory barriers (``dma_wmb``/``dma_rmb``/``mb`` as
Linux defines them for rings with ``weak_barriers = false``) and the device
copies (``memcpy_fromio``/``memcpy_toio``/``memset_io`` as arm64's
``arch/arm64/kernel/io.c`` does them).  It is loaded through :mod:`ctypes`:
a prebuilt ``_barrier.so`` beside this file (packaging builds it: ``python
-m rprocd.native build``), else one compiled on first use into a cache folder
when a C compiler is present.  :func:`build` and :func:`load_library` take the
source's name, so a second C source beside this one gets the same treatment.

Without the helper (no compiler, or ``RPROCD_NO_NATIVE=1``):

* :data:`COPY_FROM_IO` and friends are None and :mod:`rprocd.memory` copies
  word by word in Python, making the same aligned device accesses;
* the barriers are no-ops and :data:`KIND` says so.  On x86-64 that loses
  nothing (``dma_wmb``/``dma_rmb`` are compiler barriers there, and the
  interpreter's own C code between two accesses is a compiler barrier);
  on arm64 the ring and doorbell orderings then rely on Device-nGnRnE's
  in-order accesses to one peripheral, which does not cover the remote's
  cacheable view (docs/hardware.md, "Shared memory is Device memory").
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
from typing import Any

log = logging.getLogger("rprocd.native")

_HERE = Path(__file__).resolve().parent
_SOURCE = _HERE / "barrier.c"
_PREBUILT = _HERE / "_barrier.so"
ABI = 2
# no libc call may appear in a device copy: gcc must not turn the loops back into memcpy/memset
CFLAGS = ("-O2", "-shared", "-fPIC", "-fno-builtin", "-fno-tree-loop-distribute-patterns")


def _cache_dir() -> Path:
    env = os.environ.get("RPROCD_CACHE_DIR") or os.environ.get("CACHE_DIRECTORY")  # systemd CacheDirectory=
    if env:
        return Path(env.split(":")[0])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rprocd"


def build(
    dest: Path | None = None,
    *,
    cc: str | None = None,
    source: str = "barrier.c",
    cflags: tuple[str, ...] = CFLAGS,
) -> Path | None:
    """Compile ``source`` (a C file beside this one) into a shared object; its path, or None without a compiler."""
    cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None
    src_path = _HERE / source
    stem = src_path.stem
    src = src_path.read_bytes()
    if dest is None:
        tag = hashlib.sha256(src + " ".join(cflags).encode() + os.uname().machine.encode()).hexdigest()[:16]
        dest = _cache_dir() / f"{stem}-{tag}.so"
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}-", suffix=".so", dir=dest.parent)
    os.close(fd)
    try:
        subprocess.run([cc, *cflags, "-o", tmp, str(src_path)], check=True, capture_output=True, timeout=60)
        os.replace(tmp, dest)  # atomic: a concurrent builder produces the same bytes
    except (OSError, subprocess.SubprocessError) as e:
        log.debug("building %s failed: %s", source, e)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        return None
    return dest


def load_library(source: str, abi_symbol: str, abi: int) -> tuple[ctypes.CDLL | None, str]:
    """The prebuilt (``_<stem>.so``) or cached build of ``source`` whose ``abi_symbol()`` returns ``abi``."""
    if os.environ.get("RPROCD_NO_NATIVE"):
        return None, "RPROCD_NO_NATIVE set"
    prebuilt = _HERE / f"_{Path(source).stem}.so"
    candidates = [prebuilt] if prebuilt.exists() else []
    if not candidates:
        try:
            built = build(source=source)
        except OSError as e:  # unwritable cache, read-only root ...
            log.debug("no cache for %s: %s", source, e)
            built = None
        if built:
            candidates.append(built)
    for path in candidates:
        try:
            lib = ctypes.CDLL(str(path))
            fn = getattr(lib, abi_symbol)
            fn.restype = ctypes.c_int
            if fn() == abi:
                return lib, path.name
        except (OSError, AttributeError) as e:
            log.debug("cannot load %s: %s", path, e)
    return None, "no compiler, no prebuilt helper"


def noop() -> None:
    """No barrier: where one compiles to nothing, or without the helper (see the module docstring)."""


_noop = noop


def _fn(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Any:
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


def _load_extension() -> tuple[Any, str]:
    """barrier.c built as the CPython extension ``_rprocd_native`` (needs Python.h), or None."""
    if os.environ.get("RPROCD_NO_NATIVE"):
        return None, "RPROCD_NO_NATIVE set"
    import importlib.util
    import sysconfig

    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    path: Path | None = _HERE / f"_rprocd_native{suffix}"
    assert path is not None
    if not path.exists() and _PREBUILT.exists():
        return None, "only the ctypes helper is prebuilt"  # an installed package: compile nothing at run time
    if not path.exists():
        inc = sysconfig.get_paths().get("include") or ""
        if not (Path(inc) / "Python.h").exists():
            return None, "no Python.h"
        try:
            path = build(source="barrier.c", cflags=(*CFLAGS, "-DRPROCD_PYTHON", f"-I{inc}"))
        except OSError as e:
            log.debug("no cache for the extension: %s", e)
            path = None
        if path is None:
            return None, "the extension did not build"
    try:
        spec = importlib.util.spec_from_file_location("_rprocd_native", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        if mod.abi() == ABI:
            return mod, path.name
    except (ImportError, OSError, AttributeError, AssertionError) as e:
        log.debug("cannot load %s: %s", path, e)
    return None, "the extension did not load"


# x86-64: dma_wmb()/dma_rmb() are barrier() (arch/x86/include/asm/barrier.h), a compiler barrier only,
# because TSO keeps stores in order and loads in order.  Between two of our accesses the interpreter
# always returns through opaque C calls, which no compiler reorders across, so calling an empty C
# function would order nothing more: skip the call.  mb() stays (TSO lets a load pass an older store).
_TSO = os.uname().machine in ("x86_64", "amd64", "i386", "i686")

wmb: Callable[[], None]
rmb: Callable[[], None]
mb: Callable[[], None]
# (to_addr, from_addr, n); (to_addr, data: any contiguous buffer, n); (to_addr, byte, n); (from_addr, n) -> bytes
COPY_FROM_IO: Callable[[int, int, int], None] | None
COPY_TO_IO: Callable[[int, Any, int], None] | None
SET_IO: Callable[[int, int, int], None] | None
FROM_IO_BYTES: Callable[[int, int], bytes] | None
# the extension (span_read, span_write, span_read_into, span_fill: see barrier.c), or None
SPAN: Any = None

_ext, _where = _load_extension()
if _ext is not None:
    wmb = _noop if _TSO else _ext.wmb
    rmb = _noop if _TSO else _ext.rmb
    mb = _ext.mb
    COPY_FROM_IO, COPY_TO_IO, SET_IO, FROM_IO_BYTES = (
        _ext.copy_from_io,
        _ext.copy_to_io,
        _ext.set_io,
        _ext.from_io_bytes,
    )
    SPAN = _ext
    KIND = f"native extension ({_where})"
else:
    _lib, _where = load_library("barrier.c", "rprocd_barrier_abi", ABI)
    if _lib is not None:
        wmb = _noop if _TSO else _fn(_lib, "rprocd_wmb", None)
        rmb = _noop if _TSO else _fn(_lib, "rprocd_rmb", None)
        mb = _fn(_lib, "rprocd_mb", None)
        _vp, _sz = ctypes.c_void_p, ctypes.c_size_t
        COPY_FROM_IO = _fn(_lib, "rprocd_copy_from_io", None, _vp, _vp, _sz)
        _to_io = _fn(_lib, "rprocd_copy_to_io", None, _vp, _vp, _sz)
        SET_IO = _fn(_lib, "rprocd_set_io", None, _vp, ctypes.c_int, _sz)
        FROM_IO_BYTES = None

        def _copy_to_io(to: int, data: Any, n: int, _f: Any = _to_io) -> None:
            _f(to, data if type(data) is bytes else bytes(data), n)  # ctypes passes a bytes object's buffer

        COPY_TO_IO = _copy_to_io
        KIND = f"native ({_where})"
    else:
        wmb = rmb = mb = _noop
        COPY_FROM_IO = COPY_TO_IO = SET_IO = FROM_IO_BYTES = None
        KIND = f"fallback ({_where}): no barrier, device copies in Python"
NATIVE = COPY_FROM_IO is not None

__all__ = [
    "COPY_FROM_IO",
    "COPY_TO_IO",
    "FROM_IO_BYTES",
    "KIND",
    "NATIVE",
    "SET_IO",
    "SPAN",
    "build",
    "load_library",
    "mb",
    "rmb",
    "wmb",
]
