"""File-system helpers shared by the exports."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger("rprocd")

ACCEPT_BACKOFF = 0.5  # seconds a listener is left alone after accept() ran out of descriptors or memory
FD_RESERVE = 64  # descriptors an endpoint socket never takes: they stay for clients, MQTT and the control socket
CLIENT_RESERVE = 16  # descriptors an endpoint client never takes: they stay for the control socket
# accept() failing for want of a resource: the connection stays queued, so retrying at once would spin
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_failures = 0  # accept failures logged so far (one process: one count is enough to pace the log)


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


def fd_room(fd: int, reserve: int) -> bool:
    """Whether descriptor ``fd`` leaves ``reserve`` of ``RLIMIT_NOFILE`` free (the kernel hands out the lowest free fd).

    So a new ``fd`` at ``n`` means ``0..n-1`` are all taken: at most ``limit - n - 1`` are left.
    """
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft == resource.RLIM_INFINITY or fd < soft - reserve


def _note_failure(path: Path, e: OSError, what: str) -> None:
    global _failures
    _failures += 1
    if _failures & (_failures - 1) == 0:  # 1st, 2nd, 4th, ...: a client storm cannot flood the journal
        log.warning("accept on %s: %s; %s (%d such so far)", path, e, what, _failures)


def accept_all(
    listener: socket.socket,
    path: Path,
    pause: Callable[[], None] | None = None,
    *,
    reserve: int = 0,
) -> Iterator[socket.socket]:
    """Every connection waiting on a non-blocking listener, made non-blocking; an error ends it, logged.

    Out of descriptors or memory (``EMFILE``, ``ENFILE``...), the connection stays in
    the listener's queue and a level-triggered reader would fire again at once:
    ``pause()`` is then called, which must stop watching the listener for a while
    (:class:`AcceptPause`).  With ``reserve``, a connection whose descriptor would
    leave fewer than ``reserve`` free is closed (the client reads end-of-file), and
    the listener is paused too.
    """
    while True:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno in _EXHAUSTED and pause is not None:
                _note_failure(path, e, f"not accepting for {ACCEPT_BACKOFF} s")
                pause()
            else:
                _note_failure(path, e, "will retry when the next client comes")
            return
        if reserve and not fd_room(sock.fileno(), reserve):
            sock.close()
            _note_failure(path, OSError(errno.EMFILE, "too close to RLIMIT_NOFILE, connection closed"), "pausing")
            if pause is not None:
                pause()
            return
        sock.setblocking(False)
        yield sock


class AcceptPause:
    """Stop watching a listener for :data:`ACCEPT_BACKOFF` seconds, then watch it again.

    ``callback(*args)`` is what the loop's reader calls when a client is waiting.
    """

    __slots__ = ("loop", "fd", "callback", "args", "handle", "pauses")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, callback: Callable[..., None], *args: object):
        self.loop, self.fd, self.callback, self.args = loop, fd, callback, args
        self.handle: asyncio.TimerHandle | None = None
        self.pauses = 0

    def start(self) -> None:
        self.loop.add_reader(self.fd, self.callback, *self.args)

    def __call__(self) -> None:
        if self.handle is not None:
            return
        self.pauses += 1
        self.loop.remove_reader(self.fd)
        self.handle = self.loop.call_later(ACCEPT_BACKOFF, self._resume)

    def _resume(self) -> None:
        self.handle = None
        self.start()

    def cancel(self) -> None:
        """Stop for good (the listener is being closed)."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.loop.remove_reader(self.fd)
