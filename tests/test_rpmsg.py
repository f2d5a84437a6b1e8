"""The rpmsg bus on a plain bytearray, with the simulated remote's device-side rings as the peer."""

from __future__ import annotations

import pytest

from rprocd import rsc_table as rt
from rprocd.layout import TCC807X
from rprocd.memory import MemoryMap, span_over
from rprocd.rpmsg import HDR, NS_MSG, RPMSG_NS_ADDR, Channel, RpmsgError
from rprocd.session import Session, read_table
from rprocd.sim.device_vring import DeviceVring
from rprocd.vring import UsedRecord, Vring

L = TCC807X


class Events:
    def __init__(self) -> None:
        self.added: list[Channel] = []
        self.removed: list[Channel] = []
        self.got: list[tuple[str, int, bytes]] = []
        self.accept = True
        self.queue_it = False  # play a consumer that had to queue the message for a slow reader

    def channel_added(self, ch: Channel) -> None:
        self.added.append(ch)

    def channel_removed(self, ch: Channel) -> None:
        self.removed.append(ch)

    def can_deliver(self, ch: Channel) -> bool:
        return self.accept

    def deliver(self, ch: Channel, src: int, payload: bytes) -> bool:
        self.got.append((ch.name, src, payload))
        return not self.queue_it


class Remote:
    """Just enough of a remote to drive the host's bus: device-side rings over the same memory."""

    def __init__(self, mem: bytearray):
        self.mem = mem
        view = span_over(mem, L.window.pa)
        self.tx = DeviceVring(view, L.window.pa, 0x200C8000, 8, 16, 0)  # remote sends on vring0
        self.rx = DeviceVring(view, L.window.pa, 0x200C9000, 8, 16, 1)

    def send(self, src: int, dst: int, payload: bytes) -> None:
        assert self.tx.avail_pending(), "the host posted no buffer"
        d, addr, ln, _fl = self.tx.peek()
        self.tx.advance()
        off = addr - L.window.pa
        msg = HDR.pack(src, dst, 0, len(payload), 0) + payload
        self.mem[off : off + len(msg)] = msg
        self.tx.put_used(d, len(msg))

    def receive(self) -> list[tuple[int, int, bytes]]:
        out = []
        while self.rx.avail_pending():
            d, addr, ln, _fl = self.rx.peek()
            self.rx.advance()
            off = addr - L.window.pa
            src, dst, _r, n, _f = HDR.unpack_from(self.mem, off)
            out.append((src, dst, bytes(self.mem[off + 16 : off + 16 + n])))
            self.rx.put_used(d, ln)
        return out

    def announce(self, name: bytes, addr: int, flags: int = 0) -> None:
        self.send(addr, RPMSG_NS_ADDR, NS_MSG.pack(name, addr, flags))


@pytest.fixture
def rig() -> tuple[Session, Remote, Events]:
    mem = bytearray(L.window.size)
    t = rt.build([rt.Vdev(7, 0, 1, 0, 0, (rt.VdevVring(0x200C8000, 16, 8, 0), rt.VdevVring(0x200C9000, 16, 8, 1)))])
    off = L.table_pa - L.window.pa
    mem[off : off + len(t)] = t
    ev = Events()
    m = MemoryMap([(L.window.pa, mem)])
    s = Session(m, L, read_table(m, L), ev)
    assert s.attach() == [0]
    return s, Remote(mem), ev


def test_handshake_order_and_features(rig) -> None:
    s, remote, _ = rig
    raw = s.mem.read(L.table_pa, 128)
    (vdev,) = rt.parse(raw).vdevs
    assert vdev.status == 7 and vdev.gfeatures == 1
    assert remote.tx.avail_pending() == 8  # every receive buffer posted
    assert remote.rx.avail_pending() == 0


def test_name_service_create_message_destroy(rig) -> None:
    s, remote, ev = rig
    bus = s.bus
    remote.announce(b"rpmsg-tty", 1024)
    remote.announce(b"rpmsg-x", 1025)
    bus.process_rx()
    assert [(c.name, c.remote, c.local) for c in ev.added] == [("rpmsg-tty", 1024, 1024), ("rpmsg-x", 1025, 1025)]
    tty = ev.added[0]
    assert bus.send_to(tty, b"hello")
    # receive buffers re-posted, one message queued: only vring1 is kicked, the remote had 6 buffers left
    assert bus.flush() == [1] and bus.owed_kicks() == [0] and bus.owed_kicks() == []
    assert remote.receive() == [(1024, 1024, b"hello")]
    remote.send(1024, tty.local, b"world")
    bus.process_rx()
    assert ev.got == [("rpmsg-tty", 1024, b"world")]
    remote.announce(b"rpmsg-x", 1025, 1)  # destroy
    bus.process_rx()
    assert [c.name for c in ev.removed] == ["rpmsg-x"]
    assert bus.stats.ns_created == 2 and bus.stats.ns_destroyed == 1


