"""File-system helpers shared by the exports."""

from __future__ import annotations

import os
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
