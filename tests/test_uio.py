"""The UIO backend against the fake UIO tree (tests/fake_uio.py): the production code path, fake roots."""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from rprocd.backends.factory import open_platform
from rprocd.backends.sim import BoardDoorbell
from rprocd.backends.uio import UioError, UioIrq, lookup, open_memory, scan, wait_for_devices
from rprocd.config import load_config
from rprocd.layout import TCC807X
from rprocd.mailbox import telechips as T
from rprocd.mailbox.base import MailboxDoorbell
from rprocd.mailbox.telechips import TelechipsMailbox
from rprocd.memory import MemoryAccessError

from .fake_uio import PAGE, FakeMap, FakeUio, in_fake_kernel
from .test_mailbox import TccMailboxPair

SHM = FakeMap(0x200C6000, 0x8000)  # map name: the node's full name, rpmsg_shm@200c6000


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeUio]:
    f = FakeUio(tmp_path / "uio")
    yield f
    f.close()


def test_scan_reads_sysfs_like_the_kernel_prints_it(fake: FakeUio) -> None:
    fake.add_irq_device("mbox")
    fake.add_memory_device("rpmsg_shm", [SHM])
    fake.add_memory_device("odd", [FakeMap(0x200C63B8, 0x100, "tbl")])
    assert (fake.sysfs_root / "class/uio/uio1/maps/map0/addr").read_text() == "0x00000000200c6000\n"
    devs = scan(fake.sysfs_root, fake.dev_root)
    assert [(d.number, d.name) for d in devs] == [(0, "mbox"), (1, "rpmsg_shm"), (2, "odd")]
    shm = devs[1]
    assert shm.node == fake.dev_root / "uio1"
    (m,) = shm.maps
    assert (m.index, m.name, m.addr, m.size, m.offset) == (0, "rpmsg_shm@200c6000", 0x200C6000, 0x8000, 0)
    odd = devs[2].maps[0]  # uio_pdrv_genirq: page-aligned addr, in-page start in offset, size in pages
    assert (odd.addr, odd.offset, odd.size, odd.pa) == (0x200C6000, 0x3B8, PAGE, 0x200C63B8)
    assert devs[2].map_for(0x200C63B8, 0x100) == odd and devs[2].map_for(0x200C6000, 4) is None
    assert set(lookup(["rpmsg_shm", "mbox", "absent"], fake.sysfs_root, fake.dev_root)) == {"rpmsg_shm", "mbox"}


@in_fake_kernel
def test_memory_is_mmapped_by_map_index(fake: FakeUio, tmp_path: Path) -> None:
    regs = FakeMap(0x1B2E0000, 0x100, "regs")  # map0: one page; map1: the shared window at offset 1 * page
    dev = fake.add_memory_device("rpmsg_shm", [regs, SHM])
    (info,) = lookup(["rpmsg_shm"], fake.sysfs_root, fake.dev_root).values()
    memory, closers, desc = open_memory([info], TCC807X)
    try:
        assert "map1" in desc and "map0" not in desc  # map0 does not overlap the window
        memory.write_u32(0x200C6000, 0xC0FFEE01)
        memory.write(0x200CA001, b"payload")
        memory.write_u16(0x200C8002, 0xBEEF)
        raw = dev.backing[1].read_bytes()  # map1's memory
        assert raw[0:4] == struct.pack("=I", 0xC0FFEE01)
        assert raw[0x4001:0x4008] == b"payload"
        assert memory.read(0x200CA001, 7) == b"payload" and memory.device
        with pytest.raises(MemoryAccessError):
            memory.read(0x200CE000, 4)  # just past the window: no access
    finally:
        for c in closers:
            c()


