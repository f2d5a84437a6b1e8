"""Split virtqueue, device (remote) side, over shared memory (sans-I/O).

The mirror image of :class:`rprocd.vring.Vring`: the host owns the
descriptor table and the avail ring, the device owns the used ring.  The
device reads ``avail.idx`` first and then what it covers (a read barrier
between), writes used entries first and ``used.idx`` last (a write barrier
between), as OpenAMP's ``virtqueue_get_available_buffer``/``virtqueue_add_consumed_buffer``
do, and makes every access one aligned load or store of its own width through
a :class:`~rprocd.memory.Span` (shared memory is Device memory; see
:mod:`rprocd.memory`).

Everything the host wrote is untrusted.  Faults that leave the ring
unusable (``avail.idx`` jumping by more than ``num``, a descriptor id
outside the table) raise :class:`RingViolation`; checking a descriptor's
address and length against the buffer pool is the caller's business,
because only the caller knows what it wants to do with it.
"""

from __future__ import annotations

from .. import native
from ..memory import Span
from ..vring import VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY, vring_offsets


class RingViolation(Exception):
    """The host broke the ring protocol badly enough that the ring cannot be trusted any more."""


class DeviceVring:
    """The device's half of one split ring, at ``pa`` inside ``window`` (which starts at ``window_pa``).

    The shadows (``last_avail``: next avail entry to take; ``used_idx``: our
    copy of ``used.idx``) start from the ``used.idx`` found in memory, as
    OpenAMP's device side does: a Linux-style host zeroes the ring before
    ``DRIVER_OK``, and every buffer we took earlier was given back.
    """

    __slots__ = (
        "pa", "num", "align", "notifyid", "size", "_mask", "_mem", "_av", "_uo", "_d64", "_aget", "_uget", "_uset",
        "_u32set",
        "last_avail", "used_idx",
    )  # fmt: skip

    def __init__(self, window: Span, window_pa: int, pa: int, num: int, align: int, notifyid: int):
        avail, used, size = vring_offsets(pa, num, align)  # ValueError for a bad num/align
        base = pa - window_pa
        if base < 0 or base + size > window.size:
            raise ValueError(f"vring at {pa:#x} (+{size:#x}) is outside the shared window")
        if pa % 4 or base % 4 or used % 4:
            raise ValueError(f"vring at {pa:#x} (used ring at +{used:#x}) is not 4-byte aligned")
        self.pa, self.num, self.align, self.notifyid, self.size = pa, num, align, notifyid, size
        self._mask = num - 1
        self._mem = window.span(base, size)
        # avail: +0 flags, +2 idx, +4 + 2i ring[i]; used: +0 flags, +2 idx, +4 + 8i {u32 id, u32 len}
        self._av, self._uo = avail, used
        self._d64 = pa % 8 == 0
        # avail [0] flags, [1] idx, [2 + i] ring[i]; used [0] flags, [1] idx; used ring [2i] id, [2i + 1] len
        self._aget = self._mem.words(2, avail, 2 + num)[0]
        self._uget, self._uset = self._mem.words(2, used, 2)
        self._u32set = self._mem.words(4, used + 4, 2 * num)[1]
        self.used_idx = self._uget(1)
        self.last_avail = self.used_idx

    # -- driver -> device --------------------------------------------------------

    def avail_pending(self) -> int:
        """How many avail entries the host has published that we have not taken."""
        idx = self._aget(1)
        n = (idx - self.last_avail) & 0xFFFF
        if n > self.num:
            raise RingViolation(
                f"vring {self.pa:#x}: avail.idx {idx} is {n} entries past {self.last_avail}, "
                f"more than the ring's {self.num}"
            )
        if n:
            native.rmb()  # the entries avail.idx covers are read after it
        return n

    def peek(self) -> tuple[int, int, int, int]:
        """The next avail entry as ``(desc, addr, len, flags)``, not taken yet.

        Call only while :meth:`avail_pending` > 0.
        """
        m = self._mem
        d = self._aget(2 + (self.last_avail & self._mask))
        if d >= self.num:
            raise RingViolation(f"vring {self.pa:#x}: avail entry {self.last_avail} names descriptor {d} of {self.num}")
        return (d, self.desc_addr(d), m.load32(d * 16 + 8), m.load16(d * 16 + 12))

    def desc_addr(self, d: int) -> int:
        """Descriptor ``d``'s buffer address (one 64-bit load, or two 32-bit halves on a 4-aligned ring)."""
        m, o = self._mem, d * 16
        return m.load64(o) if self._d64 else m.load32(o) | m.load32(o + 4) << 32

    def advance(self) -> None:
        """Take the entry :meth:`peek` returned."""
        self.last_avail = (self.last_avail + 1) & 0xFFFF

    def kick_wanted(self, on: bool) -> None:
        """Clear (``on``) or set ``VRING_USED_F_NO_NOTIFY``.

        After turning kicks back on, look at the avail ring once more: the
        host may have added an entry before it saw the flag.
        """
        self._uset(0, 0 if on else VRING_USED_F_NO_NOTIFY)

    # -- device -> driver --------------------------------------------------------

    def put_used(self, desc: int, length: int) -> None:
        """Write one used entry and publish it (entry first, then one 16-bit store of the index)."""
        slot = 2 * (self.used_idx & self._mask)
        u32 = self._u32set
        u32(slot, desc)
        u32(slot + 1, length)
        self.used_idx = idx = (self.used_idx + 1) & 0xFFFF
        native.wmb()  # the entry before the index that publishes it
        self._uset(1, idx)

    def jump_used(self, by: int) -> None:
        """Move ``used.idx`` by ``by`` entries without writing them (fault injection only)."""
        self.used_idx = idx = (self.used_idx + by) & 0xFFFF
        self._uset(1, idx)

    def interrupt_wanted(self) -> bool:
        """The host wants a doorbell for new used entries (``VRING_AVAIL_F_NO_INTERRUPT`` clear)."""
        native.mb()  # the used.idx store before this load (OpenAMP: virtqueue_kick's fence)
        return not self._aget(0) & VRING_AVAIL_F_NO_INTERRUPT

    def rewound(self) -> bool:
        """``used.idx`` in memory is not what we wrote: the host set the ring up afresh under us."""
        return self._uget(1) != self.used_idx

    def release(self) -> None:
        """Nothing to drop: the ring holds no view of shared memory (the map closes it)."""
