"""The fake UIO against what drivers/uio/uio.c and uio_pdrv_genirq.c say (see tests/fake_uio.py).

Each test states one behaviour of the kernel, names the function it comes
from, and checks the fake through plain system calls, in a process that has
the fake-kernel shim preloaded (:func:`~tests.fake_uio.in_fake_kernel`).
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rprocd.backends.uio import MappedRegion, UioIrq, lookup

from .fake_uio import PAGE, FakeDevice, FakeMap, FakeUio, in_fake_kernel

S32 = struct.Struct("=i")


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeUio]:
    f = FakeUio(tmp_path / "uio")
    yield f
    f.close()


def _open(dev: FakeDevice, *, block: bool = False) -> int:
    return os.open(dev.node, os.O_RDWR | os.O_CLOEXEC | (0 if block else os.O_NONBLOCK))


def _errno(fn: object, *args: object) -> int:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError as e:
        return e.errno or 0
    raise AssertionError(f"{fn}{args} did not fail")


def _readable(fd: int, timeout: float = 5.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


@in_fake_kernel
def test_read_and_write_of_other_than_4_bytes_is_einval(fake: FakeUio) -> None:
    """uio_read/uio_write: ``count != sizeof(s32)`` -> -EINVAL."""
    dev = fake.add_irq_device("mbox")
    assert dev.irq is not None
    fd = _open(dev)
    try:
        dev.irq.fire()
        for n in (1, 3, 5, 8, 64):
            assert _errno(os.read, fd, n) == errno.EINVAL
        for data in (b"\1", b"\1\0\0", b"\1\0\0\0\0", struct.pack("=q", 1)):
            assert _errno(os.write, fd, data) == errno.EINVAL
        assert dev.irq.unmasks == dev.irq.masks == 0  # nothing reached irqcontrol
        assert os.read(fd, 4) == S32.pack(1)  # the event is still there for a proper read
    finally:
        os.close(fd)


@in_fake_kernel
def test_an_interrupt_before_open_is_not_reported(fake: FakeUio) -> None:
    """uio_open: ``listener->event_count = atomic_read(&idev->event)``."""
    dev = fake.add_irq_device("mbox")
    k = dev.irq
    assert k is not None
    k.fire()  # nobody has the device open
    fd = _open(dev)
    try:
        assert _errno(os.read, fd, 4) == errno.EAGAIN
        assert not _readable(fd, 0)  # uio_poll: nothing unread
        os.write(fd, S32.pack(1))  # unmask (the handler masked the line)
        k.fire()
        assert _readable(fd) and os.read(fd, 4) == S32.pack(2)  # counted before open, reported after
    finally:
        os.close(fd)


@in_fake_kernel
def test_two_interrupts_between_reads_give_one_read_of_the_latest_count(fake: FakeUio) -> None:
    """uio_read returns ``idev->event`` once it differs from the reader's count: events coalesce."""
    dev = fake.add_irq_device("mbox")
    k = dev.irq
    assert k is not None
    fd = _open(dev)
    try:
        k.fire()
        os.write(fd, S32.pack(1))
        k.fire()
        assert k.event == 2
        assert os.read(fd, 4) == S32.pack(2)
        assert _errno(os.read, fd, 4) == errno.EAGAIN
        assert not _readable(fd, 0)
    finally:
        os.close(fd)


@in_fake_kernel
def test_a_blocking_read_waits_for_the_next_interrupt(fake: FakeUio) -> None:
    """uio_read without O_NONBLOCK sleeps on ``idev->wait`` until uio_event_notify."""
    dev = fake.add_irq_device("mbox")
    k = dev.irq
    assert k is not None
    fd = _open(dev, block=True)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(os.read(fd, 4)))
    try:
        reader.start()
        k.fire()
        reader.join(10)
        assert got == [S32.pack(1)]
    finally:
        os.close(fd)


@in_fake_kernel
def test_a_device_without_irq_gives_eio(fake: FakeUio) -> None:
    """uio_read/uio_write: ``!idev->info->irq`` -> -EIO (after the length check)."""
    dev = fake.add_memory_device("rpmsg_shm", [FakeMap(0x200C6000, 0x8000)])
    fd = _open(dev)
    try:
        assert _errno(os.read, fd, 4) == errno.EIO
        assert _errno(os.write, fd, S32.pack(1)) == errno.EIO
        assert _errno(os.read, fd, 3) == errno.EINVAL
    finally:
        os.close(fd)


@in_fake_kernel
def test_mmap_offset_selects_the_map_and_checks_its_length(fake: FakeUio) -> None:
    """uio_mmap + uio_find_mem_index: ``vm_pgoff`` N is map N; no such map or too long -> -EINVAL."""
    dev = fake.add_memory_device("mbox", [FakeMap(0x17470000, 0x100), FakeMap(0x200C6000, 0x8000)])
    dev.backing[0].write_bytes(b"regs" + bytes(PAGE - 4))
    with open(dev.backing[1], "r+b") as f:
        f.write(b"shm!")
    fd = _open(dev)
    try:
        with mmap.mmap(fd, PAGE, offset=0) as m0, mmap.mmap(fd, 0x8000, offset=PAGE) as m1:
            assert m0[:4] == b"regs" and m1[:4] == b"shm!"
            m1[4:8] = b"back"  # shared with the map's memory (what a remote sees)
            m1.flush()
        assert dev.backing[1].read_bytes()[4:8] == b"back"
        for length, offset in ((PAGE, 2 * PAGE), (PAGE, 5 * PAGE), (2 * PAGE, 0), (0x8000 + PAGE, PAGE)):
            assert _errno(mmap.mmap, fd, length, mmap.MAP_SHARED, mmap.PROT_READ, 0, offset) == errno.EINVAL
    finally:
        os.close(fd)


@in_fake_kernel
def test_map_names_are_the_dt_nodes_full_name(fake: FakeUio) -> None:
    """uio_pdrv_genirq_probe ``uiomem->name = r->name``; __of_address_to_resource: reg-names or full_name."""
    fake.add_memory_device("rpmsg_shm", [FakeMap(0x200C6000, 0x8000)])
    fake.add_memory_device("mbox", [FakeMap(0x17470000, 0x100), FakeMap(0x17480000, 0x100, "fifo")])
    found = lookup(["rpmsg_shm", "mbox"], fake.sysfs_root, fake.dev_root)
    assert [m.name for m in found["rpmsg_shm"].maps] == ["rpmsg_shm@200c6000"]
    assert [m.name for m in found["mbox"].maps] == ["mbox@17470000", "fifo"]
    assert (fake.sysfs_root / "class/uio/uio0/version").read_text() == "devicetree\n"


@in_fake_kernel
def test_one_device_with_registers_and_an_interrupt(fake: FakeUio) -> None:
    """A generic-uio node with ``reg`` and ``interrupts`` (the mailbox): one node, mmap and read."""
    dev = fake.add_device("mbox", [FakeMap(0x17470000, 0x100)], irq=True)
    k = dev.irq
    assert k is not None
    info = lookup(["mbox"], fake.sysfs_root, fake.dev_root)["mbox"]
    region = MappedRegion(info, info.maps[0])
    irq = UioIrq(info)
    try:
        region.view.cast("I")[1] = 0x1234  # a register store (one aligned 32-bit access)
        assert struct.unpack_from("=I", dev.backing[0].read_bytes(), 4)[0] == 0x1234
        assert irq.read_event() is None
        k.fire()
        assert _readable(irq.fileno()) and irq.read_event() == 1
        irq.unmask()
        assert not k.disabled
    finally:
        irq.close()
        region.close()
