"""Compile a device-tree snippet onto the tcc807x model and read back what the kernel would see.

``compile_tree`` runs what a kernel build runs (``cpp`` with the dt-bindings
include path, then ``dtc``) on the model ``tcc807x-subcore.dtsi`` with the
snippet appended, as the board's ``.dts`` would have it.  ``parse_dtb`` reads
the flattened tree (devicetree specification, chapter 5: header, structure
block of FDT_BEGIN_NODE / FDT_PROP / FDT_END_NODE tokens, strings block).

``uio_devices`` then applies the kernel's rules to it:

* a node is there only if it and every ancestor is available
  (``of_device_is_available``: no ``status``, or ``"okay"``/``"ok"``);
* uio_pdrv_genirq (bound with ``of_id=generic-uio``) names the UIO device
  ``linux,uio-name`` or ``"%pOFn"``, the node name without the unit address
  (``uio_pdrv_genirq_probe``); it takes interrupt index 0 only
  (``platform_get_irq(pdev, 0)``), and one map per ``reg`` entry;
* a reserved-memory child counts only when available (``fdt_scan_reserved_mem``).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = HERE / "tcc807x-subcore.dtsi"
SEED = HERE / "seed-rproc.dtsi"

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9


@dataclass
class Node:
    name: str  # full name, with unit address
    path: str
    parent: Node | None
    props: dict[str, bytes] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    @property
    def basename(self) -> str:
        return self.name.split("@", 1)[0]

    def cells(self, prop: str) -> list[int]:
        raw = self.props.get(prop, b"")
        return list(struct.unpack(f">{len(raw) // 4}I", raw))

    def string(self, prop: str) -> str | None:
        raw = self.props.get(prop)
        return None if raw is None else raw.rstrip(b"\0").decode()

    def strings(self, prop: str) -> list[str]:
        raw = self.props.get(prop)
        return [] if raw is None else [s.decode() for s in raw.rstrip(b"\0").split(b"\0")]

    @property
    def available(self) -> bool:
        """``of_device_is_available`` for this node and all its ancestors."""
        n: Node | None = self
        while n is not None:
            status = n.string("status")
            if status is not None and status not in ("okay", "ok"):
                return False
            n = n.parent
        return True

    def reg(self) -> list[tuple[int, int]]:
        """``reg`` decoded with the parent's #address-cells / #size-cells (defaults 2 / 1)."""
        p = self.parent
        ac = p.cells("#address-cells")[0] if p and "#address-cells" in p.props else 2
        sc = p.cells("#size-cells")[0] if p and "#size-cells" in p.props else 1
        cells = self.cells("reg")
        step = ac + sc
        if step == 0 or len(cells) % step:
            raise ValueError(f"{self.path}: reg has {len(cells)} cells, not a multiple of {ac}+{sc}")
        out = []
        for i in range(0, len(cells), step):
            addr = size = 0
            for c in cells[i : i + ac]:
                addr = addr << 32 | c
            for c in cells[i + ac : i + step]:
                size = size << 32 | c
            out.append((addr, size))
        return out

    def walk(self) -> list[Node]:
        out = [self]
        for c in self.children:
            out.extend(c.walk())
        return out


