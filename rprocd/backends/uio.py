"""The UIO backend: shared memory and the mailbox through ``/dev/uioN``.

What the kernel offers (drivers/uio/uio.c, uio_pdrv_genirq.c), and how it is
used here:

* ``/sys/class/uio/uioN/name`` is the device's name (the device-tree node
  name, or its ``linux,uio-name``); devices are found by name, never by
  number, since numbers depend on probe order.
* ``maps/mapM/{addr,size,offset,name}`` describe memory region M: ``addr`` is
  page-aligned (newer uio_pdrv_genirq rounds it down and puts the in-page
  start in ``offset``; ``size`` is rounded up to whole pages).  Region M is
  mapped with ``mmap(fd, size, offset = M * page size)``; the data at
  physical ``addr + offset`` starts ``offset`` bytes into the mapping.  The
  mapping is uncached (``pgprot_noncached``): Device memory on arm64.
* Interrupt: ``read(fd, 4)`` blocks until an interrupt happened and returns
  the 32-bit event count (EAGAIN with O_NONBLOCK, EIO if the device has no
  interrupt; any other length is EINVAL).  uio_pdrv_genirq's handler masks
  the line in the interrupt controller; ``write(fd, <s32 1>)`` unmasks it
  (0 masks).  User space acknowledges the device in between.

Everything takes a sysfs root and a ``/dev`` root, so tests run the same
code against a fake tree (tests/fake_uio.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import mmap
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..layout import Layout
from ..memory import MemoryMap

log = logging.getLogger("rprocd.uio")

PAGE_SIZE = mmap.PAGESIZE
_S32 = struct.Struct("=i")
_U32 = struct.Struct("=I")


class UioError(OSError):
    """A UIO device is missing, malformed, or does not cover what was asked."""


@dataclass(frozen=True, slots=True)
class UioMapInfo:
    index: int
    name: str
    addr: int  # physical address of the mapping's first byte (page-aligned)
    size: int  # bytes that can be mapped from addr
    offset: int  # where the region's data starts inside the mapping

    @property
    def pa(self) -> int:
        return self.addr + self.offset

    @property
    def end(self) -> int:
        return self.addr + self.size

    def contains(self, pa: int, size: int) -> bool:
        return self.pa <= pa and pa + size <= self.end


@dataclass(frozen=True, slots=True)
class UioDeviceInfo:
    number: int
    name: str
    sysfs: Path
    node: Path
    maps: tuple[UioMapInfo, ...]

    def map_for(self, pa: int, size: int) -> UioMapInfo | None:
        return next((m for m in self.maps if m.contains(pa, size)), None)


def _read(path: Path) -> str:
    return path.read_text().strip()


def read_device(sysfs_dev: Path, dev_root: str | os.PathLike[str]) -> UioDeviceInfo:
    """Read one ``class/uio/uioN`` directory."""
    number = int(sysfs_dev.name.removeprefix("uio"))
    maps = []
    mdir = sysfs_dev / "maps"
    if mdir.is_dir():
        entries = [m for m in mdir.iterdir() if m.name.startswith("map") and m.name[3:].isdigit()]
        for m in sorted(entries, key=lambda p: int(p.name[3:])):
            try:
                name = _read(m / "name") if (m / "name").exists() else ""
                maps.append(
                    UioMapInfo(
                        int(m.name[3:]),
                        name,
                        int(_read(m / "addr"), 0),
                        int(_read(m / "size"), 0),
                        int(_read(m / "offset"), 0) if (m / "offset").exists() else 0,
                    )
                )
            except (OSError, ValueError) as e:
                raise UioError(errno.EINVAL, f"{m}: unreadable map attributes ({e})") from None
    return UioDeviceInfo(number, _read(sysfs_dev / "name"), sysfs_dev, Path(dev_root) / sysfs_dev.name, tuple(maps))


def scan(sysfs_root: str | os.PathLike[str] = "/sys", dev_root: str | os.PathLike[str] = "/dev") -> list[UioDeviceInfo]:
    """Every UIO device present, by number."""
    cls = Path(sysfs_root) / "class" / "uio"
    if not cls.is_dir():
        return []
    out = []
    for d in cls.iterdir():
        if not d.name.startswith("uio") or not d.name[3:].isdigit():
            continue
        try:
            out.append(read_device(d, dev_root))
        except FileNotFoundError:
            continue  # appearing or going away right now
    return sorted(out, key=lambda i: i.number)


def lookup(
    names: Iterable[str], sysfs_root: str | os.PathLike[str] = "/sys", dev_root: str | os.PathLike[str] = "/dev"
) -> dict[str, UioDeviceInfo]:
    """Devices by name whose node exists (first by number if a name repeats)."""
    want = set(names)
    found: dict[str, UioDeviceInfo] = {}
    for info in scan(sysfs_root, dev_root):
        if info.name in want and info.name not in found and os.path.exists(info.node):
            found[info.name] = info
    return found


def _udev_monitor(sysfs_root: str | os.PathLike[str]) -> Any:
    """A pyudev monitor for the uio subsystem, or None (fake sysfs, no netlink, no libudev)."""
    if os.path.realpath(sysfs_root) != "/sys":
        return None
    try:
        import pyudev

        mon = pyudev.Monitor.from_netlink(pyudev.Context())
        mon.filter_by("uio")
        mon.start()
        return mon
    except Exception as e:  # noqa: BLE001 - any failure means: rescan only
        log.debug("no udev monitor (%s); rescanning instead", e)
        return None


async def wait_for_devices(
    names: Iterable[str],
    *,
    sysfs_root: str | os.PathLike[str] = "/sys",
    dev_root: str | os.PathLike[str] = "/dev",
    timeout: float = 0.0,
    rescan_s: float = 2.0,
) -> dict[str, UioDeviceInfo]:
    """Wait until every named device exists; 0 = no timeout.

    udev "add" events for the uio subsystem (a pyudev monitor on the loop)
    trigger a rescan at once; a slow periodic rescan covers systems without
    udev and nodes that appear after the event (udev rules, devtmpfs).
    """
    names = list(dict.fromkeys(names))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout > 0 else None
    wake = asyncio.Event()
    monitor = _udev_monitor(sysfs_root)
    if monitor is not None:

        def drain() -> None:
            while monitor.poll(timeout=0) is not None:
                wake.set()

        loop.add_reader(monitor.fileno(), drain)
    told = False
    try:
        while True:
            found = lookup(names, sysfs_root, dev_root)
            missing = [n for n in names if n not in found]
            if not missing:
                return found
            if not told:
                log.info("waiting for UIO device(s) %s", ", ".join(missing))
                told = True
            wait = rescan_s
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise UioError(
                        errno.ENODEV,
                        f"no UIO device named {', '.join(missing)} under {sysfs_root}/class/uio after {timeout:g} s",
                    )
                wait = min(wait, left)
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), wait)
            except TimeoutError:
                pass
    finally:
        if monitor is not None:
            loop.remove_reader(monitor.fileno())


# -- memory --------------------------------------------------------------------------------------


class MappedRegion:
    """One UIO map, mmapped; ``view`` covers its data (physical ``info.pa`` on)."""

    def __init__(self, device: UioDeviceInfo, info: UioMapInfo):
        self.device, self.info = device, info
        try:
            fd = os.open(device.node, os.O_RDWR | os.O_SYNC | os.O_CLOEXEC)
        except OSError as e:
            raise UioError(e.errno, f"{device.node} ({device.name}): {e.strerror}") from None
        try:
            self._mm = mmap.mmap(
                fd, info.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=info.index * PAGE_SIZE
            )
        except OSError as e:
            hint = (
                " (the kernel maps whole pages: size must be a multiple of the page size)"
                if info.size % PAGE_SIZE
                else ""
            )
            raise UioError(e.errno, f"mmap of {device.node} map{info.index}: {e.strerror}{hint}") from None
        finally:
            os.close(fd)
        self._full = memoryview(self._mm)
        self.view = self._full[info.offset : info.size]

    def close(self) -> None:
        self.view.release()
        self._full.release()
        try:
            self._mm.close()
        except BufferError:
            pass  # a view is still held elsewhere; the map goes with it


def open_memory(devices: Iterable[UioDeviceInfo], layout: Layout) -> tuple[MemoryMap, list[Callable[[], None]], str]:
    """Map every map of ``devices`` that overlaps the layout's window; check the layout is covered.

    Each region of the layout (table region, vrings, buffers) must lie wholly
    inside one map: a ring that straddles two mappings could not be accessed
    as one range.
    """
    regions: list[MappedRegion] = []
    win = layout.window
    try:
        for dev in devices:
            for m in dev.maps:
                if m.pa < win.end and win.pa < m.end:
                    regions.append(MappedRegion(dev, m))
        if not regions:
            names = ", ".join(d.name for d in devices)
            raise UioError(errno.ENXIO, f"no map of UIO device(s) {names} overlaps the shared window {win}")
        memory = MemoryMap([(r.info.pa, r.view) for r in regions], device=True)
        for reg in layout.regions:
            if not memory.contains(reg.pa, reg.size):
                maps = "; ".join(f"{r.device.name} map{r.info.index} {r.info.pa:#x}-{r.info.end:#x}" for r in regions)
                raise UioError(errno.ENXIO, f"{reg} is not inside one UIO map (have: {maps})")
    except BaseException:
        for r in regions:
            r.close()
        raise

    def close() -> None:
        memory.close()
        for r in regions:
            r.close()

    desc = ", ".join(f"{r.device.name}(uio{r.device.number}) map{r.info.index}" for r in regions)
    return memory, [close], f"UIO {desc}"


# -- interrupt -------------------------------------------------------------------------------------


class UioIrq:
    """The interrupt of one UIO device: event counts in, unmask out (uio_pdrv_genirq semantics)."""

    def __init__(self, device: UioDeviceInfo):
        self.device = device
        try:
            # O_NOCTTY: harmless on a UIO node, and a pty standing in for one must not become our tty
            self.fd = os.open(device.node, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as e:
            raise UioError(e.errno, f"{device.node} ({device.name}): {e.strerror}") from None

    def fileno(self) -> int:
        return self.fd

    def read_event(self) -> int | None:
        """The latest event count, or None when no interrupt happened since the last read.

        One read is enough: uio_read returns exactly 4 bytes, the count as of
        now, so interrupts since the last read have coalesced into it.
        """
        try:
            data = os.read(self.fd, 4)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno == errno.EIO:
                raise UioError(errno.EIO, f"{self.device.node} ({self.device.name}) has no interrupt") from None
            raise
        if len(data) != 4:
            raise UioError(errno.ENODEV, f"{self.device.node} ({self.device.name}) went away")
        return int(_U32.unpack(data)[0])

    def unmask(self) -> None:
        os.write(self.fd, _S32.pack(1))

    def mask(self) -> None:
        os.write(self.fd, _S32.pack(0))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
