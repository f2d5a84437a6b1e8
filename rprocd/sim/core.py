"""The simulated remote's protocol engine: a Zephyr/OpenAMP rpmsg remote (sans-I/O).

:class:`RemoteCore` works on a ``memoryview`` of the shared window and never
opens, sleeps or polls by itself; the doorbell (``ring``) and the "slow
Zephyr" delay (``pace``) are callables handed in.  :mod:`rprocd.sim.remote`
puts it on a virtual board.  It does, in order, what ``shared/sim-board.md``
says a remote does:

* :meth:`RemoteCore.boot` writes the resource table (``ver`` 0 first, the
  body, ``ver`` 1 last; vdev ``status`` 0) and clears the trace buffer;
* :meth:`RemoteCore.service`, called on every doorbell and on a timer, waits
  for ``DRIVER_OK``, then checks the host's ring layout, announces the
  endpoints by name service and serves both vrings until the host drops
  ``DRIVER_OK`` (or sets ``NEEDS_RESET``), after which it waits again.

Message flow is rpmsg's: the remote *sends* on vring0 (into empty buffers the
host posted) and *receives* on vring1.  Nothing is ever dropped: when no
vring0 buffer is free, a reply waits, the source stream pauses, and vring1
is not consumed further (the host sees backpressure).  Everything the host
wrote is checked before use; a ring the host broke beyond repair ends the
session the way a crashing Zephyr would: the table is written afresh.
"""

from __future__ import annotations

import logging
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .. import native
from ..layout import TCC807X, Layout
from ..memory import IoBuffer, MemoryMap
from ..rsc_table import (
    FW_RSC_ADDR_ANY,
    VDEV_STATUS_OFF,
    VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_ID_RPMSG,
    VIRTIO_RPMSG_F_NS,
    Entry,
    TableError,
    Trace,
    Vdev,
    VdevVring,
    build,
    parse,
)
from ..vring import VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, vring_offsets
from .console import RamConsole
from .device_vring import DeviceVring, RingViolation
from .record import Recorder, RecordingVring

log = logging.getLogger("rprocd.sim")

HDR = struct.Struct("<IIIHH")  # struct rpmsg_hdr: src, dst, reserved, len, flags
HDR_SIZE = HDR.size
NS_MSG = struct.Struct("<32sII")  # struct rpmsg_ns_msg: name, addr, flags
SEQ = struct.Struct("<I")
RPMSG_NS_ADDR = 53
RPMSG_NS_CREATE = 0
RPMSG_FIRST_ADDR = 1024  # OpenAMP's RPMSG_RESERVED_ADDRESSES: dynamic addresses start here

VRING_NUM = 8
VRING_ALIGN = 16
DFEATURES = 1 << VIRTIO_RPMSG_F_NS
TRACE_NAME = "Zephyr_log"
MAX_SOURCE_JOBS = 16  # queued "<count> <size>" requests; more wait in vring1 (backpressure)

WAITING, ATTACHED, FAILED = "waiting", "attached", "failed"
ECHO, SINK, SOURCE = 0, 1, 2
ENDPOINTS: tuple[tuple[str, int], ...] = (
    ("rpmsg-client-sample", ECHO),
    ("rpmsg-tty", ECHO),
    ("rpmsg-sink", SINK),
    ("rpmsg-source", SOURCE),
)

_DESC_KIND = VRING_DESC_F_WRITE | VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT
_PASSES_PER_SERVICE = 256  # then give the caller's loop a turn (stop requests, fairness)


class Endpoint:
    """One announced remote endpoint and its counters (cumulative over sessions)."""

    __slots__ = (
        "name",
        "raw",
        "addr",
        "kind",
        "peer",
        "rx_msgs",
        "rx_bytes",
        "tx_msgs",
        "tx_bytes",
        "sink_msgs",
        "sink_bytes",
    )

    def __init__(self, name: str, addr: int, kind: int, raw: bytes | None = None):
        self.name, self.addr, self.kind = name, addr, kind
        self.raw = name.encode() if raw is None else raw  # what the name-service message carries
        self.peer: int | None = None  # the host's address, learned from its first message
        self.rx_msgs = self.rx_bytes = self.tx_msgs = self.tx_bytes = 0
        self.sink_msgs = self.sink_bytes = 0  # what STAT reports: this session, STAT not counted

    def as_dict(self) -> dict[str, int | str | None]:
        return {s: getattr(self, s) for s in self.__slots__ if s != "raw"}


