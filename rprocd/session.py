"""Attaching to a self-booted remote: table checks and the virtio handshake (sans-I/O).

A :class:`Session` is one attachment.  :func:`read_table` takes a snapshot of
the remote's resource table and checks it against the layout; :meth:`Session.attach`
then does what Linux's remoteproc + virtio + virtio_rpmsg_bus do for a vdev,
in the same order (status 0 -> ACKNOWLEDGE -> DRIVER -> features -> rings and
buffers -> DRIVER_OK), and returns the doorbells to ring.  Timing (the reset
wait) and doorbells belong to the caller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import native
from . import rsc_table as rt
from .layout import Layout, Region
from .memory import MemoryMap
from .rpmsg import BusEvents, RpmsgBus
from .vring import Vring, VringError, vring_offsets

log = logging.getLogger("rprocd.session")

SUPPORTED_FEATURES = 1 << rt.VIRTIO_RPMSG_F_NS


class AttachError(Exception):
    """The remote's table cannot be attached to with this layout."""


@dataclass(frozen=True)
class TableView:
    """A checked snapshot of the remote's table: the rpmsg vdev and where its parts go."""

    table: rt.ResourceTable
    vdev: rt.Vdev
    vring_pa: tuple[int, int]  # resolved (da or the address we pick for FW_RSC_ADDR_ANY)
    any_da: tuple[bool, bool]

    @property
    def status(self) -> int:
        return self.vdev.status

    @property
    def notifyids(self) -> tuple[int, int]:
        return self.vdev.vrings[0].notifyid, self.vdev.vrings[1].notifyid


def read_status(mem: MemoryMap, layout: Layout, view: TableView) -> int:
    return mem.read_u8(layout.table_pa + view.vdev.status_offset)


def read_table(mem: MemoryMap, layout: Layout) -> TableView:
    """Snapshot and check the table; raises :class:`~rprocd.rsc_table.TableError` or :class:`AttachError`."""
    raw = mem.read(layout.table_pa, layout.rsc_size)
    table = rt.parse(raw)
    vdevs = [v for v in table.vdevs if v.id == rt.VIRTIO_ID_RPMSG]
    if not vdevs:
        raise AttachError("the resource table has no rpmsg vdev (virtio id 7)")
    vdev = vdevs[0]
    if len(vdev.vrings) != 2:
        raise AttachError(f"the rpmsg vdev has {len(vdev.vrings)} vrings, not 2")
    pas = []
    anys = []
    for i, (vr, region) in enumerate(zip(vdev.vrings, layout.vrings, strict=True)):
        if vr.num != vdev.vrings[0].num:
            raise AttachError("vring0 and vring1 differ in size")
        try:
            _, used, size = vring_offsets(0, vr.num, vr.align)
        except ValueError as e:
            raise AttachError(f"vring{i}: {e}") from None
        if used % 4:
            raise AttachError(f"vring{i}: align {vr.align} leaves the used ring at +{used:#x}, not 4-byte aligned")
        if vr.da == rt.FW_RSC_ADDR_ANY:
            pa = region.pa
            anys.append(True)
        else:
            pa = vr.da
            anys.append(False)
        if not region.contains(pa, size):
            raise AttachError(
                f"vring{i} at {pa:#x} (+{size:#x} for {vr.num} entries, align {vr.align}) is outside {region}"
            )
        if pa % max(vr.align, 4):
            raise AttachError(f"vring{i} address {pa:#x} is not aligned to {vr.align}")
        pas.append(pa)
    if vdev.vrings[0].notifyid == vdev.vrings[1].notifyid:
        log.warning("vring0 and vring1 share notifyid %d", vdev.vrings[0].notifyid)
    need = 2 * vdev.vrings[0].num * layout.buf_size
    if need > layout.buffers.size:
        raise AttachError(f"{2 * vdev.vrings[0].num} buffers of {layout.buf_size} bytes do not fit in {layout.buffers}")
    for w in table.warnings:
        log.warning("resource table: %s", w)
    return TableView(table, vdev, (pas[0], pas[1]), (anys[0], anys[1]))


