"""The simulated remote (rprocd.sim) against a minimal host written here.

The host below does what sim-board.md says a host does, with the project's
host-side pieces (``Vring``, ``VirtualBoard(role="host")``, ``rsc_table.parse``)
and nothing of the daemon, so these tests pin the remote to the board contract
rather than to whatever the daemon happens to do.  Most tests drive the remote
by hand (``SimRemote.step()``: deterministic, no timing); a few run it in a
thread or as ``python -m rprocd.sim.remote`` to test the loop, signals and speed.
Every wait is bounded by a deadline.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rprocd import rsc_table as rt
from rprocd.board import VirtualBoard
from rprocd.layout import TCC807X, Layout
from rprocd.memory import MemoryMap, span_over
from rprocd.sim.console import RamConsole
from rprocd.sim.core import ATTACHED, FAILED, WAITING
from rprocd.sim.remote import SimRemote, add_arguments
from rprocd.vring import VRING_DESC_F_WRITE, Vring, vring_offsets

HDR = struct.Struct("<IIIHH")
NS = struct.Struct("<32sII")
L = TCC807X
BUF = L.buf_size
HOST_ADDR = 0x401
NAMES = ["rpmsg-client-sample", "rpmsg-tty", "rpmsg-sink", "rpmsg-source"]
ROOT = Path(__file__).resolve().parent.parent


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise AssertionError(f"timed out waiting for {what}")


class MiniHost:
    """A Linux-like rpmsg host over the virtual board, just enough to drive the remote.

    ``pump`` is what makes the remote run: for a remote in a thread or a
    process it waits on the host socket; for a hand-driven remote it is
    ``remote.step``.
    """

    def __init__(self, board_dir: Path, layout: Layout = L, pump: Callable[[], object] | None = None):
        self.layout = layout
        self.board = VirtualBoard(board_dir, layout.window.pa, layout.window.size, role="host")
        self.view = memoryview(self.board.map_memory())
        self.mem = MemoryMap([(layout.window.pa, self.view)])
        self.board.bind()
        self.pump = pump
        self.rx: Vring | None = None  # vring0: the remote sends
        self.tx: Vring | None = None  # vring1: we send
        self.free: list[int] = []
        self.inbox: list[tuple[int, int, bytes]] = []
        self.bufs = self.mem.span(layout.buffers.pa, layout.buffers.size)
        self.vring_pa: tuple[int, int] = (layout.vrings[0].pa, layout.vrings[1].pa)

    # -- table -----------------------------------------------------------------------

    def table(self) -> rt.ResourceTable:
        return rt.parse(self.mem.read(self.layout.table_pa, self.layout.rsc_size))

    def vdev(self) -> rt.Vdev:
        return self.table().vdevs[0]

    def status(self) -> int:
        return self.mem.read_u8(self.layout.table_pa + self.vdev().status_offset)

    def set_status(self, value: int) -> None:
        self.mem.write_u8(self.layout.table_pa + self.vdev().status_offset, value)

    # -- attach ----------------------------------------------------------------------

    def attach(
        self,
        gfeatures: int = 1,
        vring_pa: tuple[int, int] | None = None,
        ring: bool = True,
        post_rx: int | None = None,
    ) -> None:
        """As Linux does: features, rings, 2*num buffers (first half posted to vring0), 1, 3, 7, ring."""
        tp = self.layout.table_pa
        vdev = self.vdev()
        self.set_status(0)
        self.set_status(rt.VIRTIO_CONFIG_S_ACKNOWLEDGE)
        self.set_status(rt.VIRTIO_CONFIG_S_ACKNOWLEDGE | rt.VIRTIO_CONFIG_S_DRIVER)
        self.mem.write_u32(tp + vdev.gfeatures_offset, gfeatures)
        pas = []
        for i, vr in enumerate(vdev.vrings):
            pa = vr.da
            if vring_pa is not None:
                pa = vring_pa[i]
                self.mem.write_u32(tp + vr.offset, pa)  # remoteproc writes the address back
            pas.append(pa)
        self.vring_pa = (pas[0], pas[1])
        num, align = vdev.vrings[0].num, vdev.vrings[0].align
        self.num = num
        size = vring_offsets(0, num, align)[2]
        self.rx = Vring(self.mem.span(pas[0], size), pas[0], num, align)
        self.tx = Vring(self.mem.span(pas[1], size), pas[1], num, align)
        self.rx.reset()
        self.tx.reset()
        for i in range(num if post_rx is None else post_rx):
            self.rx.add(i, self.layout.buffers.pa + i * BUF, BUF, VRING_DESC_F_WRITE)
        self.rx.publish()
        self.free = list(range(num - 1, -1, -1))
        self.inbox = []
        self.set_status(rt.VIRTIO_CONFIG_S_ACKNOWLEDGE | rt.VIRTIO_CONFIG_S_DRIVER | rt.VIRTIO_CONFIG_S_DRIVER_OK)
        if ring:
            self.board.ring(vdev.vrings[0].notifyid)

    def reset(self) -> None:
        """A host that leaves (or resets the remote): status 0 and a ring."""
        self.set_status(0)
        self.board.ring(0)

    # -- messages --------------------------------------------------------------------

    def wait(self, dl: Deadline) -> None:
        """Let the remote make progress once."""
        dl.check("the remote")
        if self.pump is not None:
            self.pump()
        else:
            assert self.board.sock is not None
            select.select([self.board.sock], [], [], min(0.05, max(dl.left(), 0)))
            self.board.drain()

    def reclaim(self) -> None:
        assert self.tx is not None
        for _ in range(self.tx.used_pending()):
            d, _len = self.tx.pop_used()
            self.free.append(d)

    def try_send(self, dst: int, payload: bytes, src: int = HOST_ADDR, kick: bool = True) -> bool:
        assert self.tx is not None
        if not self.free:
            self.reclaim()
            if not self.free:
                return False
        d = self.free.pop()
        pa = self.layout.buffers.pa + (self.num + d) * BUF
        off = pa - self.layout.buffers.pa
        self.bufs.write(off, HDR.pack(src, dst, 0, len(payload), 0) + payload)
        self.tx.add(d, pa, 16 + len(payload), 0)
        if kick:
            self.kick_tx()
        return True

    def kick_tx(self) -> None:
        assert self.tx is not None
        self.tx.publish()
        if self.tx.kick_needed():
            self.board.ring(1)

    def send(self, dst: int, payload: bytes, dl: Deadline, src: int = HOST_ADDR) -> None:
        """Send, waiting for a buffer; what arrives meanwhile is kept for :meth:`poll_rx`."""
        while not self.try_send(dst, payload, src):
            self.inbox += self._take_rx()
            self.wait(dl)

    def poll_rx(self, limit: int = 1 << 30) -> list[tuple[int, int, bytes]]:
        """Every message the remote has sent so far (up to ``limit``), oldest first."""
        out, self.inbox = self.inbox[:limit], self.inbox[limit:]
        return out + self._take_rx(limit - len(out))

    def _take_rx(self, limit: int = 1 << 30) -> list[tuple[int, int, bytes]]:
        """Messages from vring0's used ring (buffers reposted at once)."""
        assert self.rx is not None
        out: list[tuple[int, int, bytes]] = []
        while len(out) < limit and self.rx.used_pending():
            d, length = self.rx.pop_used()
            off = d * BUF
            src, dst, _r, n, _f = HDR.unpack(self.bufs.read(off, 16))
            assert 16 <= length <= BUF and n == length - 16, (d, length, n)
            out.append((src, dst, self.bufs.read(off + 16, n)))
            self.rx.add(d, self.layout.buffers.pa + off, BUF, VRING_DESC_F_WRITE)
        if out:
            self.rx.publish()
            if self.rx.kick_needed():
                self.board.ring(0)
        return out

    def recv(self, count: int, dl: Deadline) -> list[tuple[int, int, bytes]]:
        out: list[tuple[int, int, bytes]] = []
        while len(out) < count:
            got = self.poll_rx(count - len(out))
            if not got:
                self.wait(dl)
            out += got
        return out

    def ns(self, dl: Deadline) -> dict[str, int]:
        """Receive the four announcements; name -> remote address."""
        eps = {}
        for src, dst, payload in self.recv(4, dl):
            assert dst == 53 and len(payload) == 40
            raw, addr, flags = NS.unpack(payload)
            assert flags == 0 and addr == src
            eps[raw.rstrip(b"\0").decode()] = addr
        return eps

    def close(self) -> None:
        self.mem.close()
        self.view.release()
        self.board.close()