def parse_dtb(blob: bytes) -> Node:
    magic, _total, off_struct, off_strings = struct.unpack_from(">4I", blob, 0)
    if magic != FDT_MAGIC:
        raise ValueError("not a flattened device tree")
    pos = off_struct
    root: Node | None = None
    stack: list[Node] = []

    def string_at(off: int) -> str:
        end = blob.index(b"\0", off_strings + off)
        return blob[off_strings + off : end].decode()

    while True:
        (tok,) = struct.unpack_from(">I", blob, pos)
        pos += 4
        if tok == FDT_BEGIN_NODE:
            end = blob.index(b"\0", pos)
            name = blob[pos:end].decode()
            pos = (end + 1 + 3) & ~3
            parent = stack[-1] if stack else None
            path = "/" if parent is None else (parent.path.rstrip("/") + "/" + name)
            node = Node(name or "/", path, parent)
            if parent is None:
                root = node
            else:
                parent.children.append(node)
            stack.append(node)
        elif tok == FDT_END_NODE:
            stack.pop()
        elif tok == FDT_PROP:
            length, nameoff = struct.unpack_from(">2I", blob, pos)
            pos += 8
            stack[-1].props[string_at(nameoff)] = blob[pos : pos + length]
            pos = (pos + length + 3) & ~3
        elif tok == FDT_NOP:
            continue
        elif tok == FDT_END:
            break
        else:
            raise ValueError(f"bad FDT token {tok} at {pos - 4:#x}")
    assert root is not None
    return root


@dataclass
class Compiled:
    root: Node
    warnings: str  # dtc's stderr

    def node(self, path: str) -> Node | None:
        for n in self.root.walk():
            if n.path == path:
                return n
        return None

    def by_phandle(self, phandle: int) -> Node | None:
        for n in self.root.walk():
            if n.cells("phandle") == [phandle]:
                return n
        return None


class DtcError(Exception):
    pass


