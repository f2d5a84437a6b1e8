"""File-system helpers shared by the exports."""

from __future__ import annotations

import os
import stat
from pathlib import Path


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
