"""Split virtqueue, driver (host) side, over shared memory (sans-I/O).

Layout exactly as Linux's legacy ``vring_init()`` (``include/uapi/linux/virtio_ring.h``)::

    desc[num]            16 bytes each: u64 addr, u32 len, u16 flags, u16 next
    avail                u16 flags, u16 idx, u16 ring[num], u16 used_event
    (pad to ``align``)
    used                 u16 flags, u16 idx, {u32 id, u32 len} ring[num], u16 avail_event

The host owns the descriptor table and the avail ring; the remote owns the
used ring.  Every shared index is one aligned 16-bit store or load through a
native-width ``memoryview`` cast; entries are written before the index that
publishes them and read after the index that covers them (DESIGN.md).  What
the remote writes (used ids, lengths, the used index) is checked before use:
a violation raises :class:`VringError`, never an out-of-range access.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from .native import mb

VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4
VRING_USED_F_NO_NOTIFY = 1
VRING_AVAIL_F_NO_INTERRUPT = 1

DESC = struct.Struct("<QIHH")


class VringError(Exception):
    """The remote broke the ring protocol (bad used id, index jump, ...)."""


def vring_offsets(pa: int, num: int, align: int) -> tuple[int, int, int]:
    """(avail, used, size) byte offsets from ``pa``, as ``vring_init``/``vring_size`` compute them."""
    if num <= 0 or num > 32768 or num & (num - 1):
        raise ValueError(f"vring size {num} is not a power of two in 1..32768")
    if align <= 0 or align & (align - 1):
        raise ValueError(f"vring alignment {align} is not a power of two")
    avail = num * DESC.size
    avail_end = pa + avail + 2 * (3 + num)  # flags, idx, ring[num], used_event
    used_pa = (avail_end + align - 1) & ~(align - 1)
    used = used_pa - pa
    size = used + 2 * 3 + 8 * num  # flags, idx, ring[num], avail_event
    return avail, used, size


class Vring:
    """The host's half of one split ring.  ``buf`` covers exactly the ring."""

    __slots__ = (
        "pa", "num", "align", "size", "_buf", "_avail", "_used16", "_used32",
        "avail_idx", "last_used", "_out", "inflight", "_mask",
    )  # fmt: skip

    def __init__(self, buf: memoryview, pa: int, num: int, align: int):
        avail, used, size = vring_offsets(pa, num, align)
        if len(buf) < size:
            raise ValueError(f"vring at {pa:#x} needs {size:#x} bytes, has {len(buf):#x}")
        if pa % 4 or used % 4:
            raise ValueError(f"vring at {pa:#x} is not 4-byte aligned")
        self.pa, self.num, self.align, self.size = pa, num, align, size
        self._mask = num - 1
        self._buf = buf[:size]
        # [0] flags, [1] idx, [2 + i] ring[i], [2 + num] used_event
        self._avail = buf[avail : avail + 2 * (3 + num)].cast("H")
        self._used16 = buf[used : used + 4].cast("H")  # [0] flags, [1] idx
        self._used32 = buf[used + 4 : used + 4 + 8 * num].cast("I")  # [2i] id, [2i+1] len
        self.avail_idx = 0  # our shadow of avail.idx (we are its only writer)
        self.last_used = 0  # next used entry we will read
        self._out = bytearray(num)  # 1 while descriptor i is with the remote
        self.inflight = 0

    # -- session ---------------------------------------------------------------

    def reset(self) -> None:
        """Zero the ring and forget all buffers: only while the remote is not using it."""
        self._buf[:] = bytes(self.size)
        self.avail_idx = self.last_used = self.inflight = 0
        self._out[:] = bytes(self.num)

    def adopt(self, desc_ok: Callable[[int, int, int, int], bool]) -> list[int]:
        """Take over a live ring after a daemon restart; returns the descriptors to hand back.

        The previous host left its progress in ``avail.used_event`` (see
        :meth:`record_used`; the field is ignored by a remote that did not
        negotiate ``VIRTIO_RING_F_EVENT_IDX``, which rpmsg never offers).
        Descriptors in ``avail[used.idx .. avail.idx)`` are with the remote,
        those in ``used[used_event .. used.idx)`` wait for us; every other
        descriptor had been processed and not yet handed back, and is returned
        for the caller to re-post (rx) or free (tx).  ``desc_ok(desc, addr,
        len, flags)`` vouches for each descriptor's contents.  Raises
        :class:`VringError` if the ring is not one a host like us could have left.
        """
        num, mask = self.num, self._mask
        a = self._avail[1]
        last = self._avail[2 + num]
        u1 = self._used16[1]
        if (a - last) & 0xFFFF > num or (u1 - last) & 0xFFFF > (a - last) & 0xFFFF:
            raise VringError(
                f"vring {self.pa:#x}: indices avail {a}, used {u1}, host progress {last} are not consistent"
            )
        out = bytearray(num)
        for i in range(u1, u1 + ((a - u1) & 0xFFFF)):
            d = self._avail[2 + (i & mask)]
            if d >= num:
                raise VringError(f"vring {self.pa:#x}: avail entry {i & 0xFFFF} holds descriptor {d}")
            out[d] = 1
        u2 = self._used16[1]  # the remote may have moved on meanwhile; the union covers it
        if (u2 - last) & 0xFFFF > (a - last) & 0xFFFF:
            raise VringError(f"vring {self.pa:#x}: used.idx {u2} ran past avail.idx {a}")
        for i in range(last, last + ((u2 - last) & 0xFFFF)):
            d = self._used32[2 * (i & mask)]
            if d >= num:
                raise VringError(f"vring {self.pa:#x}: used entry {i & 0xFFFF} holds descriptor {d}")
            out[d] = 1
        for d in range(num):
            if out[d]:
                addr, length, flags, _next = DESC.unpack_from(self._buf, d * 16)
                if not desc_ok(d, addr, length, flags):
                    raise VringError(f"vring {self.pa:#x}: descriptor {d} ({addr:#x}+{length}) is not one of ours")
        self.avail_idx = a
        self.last_used = last
        self._out[:] = out
        self.inflight = sum(out)
        return [d for d in range(num) if not out[d]]

    def record_used(self, back: int = 0) -> None:
        """Leave our progress through the used ring in shared memory, for :meth:`adopt`.

        ``back`` leaves the last ``back`` entries taken counted as not done yet.
        """
        self._avail[2 + self.num] = (self.last_used - back) & 0xFFFF

    # -- driver -> device --------------------------------------------------------

    def add(self, desc: int, addr: int, length: int, flags: int) -> None:
        """Write descriptor ``desc`` and queue it in the avail ring (not yet published)."""
        if self._out[desc]:
            raise ValueError(f"descriptor {desc} is already with the remote")
        DESC.pack_into(self._buf, desc * 16, addr, length, flags, 0)
        self._avail[2 + (self.avail_idx & self._mask)] = desc
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self._out[desc] = 1
        self.inflight += 1

    def publish(self) -> None:
        """Make every added descriptor visible: one 16-bit store of avail.idx, last."""
        self._avail[1] = self.avail_idx

    def published(self) -> int:
        return self._avail[1]

    def kick_needed(self) -> bool:
        """The remote wants to hear about new avail entries (``VRING_USED_F_NO_NOTIFY`` clear).

        Call after :meth:`publish`: a full barrier orders the index store
        before the flag load, as ``virtqueue_kick_prepare_split`` does
        (``virtio_mb`` then ``vring_need_event``/the flag test), or a remote
        that just cleared the flag to sleep could be missed.
        """
        mb()
        return not self._used16[0] & VRING_USED_F_NO_NOTIFY

    def want_interrupts(self, on: bool) -> None:
        """Set or clear ``VRING_AVAIL_F_NO_INTERRUPT``.

        After turning interrupts back on, call :meth:`used_pending` once more:
        an entry may have landed before the remote saw the flag.
        """
        self._avail[0] = 0 if on else VRING_AVAIL_F_NO_INTERRUPT

    def enable_interrupts_and_check(self) -> int:
        """Interrupts back on after draining with them off; how many used entries are ready now.

        Linux's ``virtqueue_enable_cb_prepare`` + ``virtqueue_poll``: clear
        ``VRING_AVAIL_F_NO_INTERRUPT``, full barrier (the flag store before
        the ``used.idx`` load), look once more: an entry the remote published
        before it saw the flag rang no doorbell (sim-board.md: "A side that
        turns notifications back on must look at the ring once more").
        """
        self._avail[0] = 0
        mb()
        return self.used_pending()

    # -- device -> driver --------------------------------------------------------

    def used_pending(self) -> int:
        """How many used entries are ready; checks the remote's index first."""
        n = (self._used16[1] - self.last_used) & 0xFFFF
        if n > self.inflight:
            raise VringError(
                f"vring {self.pa:#x}: used.idx moved {n} past entry {self.last_used}, "
                f"but only {self.inflight} buffers are with the remote"
            )
        return n

    def pop_used(self) -> tuple[int, int]:
        """The next used entry ``(desc, len)``; call only while :meth:`used_pending` > 0."""
        slot = 2 * (self.last_used & self._mask)
        desc = self._used32[slot]
        length = self._used32[slot + 1]
        if desc >= self.num or not self._out[desc]:
            raise VringError(
                f"vring {self.pa:#x}: used entry {self.last_used} returns descriptor {desc}, "
                "which is not with the remote"
            )
        self._out[desc] = 0
        self.inflight -= 1
        self.last_used = (self.last_used + 1) & 0xFFFF
        return desc, length

    def outstanding(self) -> list[int]:
        return [i for i in range(self.num) if self._out[i]]
