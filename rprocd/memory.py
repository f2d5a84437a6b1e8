"""The one door to shared memory: bounds-checked, aligned, Device-memory-safe.

Everything rprocd (and its simulated remote) reads or writes in shared memory
goes through a :class:`MemoryMap` (physical addresses) or a :class:`Span`
(one range of it, offsets from its start).  A physical range that is not
wholly inside one window is an error, never an access: the remote's
addresses are untrusted input.  (The model is rust-vmm's ``vm-memory``:
callers get accessors, never the memory.)

**Shared memory is Device memory.**  On the board the kernel maps a UIO
region with ``pgprot_noncached`` (arm64 Device-nGnRnE).  There an access not
aligned to its own width faults, and so does ``DC ZVA``, which glibc's
``memset`` uses for large fills; glibc's ``memcpy`` ends with overlapping
wide accesses at ``dst + n - 8``.  So, here and nowhere else:

* loads and stores are 1, 2, 4 or 8 bytes wide and naturally aligned, each
  one item of a native-width ``memoryview`` cast (one load or store, which
  the other core never sees half of); a misaligned offset raises
  :class:`MemoryAccessError`;
* blocks are copied as the kernel's ``memcpy_fromio``/``memcpy_toio``/
  ``memset_io`` do on arm64: bytes up to an 8-byte boundary of the device
  side, aligned 64-bit words, bytes.  The native helper
  (:mod:`rprocd.native`, volatile accesses in C) does it on the hot path;
  without it a Python twin makes the very same accesses;
* no libc bulk routine (``memcpy``, ``memmove``, ``memset``) ever touches the
  window: no slice of it is assigned, no ``bytes()`` is made of it, no
  ``struct.pack_into``/``unpack_from`` runs on it.  That is why no caller
  ever gets a view of the window: :class:`Span` hands out values and copies
  into the caller's own buffers only.  tests/test_devmem_guard.py runs the
  daemon under an ``LD_PRELOAD`` shim that aborts on any such call.

A message is copied out once, straight into the ``bytes`` object handed on
(``Span.read``), or into a buffer the caller owns (``Span.read_into``): the
hot path allocates nothing but the message itself.
"""

from __future__ import annotations

import ctypes
import struct
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from . import native

_Q = struct.Struct("=Q")
_WIDTH_FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}


class MemoryAccessError(Exception):
    """A physical range lies outside every mapped window, or an access is misaligned."""


def _address(buf: Any) -> tuple[int, Any]:
    """(address, anchor) of a writable buffer; the anchor keeps the address valid while held."""
    anchor = (ctypes.c_char * len(buf)).from_buffer(buf) if len(buf) else None
    return (ctypes.addressof(anchor) if anchor is not None else 0), anchor


class IoBuffer:
    """A caller-owned normal-memory buffer to copy out of shared memory into (``data``, and ``view`` of it)."""

    __slots__ = ("data", "view")

    def __init__(self, size: int):
        self.data = bytearray(size)
        self.view = memoryview(self.data)


class Window:
    """One mapped physical range and its native-width casts (private to this module)."""

    __slots__ = ("pa", "size", "end", "_buf", "casts", "heads", "addr", "_anchor", "handed")

    def __init__(self, pa: int, buf: memoryview):
        self.pa, self.size, self.end = pa, len(buf), pa + len(buf)
        self._buf = buf
        self.addr, self._anchor = _address(buf)
        if self.addr and (self.addr - pa) % 8:
            raise ValueError(f"window at {pa:#x} is mapped at {self.addr:#x}: not congruent modulo 8")
        # casts[w][i] is the w-byte word at byte (heads[w] + i * w) of the window
        self.casts: dict[int, memoryview] = {}
        self.heads: dict[int, int] = {}
        self.handed: list[memoryview] = []  # word arrays given out by Span.words (released with us)
        for width, fmt in _WIDTH_FMT.items():
            head = min((-pa) % width, self.size)
            n = (self.size - head) // width
            self.heads[width] = head
            self.casts[width] = buf[head : head + n * width].cast(fmt)  # type: ignore[call-overload]

    def view(self, off: int, size: int) -> memoryview:
        """A byte view of part of the window, for the extension only (released with the window)."""
        return self.hand(self._buf[off : off + size])

    def hand(self, v: memoryview) -> memoryview:
        """Remember ``v`` to release it with the window; forget those nobody holds any more."""
        if len(self.handed) >= 64:
            keep = []
            for h in self.handed:
                if sys.getrefcount(h) > 3:  # the list, the loop variable, getrefcount's argument
                    keep.append(h)
                else:
                    h.release()
            self.handed = keep
        self.handed.append(v)
        return v

    def close(self) -> None:
        self.addr = 0
        self._anchor = None
        for c in (*self.handed, *self.casts.values()):
            c.release()
        self._buf.release()


