"""Hypothesis: generated tables and ring states, valid and broken.

Whatever the remote writes, the host side raises only its documented error
types (:class:`TableError`, :class:`AttachError`, :class:`VringError`) and
never touches memory outside the maps (a :class:`MemoryAccessError` or an
``IndexError`` escaping would fail these tests).  3 x 3 500 examples run per
CI run.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rprocd import rsc_table as rt
from rprocd.layout import TCC807X
from rprocd.memory import MemoryMap
from rprocd.rpmsg import HDR, NS_MSG, Channel
from rprocd.session import AttachError, Session, read_table
from rprocd.vring import VringError, vring_offsets

L = TCC807X
FUZZ = settings(max_examples=3500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Events:
    def __init__(self) -> None:
        self.added: list[Channel] = []
        self.delivered = 0

    def channel_added(self, ch: Channel) -> None:
        self.added.append(ch)

    def channel_removed(self, ch: Channel) -> None:
        pass

    def can_deliver(self, ch: Channel) -> bool:
        return True

    def deliver(self, ch: Channel, src: int, payload: bytes) -> bool:
        assert len(payload) <= 496
        self.delivered += 1
        return True


def window() -> tuple[bytearray, MemoryMap]:
    mem = bytearray(L.window.size)
    return mem, MemoryMap([(L.window.pa, mem)])


def put(mem: bytearray, pa: int, data: bytes) -> None:
    off = pa - L.window.pa
    mem[off : off + len(data)] = data


def seed_table(**vdev_kw: object) -> bytes:
    vdev = dict(
        id=7, notifyid=0, dfeatures=1, gfeatures=0, status=0,
        vrings=(rt.VdevVring(0x200C8000, 16, 8, 0), rt.VdevVring(0x200C9000, 16, 8, 1)),
    )  # fmt: skip
    vdev.update(vdev_kw)
    return rt.build([rt.Vdev(**vdev), rt.Trace(da=0x200C7400, len=0xC00, name="Zephyr_log")])  # type: ignore[arg-type]


u32 = st.integers(0, 0xFFFFFFFF)
vring_fields = st.tuples(
    st.one_of(u32, st.sampled_from([0x200C8000, 0x200C9000, rt.FW_RSC_ADDR_ANY, 0x200C8004])),
    st.sampled_from([0, 1, 3, 16, 4096, 1 << 31]),
    st.sampled_from([0, 1, 2, 8, 6, 256, 32768, 65536]),
    st.integers(0, 3),
)


@FUZZ
@given(
    vr=st.lists(vring_fields, min_size=0, max_size=3),
    vid=st.sampled_from([7, 7, 7, 3]),
    config=st.binary(max_size=8),
    flips=st.lists(st.tuples(st.integers(0, 0x1000 - 1), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 0x1000),
)
def test_generated_tables_attach_or_fail_cleanly(vr, vid, config, flips, cut) -> None:
    vrings = tuple(rt.VdevVring(da, align, num, nid) for da, align, num, nid in vr)
    raw = bytearray(seed_table(id=vid, vrings=vrings, config=config))
    raw = raw[: max(cut, 16)] if cut < len(raw) and cut % 3 == 0 else raw
    for off, val in flips:
        if off < len(raw) and off >= 4:  # keep ver: a table being written is covered by ver != 1
            raw[off] = val
    mem, m = window()
    put(mem, L.table_pa, bytes(raw[: L.rsc_size]))
    try:
        view = read_table(m, L)
    except (rt.TableError, AttachError):
        return
    s = Session(m, L, view, Events())
    kicks = s.attach()
    assert kicks == [view.notifyids[0]]
    for pa, region in zip(view.vring_pa, L.vrings, strict=True):
        assert region.contains(pa)


def attached() -> tuple[bytearray, MemoryMap, Session, Events]:
    mem, m = window()
    put(mem, L.table_pa, seed_table())
    ev = Events()
    s = Session(m, L, read_table(m, L), ev)
    s.attach()
    return mem, m, s, ev


used_entry = st.tuples(st.one_of(st.integers(0, 9), u32), st.one_of(st.integers(0, 600), u32))
header = st.tuples(u32, st.sampled_from([53, 1024, 1025, 0xFFFFFFFF]), st.one_of(st.integers(0, 520), st.just(40)))


@FUZZ
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 1),  # which ring the remote writes
            st.integers(0, 0xFFFF),  # used.idx it claims
            st.lists(used_entry, max_size=8),
            st.lists(header, max_size=8),
            st.binary(max_size=40),
        ),
        max_size=4,
    )
)
def test_hostile_ring_states(steps) -> None:
    mem, m, s, ev = attached()
    bus = s.bus
    ns = NS_MSG.pack(b"rpmsg-x", 1024, 0)
    for ring, idx, entries, headers, junk in steps:
        vr = s.rings[ring]
        _, used, _ = vring_offsets(vr.pa, vr.num, vr.align)
        for i, (d, ln) in enumerate(entries):
            put(mem, vr.pa + used + 4 + 8 * ((vr.last_used + i) % vr.num), struct.pack("<II", d, ln))
        for i, (src, dst, ln) in enumerate(headers):
            pa = L.buffers.pa + i * 512
            put(mem, pa, HDR.pack(src, dst, 0, ln & 0xFFFF, 0) + (ns if dst == 53 else junk))
        put(mem, vr.pa + used + 2, struct.pack("<H", idx))
        try:
            bus.reclaim_tx()
            bus.process_rx()
            bus.flush()
        except VringError:
            return  # the daemon ends (and resets) the session
        assert 0 <= bus.tx_free() <= bus.num
        assert 0 <= s.rings[0].inflight <= bus.num


@FUZZ
@given(
    avail=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2),
    used=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2),
    events=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2),
    ids=st.lists(st.integers(0, 12), min_size=16, max_size=16),
    descs=st.lists(st.tuples(u32, st.integers(0, 600), st.integers(0, 3)), min_size=16, max_size=16),
)
def test_resume_from_any_ring_state(avail, used, events, ids, descs) -> None:
    """A predecessor's rings in any state: resume adopts them or says why not."""
    mem, m, s, _ = attached()
    s.bus.close()
    for k, vr in enumerate(s.rings):
        a, u, _ = vring_offsets(vr.pa, vr.num, vr.align)
        put(mem, vr.pa + a + 2, struct.pack("<H", avail[k]))
        put(mem, vr.pa + a + 4 + 2 * vr.num, struct.pack("<H", events[k]))
        put(mem, vr.pa + u + 2, struct.pack("<H", used[k]))
        for i in range(vr.num):
            put(mem, vr.pa + a + 4 + 2 * i, struct.pack("<H", ids[k * 8 + i]))
            put(mem, vr.pa + u + 4 + 8 * i, struct.pack("<I", ids[(k * 8 + i + 3) % 16]))
            addr, ln, fl = descs[k * 8 + i]
            if ln % 2:  # half the time, a descriptor a host like us wrote
                addr, ln, fl = L.buffers.pa + (k * 8 + i) * 512, 512 if k == 0 else 16 + ln % 497, 2 if k == 0 else 0
            put(mem, vr.pa + 16 * i, struct.pack("<QIHH", addr, ln, fl, 0))
    fresh = Session(m, L, read_table(m, L), Events())
    result = fresh.resume()
    if isinstance(result, str):
        return
    bus = fresh.bus
    assert 0 <= bus.tx_free() <= bus.num
    assert fresh.rings[0].inflight + fresh.rings[1].inflight <= 2 * bus.num
    # every transmit buffer is either free or with the remote, never both
    out = set(fresh.rings[1].outstanding())
    assert out.isdisjoint(bus._free) and len(out) + len(bus._free) == bus.num
