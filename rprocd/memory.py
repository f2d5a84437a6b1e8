"""Bounds-checked access to another CPU's memory.

Everything rprocd reads or writes in shared memory goes through a
:class:`MemoryMap`: a set of windows, each a physical address range backed by
a writable buffer (a UIO map, a ``/dev/mem`` map, the virtual board's file).
A physical range that is not wholly inside one window is an error, never an
access: the remote's addresses are untrusted input.

The rules for memory the other core reads concurrently (DESIGN.md, "Shared
memory is another CPU's memory") are enforced here:

* indices, flags and status words go through native-width ``memoryview``
  casts, so each is one naturally aligned load or store of its own width and
  the other core can never observe half of it;
* block copies into and out of shared memory go head bytes, aligned 32-bit
  words, tail bytes (as libmetal's ``metal_io_block_read/write`` do), because
  on arm64 the uncached UIO mapping is Device memory, where the wide and
  overlapping accesses of ``memcpy`` (behind a plain slice copy) may fault.
  The word part runs in C through :mod:`struct` in native mode, which compiles
  to single aligned 32-bit loads and stores.  Ordinary cached memory (the
  virtual board's file) may use plain slice copies instead
  (``device=False``); the result is the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass


class MemoryAccessError(Exception):
    """A physical range lies outside every mapped window (or is misaligned)."""


@dataclass(frozen=True, slots=True)
class Window:
    """One mapped physical range."""

    pa: int
    size: int
    buf: memoryview  # format 'B', len == size

    @property
    def end(self) -> int:
        return self.pa + self.size


_WORDS = [struct.Struct(f"={n}I") for n in range(0, 1025)]


class MemoryMap:
    """Physical address -> memory, for a few non-overlapping windows."""

    def __init__(self, windows: Sequence[tuple[int, memoryview | bytearray]], *, device: bool = False):
        wins: list[Window] = []
        for pa, buf in windows:
            mv = memoryview(buf).cast("B") if not isinstance(buf, memoryview) or buf.format != "B" else buf
            if mv.readonly:
                raise ValueError(f"window at {pa:#x} is read-only")
            wins.append(Window(pa, len(mv), mv))
        wins.sort(key=lambda w: w.pa)
        for a, b in zip(wins, wins[1:], strict=False):
            if a.end > b.pa:
                raise ValueError(f"windows {a.pa:#x}+{a.size:#x} and {b.pa:#x}+{b.size:#x} overlap")
        self.windows: tuple[Window, ...] = tuple(wins)
        self.device = device

    def contains(self, pa: int, size: int) -> bool:
        """True when ``[pa, pa+size)`` lies wholly inside one window."""
        if pa < 0 or size < 0:
            return False
        return any(w.pa <= pa and pa + size <= w.end for w in self.windows)

    def view(self, pa: int, size: int) -> memoryview:
        """A byte view of ``[pa, pa+size)``; raises if it is not inside one window."""
        if pa >= 0 and size >= 0:
            for w in self.windows:
                if w.pa <= pa and pa + size <= w.end:
                    off = pa - w.pa
                    return w.buf[off : off + size]
        raise MemoryAccessError(f"range {pa:#x}+{size:#x} is outside the mapped memory")

    # -- single loads and stores -------------------------------------------

    def read_u8(self, pa: int) -> int:
        return self.view(pa, 1)[0]

    def write_u8(self, pa: int, value: int) -> None:
        self.view(pa, 1)[0] = value

    def read_u16(self, pa: int) -> int:
        return self._aligned(pa, 2).cast("H")[0]

    def write_u16(self, pa: int, value: int) -> None:
        self._aligned(pa, 2).cast("H")[0] = value

    def read_u32(self, pa: int) -> int:
        return self._aligned(pa, 4).cast("I")[0]

    def write_u32(self, pa: int, value: int) -> None:
        self._aligned(pa, 4).cast("I")[0] = value

    def _aligned(self, pa: int, width: int) -> memoryview:
        if pa % width:
            raise MemoryAccessError(f"{width * 8}-bit access at {pa:#x} is not naturally aligned")
        return self.view(pa, width)

    # -- blocks ---------------------------------------------------------------

    def read(self, pa: int, size: int) -> bytes:
        """Copy ``size`` bytes out of shared memory."""
        src = self.view(pa, size)
        if not self.device:
            return src.tobytes()
        out = bytearray(size)
        block_copy(memoryview(out), src, pa)
        return bytes(out)

    def write(self, pa: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into shared memory."""
        dst = self.view(pa, len(data))
        if self.device:
            block_copy(dst, memoryview(data).cast("B"), pa)
        else:
            dst[:] = data


def block_copy(dst: memoryview, src: memoryview, device_pa: int) -> None:
    """Copy ``src`` to ``dst`` (same length) with aligned accesses on the device side.

    ``device_pa`` is the physical address of whichever side is shared memory;
    both ``dst`` and ``src`` start at the same offset relative to word
    alignment on that side.  Head and tail go byte by byte, the middle as
    native 32-bit words, so no access is wider than 32 bits or unaligned.
    """
    n = len(dst)
    head = (-device_pa) % 4
    if head > n:
        head = n
    for i in range(head):
        dst[i] = src[i]
    words = (n - head) // 4
    pos = head
    while words:
        chunk = min(words, 1024)
        fmt = _WORDS[chunk]
        fmt.pack_into(dst, pos, *fmt.unpack_from(src, pos))
        pos += chunk * 4
        words -= chunk
    for i in range(pos, n):
        dst[i] = src[i]
