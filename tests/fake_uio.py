"""A faithful fake of Linux UIO (uio.c + uio_pdrv_genirq) for tests: a sysfs tree and device nodes.

rprocd's UIO backend takes a sysfs root and a ``/dev`` root; this module
builds both in a temporary folder so that the *production* code path runs
unchanged:

* ``sys/class/uio/uioN/{name,version,event}`` and
  ``maps/mapM/{name,addr,size,offset}``, written the way the kernel prints
  them (``addr``/``size`` as ``%pa``: ``0x`` + 16 hex digits; ``offset`` as
  ``0x%llx``), with uio_pdrv_genirq's rounding: ``addr`` page-aligned, the
  in-page start in ``offset``, ``size`` rounded up to whole pages.
* A memory device's node is a regular file laid out so that
  ``mmap(fd, size, offset=M * page)`` reaches map M, as the kernel's
  ``vm_pgoff`` selector does; a map can be backed by another file (the
  virtual board's ``memory``) so that a simulated remote shares it.
* An interrupt device's node is the slave side of a raw pseudo-terminal
  whose master is driven by :class:`FakeGenirq`, a model of
  uio_pdrv_genirq: an interrupt masks the line and bumps the event count,
  which the reader gets as one 4-byte native integer; writing the 4-byte
  integer 1 unmasks (a still-asserted level interrupt fires again at once),
  0 masks; reads block (or EAGAIN with O_NONBLOCK) while nothing happened.

One inode cannot both mmap like a file and block on read like a character
device without FUSE/CUSE, so each fake node has one of the two natures; a
device with both (a mailbox: registers and an interrupt) is modelled as a
register model plus an interrupt-only device (rprocd's ``irq_uio``).
What the fake cannot enforce: the kernel's EINVAL for reads or writes of a
length other than 4 (the fake counts such writes in ``bad_writes``).
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import termios
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PAGE = mmap.PAGESIZE
_S32 = struct.Struct("=i")


@dataclass
class FakeMap:
    pa: int
    size: int
    name: str = ""
    backing: Path | None = None  # a file whose bytes are this map's memory (single-map devices)


@dataclass
class FakeDevice:
    number: int
    name: str
    sysfs: Path
    node: Path
    maps: list[FakeMap] = field(default_factory=list)
    irq: FakeGenirq | None = None
    file_size: int = 0

    @property
    def devname(self) -> str:
        return f"uio{self.number}"


class FakeUio:
    """A sysfs root and a /dev root under ``root``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.sysfs_root = self.root / "sys"
        self.dev_root = self.root / "dev"
        (self.sysfs_root / "class" / "uio").mkdir(parents=True, exist_ok=True)
        self.dev_root.mkdir(parents=True, exist_ok=True)
        self.devices: list[FakeDevice] = []
        self._next = 0

    def _sysfs_device(self, name: str) -> tuple[int, Path]:
        number = self._next
        self._next += 1
        d = self.sysfs_root / "class" / "uio" / f"uio{number}"
        d.mkdir(parents=True)
        return number, d

    @staticmethod
    def _publish(d: Path, name: str) -> None:
        # the name last: a scanner that sees it sees a complete device (as the kernel's uevent does)
        (d / "version").write_text("devicetree\n")
        (d / "event").write_text("0\n")
        (d / "name").write_text(name + "\n")

    def add_memory_device(self, name: str, maps: list[FakeMap], *, create_node: bool = True) -> FakeDevice:
        """A device with memory maps and no interrupt (like a generic-uio node without ``interrupts``)."""
        number, d = self._sysfs_device(name)
        node = self.dev_root / f"uio{number}"
        file_size = 0
        for i, m in enumerate(maps):
            addr = m.pa & ~(PAGE - 1)
            offs = m.pa - addr
            size = (offs + m.size + PAGE - 1) & ~(PAGE - 1)  # uio_pdrv_genirq rounds up to pages
            md = d / "maps" / f"map{i}"
            md.mkdir(parents=True)
            (md / "name").write_text(m.name + "\n")
            (md / "addr").write_text(f"0x{addr:016x}\n")
            (md / "size").write_text(f"0x{size:016x}\n")
            (md / "offset").write_text(f"0x{offs:x}\n")
            if i < len(maps) - 1 and size > PAGE:
                raise ValueError("the fake puts map M at file offset M * page: only the last map may exceed a page")
            file_size = max(file_size, i * PAGE + size)
        dev = FakeDevice(number, name, d, node, list(maps), file_size=file_size)
        if len(maps) == 1 and maps[0].backing is not None:
            backing = maps[0].backing
            backing.parent.mkdir(parents=True, exist_ok=True)
            with open(backing, "ab") as f:
                if f.tell() < file_size:
                    f.truncate(file_size)  # grow with zeros, never shrink (sim-board.md)
        elif any(m.backing is not None for m in maps):
            raise ValueError("a backing file is supported for single-map devices only")
        if create_node:
            self.create_node(dev)
        self._publish(d, name)
        self.devices.append(dev)
        return dev

    def create_node(self, dev: FakeDevice) -> None:
        """Make ``/dev/uioN`` appear (udev/devtmpfs may create it after the sysfs entry)."""
        if dev.maps and dev.maps[0].backing is not None:
            dev.node.symlink_to(dev.maps[0].backing)
        else:
            with open(dev.node, "wb") as f:
                f.truncate(dev.file_size)

    def add_irq_device(self, name: str, *, level: Callable[[], bool] | None = None) -> FakeDevice:
        """A device with an interrupt and no maps; its node is a raw pty driven by :class:`FakeGenirq`."""
        number, d = self._sysfs_device(name)
        node = self.dev_root / f"uio{number}"
        irq = FakeGenirq(d / "event", level)
        node.symlink_to(irq.slave_path)
        dev = FakeDevice(number, name, d, node, [], irq)
        self._publish(d, name)
        self.devices.append(dev)
        return dev

    def close(self) -> None:
        for dev in self.devices:
            if dev.irq is not None:
                dev.irq.close()


