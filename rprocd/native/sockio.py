"""Batched record I/O (``recvmmsg``/``sendmmsg``) for SOCK_SEQPACKET sockets, through ctypes.

``sockio.c`` (beside this file) is built and cached like the barrier helper
(:func:`rprocd.native.build`); a prebuilt ``_sockio.so`` is used first.
Without a compiler, or with ``RPROCD_NO_SOCKIO`` set, :data:`BATCH` is None
and callers use the pure-Python path (one ``recv_into``/``send`` per record).

A :class:`Batch` owns its buffers, allocated once: ``recv(fd, count,
flags)`` fills ``lens[:n]`` and the records sit at ``view[head + i * stride :]``,
each after ``head`` bytes of room the caller may fill (an rpmsg header, so
that header and record go on in one copy).
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

from . import _HERE, build

log = logging.getLogger("rprocd.native")

SOURCE = _HERE / "sockio.c"
PREBUILT = _HERE / "_sockio.so"
MAXBATCH = 64  # as in sockio.c


def _load() -> ctypes.CDLL | None:
    if os.environ.get("RPROCD_NO_NATIVE") or os.environ.get("RPROCD_NO_SOCKIO"):
        return None
    candidates: list[Path] = [PREBUILT] if PREBUILT.exists() else []
    if not candidates:
        try:
            built = build(source=SOURCE.name)
        except OSError as e:  # unwritable cache, read-only root ...
            log.debug("no cache for the sockio helper: %s", e)
            built = None
        if built:
            candidates.append(built)
    for path in candidates:
        try:
            lib = ctypes.CDLL(str(path))
            if lib.rprocd_sockio_abi() != 3:
                continue
            i, p = ctypes.c_int, ctypes.c_void_p
            lib.rprocd_recvm.argtypes = [i, p, i, i, i, p, p]
            lib.rprocd_recvm.restype = i
            lib.rprocd_sendm.argtypes = [i, p, i, i, p]
            lib.rprocd_sendm.restype = i
            lib.rprocd_sendm_rec.argtypes = [i, p, i, i, p, p, i, i]
            lib.rprocd_sendm_rec.restype = i
            return lib
        except (OSError, AttributeError) as e:
            log.debug("cannot load %s: %s", path, e)
    return None


class Batch:
    """Preallocated buffers for up to ``count`` records of up to ``stride`` bytes."""

    __slots__ = (
        "stride", "count", "head", "buf", "view", "lens", "_lens_p", "_buf_p", "_eof", "_eof_p",
        "_recvm", "_sendm", "_sendm_rec",
    )  # fmt: skip

    def __init__(self, lib: ctypes.CDLL, stride: int, count: int = MAXBATCH, head: int = 0):
        if head:  # each slot: head room, then the record; slots 8-byte aligned
            stride = (head + stride + 7) & ~7
        self.stride, self.count, self.head = stride, min(count, MAXBATCH), head
        # (a record longer than stride - head, which MSG_TRUNC reports and the caller refuses, may run
        # into the next slot's head room, never into its record)
        self.buf = (ctypes.c_char * (head + stride * self.count))()
        self.view = memoryview(self.buf).cast("B")
        self.lens = (ctypes.c_int * self.count)()
        self._lens_p = ctypes.addressof(self.lens)
        self._buf_p = ctypes.addressof(self.buf)
        self._eof = ctypes.c_int(0)
        self._eof_p = ctypes.addressof(self._eof)
        self._recvm, self._sendm, self._sendm_rec = lib.rprocd_recvm, lib.rprocd_sendm, lib.rprocd_sendm_rec

    def recv(self, fd: int, count: int, flags: int) -> int:
        """Records read into the buffers (>= 0), or -errno; :attr:`eof` tells if end of file cut the batch."""
        return int(self._recvm(fd, self._buf_p + self.head, self.stride, count, flags, self._lens_p, self._eof_p))

    def consume(self, fd: int, count: int) -> int:
        """Dequeue ``count`` records without copying them (their lengths land in :attr:`lens`)."""
        return int(self._recvm(fd, None, 0, count, 0, self._lens_p, self._eof_p))

    @property
    def eof(self) -> bool:
        return bool(self._eof.value)

    def send(self, fd: int, count: int, first: int = 0) -> int:
        """Send records ``first..first+count-1`` (lengths in :attr:`lens`); how many the kernel took, or -errno."""
        base = self._buf_p + self.head + first * self.stride
        return int(self._sendm(fd, base, self.stride, count, self._lens_p + 4 * first))

    def send_recorded(self, fd: int, count: int, first: int, rec: int, value: int, lowered: int = -1) -> int:
        """:meth:`send`, after storing the 16-bit ``value`` at address ``rec`` just before the system call.

        ``rec`` comes from :class:`rprocd.vring.UsedRecord` (an aligned word of the mapped window).
        With ``lowered`` >= 0, a send that the socket took only ``k`` of stores ``lowered + k`` there
        after the call (a ``block`` client: what it refused is not accepted).
        """
        p = self._buf_p + self.head + first * self.stride
        return int(self._sendm_rec(fd, p, self.stride, count, self._lens_p + 4 * first, rec, value, lowered))


LIB = _load()
KIND = "native recvmmsg/sendmmsg" if LIB is not None else "fallback: one recv/send per record"


def batch(stride: int, count: int = MAXBATCH, head: int = 0) -> Batch | None:
    """A :class:`Batch` of records up to ``stride`` bytes after ``head`` bytes of room; None without the helper."""
    return Batch(LIB, stride, count, head) if LIB is not None else None