@in_fake_kernel
def test_layout_not_covered_by_the_maps(fake: FakeUio) -> None:
    fake.add_memory_device("rpmsg_shm", [FakeMap(0x200C6000, 0x4000)])  # too short for the buffers
    info = lookup(["rpmsg_shm"], fake.sysfs_root, fake.dev_root)["rpmsg_shm"]
    with pytest.raises(UioError, match=r"vdev0buffer .* is not inside one UIO map"):
        open_memory([info], TCC807X)
    fake.add_memory_device("elsewhere", [FakeMap(0x10000000, 0x1000)])
    info = lookup(["elsewhere"], fake.sysfs_root, fake.dev_root)["elsewhere"]
    with pytest.raises(UioError, match="overlaps the shared window"):
        open_memory([info], TCC807X)


@in_fake_kernel
def test_node_maps_map0_at_offset_zero(fake: FakeUio) -> None:
    """Map 0 is reached with mmap offset 0 and the sysfs size, as rprocd asks the kernel."""
    dev = fake.add_memory_device("rpmsg_shm", [SHM])
    fd = os.open(dev.node, os.O_RDWR)
    try:
        with mmap.mmap(fd, 0x8000, offset=0) as mm:
            assert len(mm) == 0x8000
    finally:
        os.close(fd)


@in_fake_kernel
def test_irq_read_unmask_semantics(fake: FakeUio) -> None:
    dev = fake.add_irq_device("mbox")
    (info,) = lookup(["mbox"], fake.sysfs_root, fake.dev_root).values()
    irq = UioIrq(info)
    k = dev.irq
    assert k is not None
    try:
        assert irq.read_event() is None  # nothing happened: EAGAIN, not a blocking read
        k.fire()
        assert _readable(irq.fileno())
        assert irq.read_event() == 1
        assert k.disabled  # the handler masked the line
        k.fire()  # while masked: held pending at the controller, no event
        assert irq.read_event() is None and k.event == 1
        irq.unmask()
        assert k.event == 2  # the pending one fired on unmask (write is synchronous, as irqcontrol)
        assert _readable(irq.fileno()) and irq.read_event() == 2
        irq.unmask()
        assert k.unmasks == 2 and not k.disabled
        irq.mask()
        assert k.masks == 1 and k.disabled
        assert (info.sysfs / "event").read_text() == "2\n"
    finally:
        irq.close()


@in_fake_kernel
def test_level_interrupt_fires_again_until_acknowledged(fake: FakeUio) -> None:
    asserted = [True]
    dev = fake.add_irq_device("mbox", level=lambda: asserted[0])
    k = dev.irq
    assert k is not None
    irq = UioIrq(lookup(["mbox"], fake.sysfs_root, fake.dev_root)["mbox"])
    try:
        k.update()
        assert irq.read_event() == 1
        irq.unmask()  # not acknowledged in the device: fires again at once
        assert k.wait_until(lambda: k.event == 2)
        assert _readable(irq.fileno()) and irq.read_event() == 2
        asserted[0] = False  # acknowledged
        irq.unmask()
        assert k.wait_until(lambda: not k.disabled)
        assert k.event == 2 and irq.read_event() is None
    finally:
        irq.close()


def _readable(fd: int, timeout: float = 5.0) -> bool:
    import select

    return bool(select.select([fd], [], [], timeout)[0])


