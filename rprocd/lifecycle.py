"""Start, stop and restart the remote core (opt-in; off by default).

The tcc807x remote boots by itself, so rprocd normally only attaches.  Where
the board wires the remote's reset to something Linux can drive, the config
may give rprocd the means (``[remote.NAME.lifecycle]``):

* ``method = "gpio"``: one GPIO line (python-periphery character-device GPIO)
  that holds the core in reset while active (``active_low`` inverts);
* ``method = "registers"``: ``start``/``stop`` register programs (the same
  steps as the register doorbell) on a UIO map or a ``/dev/mem`` range.

Opening never changes the core's state: the GPIO is requested at the level
that lets the core run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from .config import LifecycleConfig
from .mailbox.base import Registers
from .mailbox.registers import RegisterProgramMailbox


class Lifecycle(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    async def restart(self) -> None: ...

    def close(self) -> None: ...


class GpioLifecycle:
    """Reset line on a GPIO: stop = assert reset, start = release it."""

    def __init__(self, cfg: LifecycleConfig, gpio_factory: Callable[..., Any] | None = None):
        if gpio_factory is None:
            from periphery import GPIO

            gpio_factory = GPIO
        self.cfg = cfg
        self._reset_level = not cfg.active_low  # physical level that holds the core in reset
        run = "low" if self._reset_level else "high"
        self.gpio = gpio_factory(cfg.chip, cfg.line, run)

    def start(self) -> None:
        self.gpio.write(not self._reset_level)

    def stop(self) -> None:
        self.gpio.write(self._reset_level)

    async def restart(self) -> None:
        self.stop()
        await asyncio.sleep(self.cfg.pulse_ms / 1000)
        self.start()

    def close(self) -> None:
        self.gpio.close()


class RegisterLifecycle:
    """Start/stop as register programs on one register block (map 0)."""

    def __init__(self, cfg: LifecycleConfig, regs: Registers, closers: list[Callable[[], None]] | None = None):
        self.cfg = cfg
        self._prog = RegisterProgramMailbox({0: regs}, start=cfg.start, stop=cfg.stop)
        self._closers = closers or []

    def start(self) -> None:
        ok, _ = self._prog.run("start")
        if not ok:
            raise TimeoutError("lifecycle start program: a wait step timed out")

    def stop(self) -> None:
        ok, _ = self._prog.run("stop")
        if not ok:
            raise TimeoutError("lifecycle stop program: a wait step timed out")

    async def restart(self) -> None:
        self.stop()
        await asyncio.sleep(self.cfg.pulse_ms / 1000)
        self.start()

    def close(self) -> None:
        for c in reversed(self._closers):
            c()
        self._closers.clear()
