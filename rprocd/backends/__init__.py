"""Backends: where shared memory and the doorbell come from.

The daemon sees only a :class:`Platform`: a :class:`~rprocd.memory.MemoryMap`
covering the remote's shared window and a :class:`Doorbell`.  Which backend
provides them (the virtual board, UIO, ``/dev/mem``) is configuration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..memory import MemoryMap


class Doorbell(Protocol):
    """Ring the remote, and hear it ring back.

    ``start`` registers with the running loop and calls ``on_ring`` (no
    arguments: a ring is a hint, the daemon then looks at every vring) each
    time the remote rang at least once.  ``ring`` never blocks; a ring that
    cannot be delivered is counted, not raised.
    """

    def start(self, loop: asyncio.AbstractEventLoop, on_ring: Callable[[], None]) -> None: ...

    def ring(self, word: int) -> None: ...

    def stop(self) -> None: ...

    def stats(self) -> dict[str, int]: ...


@dataclass
class Platform:
    """What a backend hands the daemon for one remote processor."""

    memory: MemoryMap
    doorbell: Doorbell
    description: str
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        self.doorbell.stop()
        for close in reversed(self.closers):
            close()
        self.closers.clear()