@in_fake_kernel
def test_telechips_doorbell_through_the_uio_interrupt(fake: FakeUio) -> None:
    """Driver + register model + the fake genirq line: the interrupt path the daemon runs on hardware."""
    pair = TccMailboxPair()
    dev = fake.add_irq_device("mbox_irq", level=lambda: pair.host.rx_irq)
    k = dev.irq
    assert k is not None
    remote = TelechipsMailbox(pair.remote)
    remote.start()

    async def main() -> None:
        irq = UioIrq(lookup(["mbox_irq"], fake.sysfs_root, fake.dev_root)["mbox_irq"])
        db = MailboxDoorbell(TelechipsMailbox(pair.host), irq)
        rings = asyncio.Queue[int]()
        db.start(asyncio.get_running_loop(), lambda: rings.put_nowait(1))
        # start() unmasks (an earlier run may have left the line masked); let the "kernel" see it first
        assert await asyncio.to_thread(k.wait_until, lambda: k.unmasks == 1)
        for i in range(50):
            remote.ring(i % 2)
            k.update()  # the mailbox raised its RX line
            await asyncio.wait_for(rings.get(), 5)
            assert await asyncio.to_thread(k.wait_until, lambda: not k.disabled)  # acknowledged, then unmasked
            assert not pair.host.rx_irq
            db.ring(1)
            assert remote.on_interrupt() == [1]
        k.fire()  # a spurious interrupt: nothing in the FIFO
        ok = await asyncio.to_thread(k.wait_until, lambda: k.event == 51 and not k.disabled)
        assert ok, (k.event, k.disabled, k.pending, k.unmasks, db.stats())
        # the doorbell counts it before it unmasks, so once unmasked the stats are final
        s = db.stats()
        assert s["irqs"] == 51 and s["received"] == 50 and s["spurious"] == 1 and s["sent"] == 50
        assert s["driver_spurious"] == 1 and rings.empty()
        db.stop()
        assert pair.host.ready == 0

    asyncio.run(main())


def test_wait_for_a_device_that_appears_later(fake: FakeUio) -> None:
    async def main() -> None:
        waiter = asyncio.create_task(
            wait_for_devices(["rpmsg_shm"], sysfs_root=fake.sysfs_root, dev_root=fake.dev_root, rescan_s=0.02)
        )
        await asyncio.sleep(0.05)
        assert not waiter.done()
        dev = fake.add_memory_device("rpmsg_shm", [SHM], create_node=False)  # sysfs first ...
        await asyncio.sleep(0.05)
        assert not waiter.done()  # ... the node is not there yet: still waiting
        fake.create_node(dev)
        found = await asyncio.wait_for(waiter, 5)
        assert found["rpmsg_shm"].number == dev.number

    asyncio.run(main())


def test_wait_times_out_with_a_clear_error(fake: FakeUio) -> None:
    async def main() -> None:
        await wait_for_devices(
            ["rpmsg_shm"], sysfs_root=fake.sysfs_root, dev_root=fake.dev_root, timeout=0.05, rescan_s=0.01
        )

    with pytest.raises(UioError, match="no UIO device named rpmsg_shm"):
        asyncio.run(main())


def _config(tmp_path: Path, fake: FakeUio, doorbell: str) -> Path:
    p = tmp_path / "rprocd.toml"
    p.write_text(
        f"""
[remote.main]
backend = "uio"
shm       = {{ pa = 0x200c6000, size = 0x8000 }}
rsc_table = {{ pa = 0x200c6000, size = 0x2000, offset = 0x3b8, max_size = 0x1000 }}
vring0    = {{ pa = 0x200c8000, size = 0x1000 }}
vring1    = {{ pa = 0x200c9000, size = 0x1000 }}
buffers   = {{ pa = 0x200ca000, size = 0x4000 }}
[remote.main.uio]
memory = ["rpmsg_shm"]
sysfs_root = "{fake.sysfs_root}"
dev_root = "{fake.dev_root}"
wait_timeout = 5
[remote.main.doorbell]
{doorbell}
"""
    )
    return p