def test_unknown_address_and_bad_messages_are_counted(rig) -> None:
    s, remote, ev = rig
    bus = s.bus
    remote.send(1024, 4000, b"nobody")
    remote.send(1024, RPMSG_NS_ADDR, b"short")  # not a 40-byte ns message
    remote.announce(b"x" * 32, 1030)  # no NUL
    remote.announce(b"ok", 0xFFFFFFFF)  # RPMSG_ADDR_ANY is no address
    bus.process_rx()
    assert bus.stats.rx_unknown_dst == 1
    assert bus.stats.ns_bad == 3
    assert ev.added == [] and ev.got == []
    assert remote.tx.avail_pending() == 4 and bus.flush() == []  # the four buffers go back (4 left: no kick)...
    assert remote.tx.avail_pending() == 8  # ...once published


def test_new_receive_buffers_are_kicked_for_only_when_the_remote_had_none_left(rig) -> None:
    s, remote, ev = rig
    bus = s.bus
    remote.announce(b"src", 1024)
    bus.process_rx()
    assert bus.flush() == []  # 7 buffers left: it finds the new one when it needs it
    for i in range(8):
        remote.send(1024, ev.added[0].local, bytes([i]))
    assert not remote.tx.avail_pending()  # every buffer used: the remote waits for one
    bus.process_rx()
    assert bus.flush() == [0] and bus.owed_kicks() == []  # kicked: nothing owed
    remote.tx.kick_wanted(False)  # VRING_USED_F_NO_NOTIFY: an awake remote is never kicked
    for i in range(8):
        remote.send(1024, ev.added[0].local, bytes([i]))
    bus.process_rx()
    assert bus.flush() == [] and bus.owed_kicks() == []


def test_refused_delivery_stays_in_the_ring(rig) -> None:
    s, remote, ev = rig
    bus = s.bus
    remote.announce(b"a", 1024)
    bus.process_rx()
    ch = ev.added[0]
    ev.accept = False
    remote.send(1024, ch.local, b"1")
    remote.send(1024, ch.local, b"2")
    assert bus.process_rx() == 0
    assert ev.got == []
    ev.accept = True
    assert bus.process_rx() == 2
    assert [p for _, _, p in ev.got] == [b"1", b"2"]


def test_message_queued_for_a_slow_reader_stays_in_the_ring_until_it_is_out(rig) -> None:
    s, remote, ev = rig
    bus, rx = s.bus, s.rings[0]
    remote.announce(b"a", 1024)
    bus.process_rx()
    ch = ev.added[0]
    ev.queue_it = True
    remote.send(1024, ch.local, b"1")
    remote.send(1024, ch.local, b"2")
    assert bus.process_rx() == 0
    assert [p for _, _, p in ev.got] == [b"1"]  # handed over once, and nothing after it taken
    assert rx.used_event() == 1  # used_event: a successor would deliver "1" again
    ev.accept = False  # the reader has not caught up
    assert bus.process_rx() == 0
    ev.accept, ev.queue_it = True, False
    assert bus.process_rx() == 1  # "1" is now out: recorded, its buffer re-posted; then "2"
    assert [p for _, _, p in ev.got] == [b"1", b"2"]
    assert rx.used_event() == 3


def test_transmit_pool_runs_dry_then_refills(rig) -> None:
    s, remote, ev = rig
    bus = s.bus
    remote.announce(b"sink", 1024)
    bus.process_rx()
    ch = ev.added[0]
    for i in range(8):
        assert bus.send_to(ch, bytes([i]))
    assert not bus.send_to(ch, b"more")  # all 8 with the remote
    bus.flush()
    assert [p for _, _, p in remote.receive()] == [bytes([i]) for i in range(8)]
    assert bus.reclaim_tx() == 8 and bus.tx_free() == 8
    with pytest.raises(RpmsgError, match="exceeds 496"):
        bus.send_to(ch, b"z" * 497)