class FakeGenirq:
    """The kernel side of one uio_pdrv_genirq device: handler, irqcontrol, event count."""

    def __init__(self, event_file: Path, level: Callable[[], bool] | None = None):
        self.master, self._slave = os.openpty()
        attrs = termios.tcgetattr(self._slave)
        attrs[0] = 0  # iflag: no CR/NL mangling, no XON/XOFF (0x11/0x13 are data here)
        attrs[1] = 0  # oflag: no output processing
        attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL
        attrs[3] = 0  # lflag: no echo, no canonical mode, no signals
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
        self.slave_path = os.ttyname(self._slave)
        self.event_file = event_file
        self.level = level or (lambda: False)  # a level-triggered source: asserted while level() is true
        self.lock = threading.Lock()
        self.event = 0
        self.disabled = False  # priv->flags UIO_IRQ_DISABLED
        self.pending = False  # an edge that arrived while masked
        self.unmasks = 0
        self.masks = 0
        self.bad_writes = 0
        self.changed = threading.Condition(self.lock)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._irqcontrol_loop, name="fake-genirq", daemon=True)
        self._thread.start()

    # -- the device raises its interrupt -------------------------------------------------------
    def fire(self) -> None:
        """An edge (or a level becoming true): uio_pdrv_genirq_handler + uio_event_notify."""
        with self.lock:
            self._fire_locked()

    def update(self) -> None:
        """Re-evaluate a level source (call after the device's state changed)."""
        with self.lock:
            if self.level():
                self._fire_locked()

    def _fire_locked(self) -> None:
        if self.disabled:
            self.pending = True  # held at the interrupt controller until enable_irq
            return
        self.disabled = True  # disable_irq_nosync
        self.pending = False
        self.event += 1
        self.event_file.write_text(f"{self.event}\n")
        os.write(self.master, _S32.pack(self.event))  # wakes the reader with the new count
        self.changed.notify_all()

    # -- user space writes to /dev/uioN ----------------------------------------------------------------
    def _irqcontrol_loop(self) -> None:
        buf = b""
        while True:
            r, _, _ = select.select([self.master, self._stop_r], [], [])
            if self._stop_r in r:
                return
            try:
                data = os.read(self.master, 64)
            except OSError:
                return
            buf += data
            while len(buf) >= 4:
                (irq_on,), buf = _S32.unpack(buf[:4]), buf[4:]
                with self.lock:
                    if irq_on:
                        self.unmasks += 1
                        if self.disabled:
                            self.disabled = False  # enable_irq
                            if self.pending or self.level():
                                self._fire_locked()
                    else:
                        self.masks += 1
                        self.disabled = True
                    self.changed.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate()`` (evaluated under the lock) holds, at most ``timeout`` seconds."""
        with self.lock:
            return self.changed.wait_for(predicate, timeout)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self.master, self._slave, self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass
