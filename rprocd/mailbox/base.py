"""The mailbox driver interface, register access, and the doorbell that joins them to an interrupt."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal, Protocol

from .. import native

log = logging.getLogger("rprocd.mailbox")


class Registers(Protocol):
    """A block of device registers: single accesses of the given width, nothing else.

    Every call is exactly one load or one store.  In particular ``write`` never
    reads the register first: mailbox FIFOs and read-to-clear status registers
    change state when they are read.
    """

    def read(self, offset: int, width: int = 32) -> int: ...

    def write(self, offset: int, value: int, width: int = 32) -> None: ...


class MemoryRegisters:
    """:class:`Registers` over a mapped buffer (a UIO map, a ``/dev/mem`` map).

    Accesses go through native-width ``memoryview`` casts: CPython turns
    ``mv.cast('I')[i] = v`` into one aligned 32-bit store (``memcpy`` of a
    constant 4 bytes), and a read into one load.  Unlike python-periphery's
    ``MMIO.write32`` (a ctypes setter that loads the old value before storing),
    nothing here touches a register it was not asked to.
    """

    _FMT: dict[int, Literal["B", "H", "I"]] = {8: "B", 16: "H", 32: "I"}

    def __init__(self, buf: memoryview, base: int = 0):
        mv = buf if isinstance(buf, memoryview) else memoryview(buf)
        self._mv = mv.cast("B") if mv.format != "B" else mv
        self._base = base
        self._views = {w: self._mv.cast(f) for w, f in self._FMT.items()}

    def _index(self, offset: int, width: int) -> int:
        off = self._base + offset
        if width not in self._views:
            raise ValueError(f"register width {width} is not 8, 16 or 32")
        if off % (width // 8) or off < 0 or off + width // 8 > len(self._mv):
            raise ValueError(f"{width}-bit register access at {offset:#x} is unaligned or outside the block")
        return off // (width // 8)

    def read(self, offset: int, width: int = 32) -> int:
        return int(self._views[width][self._index(offset, width)])

    def write(self, offset: int, value: int, width: int = 32) -> None:
        self._views[width][self._index(offset, width)] = value

    def release(self) -> None:
        for v in self._views.values():
            v.release()
        self._mv.release()


class MailboxDriver(Protocol):
    """One mailbox, seen from the host: sans-I/O, registers only.

    ``ring`` sends one word and returns False when the mailbox is still busy
    with an earlier ring the remote has not taken (that ring will make the
    remote look at every vring anyway, so the new one is coalesced, as
    sim-board.md allows).  ``on_interrupt`` reads and acknowledges what the
    remote sent and returns the words (empty: a spurious interrupt).
    """

    def start(self) -> None: ...

    def ring(self, word: int) -> bool: ...

    def on_interrupt(self) -> list[int]: ...

    def stop(self) -> None: ...

    def stats(self) -> dict[str, int]: ...


class IrqSource(Protocol):
    """An interrupt line as user space sees it (``/dev/uioN`` with uio_pdrv_genirq)."""

    def fileno(self) -> int: ...

    def read_event(self) -> int | None: ...

    def unmask(self) -> None: ...

    def close(self) -> None: ...


class MailboxDoorbell:
    """:class:`~rprocd.backends.Doorbell` over a mailbox driver and its interrupt.

    On an interrupt: read the event count, let the driver read and acknowledge
    the mailbox, then unmask the line (uio_pdrv_genirq masked it in the
    kernel; a level interrupt still pending fires again at once).  Without an
    interrupt source the mailbox is polled every ``poll_s``.  Before each ring
    a write barrier (:mod:`rprocd.native`) orders the ring writes before the
    doorbell register write.
    """

    def __init__(
        self,
        driver: MailboxDriver,
        irq: IrqSource | None,
        *,
        word: int | None = None,
        poll_s: float = 0.0,
        closers: list[Callable[[], None]] | None = None,
    ):
        if irq is None and poll_s <= 0:
            raise ValueError("a mailbox without an interrupt needs a poll interval")
        self.driver, self.irq, self.word, self.poll_s = driver, irq, word, poll_s
        self._closers = closers or []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_ring: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_count: int | None = None
        self.counts = {"sent": 0, "coalesced": 0, "received": 0, "irqs": 0, "spurious": 0, "missed": 0}

    def start(self, loop: asyncio.AbstractEventLoop, on_ring: Callable[[], None]) -> None:
        self._loop, self._on_ring = loop, on_ring
        if native.NATIVE:
            log.debug("doorbell barrier: %s", native.KIND)
        else:
            log.warning("doorbell barrier: %s (see docs/hardware.md, 'Ordering the doorbell')", native.KIND)
        self.driver.start()
        if self.irq is not None:
            loop.add_reader(self.irq.fileno(), self._interrupt)
            self.irq.unmask()  # it may have been left masked by an earlier run
        else:
            self._timer = loop.call_later(self.poll_s, self._poll)

    def ring(self, word: int) -> None:
        native.wmb()
        if self.driver.ring(word if self.word is None else self.word):
            self.counts["sent"] += 1
        else:
            self.counts["coalesced"] += 1

    def _interrupt(self) -> None:
        assert self.irq is not None
        try:
            count = self.irq.read_event()
        except OSError as e:  # the device went away: stop listening rather than spin on it
            log.error("mailbox interrupt: %s; no longer listening", e)
            self.counts["irq_errors"] = self.counts.get("irq_errors", 0) + 1
            if self._loop is not None:
                self._loop.remove_reader(self.irq.fileno())
            return
        if count is None:
            return  # woken without an event (EAGAIN)
        self.counts["irqs"] += 1
        if self._last_count is not None and count - self._last_count > 1:
            self.counts["missed"] += count - self._last_count - 1  # several interrupts, one wake-up
        self._last_count = count
        self._service()
        self.irq.unmask()

    def _poll(self) -> None:
        self._service(polled=True)
        if self._loop is not None:
            self._timer = self._loop.call_later(self.poll_s, self._poll)

    def _service(self, polled: bool = False) -> None:
        words = self.driver.on_interrupt()
        if words:
            self.counts["received"] += len(words)
            if self._on_ring is not None:
                self._on_ring()
        elif not polled:
            self.counts["spurious"] += 1

    def stop(self) -> None:
        if self._loop is not None:
            if self.irq is not None:
                self._loop.remove_reader(self.irq.fileno())
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._loop = None
            try:
                self.driver.stop()
            except (OSError, ValueError) as e:
                log.warning("stopping the mailbox: %s", e)
        if self.irq is not None:
            self.irq.close()
        for close in reversed(self._closers):
            close()
        self._closers.clear()

    def stats(self) -> dict[str, int]:
        return {**self.counts, **{f"driver_{k}": v for k, v in self.driver.stats().items()}}
