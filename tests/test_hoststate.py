"""The channel table a restarted rprocd resumes from: written, read back, and distrusted when forged."""

from __future__ import annotations

import struct
import zlib

from rprocd.hoststate import HEADER, MAGIC, RECORD, HostState, SavedChannel
from rprocd.memory import MemoryMap

PA = 0x200CC000
RINGS = (0x200C8000, 0x200C9000)


def state() -> tuple[bytearray, HostState]:
    mem = bytearray(0x2000)
    return mem, HostState(MemoryMap([(PA, mem)]), PA, 0x2000)


def test_round_trip() -> None:
    _, st = state()
    chans = [SavedChannel(b"rpmsg-tty", 1024, 1024), SavedChannel(b"x\xff", 1030, 1025, 3)]
    assert st.save(RINGS, 8, chans)
    assert st.load(RINGS, 8) == chans
    assert "other vrings" in str(st.load((0x200C8000, 0x200CA000), 8))
    st.clear()
    assert "no saved host state" in str(st.load(RINGS, 8))


def forge(mem: bytearray, chans: list[tuple[bytes, int, int]]) -> None:
    body = b"".join(RECORD.pack(n, r, lo, 0) for n, r, lo in chans)
    mem[: HEADER.size] = HEADER.pack(MAGIC, 1, *RINGS, 8, len(chans), zlib.crc32(body))
    mem[HEADER.size : HEADER.size + len(body)] = body


def test_forged_tables_are_refused() -> None:
    mem, st = state()
    forge(mem, [(b"a", 1024, 1024), (b"b", 1025, 1024)])
    assert "twice" in str(st.load(RINGS, 8))
    forge(mem, [(b"a", 1024, 53)])
    assert "no host gave out" in str(st.load(RINGS, 8))
    forge(mem, [(b"a", 1024, 1024)])
    mem[HEADER.size] ^= 1  # a byte flipped after the checksum was written
    assert "checksum" in str(st.load(RINGS, 8))
    mem[20:24] = struct.pack("<I", 10**6)  # count
    assert "claims" in str(st.load(RINGS, 8))


def test_no_room_means_no_resume() -> None:
    st = HostState(MemoryMap([(PA, bytearray(16))]), PA, 0)
    assert not st.usable and not st.save(RINGS, 8, [])
    assert "no room" in str(st.load(RINGS, 8))
