"""The virtual-board backend (``--board DIR``): shared memory in a file, doorbells as datagrams."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict

from ..board import VirtualBoard
from ..layout import Layout
from ..memory import MemoryMap
from . import Platform


class BoardDoorbell:
    """:class:`~rprocd.backends.Doorbell` over the board's ``host.sock``/``remote.sock``."""

    def __init__(self, board: VirtualBoard):
        self.board = board
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop, on_ring: Callable[[], None]) -> None:
        sock = self.board.bind()

        def readable() -> None:
            if self.board.drain():
                on_ring()

        loop.add_reader(sock.fileno(), readable)
        self._loop = loop

    def ring(self, word: int) -> None:
        self.board.ring(word)

    def stop(self) -> None:
        if self._loop is not None and self.board.sock is not None:
            self._loop.remove_reader(self.board.sock.fileno())
            self._loop = None

    def stats(self) -> dict[str, int]:
        return asdict(self.board.stats)


def open_board(directory: str, layout: Layout) -> Platform:
    """Map ``directory/memory`` as the layout's shared window."""
    board = VirtualBoard(directory, layout.window.pa, layout.window.size, role="host")
    mm = board.map_memory()
    view = memoryview(mm)
    memory = MemoryMap([(layout.window.pa, view)], device=False)

    def close() -> None:
        memory.close()
        view.release()
        board.close()

    return Platform(memory, BoardDoorbell(board), f"virtual board {directory}", [close])