class SourceJob:
    """A pending ``"<count> <size>"`` request of ``rpmsg-source``."""

    __slots__ = ("ept", "dst", "left", "size", "seq", "filler")

    def __init__(self, ept: Endpoint, dst: int, count: int, size: int, filler: memoryview):
        self.ept, self.dst, self.left, self.size, self.seq, self.filler = ept, dst, count, size, 0, filler


@dataclass
class SimStats:
    sessions: int = 0  # times we attached (DRIVER_OK seen, layout accepted)
    sessions_ended: int = 0
    reboots: int = 0  # table written afresh after the host broke a ring or the table
    refused: int = 0  # DRIVER_OK with a ring layout we would not touch
    violations: int = 0  # ring protocol violations (avail.idx jump, descriptor id out of range)
    bad_descriptors: int = 0  # descriptors outside the buffer pool, wrong flags, too short
    malformed: int = 0  # rpmsg headers or requests that make no sense
    unknown_dst: int = 0  # messages to an address we do not serve
    ns_sent: int = 0
    source_jobs: int = 0


def _overlaps(a: int, alen: int, b: int, blen: int) -> bool:
    return a < b + blen and b < a + alen


class RemoteCore:
    """The remote's state machine over the shared window (``window`` covers ``layout.window``)."""

    def __init__(
        self,
        window: memoryview,
        layout: Layout = TCC807X,
        *,
        any_da: bool = False,
        ring: Callable[[int], object] | None = None,
        pace: Callable[[], None] | None = None,
        recorder: Recorder | None = None,
    ):
        problems = layout.check()
        if problems:
            raise ValueError("; ".join(problems))
        self.layout = layout
        self.any_da = any_da
        self._ring = ring or (lambda word: None)
        self._pace = pace
        self._mem = MemoryMap([(layout.window.pa, window)])
        self._win = self._mem.span(layout.window.pa, layout.window.size)  # accessors only (rprocd.memory)
        self.max_payload = layout.buf_size - HDR_SIZE

        # the trace buffer: in the table region, after the space reserved for the table
        tr_pa = (layout.table_pa + layout.rsc_size + 0xFF) & ~0xFF
        tr_len = min(layout.table_region.end - tr_pa, 0x10000)
        das = (FW_RSC_ADDR_ANY, FW_RSC_ADDR_ANY) if any_da else (layout.vrings[0].pa, layout.vrings[1].pa)
        self._vdev = Vdev(
            id=VIRTIO_ID_RPMSG,
            notifyid=0,
            dfeatures=DFEATURES,
            gfeatures=0,
            status=0,
            vrings=tuple(VdevVring(da=da, align=VRING_ALIGN, num=VRING_NUM, notifyid=i) for i, da in enumerate(das)),
        )
        entries: list[Entry] = [self._vdev]
        self.trace: tuple[int, int] | None = None
        if tr_len >= 64:
            self.trace = (tr_pa, tr_len)
            entries.append(Trace(da=tr_pa, len=tr_len, name=TRACE_NAME))
        self._table_raw = build(entries)
        if len(self._table_raw) > layout.rsc_size:
            raise ValueError(f"resource table of {len(self._table_raw)} bytes exceeds {layout.rsc_size:#x}")
        self._vdev_off = parse(self._table_raw).vdevs[0].offset
        self._table = self._mem.span(layout.table_pa, len(self._table_raw))
        self._st_off = self._vdev_off + VDEV_STATUS_OFF
        self._bufs = self._mem.span(layout.buffers.pa, layout.buffers.size)
        self._io = IoBuffer(layout.buf_size)  # each received message is copied out into this
        self._buf_pa, self._buf_len, self._buf_size = layout.buffers.pa, layout.buffers.size, layout.buf_size
        self.console = RamConsole(self._mem.span(*self.trace)) if self.trace else None

        self.state = WAITING
        self.stats = SimStats()
        self.features = 0
        self.endpoints = [Endpoint(name, RPMSG_FIRST_ADDR + i, kind) for i, (name, kind) in enumerate(ENDPOINTS)]
        self._by_addr = {e.addr: e for e in self.endpoints}
        self._tx: DeviceVring | None = None  # vring0: we send
        self._rx: DeviceVring | None = None  # vring1: we receive
        self._slot = -1  # a vring0 descriptor taken from avail, not yet used
        self._slot_off = 0
        self._outq: deque[tuple[int, int, bytes]] = deque()  # name-service announcements
        self._jobs: deque[SourceJob] = deque()
        self._tx_dirty = self._rx_dirty = False
        self._filler = memoryview(bytes(range(256)) * 2)[: self.max_payload]
        self.recorder = recorder
        if recorder is not None:
            recorder.attach_memory(self._bufs, self._buf_pa, self._buf_size)
            for e in self.endpoints:
                recorder.name_endpoint(e.addr, e.raw)

    # -- boot and the table ----------------------------------------------------------

    def boot(self) -> None:
        """Fresh start: clear the trace, write the table (status 0)."""
        if self.console:
            self.console.clear()
        self.trace_line("*** Booting rprocd simulated remote (Zephyr/OpenAMP) ***")
        if self.recorder is not None:
            self.recorder.note(f"boot {os.getpid()}")
        self._write_table()
        self.trace_line(f"rpmsg: resource table at {self.layout.table_pa:#x}, waiting for the host")

    def _write_table(self) -> None:
        """``ver`` 0, then the body, then ``ver`` 1: a table with ``ver`` != 1 means "not ready"."""
        t = self._table
        t.store32(0, 0)
        native.wmb()
        t.write(4, self._table_raw[4:])
        native.wmb()  # the body before the version that says it is ready
        t.store32(0, 1)

    def status(self) -> int:
        return self._table.load8(self._st_off)

    def trace_line(self, text: str) -> None:
        if self.console:
            self.console.write(text + "\n")

    # -- the loop's entry point -------------------------------------------------------

    def idle_timeout(self) -> float:
        """How long the caller may sleep without a doorbell (a safety net for lost rings)."""
        return 0.2 if self.state == ATTACHED else 0.05

    def service(self) -> bool:
        """Do everything that is ready, once.  True when work was left for another call."""
        try:
            return self._service()
        except RingViolation as e:
            self.stats.violations += 1
            log.error("%s", e)
            self._reboot(f"ring violation: {e}")
            return False

    def _service(self) -> bool:
        st = self._table.load8(self._st_off)
        if self.state == FAILED:
            if st & VIRTIO_CONFIG_S_DRIVER_OK and not st & VIRTIO_CONFIG_S_NEEDS_RESET:
                return False
            self.state = WAITING
            return False
        if self.state == WAITING:
            if not st & VIRTIO_CONFIG_S_DRIVER_OK or st & VIRTIO_CONFIG_S_NEEDS_RESET:
                return False
            self._attach()
        for _ in range(_PASSES_PER_SERVICE):
            if not self._session_ok():
                return False
            tx, rx = self._tx, self._rx
            assert tx is not None and rx is not None
            if self._pass():
                tx.kick_wanted(False)  # busy: the host need not ring for what we will see anyway
                rx.kick_wanted(False)
                continue
            tx.kick_wanted(True)
            rx.kick_wanted(True)
            if not self._pass():  # a change may have raced with the flags
                return False
        for r in (self._tx, self._rx):
            if r is not None:
                r.kick_wanted(True)  # more to do, but the caller gets a turn: keep the host's kicks coming
        return True

    # -- sessions --------------------------------------------------------------------

    def _session_ok(self) -> bool:
        """Still attached (attaching afresh if the host set the rings up again under us)."""
        if self.state != ATTACHED:
            return False
        st = self._table.load8(self._st_off)
        if not st & VIRTIO_CONFIG_S_DRIVER_OK or st & VIRTIO_CONFIG_S_NEEDS_RESET:
            # The table stays as it is: rewriting it could race with a host that is already
            # attaching again (writing gfeatures and vring addresses into it).
            self._end_session(f"host set status {st:#04x}")
            return False
        tx, rx = self._tx, self._rx
        assert tx is not None and rx is not None
        if tx.rewound() or rx.rewound():
            self._end_session("the host set the rings up afresh")
            self._attach()
            return self.state == ATTACHED
        return True

    def _attach(self) -> None:
        """``DRIVER_OK``: read back what the host wrote, check it, and start a session."""
        try:
            table = parse(self._table.read(0, self._table.size))
        except TableError as e:
            self._reboot(f"resource table damaged: {e}")
            return
        vdevs = table.vdevs
        if len(vdevs) != 1 or vdevs[0].offset != self._vdev_off or len(vdevs[0].vrings) != 2:
            self._reboot("resource table damaged: the vdev entry moved")
            return
        vdev = vdevs[0]
        problem = self._check_rings(vdev)
        rings: list[DeviceVring] = []
        if problem is None:
            try:
                for i, vr in enumerate(vdev.vrings):
                    args = (self._win, self.layout.window.pa, vr.da, vr.num, vr.align, vr.notifyid)
                    rec = self.recorder
                    rings.append(
                        DeviceVring(*args) if rec is None else RecordingVring(*args, recorder=rec, sends=i == 0)
                    )
            except ValueError as err:
                problem = str(err)
        if problem is not None:
            for r in rings:
                r.release()
            self.stats.refused += 1
            self.state = FAILED
            log.error("refusing the host's ring layout: %s", problem)
            self.trace_line(f"rpmsg: refusing the host's ring layout: {problem}")
            return
        self._tx, self._rx = rings
        self.features = DFEATURES & vdev.gfeatures
        self.state = ATTACHED
        self.stats.sessions += 1
        if self.recorder is not None:
            self.recorder.note(f"session {self.stats.sessions}")
        self._slot = -1
        for ept in self.endpoints:
            ept.peer = None
            ept.sink_msgs = ept.sink_bytes = 0
        ns = bool(self.features & (1 << VIRTIO_RPMSG_F_NS))
        if ns:
            for ept in self.endpoints:
                self._announce(ept)
        n = len(self.endpoints)
        how = "" if ns else " (name service off)"
        log.info(
            "attached: vrings at %#x and %#x, features %#x, %d endpoints%s",
            *(r.pa for r in rings),
            self.features,
            n,
            how,
        )
        self.trace_line(f"rpmsg: attached, {n} endpoints{how}")

    def _check_rings(self, vdev: Vdev) -> str | None:
        """What is wrong with the host's vring entries, or None when we can use them."""
        layout = self.layout
        # the table region holds the table and the trace buffer; the pool holds the messages
        avoid = [
            ("the resource-table region", layout.table_region.pa, layout.table_region.size),
            ("the buffer pool", self._buf_pa, self._buf_len),
        ]
        placed: list[tuple[str, int, int]] = []
        for i, (vr, ours) in enumerate(zip(vdev.vrings, self._vdev.vrings, strict=True)):
            if (vr.num, vr.align, vr.notifyid) != (ours.num, ours.align, ours.notifyid):
                return f"vring{i} changed to num {vr.num}, align {vr.align}, notifyid {vr.notifyid}"
            if vr.da == FW_RSC_ADDR_ANY:
                return f"vring{i} has no address (the host left FW_RSC_ADDR_ANY)"
            _, _, size = vring_offsets(vr.da, vr.num, vr.align)
            if not layout.window.contains(vr.da, size):
                return f"vring{i} at {vr.da:#x}+{size:#x} is outside the shared window {layout.window}"
            if vr.da % max(vr.align, 4):
                return f"vring{i} at {vr.da:#x} is not aligned to {vr.align}"
            for what, pa, n in avoid + placed:
                if _overlaps(vr.da, size, pa, n):
                    return f"vring{i} at {vr.da:#x}+{size:#x} overlaps {what} at {pa:#x}+{n:#x}"
            placed.append((f"vring{i}", vr.da, size))
        return None

    def _end_session(self, why: str) -> None:
        """Forget all ring state (the host owns the rings; nothing to give back)."""
        for r in (self._tx, self._rx):
            if r is not None:
                r.release()
        self._tx = self._rx = None
        self._slot = -1
        self._outq.clear()
        self._jobs.clear()
        if self.state == ATTACHED:
            self.stats.sessions_ended += 1
            if self.recorder is not None:
                self.recorder.note(f"end {why}")
            log.info("session ended: %s", why)
            self.trace_line(f"rpmsg: session ended ({why})")
        self.state = WAITING

    def _reboot(self, why: str) -> None:
        """What a crashing remote does: start over with a fresh table (status 0)."""
        self._end_session(why)
        self.stats.reboots += 1
        log.error("restarting: %s", why)
        self.trace_line(f"rpmsg: fatal: {why}; restarting")
        self._write_table()

    def _announce(self, ept: Endpoint) -> None:
        self._outq.append((ept.addr, RPMSG_NS_ADDR, NS_MSG.pack(ept.raw, ept.addr, RPMSG_NS_CREATE)))

    # -- faults (``--fault``: rprocd.sim.faults calls these; never on the normal path) ---

    def add_endpoints(self, raw_names: list[bytes], kind: int = ECHO) -> list[Endpoint]:
        """More endpoints, announced now (if attached with name service) and in every later session."""
        addr = max(e.addr for e in self.endpoints) + 1
        added = []
        for i, raw in enumerate(raw_names):
            ept = Endpoint(raw.decode("utf-8", "backslashreplace"), addr + i, kind, raw)
            self.endpoints.append(ept)
            self._by_addr[ept.addr] = ept
            if self.recorder is not None:
                self.recorder.name_endpoint(ept.addr, raw)
            if self.state == ATTACHED and self.features & (1 << VIRTIO_RPMSG_F_NS):
                self._announce(ept)
            added.append(ept)
        return added

    def corrupt_used(self, how: str) -> str | None:
        """Publish one wrong used entry on vring0; what was done, or None when not possible now.

        ``how``: ``id`` (a descriptor id past the table), ``long`` (a length
        past the buffer) or ``short`` (a length shorter than an rpmsg header).
        """
        tx = self._tx
        if self.state != ATTACHED or tx is None:
            return None
        if how == "id":
            bad = tx.num if tx.used_idx & 1 else 0xFFFFFFFF  # just past the table, or as far as it gets
            tx.put_used(bad, HDR_SIZE + 8)
            self._tx_dirty = True
            return f"vring0 used entry {(tx.used_idx - 1) & 0xFFFF}: descriptor {bad} of {tx.num}"
        if not self._take_slot():
            return None
        length = self._buf_size + HDR_SIZE if how == "long" else HDR_SIZE // 2
        d, off = self._slot, self._slot_off
        self._bufs.write(off, HDR.pack(self.endpoints[0].addr, RPMSG_FIRST_ADDR, 0, 8, 0) + b"CORRUPT!")
        tx.put_used(d, length)
        self._slot = -1
        self._tx_dirty = True
        return f"vring0 used entry {(tx.used_idx - 1) & 0xFFFF}: descriptor {d} with length {length}"

    def jump_used_index(self, ring: int) -> str | None:
        """Move ``used.idx`` of vring ``ring`` (0 or 1) by more than the ring holds."""
        r = (self._tx, self._rx)[ring]
        if self.state != ATTACHED or r is None:
            return None
        before = r.used_idx
        r.jump_used(r.num + 1 + before % r.num)
        if ring:
            self._rx_dirty = True
        else:
            self._tx_dirty = True
        return f"vring{ring} used.idx {before} -> {r.used_idx}"

    def kick_host(self) -> None:
        """Ring the host for both vrings (after a fault, so that it looks at once)."""
        for r in (self._tx, self._rx):
            if r is not None:
                self._ring(r.notifyid)

    def rewrite_table(self) -> str | None:
        """Write the boot-time table again under a live session, keeping the status byte.

        What a remote that restarted without clearing its status would do.
        The session is over for us; we wait (as after a refused layout) until
        the host drops ``DRIVER_OK`` before we attach again.
        """
        if self.state != ATTACHED:
            return None
        st = self._table.load8(self._st_off)
        self._end_session("fault: table rewritten")
        raw = bytearray(self._table_raw)
        raw[self._vdev_off + VDEV_STATUS_OFF] = st
        self._table.write(4, raw[4:])  # ver stays 1: the table never looks "not ready"
        self.state = FAILED
        return f"table rewritten with status {st:#04x} kept"

    def restart(self, why: str) -> None:
        """Start over as after a reset: fresh table, status 0."""
        self._reboot(why)

    # -- the rings -------------------------------------------------------------------

    def _pass(self) -> bool:
        """One batch: what is ready now in both rings, then at most one doorbell.  True on progress."""
        tx, rx = self._tx, self._rx
        assert tx is not None and rx is not None
        outq, jobs, pace = self._outq, self._jobs, self._pace
        self._tx_dirty = self._rx_dirty = False
        rx_budget = rx.avail_pending()
        tx_budget = tx.num
        while True:
            did = False
            if (outq or jobs) and tx_budget and self._take_slot():
                tx_budget -= 1
                did = True
                if outq:
                    src, dst, payload = outq.popleft()
                    self._emit(src, dst, payload)
                    self.stats.ns_sent += 1
                else:
                    self._emit_source(jobs)
                    if pace is not None:
                        pace()
            # while announcements are pending nothing is received (OpenAMP blocks in rpmsg_send)
            if rx_budget and not outq and self._receive():
                rx_budget -= 1
                did = True
                if pace is not None:
                    pace()
            if not did:
                break
        if self._tx_dirty and tx.interrupt_wanted():
            self._ring(tx.notifyid)
        elif self._rx_dirty and rx.interrupt_wanted():
            self._ring(rx.notifyid)
        return self._tx_dirty or self._rx_dirty

    def _complain(self, counter: str, what: str) -> None:
        n = getattr(self.stats, counter) + 1
        setattr(self.stats, counter, n)
        if n <= 10 or n % 1000 == 0:
            log.warning("%s (%s #%d)", what, counter, n)
            self.trace_line(f"rpmsg: {what}")

    def _take_slot(self) -> bool:
        """Make sure we hold one empty vring0 buffer; give back (with length 0) unusable ones."""
        if self._slot >= 0:
            return True
        tx = self._tx
        assert tx is not None
        while tx.avail_pending():
            d, addr, length, flags = tx.peek()
            tx.advance()
            off = addr - self._buf_pa
            if (
                (flags & _DESC_KIND) != VRING_DESC_F_WRITE
                or length < self._buf_size
                or off < 0
                or off + length > self._buf_len
            ):
                tx.put_used(d, 0)
                self._tx_dirty = True
                self._complain(
                    "bad_descriptors", f"vring0 descriptor {d}: {addr:#x}+{length:#x} flags {flags:#x} is not a buffer"
                )
                continue
            self._slot, self._slot_off = d, off
            return True
        return False

    def _emit(self, src: int, dst: int, payload: bytes) -> None:
        """Send one message into the held vring0 buffer and publish it."""
        off, n = self._slot_off, len(payload)
        self._bufs.write(off, HDR.pack(src, dst, 0, n, 0) + payload)
        assert self._tx is not None
        self._tx.put_used(self._slot, HDR_SIZE + n)
        self._slot = -1
        self._tx_dirty = True

    def _emit_source(self, jobs: deque[SourceJob]) -> None:
        job = jobs[0]
        off, size = self._slot_off, job.size
        ept = job.ept
        self._bufs.write(off, HDR.pack(ept.addr, job.dst, 0, size, 0) + SEQ.pack(job.seq) + job.filler)
        assert self._tx is not None
        self._tx.put_used(self._slot, HDR_SIZE + size)
        self._slot = -1
        self._tx_dirty = True
        ept.tx_msgs += 1
        ept.tx_bytes += size
        job.seq += 1
        job.left -= 1
        if not job.left:
            jobs.popleft()

    def _receive(self) -> bool:
        """Handle the next vring1 message; False (nothing taken) when its reply cannot be sent yet."""
        rx = self._rx
        assert rx is not None
        d, addr, length, flags = rx.peek()
        off = addr - self._buf_pa
        if flags & _DESC_KIND or length < HDR_SIZE or off < 0 or off + length > self._buf_len:
            rx.advance()
            rx.put_used(d, 0)
            self._rx_dirty = True
            self._complain(
                "bad_descriptors", f"vring1 descriptor {d}: {addr:#x}+{length:#x} flags {flags:#x} is not a message"
            )
            return True
        bufs, io = self._bufs, self._io
        bufs.read_into(off, min(length, self._buf_size), io.data)  # header and message: one device copy
        src, dst, _res, n, _flags = HDR.unpack_from(io.data, 0)
        msg = io.view[HDR_SIZE:]
        ept = self._by_addr.get(dst)
        if n > length - HDR_SIZE or n > self.max_payload:
            self._complain("malformed", f"message of {n} bytes in a {length}-byte buffer")
        elif ept is None:
            self._complain("unknown_dst", f"message from {src:#x} to unknown address {dst:#x}")
        else:
            kind = ept.kind
            if kind == ECHO:
                if not self._take_slot():
                    return False
                o = self._slot_off
                bufs.write(o, HDR.pack(ept.addr, src, 0, n, 0) + msg[:n])
                assert self._tx is not None
                self._tx.put_used(self._slot, HDR_SIZE + n)
                self._slot = -1
                self._tx_dirty = True
                ept.tx_msgs += 1
                ept.tx_bytes += n
            elif kind == SINK:
                if n == 4 and msg[:4] == b"STAT":
                    if not self._take_slot():
                        return False
                    reply = f"{ept.sink_msgs} {ept.sink_bytes}".encode()
                    self._emit(ept.addr, src, reply)
                    ept.tx_msgs += 1
                    ept.tx_bytes += len(reply)
                else:
                    ept.sink_msgs += 1
                    ept.sink_bytes += n
            else:
                if len(self._jobs) >= MAX_SOURCE_JOBS:
                    return False
                self._start_source(ept, src, bytes(msg[:n]))
            if ept.peer is None:
                ept.peer = src
            ept.rx_msgs += 1
            ept.rx_bytes += n
        rx.advance()
        rx.put_used(d, length)  # as OpenAMP: the descriptor's length
        self._rx_dirty = True
        return True

    def _start_source(self, ept: Endpoint, dst: int, request: bytes) -> None:
        try:
            count_s, size_s = request.rstrip(b"\0").split()
            count, size = int(count_s), int(size_s)
        except ValueError:
            self._complain("malformed", f"rpmsg-source request {request[:40]!r} is not '<count> <size>'")
            return
        if count < 0 or not 4 <= size <= self.max_payload:
            self._complain("malformed", f"rpmsg-source request {count} x {size}: size must be 4..{self.max_payload}")
            return
        self.stats.source_jobs += 1
        if count:
            self._jobs.append(SourceJob(ept, dst, count, size, self._filler[: size - 4]))

    # -- figures -----------------------------------------------------------------------

    def snapshot(self) -> dict:
        return {
            "state": self.state,
            "features": self.features,
            "stats": asdict(self.stats),
            "endpoints": [e.as_dict() for e in self.endpoints],
        }

    def endpoint(self, name: str) -> Endpoint:
        return next(e for e in self.endpoints if e.name == name)

    def release(self) -> None:
        """Drop every view into shared memory (the session, the table, the trace)."""
        self._end_session("shutting down")
        if self.console:
            self.console.release()
        self._mem.close()
