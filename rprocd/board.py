"""The virtual board of ``shared/sim-board.md``: a memory file and two doorbells.

Both sides use this class: rprocd as ``host`` and the simulated remote as
``remote``.  It does no protocol work and never blocks: rings are sent with
``MSG_DONTWAIT`` and received by draining the socket, so either side can put
the socket on an event loop or in ``poll()``.
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from .native import sockio

_WORD = struct.Struct("<I")
_DRAIN_FLAGS = int(socket.MSG_DONTWAIT | socket.MSG_TRUNC)  # a plain int: IntFlag arithmetic per call is slow
_TRUNC = int(socket.MSG_TRUNC)
_DRAIN_BATCH = 16  # rings taken per recvmmsg


@dataclass
class DoorbellStats:
    sent: int = 0
    lost: int = 0  # peer not listening (ENOENT / ECONNREFUSED): lost, as on hardware
    dropped: int = 0  # peer's queue full (EAGAIN): the queued rings cover it
    received: int = 0
    noise: int = 0  # datagrams that were not 4 bytes


class VirtualBoard:
    """One side's view of a board folder ``D``."""

    def __init__(self, directory: str | os.PathLike[str], base: int, size: int, role: str = "host"):
        if role not in ("host", "remote"):
            raise ValueError(f"role must be 'host' or 'remote', not {role!r}")
        self.dir = Path(directory)
        self.base, self.size, self.role = base, size, role
        self.own_path = self.dir / f"{role}.sock"
        self.peer_path = self.dir / ("remote.sock" if role == "host" else "host.sock")
        self.stats = DoorbellStats()
        self._mm: mmap.mmap | None = None
        self.sock: socket.socket | None = None
        self._tx: socket.socket | None = None
        self._rxbuf = bytearray(64)
        # recvmmsg: every queued ring in one call, where a drain of recv() calls needs one more for
        # the EAGAIN (None without the native helper: the recv() loop)
        self._rxbatch = sockio.batch(64, _DRAIN_BATCH)

    # -- memory ------------------------------------------------------------------

    def map_memory(self) -> mmap.mmap:
        """Open (creating or growing, never truncating) ``D/memory`` and map it shared."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "memory", os.O_RDWR | os.O_CREAT, 0o660)
        try:
            if os.fstat(fd).st_size < self.size:
                os.ftruncate(fd, self.size)  # grows with zeros; both sides may race: same size
            self._mm = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        return self._mm

    # -- doorbells ---------------------------------------------------------------

    def bind(self) -> socket.socket:
        """Bind our doorbell socket, replacing a stale one."""
        self.dir.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self.own_path.unlink()
        except FileNotFoundError:
            pass
        sock.bind(str(self.own_path))
        sock.setblocking(False)
        self.sock = sock
        return sock

    def ring(self, word: int) -> bool:
        """Send one doorbell word to the peer; False when it was lost or dropped.

        Sent through a separate socket connected to the peer's path: a
        connected send skips the path lookup of ``sendto`` (a quarter of the
        daemon's time under load).  A peer that restarted has a new socket at
        that path, so a refused send reconnects once before giving up.
        """
        word_bytes = _WORD.pack(word)
        for attempt in (0, 1):
            tx = self._tx
            try:
                if tx is None:
                    tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    self._tx = tx
                    tx.connect(str(self.peer_path))
                tx.send(word_bytes, socket.MSG_DONTWAIT)
            except BlockingIOError:
                self.stats.dropped += 1
                return False
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTCONN, errno.EPIPE):
                    raise
                if self._tx is not None:
                    self._tx.close()
                    self._tx = None
                if attempt or e.errno == errno.ENOENT:
                    self.stats.lost += 1
                    return False
                continue
            self.stats.sent += 1
            return True
        return False

    def drain(self) -> int:
        """Read every queued ring; returns how many valid words arrived."""
        assert self.sock is not None, "bind() first"
        if self._rxbatch is not None:
            return self._drain_batched(self.sock.fileno(), self._rxbatch)
        n = 0
        recv_into = self.sock.recv_into
        buf = self._rxbuf
        while True:
            try:
                got = recv_into(buf, 64, _DRAIN_FLAGS)
            except (BlockingIOError, InterruptedError):
                break
            if got == 4:
                n += 1
            else:
                self.stats.noise += 1
        self.stats.received += n
        return n

    def _drain_batched(self, fd: int, b: sockio.Batch) -> int:
        """:meth:`drain` in one ``recvmmsg`` per :data:`_DRAIN_BATCH` rings (fewer than that: the queue is empty)."""
        n = noise = 0
        while True:
            got = b.recv(fd, _DRAIN_BATCH, _TRUNC)  # (MSG_DONTWAIT is always added)
            if got < 0:
                if got == -errno.EINTR:
                    continue
                if got == -errno.EAGAIN:
                    break
                raise OSError(-got, os.strerror(-got))
            lens = b.lens
            for i in range(got):
                if lens[i] == 4:
                    n += 1
                else:
                    noise += 1
            if b.eof:
                # a 0-byte datagram cut the batch (the helper stops there, as at a stream's end); the
                # ones after it in this call were taken unseen: count one ring for them, a spurious
                # service costs nothing, a lost ring would strand a message until the next tick
                noise += 1
                n += 1
                continue
            if got < _DRAIN_BATCH:
                break
        self.stats.received += n
        self.stats.noise += noise
        return n

    def close(self) -> None:
        if self._tx is not None:
            self._tx.close()
            self._tx = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            try:
                self.own_path.unlink()
            except FileNotFoundError:
                pass
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # views still exported; the map goes with them
            self._mm = None
