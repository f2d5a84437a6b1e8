"""MemoryMap: bounds, alignment, and device-safe block copies giving the same bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rprocd.memory import MemoryAccessError, MemoryMap, block_copy


def test_bounds_and_windows() -> None:
    m = MemoryMap([(0x1000, bytearray(0x100)), (0x3000, bytearray(0x10))])
    assert m.contains(0x1000, 0x100) and not m.contains(0x10FF, 2)
    assert not m.contains(0x1100 - 8, 16)  # straddles the end
    assert not m.contains(0x2000, 1)
    with pytest.raises(MemoryAccessError, match="outside"):
        m.view(0x10F0, 0x20)
    with pytest.raises(MemoryAccessError):
        m.view(-4, 4)
    with pytest.raises(MemoryAccessError, match="not naturally aligned"):
        m.read_u32(0x1002)
    m.write_u32(0x1004, 0xDEADBEEF)
    assert m.read_u16(0x1004) == 0xBEEF and m.read_u8(0x1007) == 0xDE


def test_overlapping_windows_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        MemoryMap([(0x1000, bytearray(0x100)), (0x1080, bytearray(0x100))])


@given(st.binary(max_size=600), st.integers(0, 7), st.booleans())
def test_device_copy_equals_plain_copy(data: bytes, offset: int, device: bool) -> None:
    mem = bytearray(0x400)
    m = MemoryMap([(0x200CA000, mem)], device=device)
    m.write(0x200CA000 + offset, data)
    assert bytes(mem[offset : offset + len(data)]) == data
    assert m.read(0x200CA000 + offset, len(data)) == data
    assert mem[:offset] == bytes(offset)  # nothing before it touched


def test_block_copy_head_words_tail() -> None:
    src = bytes(range(23))
    dst = bytearray(23)
    block_copy(memoryview(dst), memoryview(src), 0x1001)
    assert bytes(dst) == src