class Session:
    """One live attachment: the rings, the bus, the status field."""

    def __init__(self, mem: MemoryMap, layout: Layout, view: TableView, events: BusEvents):
        self.mem, self.layout, self.view = mem, layout, view
        self.status_pa = layout.table_pa + view.vdev.status_offset
        vr = view.vdev.vrings
        self.rings = tuple(
            Vring(mem.span(pa, vring_offsets(pa, v.num, v.align)[2]), pa, v.num, v.align)
            for pa, v in zip(view.vring_pa, vr, strict=True)
        )
        self.notifyids = view.notifyids
        self.features = view.vdev.dfeatures & SUPPORTED_FEATURES
        self.bus = RpmsgBus(
            mem,
            self.rings[0],
            self.rings[1],
            Region(layout.buffers.name, layout.buffers.pa, layout.buffers.size),
            events,
            buf_size=layout.buf_size,
            ns=bool(self.features & SUPPORTED_FEATURES),
        )

    def _set_status(self, value: int) -> None:
        self.mem.write_u8(self.status_pa, value)

    def attach(self) -> list[int]:
        """Fresh handshake; the remote must not be using the rings.  Returns the doorbell words."""
        tp = self.layout.table_pa
        vdev = self.view.vdev
        for i, vr in enumerate(vdev.vrings):
            if self.view.any_da[i]:
                # remoteproc writes the address it allocated back into the table
                self.mem.write_u32(tp + vr.offset, self.view.vring_pa[i])
        self._set_status(0)
        self._set_status(rt.VIRTIO_CONFIG_S_ACKNOWLEDGE)
        self._set_status(rt.VIRTIO_CONFIG_S_ACKNOWLEDGE | rt.VIRTIO_CONFIG_S_DRIVER)
        self.mem.write_u32(tp + vdev.gfeatures_offset, self.features)
        for ring in self.rings:
            ring.reset()
        self.bus.start()
        self.bus.flush()  # publish the receive buffers before DRIVER_OK
        native.wmb()  # the rings and buffers are written before the remote can see DRIVER_OK
        self._set_status(rt.VIRTIO_CONFIG_S_ACKNOWLEDGE | rt.VIRTIO_CONFIG_S_DRIVER | rt.VIRTIO_CONFIG_S_DRIVER_OK)
        self._remember_table()
        return [self.notifyids[0]]

    def _remember_table(self) -> None:
        """Keep the table as attached, to notice a remote that rewrites it under us."""
        self._table = bytearray(self.mem.read(self.layout.table_pa, self.view.table.size))
        self._status_off = self.view.vdev.status_offset

    def table_intact(self) -> bool:
        """The table still says what it said when we attached (the status byte aside)."""
        now = bytearray(self.mem.read(self.layout.table_pa, len(self._table)))
        now[self._status_off] = self._table[self._status_off]
        return now == self._table

    def resume(self) -> list[int] | str:
        """Take over the live session an earlier host left (it died; the remote kept running).

        Returns the doorbell words to ring, or why resuming is not safe (the
        caller then resets the remote instead).  Nothing is written to shared
        memory before every check has passed, except buffers handed back.
        """
        saved = self.bus.state.load((self.rings[0].pa, self.rings[1].pa), self.rings[0].num)
        if isinstance(saved, str):
            return saved
        vdev = self.view.vdev
        if vdev.gfeatures != self.features:
            return f"the earlier host negotiated features {vdev.gfeatures:#x}, we would negotiate {self.features:#x}"
        if any(self.view.any_da):
            return "a vring address is still FW_RSC_ADDR_ANY, so no host ever set it up"
        try:
            rx_back, tx_back = self.bus.resume(saved)
        except VringError as e:
            self.bus.close()
            return f"the rings are not in a state we can take over: {e}"
        self.bus.rx.want_interrupts(True)
        self.bus.tx.want_interrupts(False)
        self.bus.flush()
        self._remember_table()
        log.info(
            "resumed the live session: %d channels, %d receive buffers handed back, %d transmit buffers reclaimed",
            len(saved),
            rx_back,
            tx_back,
        )
        return list(self.notifyids)

    def alive(self) -> bool:
        """The remote still runs this session: table version 1 and DRIVER_OK still set."""
        return self.lost_reason() is None

    def lost_reason(self) -> str | None:
        """Why the remote no longer runs this session (its table's version, or its status), or None."""
        ver = self.mem.read_u32(self.layout.table_pa)
        if ver != 1:
            if ver == 0:
                return "the remote is rewriting its resource table (ver 0): it restarted"
            return f"the remote's resource table now has ver {ver}, not 1 (rewritten under a live session)"
        if not self.mem.read_u8(self.status_pa) & rt.VIRTIO_CONFIG_S_DRIVER_OK:
            return "the remote's status lost DRIVER_OK (it restarted or reset)"
        return None

    def detach(self) -> list[int]:
        """Clean exit: status 0 so the remote ends its session; returns the doorbell words."""
        self.bus.close()
        if self.alive():
            self.bus.state.clear()
            self._set_status(0)
            return [self.notifyids[0]]
        return []
