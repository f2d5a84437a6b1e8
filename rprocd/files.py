"""File-system helpers shared by the exports."""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("rprocd")


def chgrp(target: str | Path | int, gid: int | None) -> None:
    """Give ``target`` (a path or an fd) group ``gid`` unless it has it already.

    Under the shipped unit the files are created with the right group (``Group=``)
    and ``chown()`` is outside the syscall filter, so the call is skipped
    whenever it is not needed.
    """
    if gid is None:
        return
    st = os.fstat(target) if isinstance(target, int) else os.stat(target)
    if st.st_gid == gid:
        return
    if isinstance(target, int):
        os.fchown(target, -1, gid)
    else:
        os.chown(target, -1, gid)


def clear_stale_sockets(directory: Path) -> None:
    """Create ``directory`` and remove the sockets a previous run left in it (nothing else)."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        try:
            if stat.S_ISSOCK(entry.lstat().st_mode):
                entry.unlink()
        except FileNotFoundError:
            pass


def accept_all(listener: socket.socket, path: Path) -> Iterator[socket.socket]:
    """Every connection waiting on a non-blocking listener, made non-blocking; an error ends it, logged."""
    while True:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.warning("accept on %s: %s", path, e)
            return
        sock.setblocking(False)
        yield sock
