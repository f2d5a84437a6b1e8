"""Zephyr's RAM console, written into the trace buffer of the resource table.

Zephyr (``drivers/console/ram_console.c``) keeps no write pointer in memory:
characters go round the first ``len - 1`` bytes and the last byte stays NUL,
so a reader (``rprocctl trace``, the MQTT bridge) finds what is new by
comparing with what it read before.  The simulated remote writes exactly
that way so readers are tested against the real format.
"""

from __future__ import annotations

from ..memory import Span


class RamConsole:
    """A wrap-around text buffer over ``view`` (the trace buffer, ``size >= 2``), through device copies."""

    __slots__ = ("_view", "_size", "pos")

    def __init__(self, view: Span):
        if view.size < 2:
            raise ValueError("a RAM console needs at least 2 bytes")
        self._view = view
        self._size = view.size - 1  # characters wrap here; the last byte stays NUL
        self.pos = 0

    def clear(self) -> None:
        """Zero the buffer, as a booting Zephyr finds its ``.bss``."""
        self._view.fill(0, self._view.size)
        self.pos = 0

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        size, view = self._size, self._view
        if len(data) > size:
            # only the last ``size`` characters survive; keep the same end position
            skip = len(data) - size
            self.pos = (self.pos + skip) % size
            data = data[skip:]
        pos = self.pos
        first = min(len(data), size - pos)
        view.write(pos, data[:first])
        rest = len(data) - first
        if rest:
            view.write(0, data[first:])
        self.pos = (pos + len(data)) % size
        view.store8(size, 0)

    def release(self) -> None:
        """Nothing to drop: the console holds no view of shared memory."""