@pytest.fixture
def board(tmp_path: Path) -> Path:
    return tmp_path / "board"


@contextmanager
def hand_driven(board: Path, **kw: object) -> Iterator[tuple[SimRemote, MiniHost]]:
    remote = SimRemote(board, **kw)  # type: ignore[arg-type]
    host = MiniHost(board, pump=remote.step)
    try:
        yield remote, host
    finally:
        host.close()
        remote.close()


@contextmanager
def threaded(board: Path, **kw: object) -> Iterator[tuple[SimRemote, MiniHost]]:
    remote = SimRemote(board, **kw)  # type: ignore[arg-type]
    t = threading.Thread(target=remote.run, daemon=True)
    t.start()
    host = MiniHost(board)
    try:
        yield remote, host
    finally:
        remote.request_stop()
        t.join(5)
        assert not t.is_alive()
        host.close()
        remote.close()


@contextmanager
def subprocess_remote(board: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "rprocd.sim.remote", "--board", str(board), "--log-level", "warning", *args],
        env=env,
    )
    try:
        dl = Deadline(10)
        while not (board / "remote.sock").exists():
            assert proc.poll() is None, "the remote exited at start"
            dl.check("remote.sock")
            time.sleep(0.01)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()


def attach_and_ns(host: MiniHost, dl: Deadline, **kw: object) -> dict[str, int]:
    host.attach(**kw)  # type: ignore[arg-type]
    eps = host.ns(dl)
    assert sorted(eps) == sorted(NAMES)
    return eps