class Span:
    """Aligned access to ``[pa, pa + size)`` inside one window; offsets are from ``pa``.

    Offsets are checked against the span (``MemoryAccessError`` outside it)
    and each access against its own width.  A span is cheap: make one per
    structure (a vring, the buffer pool, the table) and keep it.
    """

    __slots__ = (
        "pa", "size", "_win", "_b", "_h", "_i", "_q", "_k1", "_k2", "_k4", "_k8", "_dev",
        "read", "write", "_read_into", "_fill",
    )  # fmt: skip

    read: Callable[[int, int], bytes]
    """``read(off, n)``: memcpy_fromio of ``n`` bytes at ``off`` into a new ``bytes``."""
    write: Callable[[int, bytes | bytearray | memoryview], None]
    """``write(off, data)``: memcpy_toio of ``data`` to ``off``."""

    def __init__(self, win: Window, pa: int, size: int):
        if not (win.pa <= pa and size >= 0 and pa + size <= win.end):
            raise MemoryAccessError(f"range {pa:#x}+{size:#x} is outside the window at {win.pa:#x}")
        self.pa, self.size, self._win = pa, size, win
        base = pa - win.pa
        c, h = win.casts, win.heads
        self._b, self._h, self._i, self._q = c[1], c[2], c[4], c[8]
        # item index = (k + off) // width for an aligned offset
        self._k1 = base
        self._k2 = base - h[2]
        self._k4 = base - h[4]
        self._k8 = base - h[8]
        self._dev = base  # byte offset of pa in the window
        path = PATH
        if path == "extension":  # C checks the range and refuses a released window
            view = win.view(base, size)
            ops = native.SPAN
            self.read = partial(ops.span_read, view)
            self.write = partial(ops.span_write, view)
            self._read_into = partial(ops.span_read_into, view)
            self._fill = partial(ops.span_fill, view)
        else:
            twins = _CTYPES if path == "ctypes" else _PYTHON
            self.read = partial(twins[0], self)
            self.write = partial(twins[1], self)
            self._read_into = partial(twins[2], self)
            self._fill = partial(twins[3], self)

    def _check(self, off: int, width: int) -> None:
        if off < 0 or off + width > self.size:
            raise MemoryAccessError(f"{width}-byte access at {self.pa:#x}+{off:#x} is outside {self.size:#x} bytes")
        raise MemoryAccessError(f"{width * 8}-bit access at {self.pa + off:#x} is not naturally aligned")

    def span(self, off: int, size: int) -> Span:
        """The sub-range ``[off, off + size)``."""
        if off < 0 or size < 0 or off + size > self.size:
            raise MemoryAccessError(f"range {self.pa + off:#x}+{size:#x} is outside {self.pa:#x}+{self.size:#x}")
        return Span(self._win, self.pa + off, size)

    def word_address(self, width: int, off: int) -> int:
        """The address in this process of the aligned ``width``-byte word at ``off``; 0 if it has none.

        For the one store made outside this module: the native socket helper
        stores vring0's record (:class:`rprocd.vring.UsedRecord`, 16 bits)
        itself, right before its ``sendmmsg``. Checked here like any access;
        0 once the window is closed, or for a buffer ctypes cannot address.
        """
        if off < 0 or off + width > self.size or (self.pa + off) % width:
            self._check(off, width)
        addr = self._win.addr
        return addr + self._dev + off if addr else 0

    def words(self, width: int, off: int, count: int) -> tuple[Callable[[int], int], Callable[[int, int], None]]:
        """``(load, store)`` of the ``count`` ``width``-byte words from ``off``, for a hot path.

        ``load(i)`` and ``store(i, v)`` are one aligned load or store of word
        ``i`` each (an item of a native-width cast, called without Python
        overhead): aligned by construction, ``IndexError`` past ``count``.
        Integer indices only.
        """
        if width not in _WIDTH_FMT:
            raise ValueError(f"no {width}-byte loads and stores")
        if (self.pa + off) % width:
            raise MemoryAccessError(f"{width * 8}-bit words at {self.pa + off:#x} are not naturally aligned")
        if off < 0 or count < 0 or off + width * count > self.size:
            raise MemoryAccessError(f"{count} words at {self.pa + off:#x} are outside {self.pa:#x}+{self.size:#x}")
        k = {1: self._k1, 2: self._k2, 4: self._k4, 8: self._k8}[width]
        start = (k + off) // width
        arr = self._win.hand(self._win.casts[width][start : start + count])
        return arr.__getitem__, arr.__setitem__

    # -- single loads and stores ---------------------------------------------------

    def load8(self, off: int) -> int:
        if not 0 <= off < self.size:
            self._check(off, 1)
        return self._b[self._k1 + off]

    def store8(self, off: int, value: int) -> None:
        if not 0 <= off < self.size:
            self._check(off, 1)
        self._b[self._k1 + off] = value

    def load16(self, off: int) -> int:
        if (self.pa + off) & 1 or not 0 <= off <= self.size - 2:
            self._check(off, 2)
        return self._h[(self._k2 + off) >> 1]

    def store16(self, off: int, value: int) -> None:
        if (self.pa + off) & 1 or not 0 <= off <= self.size - 2:
            self._check(off, 2)
        self._h[(self._k2 + off) >> 1] = value

    def load32(self, off: int) -> int:
        if (self.pa + off) & 3 or not 0 <= off <= self.size - 4:
            self._check(off, 4)
        return self._i[(self._k4 + off) >> 2]

    def store32(self, off: int, value: int) -> None:
        if (self.pa + off) & 3 or not 0 <= off <= self.size - 4:
            self._check(off, 4)
        self._i[(self._k4 + off) >> 2] = value

    def load64(self, off: int) -> int:
        if (self.pa + off) & 7 or not 0 <= off <= self.size - 8:
            self._check(off, 8)
        return self._q[(self._k8 + off) >> 3]

    def store64(self, off: int, value: int) -> None:
        if (self.pa + off) & 7 or not 0 <= off <= self.size - 8:
            self._check(off, 8)
        self._q[(self._k8 + off) >> 3] = value

    # -- device copies (read and write are set per instance, see __init__) ---------------

    def read_into(self, off: int, n: int, dst: bytearray | memoryview, at: int = 0) -> None:
        """memcpy_fromio: ``n`` bytes at ``off`` into ``dst[at:at + n]`` (a buffer the caller owns)."""
        self._read_into(off, n, dst, at)

    def fill(self, off: int, n: int, byte: int = 0) -> None:
        """memset_io: ``n`` bytes of ``byte`` at ``off``."""
        self._fill(off, n, byte)

    def _range(self, off: int, n: int) -> int:
        """The device address of ``[off, off + n)``; raises outside the span or once closed."""
        if off < 0 or n < 0 or off + n > self.size:
            raise MemoryAccessError(f"range {self.pa + off:#x}+{n:#x} is outside {self.pa:#x}+{self.size:#x}")
        addr = self._win.addr
        if not addr and n:
            raise MemoryAccessError(f"the window at {self._win.pa:#x} is closed")
        return addr + self._dev + off


