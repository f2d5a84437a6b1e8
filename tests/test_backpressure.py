"""Backpressure end to end: slow clients under each overflow policy, a remote that stops answering, idle cost.

Real processes on a virtual board (``tests/conftest.py``); per-endpoint
policies through ``rprocd -c FILE --board DIR``; the daemon's counters from
its control socket.  The slow client does not sleep: it stops reading until
the daemon's own counters show the policy at work (the remote held back, or a
message dropped), so every pause is real and every figure exact.
"""

from __future__ import annotations

import errno
import os
import signal
import struct
import time
from functools import partial
from pathlib import Path

import pytest

from rprocd.layout import TCC807X
from tests.conftest import Board, wait_for
from tests.traffic import cpu_ticks, endpoint_stats, read_record, seq_of, stats

SOURCE, SINK = "rpmsg-source", "rpmsg-sink"
TOTAL = 100_000
PAUSE_EVERY = 1000


def config(ept: str, overflow: str, queue: int) -> str:
    """A config file for the simulated tcc807x board with one endpoint's policy."""
    t = TCC807X
    table = f"offset = {t.rsc_offset:#x}, max_size = {t.rsc_size:#x}"
    return f"""
[remote.main]
shm = {{ pa = {t.window.pa:#x}, size = {t.window.size:#x} }}
rsc_table = {{ pa = {t.table_region.pa:#x}, size = {t.table_region.size:#x}, {table} }}
vring0 = {{ pa = {t.vrings[0].pa:#x}, size = {t.vrings[0].size:#x} }}
vring1 = {{ pa = {t.vrings[1].pa:#x}, size = {t.vrings[1].size:#x} }}
buffers = {{ pa = {t.buffers.pa:#x}, size = {t.buffers.size:#x} }}

[remote.main.endpoint."{ept}"]
overflow = "{overflow}"
queue = {queue}
"""  # fmt: skip


def start(board: Board, tmp_path: Path, *sim_args: str, overflow: str = "block", queue: int = 256) -> None:
    cfg = tmp_path / "rprocd.toml"
    cfg.write_text(config(SOURCE, overflow, queue))
    board.procs.sim(board.dir, *sim_args)
    board.procs.daemon(board.dir, board.runtime, "-c", str(cfg))
    board.wait_endpoints()


def grown(board: Board, key: str, since: int) -> bool:
    return counter(board, key) > since


def counter(board: Board, key: str) -> int:
    snap = stats(board.runtime)
    if key == "held":
        return int(snap["bus"]["held"])
    return int(endpoint_stats(snap, SOURCE)[key])


@pytest.mark.parametrize("overflow", ["block", "drop-oldest", "drop-newest"])
def test_slow_client_100000_messages(board: Board, tmp_path: Path, overflow: str) -> None:
    """100 000 messages from rpmsg-source to a client that stops reading every 1000 messages.

    ``block``: each pause lasts until rprocd has held the remote back (its
    ``held`` counter grows); nothing is lost, all in order.  ``drop-*``: each
    pause lasts until rprocd has dropped a message for this client; in the
    end delivered + dropped == sent, exactly, and what arrived is in order.
    """
    start(board, tmp_path, overflow=overflow, queue=64 if overflow != "block" else 256)
    sign = {"block": "held", "drop-oldest": "rx_dropped_oldest", "drop-newest": "rx_dropped_newest"}[overflow]
    got: list[int] = []
    pauses = 0
    with board.connect(SOURCE) as s:
        s.send(b"%d 8" % TOTAL)
        s.settimeout(0.05)
        seen = counter(board, sign)
        next_pause = PAUSE_EVERY
        while True:
            if len(got) >= next_pause:
                next_pause += PAUSE_EVERY
                if TOTAL - counter(board, "rx_msgs") < PAUSE_EVERY:
                    next_pause = TOTAL + 1  # too little left to fill the socket and the queue: read on
                    continue
                what = f"{sign} to grow while the client does not read (after {len(got)})"
                wait_for(partial(grown, board, sign, seen), 20, what)
                seen = counter(board, sign)
                pauses += 1
            try:
                got.append(seq_of(s.recv(64)))
                continue
            except TimeoutError:
                pass
            # nothing to read: done once rprocd took every message and we read all it handed over
            e = endpoint_stats(stats(board.runtime), SOURCE)
            dropped = e["rx_dropped_oldest"] + e["rx_dropped_newest"]
            if e["rx_msgs"] == TOTAL and e["rx_delivered"] + dropped == TOTAL and len(got) == e["rx_delivered"]:
                break
    snap = stats(board.runtime)
    e = endpoint_stats(snap, SOURCE)
    assert pauses >= (50 if overflow == "block" else 1)  # (dropping, the client reads fewer than 100 000)
    assert e["rx_msgs"] == TOTAL and e["rx_no_client"] == e["rx_lost_on_close"] == 0
    assert e["rx_delivered"] == len(got)
    assert all(a < b for a, b in zip(got, got[1:], strict=False)), "out of order or twice"
    if overflow == "block":
        assert got == list(range(TOTAL))
        assert e["rx_dropped_oldest"] == e["rx_dropped_newest"] == 0
    else:
        assert e["rx_delivered"] + e[sign] == TOTAL and e[sign] > 0
        other = "rx_dropped_newest" if overflow == "drop-oldest" else "rx_dropped_oldest"
        assert e[other] == 0 and snap["bus"]["held"] == 0  # a dropping endpoint never holds the remote back
        if overflow == "drop-oldest":
            assert got[-1] == TOTAL - 1  # the newest message always survives
    print(f"{overflow}: {len(got)} delivered, {TOTAL - len(got)} dropped, {pauses} pauses")


