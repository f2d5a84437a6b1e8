"""Decode a remote's resource table and derive the host-side memory map (sans-I/O).

What ``rprocctl inspect`` does for a firmware ELF or a memory dump, without
the I/O: given the table's bytes and its address, :func:`analyse` parses and
validates it (with :mod:`rprocd.rsc_table`, and rprocd's own attach checks
from :mod:`rprocd.session`), places every part in physical memory, warns about
what will not work, and renders the memory map, the Linux device-tree
reserved-memory snippet and the ``rprocd.toml`` section that match.

Replaces the by-hand work: ``nm zephyr.elf | grep resource_table``, subtracting
the reserved region's base for ``rsc-offset``, adding up vring sizes.

What a table does not say is inferred and reported as an assumption, and can
be given instead (:class:`Hints`): the reserved region that holds the table
(default: the table address rounded down to 4 KiB, up to the next vring, or,
with no fixed vring, up to the end of a trace buffer just above the table),
the shared window (default: the span of everything the host needs), and the
rpmsg buffer pool (default: a carveout named like ``*buffer*``, else right
after the vrings, sized for ``2 * num`` buffers or up to the window's end).

What it proposes never overlaps: ``FW_RSC_ADDR_ANY`` vrings and an inferred
buffer pool go to the first free pages, past the table, the trace buffer, the
carveouts and each other; a layout that still overlaps (the firmware's own
addresses, or a hint) is reported and no snippet or config is printed for it.

The device-tree snippet is for a 2-cell root (arm64), as the seed's tree and
docs/hardware.md: ``reg = <0x0 PA 0x0 SIZE>``, the window node named so that
its UIO name (uio_pdrv_genirq: the node name without the unit address) is the
one the printed config lists, and the SoC's mailbox node overridden in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import rsc_table as rt
from .layout import RPMSG_BUF_SIZE, TCC807X_MAILBOX, Layout, MailboxNode, Region
from .memory import MemoryMap
from .session import AttachError, read_table
from .vring import vring_offsets

PAGE = 0x1000
DEFAULT_MAX_TABLE = 0x1000  # the most bytes rprocd reads as the table (rsc_table.max_size)
_NEAR = 0x10000  # a vring this close above the table bounds the table's region


def align_down(v: int, a: int = PAGE) -> int:
    return v & ~(a - 1)


def align_up(v: int, a: int = PAGE) -> int:
    return (v + a - 1) & ~(a - 1)


@dataclass(frozen=True)
class Hints:
    """What the caller knows that the table does not say (each ``None`` = infer it)."""

    name: str = "main"
    rsc_region: Region | None = None
    shm: Region | None = None
    buffers: Region | None = None
    buf_size: int = RPMSG_BUF_SIZE
    mailbox: MailboxNode | None = TCC807X_MAILBOX  # the SoC node to hand to UIO (None: leave it out)


@dataclass(frozen=True)
class VringInfo:
    index: int
    da: int
    pa: int | None  # where it is (da, or the host's choice for FW_RSC_ADDR_ANY); None if unusable
    num: int
    align: int
    notifyid: int
    size: int  # bytes of the ring itself (vring_size); 0 if num/align are invalid
    region: Region | None


@dataclass
class Report:
    """Everything :func:`analyse` found; render with :meth:`text`, :meth:`dts`, :meth:`toml`, :meth:`as_dict`."""

    name: str
    table_pa: int
    origin: str
    table: rt.ResourceTable | None = None
    error: str | None = None
    region: Region | None = None
    vdev: rt.Vdev | None = None
    vrings: list[VringInfo] = field(default_factory=list)
    buffers: Region | None = None
    buffers_needed: int = 0
    trace: rt.Trace | None = None
    window: Region | None = None
    max_size: int = DEFAULT_MAX_TABLE
    warnings: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    buf_size: int = RPMSG_BUF_SIZE
    overlaps: list[str] = field(default_factory=list)  # the warnings that make the layout unusable
    mailbox: MailboxNode | None = None

    @property
    def offset(self) -> int | None:
        return None if self.region is None else self.table_pa - self.region.pa

    @property
    def table_size(self) -> int:
        return self.table.size if self.table else 0

    @property
    def layout(self) -> Layout | None:
        """The :class:`~rprocd.layout.Layout` rprocd would run with, when everything is placed."""
        if self.region is None or self.window is None or self.buffers is None or len(self.vrings) != 2:
            return None
        regs = [v.region for v in self.vrings]
        if regs[0] is None or regs[1] is None:
            return None
        return Layout(
            name=self.name,
            window=self.window,
            table_region=self.region,
            rsc_offset=self.table_pa - self.region.pa,
            rsc_size=self.max_size,
            vrings=(regs[0], regs[1]),
            buffers=self.buffers,
            buf_size=self.buf_size,
        )

    # -- rendering -----------------------------------------------------------------

    def text(self) -> str:
        out = [f"resource table: {self.origin}"]
        if self.table is None:
            out.append(f"  error: {self.error}")
            return "\n".join(out) + "\n"
        where = ""
        if self.region is not None:
            where = f", offset {self.offset:#x} in the {self.region.pa:#x} region ({self.region})"
        out.append(f"  address {self.table_pa:#010x}, {self.table_size:#x} bytes{where}")
        out.append(f"  version {self.table.ver}, {len(self.table.entries)} entries")
        for i, e in enumerate(self.table.entries):
            out.extend(_entry_lines(i, e))
        out.append("")
        out.append("memory map:")
        for lo, hi, label in self._map_rows():
            out.append(f"  {lo:#010x}-{hi:#010x}  {hi - lo:#8x}  {label}")
        if self.assumptions:
            out.append("")
            out.append("assumptions (give them explicitly to override):")
            out.extend(f"  - {a}" for a in self.assumptions)
        out.append("")
        if self.warnings:
            out.append("warnings:")
            out.extend(f"  ! {w}" for w in self.warnings)
        else:
            out.append("no problems found")
        return "\n".join(out) + "\n"

    def _map_rows(self) -> list[tuple[int, int, str]]:
        rows: list[tuple[int, int, str]] = []
        if self.window is not None:
            rows.append((self.window.pa, self.window.end, f"{self.window.name}: shared window"))
        if self.region is not None:
            rows.append((self.region.pa, self.region.end, f"{self.region.name}: resource-table region"))
        rows.append((self.table_pa, self.table_pa + self.table_size, "  resource table"))
        if self.trace is not None:
            rows.append((self.trace.da, self.trace.da + self.trace.len, f"  trace buffer {self.trace.name!r}"))
        for v in self.vrings:
            d = "remote->host" if v.index == 0 else "host->remote"
            if v.region is not None:
                rows.append((v.region.pa, v.region.end, f"{v.region.name}: vring{v.index} ({d})"))
            if v.pa is not None:
                rows.append((v.pa, v.pa + v.size, f"  vring{v.index}: {v.num} descriptors, align {v.align}"))
        if self.buffers is not None:
            n = self.buffers_needed // self.buf_size
            rows.append(
                (
                    self.buffers.pa,
                    self.buffers.end,
                    f"{self.buffers.name}: rpmsg buffers ({n} x {self.buf_size} B = {self.buffers_needed:#x} needed)",
                )
            )
        for e in self.table.entries if self.table else ():
            if isinstance(e, (rt.Carveout, rt.Devmem)) and (self.buffers is None or e.pa != self.buffers.pa):
                kind = "carveout" if isinstance(e, rt.Carveout) else "devmem"
                rows.append((e.pa, e.pa + e.len, f"  {kind} {e.name!r}"))
        rows.sort(key=lambda r: (r[0], -(r[1] - r[0])))
        return rows

    def _unwritable(self) -> str | None:
        if self.layout is None:
            return "not enough is known"
        if self.overlaps:
            return "the layout overlaps (see the warnings)"
        return None

    def dts(self) -> str:
        """The Linux device-tree snippet (2-cell root): reserved memory, the window and the mailbox for UIO."""
        why = self._unwritable()
        lay = self.layout
        if why is not None or lay is None:
            return f"/* not written: {why} */\n"
        lines = [
            "/ {",
            "\treserved-memory {",
            "\t\t#address-cells = <2>;",
            "\t\t#size-cells = <2>;",
            "\t\tranges;",
            "",
            '\t\t/* no-map: Linux must never use these pages; "okay" even over a disabled node of the same path */',
        ]
        for r in (lay.table_region, *lay.vrings, lay.buffers):
            lines += [f"\t\t{r.name}@{r.pa:x} {{", f"\t\t\treg = <{_cells(r)}>;", "\t\t\tno-map;"]
            lines += ['\t\t\tstatus = "okay";', "\t\t};"]
        w = lay.window
        lines += [
            "\t};",
            "",
            f'\t/* UIO device "{w.name}" (the whole window); the table is at {self.table_pa:#x}: '
            f"offset {lay.rsc_offset:#x} in {lay.table_region.name} */",
            f"\t{w.name}@{w.pa:x} {{",
            '\t\tcompatible = "generic-uio";',
            f"\t\treg = <{_cells(w)}>;",
            '\t\tstatus = "okay";',
            "\t};",
            "};",
        ]
        m = self.mailbox
        if m is not None:
            lines += [
                "",
                f'/* {m.soc}: the mailbox {m.label} ({m.name}@{m.pa:x}) as UIO device "{m.name}", '
                f"receive interrupt only (SPI {m.rx_spi}) */",
                f"&{m.label} {{",
                '\tcompatible = "generic-uio";',
                f"\tinterrupts = <GIC_SPI {m.rx_spi} IRQ_TYPE_LEVEL_HIGH>;",
                '\tstatus = "okay";',
                "};",
                "",
                "/* its kernel client must not drive it too */",
                f"&{m.client} {{",
                '\tstatus = "disabled";',
                "};",
            ]
        return "\n".join(lines) + "\n"

    def toml(self) -> str:
        """The ``[remote.NAME]`` section of rprocd.toml (format of rprocd/config.py), UIO names as in :meth:`dts`."""
        why = self._unwritable()
        lay = self.layout
        if why is not None or lay is None:
            return f"# not written: {why}\n"

        def reg(r: Region) -> str:
            return f"{{ pa = {r.pa:#x}, size = {r.size:#x} }}"

        t = lay.table_region
        return (
            f"[remote.{self.name}]\n"
            'backend = "uio"\n'
            f"shm = {reg(lay.window)}\n"
            f"rsc_table = {{ pa = {t.pa:#x}, size = {t.size:#x}, offset = {lay.rsc_offset:#x}, "
            f"max_size = {lay.rsc_size:#x} }}\n"
            f"vring0 = {reg(lay.vrings[0])}\n"
            f"vring1 = {reg(lay.vrings[1])}\n"
            f"buffers = {reg(lay.buffers)}\n"
            f"\n[remote.{self.name}.uio]\n"
            f'memory = ["{lay.window.name}"]\n'
        ) + (
            ""
            if self.mailbox is None
            else f'\n[remote.{self.name}.doorbell]\ndriver = "telechips"\nuio = "{self.mailbox.name}"\n'
        )

    def as_dict(self) -> dict[str, Any]:
        def region(r: Region | None) -> dict[str, Any] | None:
            return None if r is None else {"name": r.name, "pa": r.pa, "size": r.size}

        return {
            "origin": self.origin,
            "ok": self.table is not None and not self.warnings,
            "error": self.error,
            "table": {
                "pa": self.table_pa,
                "size": self.table_size,
                "offset": self.offset,
                "max_size": self.max_size,
                "entries": len(self.table.entries) if self.table else 0,
            },
            "region": region(self.region),
            "window": region(self.window),
            "vdev": None
            if self.vdev is None
            else {
                "id": self.vdev.id,
                "notifyid": self.vdev.notifyid,
                "dfeatures": self.vdev.dfeatures,
                "gfeatures": self.vdev.gfeatures,
                "status": self.vdev.status,
            },
            "vrings": [
                {
                    "index": v.index,
                    "da": v.da,
                    "pa": v.pa,
                    "num": v.num,
                    "align": v.align,
                    "notifyid": v.notifyid,
                    "size": v.size,
                    "region": region(v.region),
                }
                for v in self.vrings
            ],
            "buffers": region(self.buffers),
            "buffers_needed": self.buffers_needed,
            "trace": None
            if self.trace is None
            else {"name": self.trace.name, "pa": self.trace.da, "len": self.trace.len},
            "warnings": list(self.warnings),
            "assumptions": list(self.assumptions),
            "dts": self.dts(),
            "toml": self.toml(),
        }


def _entry_lines(i: int, e: rt.Entry) -> list[str]:
    if isinstance(e, rt.Vdev):
        feats = "ns" if e.dfeatures >> rt.VIRTIO_RPMSG_F_NS & 1 else "no name service"
        kind = "rpmsg" if e.id == rt.VIRTIO_ID_RPMSG else "not rpmsg"
        out = [
            f"  [{i}] vdev at +{e.offset:#x}: virtio id {e.id} ({kind}), notifyid {e.notifyid}, "
            f"dfeatures {e.dfeatures:#x} ({feats}), gfeatures {e.gfeatures:#x}, status {e.status:#x}, "
            f"config {len(e.config)} bytes"
        ]
        for k, v in enumerate(e.vrings):
            da = "ANY (host allocates)" if v.da == rt.FW_RSC_ADDR_ANY else f"{v.da:#x}"
            out.append(f"        vring{k}: da {da}, align {v.align}, num {v.num}, notifyid {v.notifyid}")
        return out
    if isinstance(e, rt.Trace):
        return [f"  [{i}] trace {e.name!r} at +{e.offset:#x}: da {e.da:#x}, len {e.len:#x}"]
    if isinstance(e, (rt.Carveout, rt.Devmem)):
        kind = "carveout" if isinstance(e, rt.Carveout) else "devmem"
        return [f"  [{i}] {kind} {e.name!r} at +{e.offset:#x}: da {e.da:#x}, pa {e.pa:#x}, len {e.len:#x}"]
    return [f"  [{i}] type {e.type} at +{e.offset:#x}: {len(e.data)} bytes (vendor or unknown)"]


def _cells(r: Region) -> str:
    """``reg`` of a 2-cell parent: address high, low, size high, low."""
    return f"{r.pa >> 32:#x} {r.pa & 0xFFFFFFFF:#x} {r.size >> 32:#x} {r.size & 0xFFFFFFFF:#x}"


def _overlap(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 < b1 and b0 < a1


def _first_free(start: int, size: int, taken: list[tuple[int, int]]) -> int:
    """The lowest page-aligned address >= ``start`` whose pages [pa, align_up(pa + size)) are free."""
    pa = align_up(start)
    moved = True
    while moved:
        moved = False
        for lo, hi in taken:
            if _overlap(pa, align_up(pa + max(size, 1)), lo, hi):
                pa = align_up(hi)
                moved = True
    return pa


def analyse(table_pa: int, raw: bytes | bytearray | memoryview, hints: Hints = Hints(), *, origin: str = "") -> Report:
    """Parse the table at ``table_pa`` (``raw`` holds at least the table), place everything, check it."""
    raw = bytes(raw)
    rep = Report(
        name=hints.name,
        table_pa=table_pa,
        origin=origin or f"{table_pa:#x}",
        buf_size=hints.buf_size,
        mailbox=hints.mailbox,
    )
    try:
        table = rt.parse(raw)
    except rt.TableError as e:
        rep.error = f"{type(e).__name__}: {e}"
        return rep
    rep.table = table
    w = rep.warnings

    def overlap(msg: str) -> None:
        w.append(msg)
        rep.overlaps.append(msg)

    w.extend(table.warnings)
    if table_pa % 4:
        w.append(f"the table address {table_pa:#x} is not 4-byte aligned")

    vdevs = [v for v in table.vdevs if v.id == rt.VIRTIO_ID_RPMSG]
    if not vdevs:
        w.append("no rpmsg vdev (virtio id 7): there is nothing for rprocd to attach to")
    else:
        if len(vdevs) > 1:
            w.append(f"{len(vdevs)} rpmsg vdevs: rprocd serves only the first")
        rep.vdev = vdev = vdevs[0]
        if not vdev.dfeatures >> rt.VIRTIO_RPMSG_F_NS & 1:
            w.append(
                f"dfeatures {vdev.dfeatures:#x} lacks VIRTIO_RPMSG_F_NS (bit 0): the remote will not announce "
                "its endpoints, so none appear; only endpoints created by hand (create-endpoint --dst) work"
            )
        if len(vdev.vrings) != 2:
            w.append(f"the rpmsg vdev has {len(vdev.vrings)} vrings; rpmsg needs exactly 2")
        elif vdev.vrings[0].notifyid == vdev.vrings[1].notifyid:
            w.append(f"vring0 and vring1 share notifyid {vdev.vrings[0].notifyid}: a doorbell cannot say which")
        if vdev.status & rt.VIRTIO_CONFIG_S_DRIVER_OK:
            rep.assumptions.append(
                f"vdev status is {vdev.status:#x} (DRIVER_OK): a host was attached when this was captured"
            )
    traces = table.traces
    rep.trace = traces[0] if traces else None
    table_end = table_pa + table.size
    # what the remote already uses: nothing proposed may land on it
    taken: list[tuple[int, int]] = [(table_pa, table_end)]
    taken += [(t.da, t.da + t.len) for t in traces]
    taken += [(e.pa, e.pa + e.len) for e in table.entries if isinstance(e, (rt.Carveout, rt.Devmem))]

    # the reserved region that holds the table
    vr_das = [v.da for v in rep.vdev.vrings if v.da != rt.FW_RSC_ADDR_ANY] if rep.vdev else []
    if hints.rsc_region is not None:
        rep.region = hints.rsc_region
    else:
        base = align_down(table_pa)
        above = [d for d in vr_das if table_end <= d <= base + _NEAR]
        near_traces = [t.da + t.len for t in traces if base <= t.da < base + _NEAR]
        if above:
            end, how = min(above), "up to the first vring"
        elif near_traces:
            end, how = align_up(max(table_end, *near_traces)), "past the trace buffer"
        else:
            end, how = align_up(table_end), "up to the next page"
        rep.region = Region("rsc-table", base, max(end - base, PAGE))
        rep.assumptions.append(
            f"the resource-table region is {rep.region.pa:#x}+{rep.region.size:#x}: the table address rounded "
            f"down to 4 KiB, {how} (--rsc-region PA:SIZE)"
        )
    region = rep.region
    if not region.contains(table_pa, table.size):
        w.append(f"the table {table_pa:#x}+{table.size:#x} is not inside the resource-table region {region}")
    rep.max_size = max(0, min(DEFAULT_MAX_TABLE, region.end - table_pa))
    if rep.max_size < table.size:
        w.append(f"the table ({table.size:#x} bytes) does not fit between its address and the region's end")

    # vrings
    next_free = region.end
    taken.append((region.pa, region.end))
    if rep.vdev is not None:
        for i, vv in enumerate(rep.vdev.vrings[:2]):
            try:
                size = vring_offsets(0, vv.num, vv.align)[2]
            except ValueError as e:
                w.append(f"vring{i}: {e}")
                rep.vrings.append(VringInfo(i, vv.da, None, vv.num, vv.align, vv.notifyid, 0, None))
                continue
            if vv.da == rt.FW_RSC_ADDR_ANY:
                pa = _first_free(next_free, size, taken)
                rep.assumptions.append(
                    f"vring{i} has da ANY: the host places it at {pa:#x}, the first free page past the table "
                    f"region (its vring{i} region)"
                )
            else:
                pa = vv.da
                if pa % max(vv.align, 4):
                    w.append(f"vring{i} address {pa:#x} is not aligned to {vv.align}")
            reg = Region(f"vdev0vring{i}", align_down(pa), align_up(pa + size) - align_down(pa))
            next_free = max(next_free, reg.end)
            taken.append((reg.pa, reg.end))
            rep.vrings.append(VringInfo(i, vv.da, pa, vv.num, vv.align, vv.notifyid, size, reg))
            if _overlap(pa, pa + size, table_pa, table_end):
                overlap(
                    f"vring{i} {pa:#x}+{size:#x} overlaps the resource table {table_pa:#x}+{table.size:#x}: "
                    "setting up the ring would overwrite the table"
                )
            elif _overlap(pa, pa + size, region.pa, region.end):
                overlap(f"vring{i} {pa:#x}+{size:#x} lies inside the resource-table region {region}")
        r = rep.vrings
        if len(r) == 2 and r[0].pa is not None and r[1].pa is not None:
            if _overlap(r[0].pa, r[0].pa + r[0].size, r[1].pa, r[1].pa + r[1].size):
                overlap(f"vring0 {r[0].pa:#x}+{r[0].size:#x} and vring1 {r[1].pa:#x}+{r[1].size:#x} overlap")
            if r[0].num != r[1].num:
                w.append(f"vring0 has {r[0].num} entries and vring1 {r[1].num}: rpmsg needs the same size")

    # the buffer pool
    num = rep.vrings[0].num if rep.vrings else 0
    rep.buffers_needed = need = 2 * num * hints.buf_size
    carve = [c for c in table.of_type(rt.Carveout) if "buf" in c.name.lower()]
    if hints.buffers is not None:
        rep.buffers = hints.buffers
    elif carve:
        rep.buffers = Region("vdev0buffer", carve[0].pa, carve[0].len)
        rep.assumptions.append(f"the rpmsg buffers are the carveout {carve[0].name!r}")
    elif need:
        start = _first_free(next_free, need, taken)
        limit = min([lo for lo, _ in taken if lo >= start], default=1 << 64)
        if hints.shm is not None and min(hints.shm.end, limit) > start:
            size = min(hints.shm.end, limit) - start
            how = "up to the end of the shared window" if limit >= hints.shm.end else "up to what follows it"
        else:
            size = align_up(need)
            how = f"sized for 2 x {num} x {hints.buf_size} B"
        rep.buffers = Region("vdev0buffer", start, size)
        rep.assumptions.append(
            f"the rpmsg buffers are {start:#x}+{size:#x}: right after the vrings, {how} (--buffers PA:SIZE)"
        )
    b = rep.buffers
    if b is not None and need and b.size < need:
        w.append(
            f"the buffer pool {b.pa:#x}+{b.size:#x} is too small for 2 x {num} x {hints.buf_size} = {need:#x} bytes"
        )
    if b is not None:
        if _overlap(b.pa, b.end, table_pa, table_end):
            overlap(f"the buffer pool {b} overlaps the resource table")
        for v in rep.vrings:
            if v.pa is not None and _overlap(b.pa, b.end, v.pa, v.pa + v.size):
                overlap(f"the buffer pool {b} overlaps vring{v.index}")
        for t in traces:
            if _overlap(b.pa, b.end, t.da, t.da + t.len):
                overlap(f"the buffer pool {b} overlaps the trace buffer {t.name!r}")

    # the shared window: everything the host maps
    parts = [region] + [v.region for v in rep.vrings if v.region is not None] + ([b] if b else [])
    if hints.shm is not None:
        rep.window = hints.shm
    else:
        lo = min(p.pa for p in parts)
        hi = max(p.end for p in parts)
        rep.window = Region("rpmsg_shm", lo, hi - lo)
        rep.assumptions.append(
            f"the shared window is {lo:#x}-{hi:#x}: the span of the table region, vrings and buffers (--shm PA:SIZE)"
        )
    win = rep.window
    checks: list[tuple[str, int, int]] = [("the resource table", table_pa, table.size)]
    checks += [(f"vring{v.index}", v.pa, v.size) for v in rep.vrings if v.pa is not None]
    if b is not None:
        checks.append(("the buffer pool", b.pa, b.size))
    if rep.trace is not None:
        checks.append((f"the trace buffer {rep.trace.name!r}", rep.trace.da, rep.trace.len))
    for what, pa, size in checks:
        if not win.contains(pa, size):
            w.append(f"{what} {pa:#x}+{size:#x} is outside any region rprocd maps (shared window {win})")
    held = sorted((p.pa, p.end) for p in parts)
    at = win.pa
    for lo, hi in [*held, (win.end, win.end)]:
        if lo > at:
            w.append(
                f"{at:#x}-{min(lo, win.end):#x} of the shared window is in no reserved region: Linux may use "
                "those pages (--rsc-region, --buffers)"
            )
        at = max(at, hi)
    if rep.trace is not None:
        t = rep.trace
        for v in rep.vrings:
            if v.pa is not None and _overlap(t.da, t.da + t.len, v.pa, v.pa + v.size):
                overlap(f"the trace buffer {t.da:#x}+{t.len:#x} overlaps vring{v.index}")
        if _overlap(t.da, t.da + t.len, table_pa, table_end):
            overlap(f"the trace buffer {t.da:#x}+{t.len:#x} overlaps the resource table")

    # what rprocd itself would say when attaching with this layout
    lay = rep.layout
    if lay is not None:
        for problem in lay.check():
            (overlap if " overlaps " in problem else w.append)(f"layout: {problem}")
        if not lay.check() and lay.window.contains(table_pa, lay.rsc_size) and lay.window.size <= 1 << 26:
            mem = bytearray(lay.window.size)
            off = table_pa - lay.window.pa
            chunk = raw[: lay.rsc_size]
            mem[off : off + len(chunk)] = chunk
            try:
                read_table(MemoryMap([(lay.window.pa, mem)]), lay)
            except (rt.TableError, AttachError) as e:
                if not w:  # something the checks above missed
                    w.append(f"rprocd would not attach: {e}")
    return rep