# which device copies spans use: the extension (hot path), the ctypes helper, or the Python twins.
# All three make the same device accesses; tests set PATH to compare them (spans bind it when made).
PATH = "extension" if native.SPAN is not None else "ctypes" if native.NATIVE else "python"
if native.SPAN is not None:
    native.SPAN.set_error(MemoryAccessError)


def _head(span: Span, off: int, n: int) -> int:
    """How many single bytes before the device side of ``off`` is 8-byte aligned."""
    return min((-(span.pa + off)) % 8, n)


def _py_read_into(span: Span, off: int, n: int, dst: bytearray | memoryview, at: int = 0) -> None:
    span._range(off, n)
    if at < 0 or at + n > len(dst):
        raise ValueError(f"{n} bytes do not fit at {at} in a {len(dst)}-byte buffer")
    head = _head(span, off, n)
    for i in range(head):
        dst[at + i] = span.load8(off + i)
    i = head
    while n - i >= 8:
        _Q.pack_into(dst, at + i, span.load64(off + i))  # normal memory: the caller's buffer
        i += 8
    while i < n:
        dst[at + i] = span.load8(off + i)
        i += 1


def _py_read(span: Span, off: int, n: int) -> bytes:
    out = bytearray(n)
    span._read_into(off, n, out, 0)
    return bytes(out)


