"""The little the host keeps in shared memory so that a restarted rprocd can resume.

A remote that boots by itself cannot re-attach on its own: if rprocd dies
and simply starts over, the remote's session is gone.  Most of what a new
rprocd needs is already in shared memory (the rings, the descriptors, the
buffers, and the host's progress through each used ring, kept in
``avail.used_event``; see :meth:`rprocd.vring.Vring.adopt`).  What is not is
the channel table: which name-service channel got which local address.  The
remote's endpoints learned those addresses from our messages, so a new host
must use the same ones.

That table lives in the host's own part of the buffer carveout, just after the
``2 * num`` rpmsg buffers (the remote only ever touches buffers through
descriptors).  Format, little-endian, 4-byte aligned::

    u32 magic ('RPHS'; 0 while being rewritten)   u32 version (1)
    u32 vring0 pa   u32 vring1 pa   u32 num   u32 count   u32 crc32(records)
    count x { char name[32]; u32 remote; u32 local; u32 flags }

A block that fails any check is ignored: the host then resets the remote.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .memory import MemoryMap
from .names import check_name

MAGIC = 0x53485052  # b"RPHS" little-endian
VERSION = 1
HEADER = struct.Struct("<7I")
RECORD = struct.Struct("<32sIII")
F_HOST_CREATED = 1
F_ANNOUNCED = 2


@dataclass(frozen=True)
class SavedChannel:
    raw_name: bytes
    remote: int
    local: int
    flags: int = 0


class HostState:
    """Reader/writer of the block at ``pa`` (``size`` bytes available)."""

    def __init__(self, mem: MemoryMap, pa: int, size: int):
        self.mem, self.pa, self.size = mem, pa, size
        self.capacity = max(0, (size - HEADER.size) // RECORD.size) if size > 0 else 0

    @property
    def usable(self) -> bool:
        return self.capacity > 0 and self.mem.contains(self.pa, HEADER.size) and self.pa % 4 == 0

    def save(self, vrings: tuple[int, int], num: int, channels: list[SavedChannel]) -> bool:
        """Write the table; False (nothing written but the invalidation) if it does not fit."""
        if not self.usable:
            return False
        self.mem.write_u32(self.pa, 0)
        if len(channels) > self.capacity:
            return False
        body = b"".join(RECORD.pack(c.raw_name, c.remote, c.local, c.flags) for c in channels)
        self.mem.write(
            self.pa + 4, HEADER.pack(0, VERSION, vrings[0], vrings[1], num, len(channels), zlib.crc32(body))[4:]
        )
        self.mem.write(self.pa + HEADER.size, body)
        self.mem.write_u32(self.pa, MAGIC)
        return True

    def clear(self) -> None:
        if self.usable:
            self.mem.write_u32(self.pa, 0)

    def load(self, vrings: tuple[int, int], num: int) -> list[SavedChannel] | str:
        """The saved channels, or the reason there are none to trust."""
        if not self.usable:
            return "the buffer region has no room after the rpmsg buffers for the host state"
        magic, version, v0, v1, n, count, crc = HEADER.unpack(self.mem.read(self.pa, HEADER.size))
        if magic != MAGIC:
            return "no saved host state (an earlier host of another kind, or it died while saving)"
        if version != VERSION:
            return f"saved host state has version {version}, not {VERSION}"
        if (v0, v1, n) != (*vrings, num):
            return "saved host state describes other vrings"
        if count > self.capacity:
            return f"saved host state claims {count} channels, room for {self.capacity}"
        body = self.mem.read(self.pa + HEADER.size, count * RECORD.size)
        if zlib.crc32(body) != crc:
            return "saved host state fails its checksum"
        out = []
        for i in range(count):
            raw, remote, local, flags = RECORD.unpack_from(body, i * RECORD.size)
            nul = raw.find(b"\0")
            out.append(SavedChannel(raw[:nul] if nul >= 0 else raw, remote, local, flags))
        # shared memory is the remote's to scribble on too: only a table we could have written is trusted
        if len({c.local for c in out}) != count or len({c.raw_name for c in out}) != count:
            return "saved host state names a channel twice"
        if any(not 1024 <= c.local < 0xFFFFFFFF for c in out):
            return "saved host state holds a channel no host gave out"
        for c in out:  # the same rule as name service: a name it would refuse is not one we saved
            why = check_name(c.raw_name)
            if why is not None:
                return f"saved host state holds a channel name that name service refuses: {why}"
        return out
