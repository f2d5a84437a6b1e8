"""The host side of the split ring on a plain bytearray: layout, publication, checks."""

from __future__ import annotations

import struct

import pytest

from rprocd.memory import span_over
from rprocd.vring import (
    VRING_AVAIL_F_NO_INTERRUPT,
    VRING_DESC_F_WRITE,
    VRING_USED_F_NO_NOTIFY,
    Vring,
    VringError,
    vring_offsets,
)

PA = 0x200C8000


def test_layout_matches_vring_init() -> None:
    # num 8, align 16: desc 128 bytes, avail 22 bytes -> 150, used aligned to 160, size 160 + 70
    assert vring_offsets(PA, 8, 16) == (128, 160, 230)
    # the classic virtio-pci layout: num 256, align 4096
    assert vring_offsets(0, 256, 4096) == (4096, 8192, 8192 + 6 + 8 * 256)
    with pytest.raises(ValueError, match="power of two"):
        vring_offsets(PA, 6, 16)
    with pytest.raises(ValueError, match="alignment"):
        vring_offsets(PA, 8, 24)


def make(num: int = 8) -> tuple[bytearray, Vring]:
    mem = bytearray(0x1000)
    return mem, Vring(span_over(mem, PA), PA, num, 16)


def used_push(mem: bytearray, num: int, idx: int, desc: int, length: int) -> None:
    """Play the device: write used entry ``idx`` and publish it."""
    _, used, _ = vring_offsets(PA, num, 16)
    struct.pack_into("<II", mem, used + 4 + 8 * (idx % num), desc, length)
    struct.pack_into("<H", mem, used + 2, (idx + 1) & 0xFFFF)


def test_add_is_invisible_until_publish() -> None:
    mem, vr = make()
    vr.add(3, 0x200CA000, 512, VRING_DESC_F_WRITE)
    assert struct.unpack_from("<QIHH", mem, 3 * 16) == (0x200CA000, 512, VRING_DESC_F_WRITE, 0)
    assert struct.unpack_from("<HH", mem, 128) == (0, 0)  # avail.idx still 0
    assert struct.unpack_from("<H", mem, 128 + 4)[0] == 3  # ring[0] = 3
    vr.publish()
    assert struct.unpack_from("<H", mem, 128 + 2)[0] == 1
    with pytest.raises(ValueError, match="already with the remote"):
        vr.add(3, 0, 0, 0)


def test_used_entries_come_back_in_order_and_wrap() -> None:
    mem, vr = make()
    for i in range(70000):  # more than 2**16: indices wrap
        vr.add(i % 8, 0x200CA000, 512, 0)
        vr.publish()
        used_push(mem, 8, i, i % 8, 16 + i % 100)
        assert vr.used_pending() == 1
        assert vr.pop_used() == (i % 8, 16 + i % 100)
        assert vr.used_pending() == 0
    assert vr.last_used == 70000 & 0xFFFF


def test_index_jump_beyond_outstanding_is_an_error() -> None:
    mem, vr = make()
    vr.add(0, 0, 16, 0)
    _, used, _ = vring_offsets(PA, 8, 16)
    struct.pack_into("<H", mem, used + 2, 5)  # claims 5 used with only 1 outstanding
    with pytest.raises(VringError, match="only 1 buffers"):
        vr.used_pending()


def test_used_id_not_outstanding_is_an_error() -> None:
    mem, vr = make()
    vr.add(0, 0, 16, 0)
    used_push(mem, 8, 0, 5, 16)  # descriptor 5 was never handed out
    assert vr.used_pending() == 1
    with pytest.raises(VringError, match="descriptor 5"):
        vr.pop_used()
    mem2, vr2 = make()
    vr2.add(0, 0, 16, 0)
    used_push(mem2, 8, 0, 0xFFFFFFFF, 16)  # wild id
    with pytest.raises(VringError, match="not with the remote"):
        vr2.pop_used()


def test_flags() -> None:
    mem, vr = make()
    _, used, _ = vring_offsets(PA, 8, 16)
    assert vr.kick_needed()
    struct.pack_into("<H", mem, used, VRING_USED_F_NO_NOTIFY)
    assert not vr.kick_needed()
    vr.want_interrupts(False)
    assert struct.unpack_from("<H", mem, 128)[0] == VRING_AVAIL_F_NO_INTERRUPT
    vr.want_interrupts(True)
    assert struct.unpack_from("<H", mem, 128)[0] == 0


def test_reset_zeroes_only_the_ring() -> None:
    mem = bytearray(b"\xaa" * 0x1000)
    vr = Vring(span_over(mem, PA), PA, 8, 16)
    vr.reset()
    assert mem[:230] == bytes(230) and mem[230:] == b"\xaa" * (0x1000 - 230)


def test_too_small_buffer() -> None:
    with pytest.raises(ValueError, match="needs"):
        Vring(span_over(bytearray(100), PA), PA, 8, 16)


def test_barriers_sit_where_linux_puts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """virtio_wmb before the avail.idx store, virtio_mb before reading used.flags, virtio_rmb after used.idx."""
    from rprocd import vring as vring_mod
    from rprocd.memory import Span

    events: list[object] = []
    for name in ("_WMB", "_RMB", "_MB"):
        monkeypatch.setattr(vring_mod, name, lambda name=name: events.append(name[1:].lower()))
    words = Span.words

    def recording(self: Span, width: int, off: int, count: int):
        get, put = words(self, width, off, count)

        def load(i: int) -> int:
            events.append(("load", self.pa + off + i * width - PA))
            return get(i)

        def store(i: int, v: int) -> None:
            events.append(("store", self.pa + off + i * width - PA))
            put(i, v)

        return load, store

    monkeypatch.setattr(Span, "words", recording)
    mem, vr = make()
    avail, used, _ = vring_offsets(PA, 8, 16)
    vr.add(3, 0x2000, 64, 0)
    events.clear()
    vr.publish()
    assert events == ["wmb", ("store", avail + 2)]
    events.clear()
    vr.kick_needed()
    assert events == ["mb", ("load", used)]
    used_push(mem, 8, 0, 3, 64)
    events.clear()
    assert vr.used_pending() == 1
    assert events == [("load", used + 2), "rmb"]