# -- the table -----------------------------------------------------------------------------


def test_table_as_a_self_booted_zephyr_writes_it(board: Path) -> None:
    with hand_driven(board) as (remote, host):
        t = host.table()
        assert t.ver == 1
        (vdev,) = t.vdevs
        assert (vdev.id, vdev.notifyid, vdev.dfeatures, vdev.gfeatures, vdev.status) == (7, 0, 1, 0, 0)
        assert vdev.config == b""
        assert [(v.da, v.align, v.num, v.notifyid) for v in vdev.vrings] == [
            (0x200C8000, 16, 8, 0),
            (0x200C9000, 16, 8, 1),
        ]
        (trace,) = t.traces
        assert trace.name == "Zephyr_log"
        assert L.table_region.contains(trace.da, trace.len)
        assert trace.da >= L.table_pa + t.size  # not over the table
        assert (board / "remote.sock").exists() and (board / "memory").stat().st_size == L.window.size
        text = host.mem.read(trace.da, trace.len)
        assert b"Booting" in text and text[-1] == 0
        assert remote.state == WAITING


def test_table_written_ver_last(board: Path) -> None:
    """A host reading mid-write must never see ver 1 over an old body."""
    seen: list[int] = []
    remote = SimRemote(board)
    try:
        table = remote.core._table
        writes: list[tuple[int, int]] = []

        class Spy:
            def __getattr__(self, name: str) -> object:
                return getattr(table, name)

            def store32(self, off: int, v: int) -> None:
                table.store32(off, v)
                if off == 0:
                    writes.append((off, v))
                    seen.append(table.load32(4))  # num: body written?

        remote.core._table = Spy()  # type: ignore[assignment]
        table.fill(4, table.size - 4)
        remote.core._write_table()
        assert writes == [(0, 0), (0, 1)]
        assert seen == [0, 2]  # body absent at ver 0, present at ver 1
    finally:
        remote.core._table = table
        remote.close()


def test_any_da_table(board: Path) -> None:
    with hand_driven(board, any_da=True) as (_remote, host):
        assert [v.da for v in host.vdev().vrings] == [rt.FW_RSC_ADDR_ANY] * 2


# -- attach and messages (hand-driven: deterministic) ---------------------------------------------