def test_a_batch_of_records_is_sent_in_order_and_stops_at_an_oversized_one_or_an_empty_pool(rig) -> None:
    s, remote, ev = rig
    bus = s.bus
    remote.announce(b"sink", 1024)
    bus.process_rx()
    ch = ev.added[0]
    stride = 520  # header room, then up to 497 bytes: the socket export's layout
    buf = bytearray(stride * 10)
    payloads = [b"", b"a", b"bc" * 100, b"d" * 496, b"e", b"f", b"g", b"h", b"i", b"j"]
    lens = [len(p) for p in payloads]
    for i, p in enumerate(payloads):
        buf[i * stride + HDR.size : i * stride + HDR.size + len(p)] = p
    view = memoryview(buf)
    lens[4] = 497  # one byte more than a message holds: refused, and the batch stops before it
    assert bus.send_many(ch, view, stride, lens, 10) == 4
    lens[4] = 1
    assert bus.send_many(ch, view[4 * stride :], stride, lens[4:], 6) == 4  # the pool runs dry after 8
    assert bus.stats.tx_waits == 1 and bus.tx_free() == 0
    bus.flush()
    assert remote.receive() == [(ch.local, 1024, p) for p in payloads[:8]]
    assert ch.tx_msgs == bus.stats.tx_msgs == 8 and ch.tx_bytes == sum(map(len, payloads[:8]))
    host = bus.create_endpoint("no-peer-yet")
    with pytest.raises(RpmsgError, match="does not know its remote address"):
        bus.send_many(host, view, stride, lens, 1)


def test_host_endpoint_learns_its_peer(rig) -> None:
    s, remote, ev = rig
    bus = s.bus
    ch = bus.create_endpoint("host-ept", announce=True)
    bus.flush()
    assert remote.receive() == [(ch.local, RPMSG_NS_ADDR, NS_MSG.pack(b"host-ept", ch.local, 0))]
    with pytest.raises(RpmsgError, match="does not know its remote address"):
        bus.send_to(ch, b"x")
    remote.send(2000, ch.local, b"hi")
    bus.process_rx()
    assert ch.remote == 2000 and bus.send_to(ch, b"back")
    with pytest.raises(RpmsgError, match="exists already"):
        bus.create_endpoint("host-ept")


class StagingEvents(Events):
    """A consumer that hands messages over in runs (``flush_deliveries``), like the socket export."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[list[bytes]] = []
        self.staged: list[bytes] = []
        self.unsent = 0  # how many of the last staged the next flush cannot hand over
        self.used_event_at_flush: list[int] = []
        self.bus_rx: Vring | None = None

    def deliver(self, ch: Channel, src: int, payload: bytes) -> bool:
        self.staged.append(payload)
        return True

    def flush_deliveries(self, record: UsedRecord | None = None) -> int:
        assert self.bus_rx is not None and record is not None
        record.commit()  # as the socket export does before its first send
        self.used_event_at_flush.append(self.bus_rx.used_event())
        self.runs.append(self.staged)
        self.staged = []
        n, self.unsent = self.unsent, 0
        return n


def test_staged_deliveries_are_accepted_as_a_run_and_a_partial_run_stays_in_the_ring() -> None:
    mem = bytearray(L.window.size)
    t = rt.build([rt.Vdev(7, 0, 1, 0, 0, (rt.VdevVring(0x200C8000, 16, 8, 0), rt.VdevVring(0x200C9000, 16, 8, 1)))])
    off = L.table_pa - L.window.pa
    mem[off : off + len(t)] = t
    ev = StagingEvents()
    m = MemoryMap([(L.window.pa, mem)])
    s = Session(m, L, read_table(m, L), ev)
    s.attach()
    bus = s.bus
    ev.bus_rx = bus.rx
    remote = Remote(mem)
    remote.announce(b"tty", 1024)
    bus.process_rx()
    bus.flush()
    (tty,) = ev.added
    for i in range(5):
        remote.send(1024, tty.local, b"%d" % i)
    bus.process_rx()
    # one run of 5, recorded as accepted (used_event = 1 announcement + 5) before it was handed over
    assert ev.runs == [[b"0", b"1", b"2", b"3", b"4"]] and ev.used_event_at_flush == [6]
    bus.flush()
    assert remote.tx.avail_pending() == 8  # every buffer re-posted
    for i in range(5, 9):
        remote.send(1024, tty.local, b"%d" % i)
    ev.unsent = 2  # a full block client keeps the last 2 of this run queued
    bus.process_rx()
    assert ev.runs[-1] == [b"5", b"6", b"7", b"8"]
    assert bus.rx.used_event() == 6 + 2  # the 2 stay unaccepted in the ring
    assert bus.rx_held and bus.stats.parked == 2
    bus.flush()
    assert remote.tx.avail_pending() == 6  # their buffers are not re-posted yet
    ev.accept = False
    assert bus.process_rx() == 0  # the slow reader still has them
    ev.accept = True
    bus.process_rx()  # out now: accepted and re-posted
    bus.flush()
    assert bus.rx.used_event() == 10 and remote.tx.avail_pending() == 8 and not bus.rx_held
