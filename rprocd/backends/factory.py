"""From a :class:`~rprocd.config.RemoteConfig` to a :class:`~rprocd.backends.Platform`.

``open_platform`` is a coroutine: on hardware the UIO devices may not exist
yet when rprocd starts (module loading, udev), and it waits for them instead
of failing (``[remote.NAME.uio] wait_timeout``; 0 waits forever).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..board import VirtualBoard
from ..config import DoorbellConfig, RemoteConfig
from ..lifecycle import GpioLifecycle, Lifecycle, RegisterLifecycle
from ..mailbox.base import MailboxDoorbell, MailboxDriver, MemoryRegisters
from ..mailbox.registers import RegisterProgramMailbox
from ..mailbox.telechips import TelechipsMailbox
from . import Doorbell, Platform
from .devmem import DevMemWindow
from .sim import BoardDoorbell, open_board
from .uio import MappedRegion, UioDeviceInfo, UioError, UioIrq, wait_for_devices

log = logging.getLogger("rprocd.backends")


def _uio_names(remote: RemoteConfig) -> list[str]:
    names: list[str] = []
    if remote.backend == "uio":
        names += remote.uio.memory
    db = remote.doorbell
    if db.driver != "sim":
        if db.pa is None and db.uio:
            names.append(db.uio)
        if db.poll_ms == 0 and (db.irq_uio or db.uio):
            names.append(db.irq_uio or db.uio or "")
    lc = remote.lifecycle
    if lc.enabled and lc.method == "registers" and lc.pa is None and lc.uio:
        names.append(lc.uio)
    return list(dict.fromkeys(names))


async def _devices(remote: RemoteConfig, names: list[str]) -> dict[str, UioDeviceInfo]:
    if not names:
        return {}
    u = remote.uio
    return await wait_for_devices(names, sysfs_root=u.sysfs_root, dev_root=u.dev_root, timeout=u.wait_timeout)


def _map_regs(dev: UioDeviceInfo, index: int, base: int, closers: list[Callable[[], None]]) -> MemoryRegisters:
    info = next((m for m in dev.maps if m.index == index), None)
    if info is None:
        raise UioError(2, f"UIO device {dev.name} (uio{dev.number}) has no map{index}")
    region = MappedRegion(dev, info)
    regs = MemoryRegisters(region.view, base=base)

    def close() -> None:
        regs.release()
        region.close()

    closers.append(close)
    return regs


def _devmem_regs(w: DevMemWindow, closers: list[Callable[[], None]]) -> MemoryRegisters:
    regs = MemoryRegisters(w.view)

    def close() -> None:
        regs.release()
        w.close()

    closers.append(close)
    return regs


def _mailbox_doorbell(remote: RemoteConfig, db: DoorbellConfig, devices: dict[str, UioDeviceInfo]) -> MailboxDoorbell:
    closers: list[Callable[[], None]] = []
    try:
        maps = {db.map} | {s.map for s in (*db.start, *db.ring, *db.ack, *db.stop)}
        regs: dict[int, MemoryRegisters] = {}
        if db.pa is not None:
            if maps != {db.map}:
                raise ValueError(f"remote.{remote.name}.doorbell: with pa, register steps use map {db.map} only")
            w = DevMemWindow(db.pa, db.size, remote.devmem_path)
            regs[db.map] = _devmem_regs(w, closers)
        else:
            assert db.uio is not None
            for idx in sorted(maps):
                regs[idx] = _map_regs(devices[db.uio], idx, db.offset if idx == db.map else 0, closers)
        driver: MailboxDriver
        if db.driver == "telechips":
            driver = TelechipsMailbox(regs[db.map])
        else:
            driver = RegisterProgramMailbox(regs, start=db.start, ring=db.ring, ack=db.ack, stop=db.stop)
        irq = None
        if db.poll_ms == 0:
            name = db.irq_uio or db.uio
            assert name is not None
            irq = UioIrq(devices[name])
        word = db.word if isinstance(db.word, int) else None
        return MailboxDoorbell(driver, irq, word=word, poll_s=db.poll_ms / 1000, closers=closers)
    except BaseException:
        for c in reversed(closers):
            c()
        raise


async def open_platform(remote: RemoteConfig, *, board_dir: str | None = None) -> Platform:
    """Open the remote's shared memory and doorbell as its config says.

    ``board_dir`` (``--board DIR``) forces the virtual board.  For the UIO
    backend this waits until the named UIO devices exist.
    """
    if board_dir is not None or remote.backend == "sim":
        directory = board_dir or remote.board
        assert directory is not None, "config validation requires a board for the sim backend"
        return open_board(directory, remote.layout)
    devices = await _devices(remote, _uio_names(remote))
    if remote.backend == "uio":
        from .uio import open_memory as open_uio_memory

        memory, closers, desc = open_uio_memory([devices[n] for n in remote.uio.memory], remote.layout)
    else:
        from .devmem import open_memory as open_devmem_memory

        memory, closers, desc = open_devmem_memory(remote.layout, remote.devmem_path)
    try:
        db = remote.doorbell
        doorbell: Doorbell
        if db.driver == "sim":
            assert db.board is not None
            board = VirtualBoard(db.board, remote.layout.window.pa, remote.layout.window.size, role="host")
            doorbell = BoardDoorbell(board)
            closers.append(board.close)
            desc += f"; doorbell: datagrams in {db.board}"
        else:
            doorbell = _mailbox_doorbell(remote, db, devices)
            desc += f"; doorbell: {db.driver} mailbox"
    except BaseException:
        for c in reversed(closers):
            c()
        raise
    log.info("remote %s: %s", remote.name, desc)
    return Platform(memory, doorbell, desc, closers)


async def open_lifecycle(remote: RemoteConfig) -> Lifecycle | None:
    """The remote's start/stop control, or None when ``lifecycle.enabled`` is false."""
    lc = remote.lifecycle
    if not lc.enabled:
        return None
    if lc.method == "gpio":
        return GpioLifecycle(lc)
    closers: list[Callable[[], None]] = []
    if lc.pa is not None:
        regs = _devmem_regs(DevMemWindow(lc.pa, lc.size, remote.devmem_path), closers)
    else:
        assert lc.uio is not None
        devices = await _devices(remote, [lc.uio])
        regs = _map_regs(devices[lc.uio], 0, 0, closers)
    return RegisterLifecycle(lc, regs, closers)