def test_attach_announces_four_endpoints(board: Path) -> None:
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        for _ in range(3):
            remote.step()  # no DRIVER_OK: nothing happens
        assert remote.state == WAITING and host.rx is None
        eps = attach_and_ns(host, dl)
        assert eps == {name: 1024 + i for i, name in enumerate(NAMES)}
        assert remote.state == ATTACHED and remote.stats.sessions == 1 and remote.stats.ns_sent == 4
        trace = host.table().traces[0]
        assert b"rpmsg: attached, 4 endpoints" in host.mem.read(trace.da, trace.len)


def test_attach_without_a_ring(board: Path) -> None:
    """The host's ring may be lost: the remote finds DRIVER_OK by looking."""
    with threaded(board) as (remote, host):
        dl = Deadline(5)
        host.attach(ring=False)
        while remote.stats.ns_sent < 4:
            dl.check("announcements")
            time.sleep(0.01)
        assert len(host.recv(4, dl)) == 4


def test_no_name_service_when_host_gives_no_features(board: Path) -> None:
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        host.attach(gfeatures=0)
        remote.step()
        assert remote.state == ATTACHED and remote.core.features == 0 and host.poll_rx() == []
        host.send(1024, b"hi", dl)  # addresses are still OpenAMP's, from 1024 up
        assert host.recv(1, dl) == [(1024, HOST_ADDR, b"hi")]


@pytest.mark.parametrize("name", ["rpmsg-client-sample", "rpmsg-tty"])
def test_echo(board: Path, name: str) -> None:
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        eps = attach_and_ns(host, dl)
        payloads = [b"", b"x", bytes(range(256)) + bytes(240), b"hello world"] * 5
        for p in payloads:
            host.send(eps[name], p, dl, src=0x455)
            assert host.recv(1, dl) == [(eps[name], 0x455, p)]
        ept = remote.core.endpoint(name)
        assert (ept.rx_msgs, ept.tx_msgs, ept.peer) == (len(payloads), len(payloads), 0x455)


def test_sink_stat(board: Path) -> None:
    with hand_driven(board) as (_remote, host):
        dl = Deadline(5)
        eps = attach_and_ns(host, dl)
        sink = eps["rpmsg-sink"]
        host.send(sink, b"STAT", dl)
        assert host.recv(1, dl) == [(sink, HOST_ADDR, b"0 0")]
        total = 0
        for i in range(50):
            host.send(sink, bytes(i * 9), dl)
            total += i * 9
        host.send(sink, b"STAT", dl)
        assert host.recv(1, dl) == [(sink, HOST_ADDR, f"50 {total}".encode())]
        host.send(sink, b"STATS", dl)  # not STAT: counted
        host.send(sink, b"STAT", dl)
        assert host.recv(1, dl)[0][2] == f"51 {total + 5}".encode()


def test_source_sequence_through_eight_buffers(board: Path) -> None:
    with hand_driven(board) as (remote, host):
        dl = Deadline(10)
        eps = attach_and_ns(host, dl)
        src = eps["rpmsg-source"]
        host.send(src, b"3000 496", dl)
        host.send(src, b"5 4", dl)  # queued behind the first job
        got = host.recv(3005, dl)
        for i, (s, d, p) in enumerate(got[:3000]):
            assert (s, d, len(p), int.from_bytes(p[:4], "little")) == (src, HOST_ADDR, 496, i)
        assert [int.from_bytes(p, "little") for _, _, p in got[3000:]] == [0, 1, 2, 3, 4]
        remote.step()
        assert host.poll_rx() == [] and remote.core._jobs == type(remote.core._jobs)()


def test_source_rejects_bad_requests(board: Path) -> None:
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        eps = attach_and_ns(host, dl)
        for bad in (b"10 3", b"10 497", b"ten 4", b"1", b"-1 10", b""):
            host.send(eps["rpmsg-source"], bad, dl)
        host.send(eps["rpmsg-source"], b"0 4", dl)
        remote.step()
        assert host.poll_rx() == [] and remote.stats.malformed == 6