def test_remote_that_stops_answering(board: Board, tmp_path: Path) -> None:
    """The remote stops servicing its rings: writes wait, nothing is dropped, rprocd idles and recovers."""
    rec = tmp_path / "record"
    start(board, tmp_path, "--fault", "stop-answering", "--fault-after", "2000", "--record", str(rec))
    daemon = next(p for p in board.procs.procs if "rprocd.cli.daemon" in str(p.args))
    sim = next(p for p in board.procs.procs if "sim" in str(p.args))
    sink = board.connect(SINK)
    sink.setblocking(False)
    sent = 0

    def writes_wait() -> bool:
        nonlocal sent
        for _ in range(200):
            try:
                sink.send(struct.pack("<I", sent) + bytes(12))
            except BlockingIOError:
                break
            sent += 1
        else:
            return False
        # the socket is full; it stays full once the remote stopped and holds every transmit buffer
        return "fault stop-answering" in rec.read_text() and stats(board.runtime)["tx_free"] == 0

    wait_for(writes_wait, 30, "the client's writes to wait")
    snap = stats(board.runtime)
    e = endpoint_stats(snap, SINK)
    (remote,) = read_record(rec)
    consumed = len(remote.sessions[0].rx_seqs(SINK))
    # every record rprocd read is in the ring or was consumed: none dropped, the rest wait in the socket
    assert snap["rings"][1]["inflight"] == 8
    assert e["tx_records"] == consumed + 8 and e["tx_oversized"] == 0
    assert sent > e["tx_records"] >= 2000
    with pytest.raises(BlockingIOError):
        sink.send(b"still waiting")

    # still responsive: the control socket answers, another endpoint accepts a client
    with board.connect("rpmsg-tty") as tty:
        tty.send(b"queued")
    assert stats(board.runtime)["state"] == "attached"

    # and idle: CPU over two seconds of waiting
    t0 = cpu_ticks(daemon.pid)
    time.sleep(2.0)
    used = cpu_ticks(daemon.pid) - t0
    assert used < 0.05 * 2.0 * os.sysconf("SC_CLK_TCK"), f"{used} ticks in 2 s while the remote does not answer"

    # restarted, the remote is attached again and the waiting client is let go
    board.procs.stop(sim)
    board.procs.sim(board.dir)
    wait_for(lambda: stats(board.runtime)["host"]["attaches"] == 2, 20, "the restarted remote to be attached")
    sink.setblocking(True)
    sink.settimeout(10)
    try:
        assert sink.recv(64) == b""
    except OSError as err:
        assert err.errno == errno.ECONNRESET  # rprocd closed it with our records unread
    sink.close()
    board.wait_endpoints()
    with board.connect("rpmsg-client-sample") as s:
        s.send(b"back")
        assert s.recv(64) == b"back"


def test_idle_cost(board: Board) -> None:
    """Idle, rprocd wakes only for its 250 ms timer: generous bounds on CPU ticks, waiting and attached."""
    hz = os.sysconf("SC_CLK_TCK")
    daemon = board.procs.daemon(board.dir, board.runtime)
    wait_for(lambda: (board.dir / "host.sock").exists(), 20, "the daemon")
    t0 = cpu_ticks(daemon.pid)
    time.sleep(2.0)
    waiting = cpu_ticks(daemon.pid) - t0
    board.procs.sim(board.dir)
    board.wait_endpoints()
    t0 = cpu_ticks(daemon.pid)
    time.sleep(2.0)
    attached = cpu_ticks(daemon.pid) - t0
    print(f"idle CPU over 2 s: waiting {waiting} ticks, attached {attached} ticks ({hz} ticks/s)")
    assert waiting < 0.05 * 2.0 * hz and attached < 0.05 * 2.0 * hz
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
