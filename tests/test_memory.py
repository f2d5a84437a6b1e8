"""The one door to shared memory: bounds, alignment, device copies (native and Python alike)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rprocd import memory, native
from rprocd.layout import TCC807X as L
from rprocd.memory import IoBuffer, MemoryAccessError, MemoryMap, Span
from rprocd.rpmsg import Channel
from rprocd.session import Session, read_table
from rprocd.sim.core import ATTACHED, RemoteCore


def test_bounds_and_windows() -> None:
    m = MemoryMap([(0x1000, bytearray(0x100)), (0x3000, bytearray(0x10))])
    assert m.contains(0x1000, 0x100) and not m.contains(0x10FF, 2)
    assert not m.contains(0x1100 - 8, 16)  # straddles the end
    assert not m.contains(0x2000, 1)
    with pytest.raises(MemoryAccessError, match="outside"):
        m.span(0x10F0, 0x20)
    with pytest.raises(MemoryAccessError):
        m.span(-4, 4)
    with pytest.raises(MemoryAccessError, match="not naturally aligned"):
        m.read_u32(0x1002)
    with pytest.raises(MemoryAccessError, match="not naturally aligned"):
        m.write_u64(0x1004, 0)
    m.write_u32(0x1004, 0xDEADBEEF)
    assert m.read_u16(0x1004) == 0xBEEF and m.read_u8(0x1007) == 0xDE
    m.write_u64(0x1008, 0x1122334455667788)
    assert m.read_u32(0x100C) == 0x11223344


def test_span_offsets_are_checked_against_the_span() -> None:
    s = MemoryMap([(0x1000, bytearray(0x100))]).span(0x1010, 0x10)
    s.store32(0xC, 1)
    for bad in (0x10, -4):
        with pytest.raises(MemoryAccessError, match="outside"):
            s.store32(bad, 1)
    with pytest.raises(MemoryAccessError, match="outside"):
        s.read(8, 9)
    with pytest.raises(MemoryAccessError, match="outside"):
        s.span(8, 9)


def test_a_closed_map_refuses_access() -> None:
    m = MemoryMap([(0x1000, bytearray(0x100))])
    s = m.span(0x1000, 0x100)
    m.close()
    with pytest.raises((MemoryAccessError, ValueError)):
        s.write(0, b"late")  # refused (closed, or a released view), never an access
    with pytest.raises(ValueError):
        s.load32(0)  # a released view: refused, never a stray access


def test_overlapping_windows_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        MemoryMap([(0x1000, bytearray(0x100)), (0x1080, bytearray(0x100))])


@pytest.fixture
def python_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Select the pure-Python device copies (what runs without the native helper)."""
    monkeypatch.setattr(memory, "PATH", "python")


def _copies(data: bytes, offset: int, fill_at: int, fill_n: int, byte: int) -> tuple[bytes, bytes, bytes]:
    raw = bytearray(b"\xa5" * 0x300)
    m = MemoryMap([(0x200CA000, raw)], device=True)
    s = m.span(0x200CA000, 0x300)
    s.write(offset, data)
    after_write = bytes(raw)
    io = IoBuffer(len(data) + 9)
    io.data[:] = b"\x5a" * len(io.data)
    s.read_into(offset, len(data), io.data, at=offset % 9)
    assert s.read(offset, len(data)) == data
    s.fill(fill_at, fill_n, byte)
    return after_write, bytes(io.data), bytes(raw)


PATHS = ["python", "ctypes"] + (["extension"] if native.SPAN is not None else [])


def test_the_extension_is_what_loads_here() -> None:
    """The test environment has gcc and Python.h: rprocd runs on the extension (the fastest path)."""
    assert memory.PATH == "extension", native.KIND


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=600),
    offset=st.integers(0, 15),
    fill_at=st.integers(0, 0x100),
    fill_n=st.integers(0, 0x1FF),
    byte=st.integers(0, 255),
)
def test_native_and_python_copies_agree(data: bytes, offset: int, fill_at: int, fill_n: int, byte: int) -> None:
    """Same bytes moved, nothing outside the range touched, on both paths."""
    saved = memory.PATH
    results = {}
    try:
        for name in PATHS:
            memory.PATH = name
            results[name] = _copies(data, offset, fill_at, fill_n, byte)
    finally:
        memory.PATH = saved
    native_result = results["python"]
    assert all(r == native_result for r in results.values()), results.keys()
    after_write, read_back, after_fill = native_result
    n = len(data)
    assert after_write == b"\xa5" * offset + data + b"\xa5" * (0x300 - offset - n)
    at = offset % 9
    assert read_back == b"\x5a" * at + data + b"\x5a" * (9 - at)
    expect = bytearray(after_write)
    expect[fill_at : fill_at + fill_n] = bytes([byte]) * fill_n
    assert after_fill == bytes(expect)


# -- every access in the hot path: one aligned load or store of 1, 2, 4 or 8 bytes ---------------

Access = tuple[str, int, int]  # (op, physical address, width)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch, python_copies: None) -> Iterator[list[Access]]:
    """Record every load and store made through a Span (the copies, in Python, decompose into them)."""
    log: list[Access] = []
    for width in (8, 16, 32, 64):
        for op in ("load", "store"):
            name = f"{op}{width}"
            orig = getattr(Span, name)

            def spy(self: Span, off: int, *value: int, _orig=orig, _name=name, _w=width // 8) -> object:
                log.append((_name, self.pa + off, _w))
                return _orig(self, off, *value)

            monkeypatch.setattr(Span, name, spy)
    yield log


class Events:
    def __init__(self) -> None:
        self.added: list[Channel] = []
        self.got: list[tuple[str, int, bytes]] = []

    def channel_added(self, ch: Channel) -> None:
        self.added.append(ch)

    def channel_removed(self, ch: Channel) -> None:
        pass

    def can_deliver(self, ch: Channel) -> bool:
        return True

    def deliver(self, ch: Channel, src: int, payload: bytes) -> bool:
        self.got.append((ch.name, src, payload))
        return True


def test_every_hot_path_access_is_aligned_to_its_width(recorded: list[Access]) -> None:
    """Attach, name service, echoes of every length class, sink and host-state saves, host and remote side."""
    window = bytearray(L.window.size)
    core = RemoteCore(memoryview(window), L)
    core.boot()
    mem = MemoryMap([(L.window.pa, window)], device=True)
    ev = Events()
    s = Session(mem, L, read_table(mem, L), ev)
    s.attach()
    core.service()
    assert core.state == ATTACHED
    s.bus.process_rx()
    echo = next(c for c in ev.added if c.name == "rpmsg-client-sample")
    sink = next(c for c in ev.added if c.name == "rpmsg-sink")
    sent = []
    for n in [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 63, 255, 256, 257, 495, 496]:
        payload = bytes((i * 7 + n) & 0xFF for i in range(n))
        assert s.bus.send_to(echo, payload)
        assert s.bus.send_to(sink, payload)
        s.bus.flush()
        core.service()
        s.bus.reclaim_tx()
        s.bus.process_rx()
        s.bus.flush()
        sent.append(payload)
    assert [p for name, _, p in ev.got if name == "rpmsg-client-sample"] == sent
    widths = {w for _, _, w in recorded}
    assert widths == {1, 2, 4, 8}, widths  # the copies' words and bytes, the rings' 16/32-bit fields
    bad = [(op, hex(pa), w) for op, pa, w in recorded if pa % w]
    assert not bad, bad[:10]
    outside = [(op, hex(pa)) for op, pa, w in recorded if not L.window.contains(pa, w)]
    assert not outside, outside[:10]
    core.release()
    mem.close()
