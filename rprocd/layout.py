"""Where things live in physical memory: the board layout of one remote.

On hardware this comes from the device tree (reserved-memory nodes) and the
config file; with no config, rprocd uses the tcc807x self-boot layout of
``shared/sim-board.md`` (:data:`TCC807X`).
"""

from __future__ import annotations

from dataclasses import dataclass

RPMSG_BUF_SIZE = 512


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    pa: int
    size: int

    @property
    def end(self) -> int:
        return self.pa + self.size

    def contains(self, pa: int, size: int = 1) -> bool:
        return self.pa <= pa and size >= 0 and pa + size <= self.end

    def __str__(self) -> str:
        return f"{self.name} {self.pa:#010x}-{self.end:#010x} ({self.size:#x})"


@dataclass(frozen=True, slots=True)
class Layout:
    """One remote processor's shared-memory layout."""

    name: str
    window: Region  # everything both cores share (the virtual board's file)
    table_region: Region  # reserved memory that holds the resource table
    rsc_offset: int  # where the linker put .resource_table inside table_region
    rsc_size: int  # the most bytes the table may take
    vrings: tuple[Region, Region]  # vring0 (remote -> host), vring1 (host -> remote)
    buffers: Region  # the rpmsg buffer pool
    buf_size: int = RPMSG_BUF_SIZE

    @property
    def table_pa(self) -> int:
        return self.table_region.pa + self.rsc_offset

    @property
    def regions(self) -> tuple[Region, ...]:
        return (self.table_region, *self.vrings, self.buffers)

    def check(self) -> list[str]:
        """Problems with the layout itself (empty when it is usable)."""
        problems = []
        for r in self.regions:
            if not self.window.contains(r.pa, r.size):
                problems.append(f"{r} is outside the shared window {self.window}")
        if self.rsc_offset < 0 or self.rsc_offset + self.rsc_size > self.table_region.size:
            problems.append(f"resource table {self.table_pa:#x}+{self.rsc_size:#x} does not fit in {self.table_region}")
        if self.table_pa % 4:
            problems.append(f"resource table address {self.table_pa:#x} is not 4-byte aligned")
        regs = sorted(self.regions, key=lambda r: r.pa)
        for a, b in zip(regs, regs[1:], strict=False):
            if a.end > b.pa:
                problems.append(f"{a} overlaps {b}")
        return problems


TCC807X = Layout(
    name="main",
    window=Region("rpmsg_shm", 0x200C6000, 0x8000),
    table_region=Region("rsc-table", 0x200C6000, 0x2000),
    rsc_offset=0x3B8,
    rsc_size=0x1000,
    vrings=(Region("vdev0vring0", 0x200C8000, 0x1000), Region("vdev0vring1", 0x200C9000, 0x1000)),
    buffers=Region("vdev0buffer", 0x200CA000, 0x4000),
)

# The layouts a raw dump of the whole window can be recognised by (its size), by board name.
KNOWN_LAYOUTS: dict[str, Layout] = {"tcc807x": TCC807X}


@dataclass(frozen=True, slots=True)
class MailboxNode:
    """The SoC device-tree node of the mailbox a remote is rung through, as ``rprocctl inspect`` prints it."""

    soc: str
    label: str  # the node's label in the SoC .dtsi
    name: str  # node name without unit address = the UIO name once it is generic-uio
    pa: int
    size: int
    rx_spi: int  # interrupt index 0: the receive one (the only one uio_pdrv_genirq takes)
    tx_spi: int
    client: str  # label of the kernel node that uses the mailbox and must be disabled


# Telechips BSP (topst-development/kernel-5.10): tcc807x-subcore-mbox.dtsi
# "a55sp_a55mp_mbox: mbox@17470000" (reg 0x100, SPI 242 rx / 243 tx), whose
# only client is tcc807x-subcore-ipi.dtsi's tcc_ipi_main.
TCC807X_MAILBOX = MailboxNode(
    soc="tcc807x",
    label="a55sp_a55mp_mbox",
    name="mbox",
    pa=0x17470000,
    size=0x100,
    rx_spi=242,
    tx_spi=243,
    client="tcc_ipi_main",
)