def test_backpressure_nothing_dropped(board: Path) -> None:
    """With vring0 full the remote stops taking from vring1; the host's tx pool runs dry, then recovers."""
    with hand_driven(board) as (remote, host):
        dl = Deadline(10)
        eps = attach_and_ns(host, dl)
        echo = eps["rpmsg-client-sample"]
        sent = 0
        while True:  # the host reads nothing
            assert sent < 100
            if host.try_send(echo, sent.to_bytes(4, "little")):
                sent += 1
                remote.step()
                continue
            remote.step()
            host.reclaim()
            if not host.free:
                break
        assert host.rx is not None and host.tx is not None
        assert sent == 16
        assert host.rx.used_pending() == 8  # every vring0 buffer holds an echo
        assert host.tx.inflight == 8  # and the remote holds on to our next 8 messages
        remote.step()
        assert host.tx.used_pending() == 0
        got = host.recv(16, dl)
        assert [int.from_bytes(p, "little") for _, _, p in got] == list(range(16))
        assert remote.core.endpoint("rpmsg-client-sample").tx_msgs == 16


def test_interleaved_endpoints_keep_order(board: Path) -> None:
    with hand_driven(board) as (_remote, host):
        dl = Deadline(10)
        eps = attach_and_ns(host, dl)
        host.send(eps["rpmsg-source"], b"200 100", dl)
        echoed = []
        got = []
        for i in range(100):
            host.send(eps["rpmsg-tty"], b"e%d" % i, dl)
            got += host.poll_rx()
        while len(got) < 300:
            got += host.recv(1, dl)
        for s, _d, p in got:
            if s == eps["rpmsg-tty"]:
                echoed.append(p)
        seqs = [int.from_bytes(p[:4], "little") for s, _d, p in got if s == eps["rpmsg-source"]]
        assert echoed == [b"e%d" % i for i in range(100)]
        assert seqs == list(range(200))


def test_host_suppresses_interrupts(board: Path) -> None:
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        eps = attach_and_ns(host, dl)
        assert host.rx is not None and host.tx is not None
        host.board.drain()
        host.tx.want_interrupts(False)
        host.rx.want_interrupts(False)
        sent_before = remote.board.stats.sent
        host.send(eps["rpmsg-sink"], b"abc", dl)
        remote.step()
        assert remote.board.stats.sent == sent_before  # nothing rung
        host.rx.want_interrupts(True)
        host.send(eps["rpmsg-sink"], b"STAT", dl)
        remote.step()
        assert remote.board.stats.sent == sent_before + 1
        assert host.poll_rx() == [(eps["rpmsg-sink"], HOST_ADDR, b"1 3")]


def test_remote_sets_no_notify_only_while_busy(board: Path) -> None:
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        attach_and_ns(host, dl)
        remote.step()
        assert host.tx is not None and host.rx is not None
        assert host.tx.kick_needed() and host.rx.kick_needed()  # asleep: wants kicks


def test_any_da_readback(board: Path) -> None:
    with hand_driven(board, any_da=True) as (remote, host):
        dl = Deadline(5)
        # the host picks other places in the window than the defaults
        attach_and_ns(host, dl, vring_pa=(0x200C9000, 0x200C8000))
        assert remote.core._tx is not None and remote.core._tx.pa == 0x200C9000
        host.send(1024, b"ping", dl)
        assert host.recv(1, dl) == [(1024, HOST_ADDR, b"ping")]


@pytest.mark.parametrize(
    "vring_pa",
    [
        (rt.FW_RSC_ADDR_ANY, 0x200C9000),  # not assigned
        (0x200CD800, 0x200C9000),  # over the buffer pool
        (0x200CE000 - 0x100, 0x200C9000),  # runs out of the window
        (0x200C6000, 0x200C9000),  # over the resource table
        (0x200C7400, 0x200C9000),  # over the trace buffer
        (0x200C8000, 0x200C8000),  # both at the same place
        (0x200C8002, 0x200C9000),  # misaligned
        (0x100, 0x200C9000),  # not in the window at all
    ],
)
def test_any_da_refuses_bad_addresses(board: Path, vring_pa: tuple[int, int]) -> None:
    with hand_driven(board, any_da=True) as (remote, host):
        # the host's ring views would fail for the outside cases; write the table by hand
        tp, vdev = L.table_pa, host.vdev()
        for i, vr in enumerate(vdev.vrings):
            host.mem.write_u32(tp + vr.offset, vring_pa[i])
        host.mem.write_u32(tp + vdev.gfeatures_offset, 1)
        host.set_status(7)
        remote.step()
        assert remote.state == FAILED and remote.stats.refused == 1
        remote.step()
        assert remote.stats.refused == 1  # stays refused until the host resets
        host.reset()
        remote.step()
        assert remote.state == WAITING
        dl = Deadline(5)
        attach_and_ns(host, dl, vring_pa=(0x200C8000, 0x200C9000))


