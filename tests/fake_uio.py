"""A fake of Linux UIO (drivers/uio/uio.c + uio_pdrv_genirq.c) for tests: sysfs, device nodes, a kernel.

rprocd's UIO backend takes a sysfs root and a ``/dev`` root; this module
builds both in a temporary folder and plays the kernel behind them, so that
the *production* code path (``os.open``, ``os.read``/``os.write`` of 4
bytes, ``mmap`` at ``N * page``, epoll) runs unchanged.  What the kernel
does, and where it says so:

* sysfs (uio.c ``uio_dev_add_attributes``, ``map_*_show``):
  ``class/uio/uioN/{name,version,event}`` and ``maps/mapM/{name,addr,size,offset}``,
  ``addr``/``size`` printed as ``%pa`` (``0x`` + 16 hex digits), ``offset``
  as ``0x%llx``.
* uio_pdrv_genirq.c ``uio_pdrv_genirq_probe`` with a DT node: the device's
  ``name`` is the node name (``%pOFn``, or ``linux,uio-name``); ``version``
  is ``devicetree``; each ``reg`` entry is a map with ``addr = start &
  PAGE_MASK``, ``offs = start & ~PAGE_MASK``, ``size`` rounded up to whole
  pages, and ``name = r->name``, which drivers/of/address.c
  ``__of_address_to_resource`` sets to the ``reg-names`` entry or else the
  node's full name (``rpmsg_shm@200c6000``).  A node can have maps *and* an
  interrupt (the mailbox: registers and its receive interrupt).
* The node ``/dev/uioN`` (uio.c ``uio_fops``): ``uio_open`` samples the
  event count (an interrupt before open is not reported); ``uio_read``:
  a length other than 4 is EINVAL, a device without interrupt EIO, else the
  latest count once it differs from the reader's (two interrupts between
  reads give ONE read of the latest count), EAGAIN with O_NONBLOCK;
  ``uio_poll``: readable while a count is unread; ``uio_write``: length
  other than 4 EINVAL, no interrupt EIO, else ``irqcontrol``;
  ``uio_mmap`` + ``uio_find_mem_index``: offset ``N * page`` maps map N,
  EINVAL for a map that does not exist or a length past the map.
* uio_pdrv_genirq.c ``uio_pdrv_genirq_handler`` masks the line
  (``disable_irq_nosync``) and uio.c ``uio_event_notify`` bumps the event
  count; ``uio_pdrv_genirq_irqcontrol``: 1 unmasks (``enable_irq``: a
  level interrupt still asserted, or an edge that came while masked, fires
  again at once), 0 masks.

A user-space process cannot own a character device, so the node is a
``SOCK_SEQPACKET`` socket named ``uioN`` served by this module's kernel
thread, and the process that uses it runs with the ``LD_PRELOAD`` shim
tests/native/fake_uio_kernel.c, which gives its fds the semantics above
(:func:`kernel_env`; :func:`in_fake_kernel` runs a test function in such a
process).  Each map's memory is a file (the virtual board's ``memory`` for
the shared window, so the simulated remote shares it).
"""

from __future__ import annotations

import functools
import mmap
import os
import selectors
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

PAGE = mmap.PAGESIZE
MAX_UIO_MAPS = 5
_U32 = struct.Struct("=I")
_S32 = struct.Struct("=i")
REPO = Path(__file__).resolve().parent.parent
NATIVE = Path(__file__).resolve().parent / "native"


def build_shim(name: str) -> Path:
    """Compile ``tests/native/<name>.c`` into a preloadable shared object (cached by content)."""
    from rprocd import native

    flags = ("-O2", "-shared", "-fPIC", "-fno-builtin", "-fno-tree-loop-distribute-patterns")
    out = native.build(source=str(NATIVE / f"{name}.c"), cflags=flags)
    if out is None:
        raise RuntimeError(f"cannot build tests/native/{name}.c: gcc is required (it is in the test environment)")
    return out


def kernel_env(env: dict[str, str] | None = None, *, guard: bool = False) -> dict[str, str]:
    """``env`` (default: ours) plus the fake-kernel shim (and the bulk-copy guard in front of it)."""
    env = dict(os.environ if env is None else env)
    shims = [str(build_shim("fake_uio_kernel"))]
    if guard:
        shims.insert(0, str(build_shim("devmem_guard")))
        env["PYTHONFAULTHANDLER"] = "1"  # the guard aborts: show the Python stack
    env["LD_PRELOAD"] = ":".join(shims + [p for p in env.get("LD_PRELOAD", "").split(":") if p])
    env["PYTHONPATH"] = str(REPO)
    return env


F = TypeVar("F", bound=Callable[..., Any])
_CHILD = "RPROCD_FAKE_UIO_CHILD"
_REGISTRY: dict[str, list[str]] = {}  # test file -> the functions marked in it
_RESULTS: dict[str, str | None] = {}  # nodeid -> None (passed) or the child's report