def compile_tree(snippet: str, tmp: Path, *, seed: bool = False) -> Compiled:
    """The model (plus the seed's remoteproc nodes if ``seed``) with ``snippet`` appended, compiled."""
    src = tmp / "board.dts"
    includes = [f'#include "{MODEL.name}"'] + ([f'#include "{SEED.name}"'] if seed else [])
    src.write_text("/dts-v1/;\n" + "\n".join(includes) + "\n\n" + snippet + "\n")
    pre = subprocess.run(
        ["cpp", "-nostdinc", "-undef", "-x", "assembler-with-cpp", "-I", str(HERE), "-I", str(HERE / "include"),
         str(src)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if pre.returncode:
        raise DtcError(f"cpp: {pre.stderr.strip()}")
    dtb = tmp / "board.dtb"
    if shutil.which("dtc") is None:
        raise DtcError("dtc is not installed: apt-get install device-tree-compiler (make deps)")
    r = subprocess.run(
        ["dtc", "-I", "dts", "-O", "dtb", "-o", str(dtb), "-"], input=pre.stdout, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    if r.returncode:
        raise DtcError(f"dtc: {r.stderr.strip()}")
    return Compiled(parse_dtb(dtb.read_bytes()), r.stderr)


@dataclass(frozen=True)
class UioDevice:
    """What uio_pdrv_genirq makes of one available ``generic-uio`` node."""

    name: str  # /sys/class/uio/uioN/name
    path: str
    maps: tuple[tuple[int, int], ...]  # (pa, size) of each reg entry, before page rounding
    irq: tuple[int, ...] | None  # interrupt specifier index 0 (the only one the driver takes)
    map_names: tuple[str, ...]  # maps/mapM/name: the node's full name (of_address_to_resource)


def uio_devices(tree: Compiled) -> list[UioDevice]:
    out = []
    for n in tree.root.walk():
        if "generic-uio" not in n.strings("compatible") or not n.available:
            continue
        name = n.string("linux,uio-name") or n.basename
        ints = n.cells("interrupts")
        irq = tuple(ints[:3]) if ints else None  # GIC: 3 cells per specifier
        regs = tuple(n.reg())
        out.append(UioDevice(name, n.path, regs, irq, tuple(n.name for _ in regs)))
    return out


def reserved(tree: Compiled) -> list[tuple[str, int, int, bool]]:
    """(path, pa, size, no-map) of every reserved-memory child the kernel honours."""
    rm = tree.node("/reserved-memory")
    if rm is None:
        return []
    return [(c.path, pa, size, "no-map" in c.props) for c in rm.children if c.available for pa, size in c.reg()]


def clients_of(tree: Compiled, provider: Node) -> list[Node]:
    """Available nodes whose ``mboxes`` names ``provider`` (#mbox-cells = 1: pairs of phandle, channel)."""
    ph = provider.cells("phandle")
    out = []
    for n in tree.root.walk():
        cells = n.cells("mboxes")
        if ph and n.available and any(cells[i] == ph[0] for i in range(0, len(cells), 2)):
            out.append(n)
    return out


# -- what rprocd needs from the merged tree ------------------------------------------------------

GIC_SPI, IRQ_TYPE_LEVEL_HIGH = 0, 4
MBOX_PATH = "/mbox@17470000"  # a55sp_a55mp_mbox in tcc807x-subcore-mbox.dtsi
MBOX_REG = (0x17470000, 0x100)
MBOX_RX_IRQ = (GIC_SPI, 242, IRQ_TYPE_LEVEL_HIGH)


def problems(
    tree: Compiled,
    *,
    memory: tuple[str, ...],
    mailbox: str | None,
    window: tuple[int, int],
) -> list[str]:
    """Why rprocd, configured with UIO names ``memory`` and ``mailbox``, would not find its devices."""
    out: list[str] = []
    devs = uio_devices(tree)
    by_name: dict[str, list[UioDevice]] = {}
    for d in devs:
        by_name.setdefault(d.name, []).append(d)
    lo, hi = window[0], window[0] + window[1]
    covered: list[tuple[int, int]] = []
    for name in memory:
        found = by_name.get(name, [])
        if len(found) != 1:
            out.append(f"{len(found)} enabled generic-uio nodes named {name!r} (want 1): {[d.path for d in found]}")
            continue
        d = found[0]
        if d.irq is not None:
            out.append(f"{d.path}: a memory device with an interrupt {d.irq}")
        covered += [(pa, pa + size) for pa, size in d.maps]
    if memory and not _covers(covered, lo, hi):
        out.append(f"the maps of {memory} do not cover the window {lo:#x}-{hi:#x}: {covered}")
    if mailbox is not None:
        found = by_name.get(mailbox, [])
        if len(found) != 1:
            out.append(f"{len(found)} enabled generic-uio nodes named {mailbox!r} (want 1): {[d.path for d in found]}")
        else:
            d = found[0]
            if d.path != MBOX_PATH or d.maps != (MBOX_REG,):
                out.append(f"mailbox device {d.path} maps {d.maps}, want {MBOX_PATH} {MBOX_REG}")
            if d.irq != MBOX_RX_IRQ:
                out.append(f"mailbox device {d.path}: interrupt {d.irq}, want the receive one {MBOX_RX_IRQ}")
        node = tree.node(MBOX_PATH)
        if node is None:
            out.append(f"no {MBOX_PATH} node")
        else:
            if "telechips,mailbox-controller-v2" in node.strings("compatible") and node.available:
                out.append(f"{MBOX_PATH} is still bound by the kernel's mailbox driver")
            for c in clients_of(tree, node):
                out.append(f"{c.path} (kernel client of the mailbox) is enabled")
    root, rm = tree.root, tree.node("/reserved-memory")
    if rm is None:
        out.append("no /reserved-memory")
    else:
        for cells in ("#address-cells", "#size-cells"):
            if rm.cells(cells) != root.cells(cells):
                out.append(f"/reserved-memory {cells} {rm.cells(cells)} differs from the root's {root.cells(cells)}")
        if "ranges" not in rm.props:
            out.append("/reserved-memory has no ranges")
        held = [(pa, pa + size) for _, pa, size, nomap in reserved(tree) if nomap]
        if not _covers(held, lo, hi):
            out.append(f"the window {lo:#x}-{hi:#x} is not all reserved no-map: {[(hex(a), hex(b)) for a, b in held]}")
    return out


def _covers(spans: list[tuple[int, int]], lo: int, hi: int) -> bool:
    at = lo
    for a, b in sorted(spans):
        if a > at:
            break
        at = max(at, b)
    return at >= hi