def test_status_reset_ends_session_and_reannounces(board: Path) -> None:
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        eps = attach_and_ns(host, dl)
        host.send(eps["rpmsg-sink"], b"12345", dl)
        remote.step()
        host.reset()
        remote.step()
        assert remote.state == WAITING and remote.stats.sessions_ended == 1
        assert host.table().ver == 1 and host.status() == 0  # the remote keeps the table as the host left it
        attach_and_ns(host, dl)
        assert remote.stats.sessions == 2
        host.send(eps["rpmsg-sink"], b"STAT", dl)
        assert host.recv(1, dl)[0][2] == b"0 0"  # a new session, new counters


def test_needs_reset_ends_session(board: Path) -> None:
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        attach_and_ns(host, dl)
        host.set_status(rt.VIRTIO_CONFIG_S_NEEDS_RESET | 7)
        remote.step()
        assert remote.state == WAITING
        remote.step()
        assert remote.state == WAITING  # NEEDS_RESET with DRIVER_OK is not an invitation
        attach_and_ns(host, dl)


def test_host_resets_rings_without_being_seen(board: Path) -> None:
    """The host zeroed and re-set the rings while the remote was not looking: a new session."""
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        eps = attach_and_ns(host, dl)
        host.attach()  # status 0..7 without the remote running in between
        assert host.ns(dl).keys() == eps.keys()
        assert remote.stats.sessions == 2


def test_status_reset_midstream_then_resume(board: Path) -> None:
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        eps = attach_and_ns(host, dl)
        host.send(eps["rpmsg-source"], b"1000 64", dl)
        assert len(host.recv(20, dl)) == 20
        host.reset()
        remote.step()
        assert remote.state == WAITING
        attach_and_ns(host, dl)  # the old stream is gone: only the announcements
        remote.step()
        assert host.poll_rx() == []


# -- untrusted host ------------------------------------------------------------------------


def test_bad_descriptors_are_returned_not_followed(board: Path) -> None:
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        attach_and_ns(host, dl)
        assert host.tx is not None and host.rx is not None
        # vring1: outside the pool, too short, device-writable, header longer than the buffer
        host.tx.add(0, 0x200C8000, 64, 0)
        host.tx.add(1, L.buffers.pa + 9 * BUF, 8, 0)
        host.tx.add(2, L.buffers.pa + 10 * BUF, 64, VRING_DESC_F_WRITE)
        host.bufs.write(11 * BUF, HDR.pack(HOST_ADDR, 1024, 0, 100, 0))
        host.tx.add(3, L.buffers.pa + 11 * BUF, 20, 0)
        host.tx.add(4, L.buffers.pa + L.buffers.size - 8, 64, 0)
        host.free = [5, 6, 7]
        host.kick_tx()
        remote.step()
        host.reclaim()
        assert sorted(host.free) == list(range(8))
        assert remote.stats.bad_descriptors == 4 and remote.stats.malformed == 1
        # vring0 (a fresh attach): a read-only and an out-of-pool buffer are given back empty
        host.attach(post_rx=0)
        rx = host.rx
        assert rx is not None
        rx.add(0, L.buffers.pa, BUF, 0)
        rx.add(1, L.window.pa, BUF, VRING_DESC_F_WRITE)
        rx.add(2, L.buffers.pa + 2 * BUF, BUF, VRING_DESC_F_WRITE)
        rx.publish()
        remote.step()
        assert [rx.pop_used() for _ in range(rx.used_pending())] == [(0, 0), (1, 0), (2, 56)]
        assert remote.stats.bad_descriptors == 6 and remote.state == ATTACHED
        assert remote.stats.sessions == 2


def test_avail_index_jump_restarts_the_remote(board: Path) -> None:
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        attach_and_ns(host, dl)
        assert host.tx is not None
        host.tx.poke_avail(1, 100)  # 100 entries past: impossible with 8
        remote.step()
        assert remote.stats.violations == 1 and remote.stats.reboots == 1
        assert remote.state == WAITING and host.status() == 0 and host.table().ver == 1
        attach_and_ns(host, dl)