def in_fake_kernel(fn: F) -> F:
    """Run the test in a pytest child process that has the fake-kernel shim preloaded.

    The first such test of a file runs all of the file's marked tests in one
    child (a child costs seconds); each then reports its own result.  The
    parent's fixtures are made but unused; the child makes its own.
    """
    path = Path(sys.modules[fn.__module__].__file__ or "").resolve()
    rel = str(path.relative_to(REPO))
    _REGISTRY.setdefault(rel, []).append(fn.__name__)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get(_CHILD):
            return fn(*args, **kwargs)
        nodeid = f"{rel}::{fn.__name__}"
        if nodeid not in _RESULTS:
            _run_children(rel)
        problem = _RESULTS.get(nodeid, f"{nodeid}: the child did not run it")
        if problem is not None:
            raise AssertionError(f"{nodeid} in the fake kernel:\n{problem}")
        return None

    return wrapper  # type: ignore[return-value]


def _run_children(rel: str) -> None:
    import tempfile
    import xml.etree.ElementTree as ET

    ids = [f"{rel}::{name}" for name in _REGISTRY[rel]]
    env = kernel_env()
    env[_CHILD] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "r.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *ids]
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        tail = f"{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
        for nodeid in ids:
            _RESULTS[nodeid] = f"no result from the child:\n{tail}"
        if xml.exists():
            for case in ET.parse(xml).getroot().iter("testcase"):
                nodeid = f"{rel}::{case.get('name')}"
                bad = [c for c in case if c.tag in ("failure", "error", "skipped")]
                _RESULTS[nodeid] = (
                    None if not bad else "\n".join((c.get("message") or "") + (c.text or "") for c in bad)
                )


@dataclass
class FakeMap:
    """One ``reg`` entry of the device's DT node."""

    pa: int
    size: int
    name: str = ""  # its reg-names entry; empty: the kernel uses the node's full name
    backing: Path | None = None  # the file whose bytes are this map's memory (from its page-aligned addr)


@dataclass
class FakeDevice:
    number: int
    name: str
    sysfs: Path
    node: Path
    maps: list[FakeMap] = field(default_factory=list)
    irq: FakeGenirq | None = None
    backing: list[Path] = field(default_factory=list)  # per map
    sizes: list[int] = field(default_factory=list)  # per map, as sysfs says
    listening: socket.socket | None = None

    @property
    def devname(self) -> str:
        return f"uio{self.number}"

    def describe(self) -> bytes:
        """What the shim learns at open: interrupt or not, and each map's size and file."""
        lines = [f"I {1 if self.irq else 0} {len(self.maps)}"]
        lines += [f"{size} 0 {path}" for size, path in zip(self.sizes, self.backing, strict=True)]
        return ("\n".join(lines) + "\n").encode()


class FakeUio:
    """A sysfs root and a /dev root under ``root``, and the kernel thread serving the nodes."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.sysfs_root = self.root / "sys"
        self.dev_root = self.root / "dev"
        (self.sysfs_root / "class" / "uio").mkdir(parents=True, exist_ok=True)
        self.dev_root.mkdir(parents=True, exist_ok=True)
        (self.root / "mem").mkdir(exist_ok=True)
        self.devices: list[FakeDevice] = []
        self._next = 0
        self.kernel = _Kernel()
        self.kernel.start()

    def add_device(
        self,
        name: str,
        maps: list[FakeMap] | None = None,
        *,
        irq: bool = False,
        level: Callable[[], bool] | None = None,
        create_node: bool = True,
    ) -> FakeDevice:
        """A generic-uio DT node ``name`` with these ``reg`` entries, with or without ``interrupts``."""
        maps = list(maps or [])
        if len(maps) > MAX_UIO_MAPS:
            raise ValueError(f"uio_pdrv_genirq takes at most {MAX_UIO_MAPS} memory resources")
        number = self._next
        self._next += 1
        d = self.sysfs_root / "class" / "uio" / f"uio{number}"
        d.mkdir(parents=True)
        dev = FakeDevice(number, name, d, self.dev_root / f"uio{number}", maps)
        full_name = f"{name}@{maps[0].pa:x}" if maps else name
        for i, m in enumerate(maps):
            addr = m.pa & ~(PAGE - 1)
            offs = m.pa - addr
            size = (offs + m.size + PAGE - 1) & ~(PAGE - 1)
            md = d / "maps" / f"map{i}"
            md.mkdir(parents=True)
            (md / "name").write_text((m.name or full_name) + "\n")
            (md / "addr").write_text(f"0x{addr:016x}\n")
            (md / "size").write_text(f"0x{size:016x}\n")
            (md / "offset").write_text(f"0x{offs:x}\n")
            backing = m.backing or self.root / "mem" / f"uio{number}.map{i}"
            backing.parent.mkdir(parents=True, exist_ok=True)
            with open(backing, "ab") as f:
                if f.tell() < size:
                    f.truncate(size)  # grow with zeros, never shrink (sim-board.md)
            dev.backing.append(backing)
            dev.sizes.append(size)
        if irq or level is not None:
            dev.irq = FakeGenirq(d / "event", level)
        (d / "version").write_text("devicetree\n")
        (d / "event").write_text("0\n")
        (d / "name").write_text(name + "\n")  # the name last: a scanner that sees it sees a whole device
        self.devices.append(dev)
        if create_node:
            self.create_node(dev)
        return dev

    def add_memory_device(self, name: str, maps: list[FakeMap], *, create_node: bool = True) -> FakeDevice:
        """A generic-uio node with ``reg`` and no ``interrupts``."""
        return self.add_device(name, maps, create_node=create_node)

    def add_irq_device(self, name: str, *, level: Callable[[], bool] | None = None) -> FakeDevice:
        """A generic-uio node with ``interrupts`` and no ``reg``."""
        return self.add_device(name, [], irq=True, level=level)

    def create_node(self, dev: FakeDevice) -> None:
        """Make ``/dev/uioN`` appear (udev/devtmpfs may create it after the sysfs entry)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.bind(str(dev.node))
        s.listen(64)
        dev.listening = s
        self.kernel.add(dev)

    def close(self) -> None:
        self.kernel.stop()
        for dev in self.devices:
            if dev.listening is not None:
                dev.listening.close()


