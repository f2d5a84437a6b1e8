"""Split virtqueue, device (remote) side, over shared memory (sans-I/O).

The mirror image of :class:`rprocd.vring.Vring`: the host owns the
descriptor table and the avail ring, the device owns the used ring.  The
device reads ``avail.idx`` first and then what it covers, writes used
entries first and ``used.idx`` last, and does every 16-bit index or flag
access as one aligned store or load through a native ``memoryview`` cast
(DESIGN.md, "Shared memory is another CPU's memory").

Everything the host wrote is untrusted.  Faults that leave the ring
unusable (``avail.idx`` jumping by more than ``num``, a descriptor id
outside the table) raise :class:`RingViolation`; checking a descriptor's
address and length against the buffer pool is the caller's business,
because only the caller knows what it wants to do with it.
"""

from __future__ import annotations

from ..vring import DESC, VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY, vring_offsets


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
        "pa", "num", "align", "notifyid", "size", "_mask", "_desc", "_avail", "_used16", "_used32",
        "last_avail", "used_idx",
    )  # fmt: skip

    def __init__(self, window: memoryview, window_pa: int, pa: int, num: int, align: int, notifyid: int):
        avail, used, size = vring_offsets(pa, num, align)  # ValueError for a bad num/align
        base = pa - window_pa
        if base < 0 or base + size > len(window):
            raise ValueError(f"vring at {pa:#x} (+{size:#x}) is outside the shared window")
        if pa % 4 or base % 4 or used % 4:
            raise ValueError(f"vring at {pa:#x} (used ring at +{used:#x}) is not 4-byte aligned")
        self.pa, self.num, self.align, self.notifyid, self.size = pa, num, align, notifyid, size
        self._mask = num - 1
        ring = window[base : base + size]
        self._desc = ring[: DESC.size * num]
        # [0] flags, [1] idx, [2 + i] ring[i], [2 + num] used_event
        self._avail = ring[avail : avail + 2 * (3 + num)].cast("H")
        self._used16 = ring[used : used + 4].cast("H")  # [0] flags, [1] idx
        self._used32 = ring[used + 4 : used + 4 + 8 * num].cast("I")  # [2i] id, [2i + 1] len
        self.used_idx = self._used16[1]
        self.last_avail = self.used_idx

    # -- driver -> device --------------------------------------------------------

    def avail_pending(self) -> int:
        """How many avail entries the host has published that we have not taken."""
        n = (self._avail[1] - self.last_avail) & 0xFFFF
        if n > self.num:
            raise RingViolation(
                f"vring {self.pa:#x}: avail.idx {self._avail[1]} is {n} entries past {self.last_avail}, "
                f"more than the ring's {self.num}"
            )
        return n

    def peek(self) -> tuple[int, int, int, int]:
        """The next avail entry as ``(desc, addr, len, flags)``, not taken yet.

        Call only while :meth:`avail_pending` > 0.
        """
        d = self._avail[2 + (self.last_avail & self._mask)]
        if d >= self.num:
            raise RingViolation(f"vring {self.pa:#x}: avail entry {self.last_avail} names descriptor {d} of {self.num}")
        addr, length, flags, _next = DESC.unpack_from(self._desc, d * 16)
        return d, addr, length, flags

    def advance(self) -> None:
        """Take the entry :meth:`peek` returned."""
        self.last_avail = (self.last_avail + 1) & 0xFFFF

    def kick_wanted(self, on: bool) -> None:
        """Clear (``on``) or set ``VRING_USED_F_NO_NOTIFY``.

        After turning kicks back on, look at the avail ring once more: the
        host may have added an entry before it saw the flag.
        """
        self._used16[0] = 0 if on else VRING_USED_F_NO_NOTIFY

    # -- device -> driver --------------------------------------------------------

    def put_used(self, desc: int, length: int) -> None:
        """Write one used entry and publish it (entry first, then one 16-bit store of the index)."""
        slot = 2 * (self.used_idx & self._mask)
        u = self._used32
        u[slot] = desc
        u[slot + 1] = length
        self.used_idx = idx = (self.used_idx + 1) & 0xFFFF
        self._used16[1] = idx

    def jump_used(self, by: int) -> None:
        """Move ``used.idx`` by ``by`` entries without writing them (fault injection only)."""
        self.used_idx = idx = (self.used_idx + by) & 0xFFFF
        self._used16[1] = idx

    def interrupt_wanted(self) -> bool:
        """The host wants a doorbell for new used entries (``VRING_AVAIL_F_NO_INTERRUPT`` clear)."""
        return not self._avail[0] & VRING_AVAIL_F_NO_INTERRUPT

    def rewound(self) -> bool:
        """``used.idx`` in memory is not what we wrote: the host set the ring up afresh under us."""
        return self._used16[1] != self.used_idx

    def release(self) -> None:
        """Drop the views into shared memory (so the map can be closed)."""
        for v in (self._avail, self._used16, self._used32, self._desc):
            v.release()