def test_descriptor_id_out_of_range_restarts_the_remote(board: Path) -> None:
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        attach_and_ns(host, dl)
        assert host.tx is not None
        host.tx.poke_avail(2 + host.tx.avail_idx % 8, 9)
        host.tx.avail_idx += 1
        host.tx.publish()
        remote.step()
        assert remote.stats.violations == 1 and remote.state == WAITING


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    garbage=st.lists(
        st.tuples(
            # anywhere in the two rings, and often in the descriptor tables and the avail rings
            st.one_of(st.integers(0, 0x1FFF), st.integers(0, 0x9F), st.integers(0x1000, 0x109F)),
            st.binary(min_size=1, max_size=64),
        ),
        max_size=12,
    ),
    status=st.integers(0, 255),
)
def test_garbage_in_the_rings_never_crashes(
    tmp_path_factory: pytest.TempPathFactory, garbage: list[tuple[int, bytes]], status: int
) -> None:
    board = tmp_path_factory.mktemp("fuzz")
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        attach_and_ns(host, dl)
        for off, data in garbage:
            host.mem.write(L.vrings[0].pa + off, data[: 0x2000 - off])
        remote.step()
        host.set_status(status)
        remote.step()
        remote.step()
        assert remote.state in (WAITING, ATTACHED, FAILED)
        # whatever happened, a fresh attach works
        host.reset()
        remote.step()
        attach_and_ns(host, dl)


@settings(max_examples=60, deadline=None)
@given(messages=st.lists(st.binary(max_size=BUF), max_size=12), stat=st.booleans())
def test_random_messages_never_crash(
    tmp_path_factory: pytest.TempPathFactory, messages: list[bytes], stat: bool
) -> None:
    """Raw buffers (header included) as the host might write them: answered, counted or refused."""
    board = tmp_path_factory.mktemp("msgs")
    with hand_driven(board) as (remote, host):
        dl = Deadline(5)
        attach_and_ns(host, dl)
        assert host.tx is not None
        for raw in messages:
            while not host.free:
                remote.step()
                host.poll_rx()
                host.reclaim()
                dl.check("tx buffers")
            d = host.free.pop()
            off = (host.num + d) * BUF
            host.bufs.write(off, raw)
            host.tx.add(d, L.buffers.pa + off, len(raw), 0)
            host.kick_tx()
            remote.step()
        remote.step()
        host.poll_rx()
        assert remote.state == ATTACHED and remote.stats.violations == 0
        if stat:  # still serving
            host.send(1026, b"STAT", dl)
            assert host.recv(1, dl)[0][0] == 1026


# -- the trace buffer ----------------------------------------------------------------------------


def test_ram_console_wraps_like_zephyr() -> None:
    buf = bytearray(b"\xff" * 8)
    con = RamConsole(span_over(buf))
    con.clear()
    con.write("abc")
    assert bytes(buf) == b"abc\0\0\0\0\0"
    con.write("defghij")  # 10 chars through 7 slots
    assert bytes(buf) == b"hijdefg\0"
    con.write("0123456789")  # longer than the buffer: char by char, as Zephyr would
    assert bytes(buf) == b"4567893\0" and con.pos == 6


@given(st.integers(2, 40), st.lists(st.text(max_size=60), max_size=8))
def test_ram_console_matches_char_by_char(size: int, texts: list[str]) -> None:
    buf = bytearray(size)
    con = RamConsole(span_over(buf))
    ref, pos = bytearray(size), 0
    for t in texts:
        con.write(t)
        for c in t.encode("utf-8", "replace"):  # ram_console.c's console_out()
            ref[pos] = c
            pos = (pos + 1) % (size - 1)
        assert buf == ref and con.pos == pos


# -- the loop: threads and processes ----------------------------------------------------------


def test_threaded_echo_and_clean_stop(board: Path) -> None:
    with threaded(board) as (remote, host):
        dl = Deadline(10)
        eps = attach_and_ns(host, dl)
        for i in range(200):
            host.send(eps["rpmsg-client-sample"], b"m%d" % i, dl)
            assert host.recv(1, dl)[0][2] == b"m%d" % i
        assert remote.stats.sessions == 1