@in_fake_kernel
def test_factory_uio_memory_with_telechips_registers_and_irq(fake: FakeUio, tmp_path: Path) -> None:
    fake.add_memory_device("rpmsg_shm", [SHM])
    regs_dev = fake.add_memory_device("mbox", [FakeMap(0x1B2E0000, 0x100, "mbox")])
    fake.add_irq_device("mbox_irq")
    cfg = load_config(str(_config(tmp_path, fake, 'driver = "telechips"\nuio = "mbox"\nirq_uio = "mbox_irq"')))

    async def main() -> None:
        platform = await open_platform(cfg.remotes["main"])
        try:
            assert "rpmsg_shm(uio0) map0" in platform.description
            assert platform.memory.contains(0x200C63B8, 0x1000) and platform.memory.device
            platform.doorbell.start(asyncio.get_running_loop(), lambda: None)
            raw = regs_dev.backing[0].read_bytes()  # plain memory stands in for the registers here
            assert struct.unpack_from("=I", raw, T.OPPOSITE_STS)[0] == 1
            assert struct.unpack_from("=I", raw, T.CTRL_SET)[0] == T.IEN_READ  # the last CTRL_SET write
        finally:
            platform.close()

    asyncio.run(main())


@in_fake_kernel
def test_factory_mailbox_registers_and_interrupt_on_one_device(fake: FakeUio, tmp_path: Path) -> None:
    """The mailbox as one generic-uio node (reg + interrupts): registers mmapped and the irq read, one device."""
    fake.add_memory_device("rpmsg_shm", [SHM])
    mbox = fake.add_device("mbox", [FakeMap(0x17470000, 0x100)], irq=True)
    k = mbox.irq
    assert k is not None
    cfg = load_config(str(_config(tmp_path, fake, 'driver = "telechips"\nuio = "mbox"')))

    async def main() -> None:
        platform = await open_platform(cfg.remotes["main"])
        try:
            platform.doorbell.start(asyncio.get_running_loop(), lambda: None)
            assert k.unmasks == 1  # start() unmasked the line through the same node
            raw = mbox.backing[0].read_bytes()
            assert struct.unpack_from("=I", raw, T.OPPOSITE_STS)[0] == 1
        finally:
            platform.close()

    asyncio.run(main())


@in_fake_kernel
def test_factory_uio_memory_with_board_doorbell(fake: FakeUio, tmp_path: Path) -> None:
    board = tmp_path / "board"
    fake.add_memory_device("rpmsg_shm", [FakeMap(0x200C6000, 0x8000, backing=board / "memory")])
    cfg = load_config(str(_config(tmp_path, fake, f'driver = "sim"\nboard = "{board}"')))

    async def main() -> None:
        platform = await open_platform(cfg.remotes["main"])
        try:
            assert isinstance(platform.doorbell, BoardDoorbell)
            platform.memory.write_u32(0x200C63B8, 0x1)
            with open(board / "memory", "rb") as f:
                f.seek(0x3B8)
                assert f.read(4) == struct.pack("=I", 1)  # the same memory the simulated remote maps
        finally:
            platform.close()

    asyncio.run(main())


def test_devmem_backend_through_periphery(tmp_path: Path) -> None:
    """backend = "devmem": python-periphery's MMIO maps the window (a sparse file stands in for /dev/mem)."""
    devmem = tmp_path / "mem"
    with open(devmem, "wb") as f:
        f.truncate(0x200CE000 + 0x1000)  # sparse: physical address == file offset, as /dev/mem
    board = tmp_path / "board"
    cfg_path = tmp_path / "rprocd.toml"
    cfg_path.write_text(
        _config(tmp_path, FakeUio(tmp_path / "uio"), f'driver = "sim"\nboard = "{board}"')
        .read_text()
        .replace('backend = "uio"', f'backend = "devmem"\ndevmem = {{ path = "{devmem}" }}')
    )
    cfg = load_config(str(cfg_path))

    async def main() -> None:
        platform = await open_platform(cfg.remotes["main"])
        try:
            assert platform.memory.device and f"{devmem} rpmsg_shm" in platform.description
            platform.memory.write(0x200CA002, b"through MMIO")
            platform.memory.write_u16(0x200C8002, 7)
        finally:
            platform.close()

    asyncio.run(main())
    raw = devmem.read_bytes()
    assert raw[0x200CA002 : 0x200CA002 + 12] == b"through MMIO"
    assert raw[0x200C8002:0x200C8004] == struct.pack("=H", 7)
