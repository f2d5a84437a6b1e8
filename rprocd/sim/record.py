"""``--record FILE``: the simulated remote's log of every message it receives and sends (test support).

One line per message, appended to ``FILE``::

    boot <pid>                      the process started (fresh table)
    session <n>                     the n-th session of this process began (DRIVER_OK seen)
    end <reason>                    that session ended
    rx <ept> <hex> <idx>            a message to endpoint <ept> was consumed from vring1
    tx <ept> <hex> <idx>            a message from endpoint <ept> was published on vring0
    fault <kind> <detail>           a fault was injected (``--fault``)

``<ept>`` is the endpoint's name through :func:`rprocd.names.safe_name` (so a
hostile name stays one word) and ``<hex>`` the first 8 bytes of the payload
(``-`` when it is empty); ``<idx>`` is the index (0 to 65535) of the used
entry that publishes it, the index space of the host's ``avail.used_event``.
Name-service messages are not recorded.

A line is written (one ``write(2)`` on an ``O_APPEND`` descriptor) *before*
the used-ring index that publishes its message is stored, so a remote killed
at any instant never published a message its record does not show; at most
the last line of a killed process describes a message that was never
published.  Tests use this to account for every message by sequence number.

Recording lives in :class:`RecordingVring`, a :class:`DeviceVring` that the
core builds instead of the plain one only when recording is on: without
``--record`` the remote's hot path is exactly what it was.
"""

from __future__ import annotations

import os

from ..memory import Span
from ..names import safe_name
from .device_vring import DeviceVring

_NS_ADDR = 53
_HDR_SIZE = 16


class Recorder:
    """The record file and what a ring needs to turn a used entry into a line."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.names: dict[int, str] = {}  # endpoint address -> safe name
        self._bufs: Span | None = None
        self._buf_pa = 0
        self._buf_size = 0

    def attach_memory(self, bufs: Span, buf_pa: int, buf_size: int) -> None:
        """The rpmsg buffer pool (as the core maps it), where the messages are read from."""
        self._bufs, self._buf_pa, self._buf_size = bufs, buf_pa, buf_size

    def name_endpoint(self, addr: int, raw_name: bytes) -> None:
        self.names[addr] = safe_name(raw_name)

    def note(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode("ascii", "backslashreplace"))

    def message(self, direction: str, addr: int, length: int, own_addr_at: int, idx: int) -> None:
        """Record the message in the buffer at ``addr`` (``length`` bytes used) unless it is not one.

        ``own_addr_at`` is the header field (0 = src, 1 = dst) that holds the
        remote endpoint's address: src for what the remote sends, dst for
        what it receives.
        """
        bufs = self._bufs
        off = addr - self._buf_pa
        if bufs is None or not _HDR_SIZE <= length <= self._buf_size or off < 0 or off + length > bufs.size:
            return
        msg = bufs.read(off, min(length, _HDR_SIZE + 8))  # a device copy: never a slice of the window
        src = int.from_bytes(msg[0:4], "little")
        dst = int.from_bytes(msg[4:8], "little")
        if dst == _NS_ADDR:
            return
        n = min(int.from_bytes(msg[12:14], "little"), length - _HDR_SIZE, 8)
        ept = (src, dst)[own_addr_at]
        name = self.names.get(ept) or f"?{ept:#x}"
        data = msg[_HDR_SIZE : _HDR_SIZE + n].hex() or "-"
        os.write(self.fd, f"{direction} {name} {data} {idx}\n".encode())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class RecordingVring(DeviceVring):
    """A device ring that records each message before it publishes its used entry."""

    __slots__ = ("recorder", "direction", "own_addr_at")

    def __init__(
        self,
        window: Span,
        window_pa: int,
        pa: int,
        num: int,
        align: int,
        notifyid: int,
        *,
        recorder: Recorder,
        sends: bool,
    ):
        super().__init__(window, window_pa, pa, num, align, notifyid)
        self.recorder = recorder
        self.direction = "tx" if sends else "rx"
        self.own_addr_at = 0 if sends else 1

    def put_used(self, desc: int, length: int) -> None:
        if desc < self.num:
            addr = self.desc_addr(desc)
            self.recorder.message(self.direction, addr, length, self.own_addr_at, self.used_idx)
        super().put_used(desc, length)
