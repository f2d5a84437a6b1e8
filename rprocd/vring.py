"""Split virtqueue, driver (host) side, over shared memory (sans-I/O).

Layout exactly as Linux's legacy ``vring_init()`` (``include/uapi/linux/virtio_ring.h``)::

    desc[num]            16 bytes each: u64 addr, u32 len, u16 flags, u16 next
    avail                u16 flags, u16 idx, u16 ring[num], u16 used_event
    (pad to ``align``)
    used                 u16 flags, u16 idx, {u32 id, u32 len} ring[num], u16 avail_event

The host owns the descriptor table and the avail ring; the remote owns the
used ring.  Every access is one aligned load or store of its own width through
a :class:`~rprocd.memory.Span` (shared memory is Device memory: no bulk copy,
see :mod:`rprocd.memory`).  Entries are written before the index that
publishes them and read after the index that covers them, with the barriers
Linux's ``virtqueue_add_split``/``virtqueue_get_buf_ctx_split`` put there for
rings with ``weak_barriers = false`` (``virtio_wmb`` = ``dma_wmb`` before the
``avail.idx`` store, ``virtio_rmb`` = ``dma_rmb`` after reading ``used.idx``,
``virtio_mb`` = ``mb`` between publishing and reading ``used.flags`` in
``virtqueue_kick_prepare_split``).  What
the remote writes (used ids, lengths, the used index) is checked before use:
a violation raises :class:`VringError`, never an out-of-range access.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from . import native
from .memory import Span

VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4
VRING_USED_F_NO_NOTIFY = 1
VRING_AVAIL_F_NO_INTERRUPT = 1

DESC = struct.Struct("<QIHH")

# The barriers (rprocd.native); None where one compiles to nothing (dma_wmb/dma_rmb on x86-64), so the
# hot path does not even make the call.
_WMB = None if native.wmb is native.noop else native.wmb
_RMB = None if native.rmb is native.noop else native.rmb
_MB = None if native.mb is native.noop else native.mb


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


class UsedRecord:
    """The store :meth:`Vring.record_used` makes, armed by the bus and made by whoever hands the run over.

    A run of received messages is recorded as accepted a chunk at a time,
    each just before that chunk is handed to its clients (a kill then loses
    at most that chunk rather than delivering it twice; see the socket
    export's ``flush_deliveries``). The gap between the two is what a
    SIGKILL can hit, so each store is made as late as possible: by the
    native socket helper itself, one aligned 16-bit store right before its
    ``sendmmsg`` (``rprocd_sendm_rec`` in ``native/sockio.c``, at
    :attr:`addr`), else by :meth:`commit` right before the first Python
    send. :meth:`commit` after the hand-over makes it if nobody did (no
    client, no send).
    """

    __slots__ = ("addr", "value", "pending", "_span", "_off", "_store", "_index")

    def __init__(self, span: Span, off: int, store: Callable[[int, int], None], index: int) -> None:
        self._span, self._off, self._store, self._index = span, off, store, index
        self.addr = 0
        self.value = 0
        self.pending = False

    def arm(self, value: int) -> UsedRecord:
        self.value = value
        self.addr = self._span.word_address(2, self._off)  # (0 once the window is gone: commit() then)
        self.pending = True
        return self

    def commit(self) -> None:
        """Make the store now, unless it was made."""
        if self.pending:
            self.pending = False
            self._store(self._index, self.value)


class Vring:
    """The host's half of one split ring over ``mem``, a span of exactly the ring."""

    __slots__ = (
        "pa", "num", "align", "size", "_mem", "_av", "_uo", "_d64", "_aget", "_aset", "_uget", "_uid", "_pub",
        "_d64s", "_d32s", "_d16s", "_record",
        "avail_idx", "last_used", "_out", "inflight", "_mask",
    )  # fmt: skip

    def __init__(self, mem: Span, pa: int, num: int, align: int):
        avail, used, size = vring_offsets(pa, num, align)
        if mem.size < size:
            raise ValueError(f"vring at {pa:#x} needs {size:#x} bytes, has {mem.size:#x}")
        if pa % 4 or used % 4 or mem.pa != pa:
            raise ValueError(f"vring at {pa:#x} is not 4-byte aligned")
        self.pa, self.num, self.align, self.size = pa, num, align, size
        self._mask = num - 1
        self._mem = mem.span(0, size)
        # avail: +0 flags, +2 idx, +4 + 2i ring[i], +4 + 2 num used_event
        # used: +0 flags, +2 idx, +4 + 8i {u32 id, u32 len}
        self._av, self._uo = avail, used
        self._d64 = pa % 8 == 0  # descriptors' u64 addr in one store (else two 32-bit halves, low first)
        # the hot fields as aligned word arrays: avail [0] flags, [1] idx, [2 + i] ring[i], [2 + num] used_event;
        # used {flags, idx} as 16-bit words, then {id, len} pairs as 32-bit words
        self._aget, self._aset = self._mem.words(2, avail, 3 + num)
        self._uid = self._mem.words(2, used, 2)[0]
        self._uget = self._mem.words(4, used + 4, 2 * num)[0]
        self._pub = 0  # avail.idx as we last stored it (we are its only writer)
        self._record = UsedRecord(self._mem, avail + 2 * (2 + num), self._aset, 2 + num)
        # descriptor d: u64 addr = 64-bit word 2d (or 32-bit words 4d, 4d + 1), u32 len = 4d + 2, u16 flags = 8d + 6
        self._d64s = self._mem.words(8, 0, 2 * num)[1] if self._d64 else None
        self._d32s = self._mem.words(4, 0, 4 * num)[1]
        self._d16s = self._mem.words(2, 0, 8 * num)[1]
        self.avail_idx = 0  # our shadow of avail.idx (we are its only writer)
        self.last_used = 0  # next used entry we will read
        self._out = bytearray(num)  # 1 while descriptor i is with the remote
        self.inflight = 0

    # -- session ---------------------------------------------------------------

    def reset(self) -> None:
        """Zero the ring and forget all buffers: only while the remote is not using it."""
        self._mem.fill(0, self.size)  # memset_io: never a libc memset/memcpy on the ring
        self.avail_idx = self.last_used = self.inflight = self._pub = 0
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
        num, mask, m, av, uo = self.num, self._mask, self._mem, self._av, self._uo
        a = m.load16(av + 2)
        last = m.load16(av + 4 + 2 * num)
        u1 = m.load16(uo + 2)
        native.rmb()
        if (a - last) & 0xFFFF > num or (u1 - last) & 0xFFFF > (a - last) & 0xFFFF:
            raise VringError(
                f"vring {self.pa:#x}: indices avail {a}, used {u1}, host progress {last} are not consistent"
            )
        out = bytearray(num)
        for i in range(u1, u1 + ((a - u1) & 0xFFFF)):
            d = m.load16(av + 4 + 2 * (i & mask))
            if d >= num:
                raise VringError(f"vring {self.pa:#x}: avail entry {i & 0xFFFF} holds descriptor {d}")
            out[d] = 1
        u2 = m.load16(uo + 2)  # the remote may have moved on meanwhile; the union covers it
        native.rmb()
        if (u2 - last) & 0xFFFF > (a - last) & 0xFFFF:
            raise VringError(f"vring {self.pa:#x}: used.idx {u2} ran past avail.idx {a}")
        for i in range(last, last + ((u2 - last) & 0xFFFF)):
            d = m.load32(uo + 4 + 8 * (i & mask))
            if d >= num:
                raise VringError(f"vring {self.pa:#x}: used entry {i & 0xFFFF} holds descriptor {d}")
            out[d] = 1
        for d in range(num):
            if out[d]:
                addr, length, flags = self._desc(d)
                if not desc_ok(d, addr, length, flags):
                    raise VringError(f"vring {self.pa:#x}: descriptor {d} ({addr:#x}+{length}) is not one of ours")
        self.avail_idx = self._pub = a
        self.last_used = last
        self._out[:] = out
        self.inflight = sum(out)
        return [d for d in range(num) if not out[d]]

    def record_used(self, back: int = 0) -> None:
        """Leave our progress through the used ring in shared memory, for :meth:`adopt`.

        ``back`` leaves the last ``back`` entries taken counted as not done yet.
        """
        self._aset(2 + self.num, (self.last_used - back) & 0xFFFF)

    def arm_record(self, back: int = 0) -> UsedRecord:
        """:meth:`record_used`, to be made by the hand-over itself (:class:`UsedRecord`)."""
        return self._record.arm((self.last_used - back) & 0xFFFF)

    def used_event(self) -> int:
        """What :meth:`record_used` left in ``avail.used_event``."""
        return self._mem.load16(self._av + 4 + 2 * self.num)

    def poke_avail(self, index: int, value: int) -> None:
        """Store ``value`` into avail word ``index`` (0 flags, 1 idx, 2 + i ring[i]): fault injection only."""
        self._mem.store16(self._av + 2 * index, value)
        if index == 1:
            self._pub = value

    def _desc(self, d: int) -> tuple[int, int, int]:
        """Descriptor ``d`` as ``(addr, len, flags)``."""
        m, o = self._mem, d * 16
        addr = m.load64(o) if self._d64 else m.load32(o) | m.load32(o + 4) << 32
        return addr, m.load32(o + 8), m.load16(o + 12)

    # -- driver -> device --------------------------------------------------------

    def add(self, desc: int, addr: int, length: int, flags: int) -> None:
        """Write descriptor ``desc`` and queue it in the avail ring (not yet published)."""
        if self._out[desc]:
            raise ValueError(f"descriptor {desc} is already with the remote")
        if self._d64s is not None:  # one device copy: aligned 64-bit stores (addr; len, flags, next)
            self._mem.write(desc * 16, DESC.pack(addr, length, flags, 0))
        else:
            d32 = self._d32s
            d32(4 * desc, addr & 0xFFFFFFFF)
            d32(4 * desc + 1, addr >> 32)
            d32(4 * desc + 2, length)
            d16 = self._d16s
            d16(8 * desc + 6, flags)
            d16(8 * desc + 7, 0)
        self._aset(2 + (self.avail_idx & self._mask), desc)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self._out[desc] = 1
        self.inflight += 1

    def publish(self) -> None:
        """Make every added descriptor visible: a write barrier, then one 16-bit store of avail.idx."""
        if _WMB is not None:
            _WMB()  # virtio_wmb(): descriptors and avail entries before the index that publishes them
        self._aset(1, self.avail_idx)
        self._pub = self.avail_idx

    def published(self) -> int:
        """avail.idx as last published (our shadow: nobody else writes it)."""
        return self._pub

    def kick_needed(self) -> bool:
        """The remote wants to hear about new avail entries (``VRING_USED_F_NO_NOTIFY`` clear)."""
        if _MB is not None:
            _MB()  # virtio_mb() in virtqueue_kick_prepare_split: the avail.idx store before this load
        return not self._uid(0) & VRING_USED_F_NO_NOTIFY

    def used_all(self, before: int) -> bool:
        """Whether the remote has used every entry published up to ``before`` (an earlier :meth:`published`).

        Call right after :meth:`kick_needed`: its full barrier orders the
        ``avail.idx`` store of :meth:`publish` before this load of ``used.idx``.
        """
        return self._uid(1) == before

    def want_interrupts(self, on: bool) -> None:
        """Set or clear ``VRING_AVAIL_F_NO_INTERRUPT``.

        After turning interrupts back on, call :meth:`used_pending` once more:
        an entry may have landed before the remote saw the flag.
        """
        self._aset(0, 0 if on else VRING_AVAIL_F_NO_INTERRUPT)

    def enable_interrupts_and_check(self) -> int:
        """Interrupts back on after draining with them off; how many used entries are ready now.

        Linux's ``virtqueue_enable_cb_prepare`` + ``virtqueue_poll``: clear
        ``VRING_AVAIL_F_NO_INTERRUPT``, full barrier (the flag store before
        the ``used.idx`` load), look once more: an entry the remote published
        before it saw the flag rang no doorbell (sim-board.md: "A side that
        turns notifications back on must look at the ring once more").
        """
        self._aset(0, 0)
        if _MB is not None:
            _MB()
        return self.used_pending()

    # -- device -> driver --------------------------------------------------------

    def used_pending(self) -> int:
        """How many used entries are ready; checks the remote's index first."""
        n = (self._uid(1) - self.last_used) & 0xFFFF
        if n and _RMB is not None:
            _RMB()  # virtio_rmb(): the entries used.idx covers are read after it
        if n > self.inflight:
            raise VringError(
                f"vring {self.pa:#x}: used.idx moved {n} past entry {self.last_used}, "
                f"but only {self.inflight} buffers are with the remote"
            )
        return n

    def pop_used(self) -> tuple[int, int]:
        """The next used entry ``(desc, len)``; call only while :meth:`used_pending` > 0."""
        slot = 2 * (self.last_used & self._mask)
        uget = self._uget
        desc = uget(slot)
        length = uget(slot + 1)
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