def _py_write(span: Span, off: int, data: bytes | bytearray | memoryview) -> None:
    if type(data) is not bytes and type(data) is not bytearray:
        data = bytes(data)  # normal memory to normal memory (a memoryview's items may not be bytes)
    n = len(data)
    span._range(off, n)
    head = _head(span, off, n)
    for i in range(head):
        span.store8(off + i, data[i])
    i = head
    while n - i >= 8:
        span.store64(off + i, _Q.unpack_from(data, i)[0])
        i += 8
    while i < n:
        span.store8(off + i, data[i])
        i += 1


def _py_fill(span: Span, off: int, n: int, byte: int = 0) -> None:
    span._range(off, n)
    word = (byte & 0xFF) * 0x0101010101010101
    head = _head(span, off, n)
    for i in range(head):
        span.store8(off + i, byte)
    i = head
    while n - i >= 8:
        span.store64(off + i, word)
        i += 8
    while i < n:
        span.store8(off + i, byte)
        i += 1


def _ct_read_into(span: Span, off: int, n: int, dst: bytearray | memoryview, at: int = 0) -> None:
    src = span._range(off, n)
    if at < 0 or at + n > len(dst):
        raise ValueError(f"{n} bytes do not fit at {at} in a {len(dst)}-byte buffer")
    if n:
        addr, _anchor = _address(dst)
        assert native.COPY_FROM_IO is not None
        native.COPY_FROM_IO(addr + at, src, n)


def _ct_read(span: Span, off: int, n: int) -> bytes:
    out = bytearray(n)
    _ct_read_into(span, off, n, out)
    return bytes(out)


def _ct_write(span: Span, off: int, data: bytes | bytearray | memoryview) -> None:
    n = len(data) if type(data) is bytes else memoryview(data).nbytes
    dst = span._range(off, n)
    assert native.COPY_TO_IO is not None
    native.COPY_TO_IO(dst, data, n)


def _ct_fill(span: Span, off: int, n: int, byte: int = 0) -> None:
    dst = span._range(off, n)
    assert native.SET_IO is not None
    native.SET_IO(dst, byte, n)


_PYTHON = (_py_read, _py_write, _py_read_into, _py_fill)
_CTYPES = (_ct_read, _ct_write, _ct_read_into, _ct_fill)


