"""The ``/dev/mem`` backend: physical memory through python-periphery's MMIO.

The documented fallback for memory or registers that no UIO device exposes.
It needs ``CAP_SYS_RAWIO`` and a kernel that lets ``/dev/mem`` reach the range
(``CONFIG_STRICT_DEVMEM`` refuses RAM the kernel owns; ``no-map`` reserved
memory and device registers are allowed).

What MMIO is right for, and where rprocd steps around it:

* opening and mapping: ``MMIO(pa, size, path)`` opens with ``O_RDWR|O_SYNC``
  (uncached on arm64) and maps the enclosing pages; it can equally map
  ``/dev/uioN`` (``MMIO(N * page_size, size, "/dev/uioN")`` maps map N).
  rprocd uses it for exactly that and takes the mapping (``MMIO.mapping``);
* ``read32``: a ctypes getter, one 32-bit load: fine;
* ``write32``: a ctypes setter that *loads the register before storing it*
  (CPython's ``I_set`` does ``memcpy(&x, ptr)`` to support bitfields) - wrong
  for FIFOs and read-to-clear registers such as the Telechips mailbox's, so
  registers are written through :class:`~rprocd.mailbox.base.MemoryRegisters`
  (one store, no load);
* ``read``/``write``: plain slice copies (``memcpy``), which may use wide or
  unaligned accesses that fault on Device memory, so shared memory goes
  through :class:`~rprocd.memory.MemoryMap` with ``device=True``.
"""

from __future__ import annotations

import errno
import mmap
from collections.abc import Callable
from typing import Any, cast

from ..layout import Layout
from ..memory import MemoryMap

PAGE_SIZE = mmap.PAGESIZE


class DevMemError(OSError):
    """``/dev/mem`` could not be opened or mapped."""


class DevMemWindow:
    """``[pa, pa + size)`` mapped through ``periphery.MMIO``; ``view`` is exactly that range."""

    def __init__(self, pa: int, size: int, path: str = "/dev/mem"):
        from periphery import MMIO, MMIOError

        try:
            self._mmio = MMIO(pa, size, path=path)
        except MMIOError as e:
            code = e.errno if isinstance(e.errno, int) else errno.EIO
            raise DevMemError(code, f"{path} {pa:#x}+{size:#x}: {e} (needs CAP_SYS_RAWIO)") from None
        start = pa % PAGE_SIZE  # MMIO maps from the page holding pa
        # `mapping` is MMIO's private mmap: not in periphery's stubs (2.4+), so through Any either way
        self._full = memoryview(cast(Any, self._mmio).mapping)
        self.view = self._full[start : start + size]
        self.pa, self.size, self.path = pa, size, path

    def read32(self, offset: int) -> int:
        """One 32-bit load (MMIO.read32: fine for any register)."""
        return int(self._mmio.read32(offset))

    def close(self) -> None:
        self.view.release()
        self._full.release()
        try:
            self._mmio.close()
        except BufferError:
            pass


def open_memory(layout: Layout, path: str = "/dev/mem") -> tuple[MemoryMap, list[Callable[[], None]], str]:
    """Map the layout's shared window from ``path``."""
    w = DevMemWindow(layout.window.pa, layout.window.size, path)
    memory = MemoryMap([(layout.window.pa, w.view)], device=True)

    def close() -> None:
        memory.close()
        w.close()

    return memory, [close], f"{path} {layout.window}"