def test_idle_remote_sleeps(board: Path) -> None:
    """Waiting for a host must not burn CPU (bounded wake-ups, not a spin)."""
    remote = SimRemote(board)
    t = threading.Thread(target=remote.run, daemon=True)
    cpu0 = time.process_time()
    t.start()
    time.sleep(0.5)
    remote.request_stop()
    t.join(5)
    used = time.process_time() - cpu0
    remote.close()
    assert not t.is_alive() and used < 0.2


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} msg/s"


def test_subprocess_echo_source_sink_and_sigterm(board: Path, record_property) -> None:
    with subprocess_remote(board) as proc:
        host = MiniHost(board)
        try:
            dl = Deadline(60)
            eps = attach_and_ns(host, dl)
            # echo throughput, pipelined through the 8 tx and 8 rx buffers
            n = 20000
            echo = eps["rpmsg-client-sample"]
            sent = 0
            got: list[bytes] = []
            t0 = time.monotonic()
            while len(got) < n:
                while sent < n and host.try_send(echo, sent.to_bytes(4, "little") + bytes(60), kick=False):
                    sent += 1
                host.kick_tx()
                rx = host.poll_rx()
                if not rx:
                    host.wait(dl)
                got += [p for _, _, p in rx]
            t_echo = time.monotonic() - t0
            assert [int.from_bytes(p[:4], "little") for p in got] == list(range(n))
            # source: 100 000 messages of 496 bytes, in order, through 8 buffers
            m = 100_000
            t0 = time.monotonic()
            host.send(eps["rpmsg-source"], b"%d 496" % m, dl)
            seq = 0
            while seq < m:
                rx = host.poll_rx()
                if not rx:
                    host.wait(dl)
                for s, _d, p in rx:
                    assert s == eps["rpmsg-source"] and len(p) == 496
                    assert int.from_bytes(p[:4], "little") == seq
                    seq += 1
            t_src = time.monotonic() - t0
            # sink
            t0 = time.monotonic()
            for _ in range(n):
                while not host.try_send(eps["rpmsg-sink"], bytes(100), kick=False):
                    host.kick_tx()
                    host.wait(dl)
            host.kick_tx()
            host.send(eps["rpmsg-sink"], b"STAT", dl)
            assert host.recv(1, dl)[0][2] == f"{n} {n * 100}".encode()
            t_sink = time.monotonic() - t0
            rates = f"echo {_rate(n, t_echo)}, source {_rate(m, t_src)}, sink {_rate(n, t_sink)}"
            record_property("rates", rates)
            print(rates)
        finally:
            host.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not (board / "remote.sock").exists() and (board / "memory").exists()


def test_subprocess_delay_us_slows_each_message(board: Path) -> None:
    with subprocess_remote(board, "--delay-us", "2000") as proc:
        host = MiniHost(board)
        try:
            dl = Deadline(20)
            eps = attach_and_ns(host, dl)
            t0 = time.monotonic()
            for i in range(20):
                host.send(eps["rpmsg-tty"], b"%d" % i, dl)
            assert [p for _, _, p in host.recv(20, dl)] == [b"%d" % i for i in range(20)]
            assert time.monotonic() - t0 >= 20 * 0.002
        finally:
            host.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0


def test_subprocess_any_da_and_host_restart(board: Path) -> None:
    """A host that exits cleanly (status 0) and a new one that attaches again."""
    with subprocess_remote(board, "--any-da") as proc:
        for round_ in range(2):
            host = MiniHost(board)
            try:
                dl = Deadline(10)
                while host.table().vdevs[0].status != 0:
                    host.wait(dl)
                eps = attach_and_ns(host, dl, vring_pa=(0x200C8000, 0x200C9000))
                host.send(eps["rpmsg-tty"], b"round %d" % round_, dl)
                assert host.recv(1, dl)[0][2] == b"round %d" % round_
                host.reset()
            finally:
                host.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_cli_arguments() -> None:
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(["--board", "/tmp/x", "--delay-us", "5", "--any-da"])
    assert (a.board, a.delay_us, a.any_da, a.log_level) == ("/tmp/x", 5, True, "info")
    with pytest.raises(SystemExit):
        p.parse_args([])