class MemoryMap:
    """Physical address -> memory, for a few non-overlapping windows.

    ``device`` says what the memory is (UIO/``/dev/mem``: Device memory; the
    virtual board's file: normal memory); the accesses are the same either
    way, so the virtual board tests the code the board runs.
    """

    def __init__(self, windows: Sequence[tuple[int, memoryview | bytearray]], *, device: bool = False):
        wins: list[Window] = []
        try:
            for pa, buf in windows:
                mv = memoryview(buf)
                if mv.readonly:
                    raise ValueError(f"window at {pa:#x} is read-only")
                wins.append(Window(pa, mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv[:]))
            wins.sort(key=lambda w: w.pa)
            for a, b in zip(wins, wins[1:], strict=False):
                if a.end > b.pa:
                    raise ValueError(f"windows {a.pa:#x}+{a.size:#x} and {b.pa:#x}+{b.size:#x} overlap")
        except BaseException:
            for w in wins:
                w.close()
            raise
        self.windows: tuple[Window, ...] = tuple(wins)
        self.device = device
        self._whole = tuple(Span(w, w.pa, w.size) for w in wins)  # what the accessors below go through

    def close(self) -> None:
        """Release every window (spans made from it stop working); the buffers may then be unmapped."""
        for w in self.windows:
            w.close()
        self.windows = ()
        self._whole = ()

    def _at(self, pa: int, size: int) -> tuple[Span, int]:
        """The whole-window span holding ``[pa, pa+size)`` and the offset of ``pa`` in it."""
        if pa >= 0 and size >= 0:
            for sp in self._whole:
                if sp.pa <= pa and pa + size <= sp.pa + sp.size:
                    return sp, pa - sp.pa
        raise MemoryAccessError(f"range {pa:#x}+{size:#x} is outside the mapped memory")

    def contains(self, pa: int, size: int) -> bool:
        """True when ``[pa, pa+size)`` lies wholly inside one window."""
        if pa < 0 or size < 0:
            return False
        return any(w.pa <= pa and pa + size <= w.end for w in self.windows)

    def span(self, pa: int, size: int) -> Span:
        """Aligned access to ``[pa, pa+size)``; raises if it is not inside one window."""
        if pa >= 0 and size >= 0:
            for w in self.windows:
                if w.pa <= pa and pa + size <= w.end:
                    return Span(w, pa, size)
        raise MemoryAccessError(f"range {pa:#x}+{size:#x} is outside the mapped memory")

    # -- single loads and stores at physical addresses (not for the hot path) ---------

    def read_u8(self, pa: int) -> int:
        sp, off = self._at(pa, 1)
        return sp.load8(off)

    def write_u8(self, pa: int, value: int) -> None:
        sp, off = self._at(pa, 1)
        sp.store8(off, value)

    def read_u16(self, pa: int) -> int:
        sp, off = self._at(pa, 2)
        return sp.load16(off)

    def write_u16(self, pa: int, value: int) -> None:
        sp, off = self._at(pa, 2)
        sp.store16(off, value)

    def read_u32(self, pa: int) -> int:
        sp, off = self._at(pa, 4)
        return sp.load32(off)

    def write_u32(self, pa: int, value: int) -> None:
        sp, off = self._at(pa, 4)
        sp.store32(off, value)

    def read_u64(self, pa: int) -> int:
        sp, off = self._at(pa, 8)
        return sp.load64(off)

    def write_u64(self, pa: int, value: int) -> None:
        sp, off = self._at(pa, 8)
        sp.store64(off, value)

    # -- blocks ---------------------------------------------------------------------

    def read(self, pa: int, size: int) -> bytes:
        """Copy ``size`` bytes out of shared memory (memcpy_fromio)."""
        sp, off = self._at(pa, size)
        return sp.read(off, size)

    def write(self, pa: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into shared memory (memcpy_toio)."""
        n = len(data) if type(data) is bytes else memoryview(data).nbytes
        sp, off = self._at(pa, n)
        sp.write(off, data)

    def fill(self, pa: int, size: int, byte: int = 0) -> None:
        """Set ``size`` bytes to ``byte`` (memset_io)."""
        sp, off = self._at(pa, size)
        sp.fill(off, size, byte)


def span_over(buf: bytearray | memoryview, pa: int = 0) -> Span:
    """A span over a whole normal-memory buffer at physical ``pa`` (firmware images, tests)."""
    mem = MemoryMap([(pa, buf)])
    return mem.span(pa, mem.windows[0].size)