class _Kernel(threading.Thread):
    """Serves the nodes: open handshakes (listeners) and irqcontrol writes."""

    def __init__(self) -> None:
        super().__init__(name="fake-uio-kernel", daemon=True)
        self.sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._new: list[FakeDevice] = []
        self._lock = threading.Lock()
        self._stopping = False

    def add(self, dev: FakeDevice) -> None:
        with self._lock:
            self._new.append(dev)
        self._wake_w.send(b"x")

    def stop(self) -> None:
        self._stopping = True
        self._wake_w.send(b"x")
        self.join(timeout=5)

    def run(self) -> None:
        while not self._stopping:
            for key, _ in self.sel.select():
                data = key.data
                if data is None:
                    self._wake_r.recv(64)
                    with self._lock:
                        new, self._new = self._new, []
                    for dev in new:
                        assert dev.listening is not None
                        self.sel.register(dev.listening, selectors.EVENT_READ, ("listen", dev))
                elif data[0] == "listen":
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    self.sel.register(conn, selectors.EVENT_READ, ("conn", data[1]))
                else:
                    self._request(key.fileobj, data[1])  # type: ignore[arg-type]
        for key in list(self.sel.get_map().values()):
            if key.data is not None and key.data[0] == "conn":
                key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()

    def _request(self, conn: socket.socket, dev: FakeDevice) -> None:
        try:
            msg = conn.recv(64)
        except OSError:
            msg = b""
        if msg == b"O":  # uio_open
            irq = dev.irq
            if irq is not None:
                with irq.lock:  # registered before the reply: the count is sampled now
                    irq.listeners.append(conn)
            conn.send(dev.describe())
        elif len(msg) == 5 and msg[:1] == b"W":  # uio_write -> uio_pdrv_genirq_irqcontrol
            assert dev.irq is not None, "the shim answers EIO itself for a device without irq"
            dev.irq.irqcontrol(_S32.unpack(msg[1:])[0])
            conn.send(b"A" + _S32.pack(0))
        elif not msg:  # uio_release
            self.sel.unregister(conn)
            if dev.irq is not None:
                with dev.irq.lock:
                    if conn in dev.irq.listeners:
                        dev.irq.listeners.remove(conn)
            conn.close()


class FakeGenirq:
    """The kernel side of one uio_pdrv_genirq interrupt: handler, irqcontrol, event count."""

    def __init__(self, event_file: Path, level: Callable[[], bool] | None = None):
        self.event_file = event_file
        self.level = level or (lambda: False)  # a level-triggered source: asserted while level() is true
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.event = 0  # idev->event
        self.disabled = False  # priv->flags UIO_IRQ_DISABLED
        self.pending = False  # an edge that arrived while masked (held at the interrupt controller)
        self.unmasks = 0
        self.masks = 0
        self.listeners: list[socket.socket] = []

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
            self.pending = True
            return
        self.disabled = True  # disable_irq_nosync
        self.pending = False
        self.event += 1
        self.event_file.write_text(f"{self.event}\n")
        note = b"E" + _U32.pack(self.event)
        for conn in list(self.listeners):  # wake_up_interruptible(&idev->wait)
            try:
                conn.send(note)
            except OSError:
                self.listeners.remove(conn)
        self.changed.notify_all()

    def irqcontrol(self, irq_on: int) -> None:
        """uio_pdrv_genirq_irqcontrol."""
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
