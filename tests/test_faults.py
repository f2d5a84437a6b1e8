"""Never lose a message: remote and daemon killed under traffic, and a hostile remote (issue 4).

Real processes on a virtual board (``tests/conftest.py``).  The simulated
remote records every message it receives and sends (``--record``, written
before the message is published), the clients keep every sequence number
they read, and the daemon's control socket gives its counters: together they
account for each message.  Every wait is bounded; no assertion depends on
how fast this machine is.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
from functools import partial
from pathlib import Path

import pytest

from rprocd.client import Control, Endpoint, EndpointClosed
from rprocd.layout import TCC807X
from rprocd.names import safe_name
from rprocd.sim.faults import HOSTILE_NAMES, parse_kinds
from rprocd.sim.remote import add_arguments
from rprocd.vring import vring_offsets
from tests.conftest import ENDPOINTS, Board, Procs, wait_for
from tests.traffic import (
    VRING_ALIGN,
    VRING_NUM,
    Client,
    count_lines,
    echo_payload,
    endpoint_stats,
    host_progress,
    read_record,
    seq_of,
    stats,
)

ECHO, SOURCE = "rpmsg-client-sample", "rpmsg-source"


def _progress(
    echo: Client, source: Client, conn: int | None, n_echo: int, n_source: int, exactly: bool = False
) -> bool:
    """The clients read ``n_echo`` and ``n_source`` messages on connection ``conn`` (None: on all)."""
    if conn is None:
        got = len(echo.all_received()), len(source.all_received())
    elif echo.connections == source.connections == conn + 1:
        got = len(echo.received[conn]), len(source.received[conn])
    else:
        return False
    return got == (n_echo, n_source) if exactly else got[0] >= n_echo and got[1] >= n_source


def _resumed(procs: Procs, times: int) -> bool:
    return procs.log("rprocd.log").count("resumed the live session") == times


def _all_taken(board: Board) -> bool:
    """The host has accepted everything the remote published on vring0 (nothing held in the ring)."""
    used_idx, used_event = host_progress(board.dir)
    return used_idx == used_event


def test_remote_killed_20_times_under_traffic_nothing_lost_or_doubled(board: Board, tmp_path: Path) -> None:
    """SIGKILL the remote at random moments of two streams; every accepted message reaches its client once.

    Per killed remote: the daemon accepts, in ring order, a prefix of what the
    remote published on each endpoint (its ``rx_msgs``); the client must have
    read exactly that prefix.  What the remote published and the daemon never
    took dies with the remote's session.  Across all remotes no echo request
    was received twice and no echo was read twice.
    """
    rnd = random.Random(20)
    rec = tmp_path / "record"
    procs = board.procs
    sim = procs.sim(board.dir, "--record", str(rec))
    procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    echo = Client(board.ept_dir / ECHO, echo=True, window=16)
    source = Client(board.ept_dir / SOURCE, request=b"20000 8")
    echo.start()
    source.start()
    accepted: list[tuple[int, int]] = []
    try:
        for k in range(20):
            need_echo, need_source = rnd.randint(1, 800), rnd.randint(1, 15000)
            wait_for(
                partial(_progress, echo, source, k, need_echo, need_source),
                30,
                f"traffic with remote #{k} (clients: {echo.error!r} {source.error!r})",
            )
            procs.stop(sim, signal.SIGKILL)
            wait_for(lambda: _all_taken(board), 10, "the daemon to take what the dead remote published")
            snap = stats(board.runtime)
            e, s = endpoint_stats(snap, ECHO), endpoint_stats(snap, SOURCE)
            for ept in (e, s):
                lost = {key: n for key, n in ept.items() if key.startswith(("rx_no_client", "rx_dropped", "rx_lost"))}
                assert not any(lost.values()), (ept["name"], lost)
            wait_for(
                partial(_progress, echo, source, k, e["rx_msgs"], s["rx_msgs"], exactly=True),
                20,
                f"the clients to read what the daemon accepted from remote #{k}: "
                f"{e['rx_msgs']} echoes, {s['rx_msgs']} source messages",
            )
            accepted.append((e["rx_msgs"], s["rx_msgs"]))
            sim = procs.sim(board.dir, "--record", str(rec))
        wait_for(
            lambda: echo.connections == source.connections == 21 and echo.current() and source.current(),
            30,
            "traffic with the last remote",
        )
    finally:
        echo.stop()
        source.stop()
        procs.stop(sim)  # the last remote's record complete
    assert echo.error is None and source.error is None, (echo.error, source.error)

    remotes = read_record(rec)
    assert len(remotes) == 21
    for k, remote in enumerate(remotes):
        assert len(remote.sessions) == 1, f"remote #{k} was attached {len(remote.sessions)} times"
    for k, (remote, (n_echo, n_source)) in enumerate(zip(remotes, accepted, strict=False)):
        sess = remote.sessions[0]
        published_source = sess.tx_seqs(SOURCE)
        assert published_source == list(range(len(published_source)))
        assert echo.received[k] == sess.tx_seqs(ECHO)[:n_echo], f"echo, remote #{k}"
        assert source.received[k] == published_source[:n_source], f"source, remote #{k}"
    received_by_remotes = [seq for remote in remotes for seq in remote.sessions[0].rx_seqs(ECHO)]
    assert len(received_by_remotes) == len(set(received_by_remotes)), "a remote received a record twice"
    echoed_by_remotes = [seq for remote in remotes for seq in remote.sessions[0].tx_seqs(ECHO)]
    assert len(echoed_by_remotes) == len(set(echoed_by_remotes)), "a remote echoed a record twice"
    echoes = echo.all_received()
    assert len(echoes) == len(set(echoes)), "an echo was read twice"
    # (an echo is published before the request's own used entry: a remote killed in between
    # echoed a record whose receipt its record does not show)
    assert set(echoes) <= set(echoed_by_remotes)
    assert sum(n for n, _ in accepted) > 0 and sum(n for _, n in accepted) > 0


def test_daemon_killed_10_times_resumes_without_loss_or_duplicate(board: Board, tmp_path: Path) -> None:
    """SIGKILL rprocd during two-way traffic; the restarted daemon resumes the remote's session.

    Exact checks: every record the remote received comes back to the echo
    client exactly once and the remote received none twice; the source
    stream arrives in order without a duplicate; the remote ran one session
    throughout.  Each resumed daemon must pick up exactly where its
    predecessor's ``avail.used_event`` says: read from the board after each
    kill, it splits the remote's record into what the dead daemon had
    accepted and what was left for its successor, and every message of the
    latter must reach the client.

    Not expected back: records a client wrote that the dead daemon had not
    put in the ring (lost with its socket; the remote never received them).
    Everything the remote sent comes through, exactly once: what a dead
    daemon had not handed to a client's socket was still in the ring.
    """
    rnd = random.Random(10)
    rec = tmp_path / "record"
    procs = board.procs
    sim = procs.sim(board.dir, "--record", str(rec))
    daemon = procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    total = 150_000
    echo = Client(board.ept_dir / ECHO, echo=True, window=16)
    source = Client(board.ept_dir / SOURCE, request=b"%d 8" % total, request_every_connection=False)
    echo.start()
    source.start()
    try:
        for k in range(10):
            # (a connection does not stand for a daemon: while a killed daemon's descriptors are being
            # closed, a client may get into its listener's backlog and be reset at once)
            need_echo = len(echo.all_received()) + rnd.randint(50, 500)
            need_source = (k + 1) * total // 12 + rnd.randint(0, total // 24)
            wait_for(
                partial(_progress, echo, source, None, need_echo, need_source),
                30,
                f"traffic through daemon #{k} (clients: {echo.error!r} {source.error!r})",
            )
            procs.stop(daemon, signal.SIGKILL)
            daemon = procs.daemon(board.dir, board.runtime)
            wait_for(partial(_resumed, procs, k + 1), 20, f"daemon #{k + 1} to resume")
        wait_for(lambda: source.all_received()[-1:] == [total - 1], 60, "the end of the source stream")
        echo.sending.clear()
        wait_for(
            lambda: count_lines(rec, f"rx {ECHO} ") <= len(set(echo.all_received())),
            20,
            "every record the remote received to come back",
        )
    finally:
        echo.stop()
        source.stop()
        procs.stop(sim)  # its record complete
    assert echo.error is None and source.error is None, (echo.error, source.error)

    (remote,) = read_record(rec)
    assert len(remote.sessions) == 1, "the remote's session was reset"
    assert remote.sessions[0].end == "shutting down"  # by us, just now
    sess = remote.sessions[0]
    assert "resetting" not in procs.log("rprocd.log")

    received = sess.rx_seqs(ECHO)
    assert len(received) == len(set(received)), "the remote received a record twice"
    echoes = echo.all_received()
    assert sorted(echoes) == sorted(received), "an echo was lost or read twice"
    assert sess.tx_seqs(ECHO) == received

    assert sess.tx_seqs(SOURCE) == list(range(total))
    got = source.all_received()
    assert all(a < b for a, b in zip(got, got[1:], strict=False)), "source: out of order or read twice"
    lost = set(range(total)) - set(got)
    assert not lost, f"source: {len(lost)} lost across the kills, first {sorted(lost)[:20]}"


def test_daemon_killed_with_records_queued_for_a_slow_client(board: Board) -> None:
    """With ``block``, what a slow client's full socket cannot take stays in the ring, not in rprocd.

    The client stops reading until rprocd holds messages back for it (its
    socket is full), then rprocd is killed and restarted; the client reads
    everything, exactly once.
    """
    procs = board.procs
    procs.sim(board.dir)
    daemon = procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    total = 2000
    s0 = stats(board.runtime)
    held0 = s0["bus"]["held"] + s0["bus"]["parked"]
    sock = board.connect(SOURCE)
    sock.send(b"%d 8" % total)

    def backpressure() -> bool:
        snap = stats(board.runtime)
        e = endpoint_stats(snap, SOURCE)
        return e["rx_msgs"] - e["rx_delivered"] >= 10 or snap["bus"]["held"] + snap["bus"]["parked"] > held0

    wait_for(backpressure, 20, "rprocd to hold messages back for the client that does not read")
    procs.stop(daemon, signal.SIGKILL)
    procs.daemon(board.dir, board.runtime)
    got: list[int] = []
    while True:  # what the dead daemon had handed over
        try:
            data = sock.recv(64)
        except ConnectionResetError:
            continue
        if not data:
            break
        got.append(seq_of(data))
    sock.close()
    wait_for(lambda: "resumed the live session" in procs.log("rprocd.log"), 20, "the resume")
    with board.connect(SOURCE) as s:
        while got[-1:] != [total - 1]:
            got.append(seq_of(s.recv(64)))
    lost = sorted(set(range(total)) - set(got))
    assert got == list(range(total)), f"{len(lost)} lost: {lost[:5]}...{lost[-5:]}"


# -- a hostile remote -------------------------------------------------------------------------


def _announceable(raw: bytes) -> bool:
    """What a name-service message can carry as a name: 1 to 31 bytes before a NUL."""
    return 0 < len(raw) < 32 and b"\0" not in raw


def test_hostile_endpoint_names_stay_inside_the_endpoint_directory(board: Board, tmp_path: Path) -> None:
    procs = board.procs
    procs.sim(board.dir, "--fault", "hostile-names")
    procs.daemon(board.dir, board.runtime)
    hostile = [n for n in HOSTILE_NAMES if _announceable(n) and n.decode(errors="replace") not in ENDPOINTS]
    expected = set(ENDPOINTS) | {safe_name(n) for n in hostile}
    assert len(expected) == len(ENDPOINTS) + len(hostile)  # escaping is one-to-one
    wait_for(lambda: board.endpoints() == expected, 20, f"the endpoints {sorted(expected)}")

    # nothing anywhere but the control socket and the endpoint sockets
    files = {p.relative_to(board.runtime) for p in board.runtime.rglob("*")}
    assert files == {Path("control"), Path("main"), Path("main/ept")} | {Path("main/ept", n) for n in expected}
    assert {p.name for p in tmp_path.iterdir()} <= {"board", "run", "sim.log", "rprocd.log"}
    for p in board.ept_dir.iterdir():
        assert p.resolve().parent == board.ept_dir.resolve() and p.is_socket()

    # the hostile endpoints work, under their escaped names; the normal ones too
    for raw in hostile:
        with board.connect(safe_name(raw)) as s:
            s.send(b"hi " + raw)
            assert s.recv(64) == b"hi " + raw
    with board.connect(ECHO) as s:
        s.send(b"still here")
        assert s.recv(64) == b"still here"

    # the log shows the names escaped: no control character, nothing that is not ASCII
    log = (tmp_path / "rprocd.log").read_bytes()
    assert not set(log) & (set(range(0x20)) - {0x0A} | set(range(0x7F, 0x100))), "raw bytes of a name in the log"
    for raw in hostile:
        assert f"endpoint {safe_name(raw)} at ".encode() in log
    assert log.count(b"name-service name is empty or not NUL-terminated") == 2
    assert stats(board.runtime)["bus"]["ns_bad"] == 3  # those two, and rpmsg-tty announced again

    # the listing through the control socket names every endpoint and its socket
    with Control(board.runtime) as c:
        listed = {e["exports"]["socket"]["path"] for e in c.endpoints("main")}
    assert listed == {str(board.ept_dir / n) for n in expected}


def test_hostile_endpoint_names_are_escaped_in_rprocctl_endpoints(board: Board) -> None:
    procs = board.procs
    procs.sim(board.dir, "--fault", "hostile-names")
    procs.daemon(board.dir, board.runtime)
    wait_for(lambda: "ctl%01%1B%5B2J%7Fx" in board.endpoints(), 20, "the hostile endpoints")
    out = subprocess.run(
        [sys.executable, "-m", "rprocd.cli.ctl", "--runtime-dir", str(board.runtime), "endpoints"],
        capture_output=True,
        env=procs.env,
        timeout=30,
        check=True,
    ).stdout
    rows = out.splitlines()
    assert len(rows) == 1 + len(board.endpoints()), "a name split a row"
    assert not set(out) & (set(range(0x20)) - {0x0A}), "control characters from the remote reach the terminal"
    names = [row.split()[0] for row in rows[1:]]
    assert len(set(names)) == len(names), "two endpoints show under the same name"


def _fault_notes(rec: Path, kind: str) -> list[str]:
    return [f for p in read_record(rec) for f in p.faults if f.startswith(kind + " ")]


@pytest.mark.parametrize("kind", ["corrupt-desc", "jump-index", "rewrite-table"])
def test_broken_ring_or_table_resets_the_session_and_the_daemon_carries_on(
    board: Board, tmp_path: Path, kind: str
) -> None:
    """Each fault that breaks the session is reported, the session reset and attached again; a message
    with a wrong length is dropped and counted, never delivered."""
    rec = tmp_path / "record"
    procs = board.procs
    sim = procs.sim(board.dir, "--fault", kind, "--fault-seed", "3", "--record", str(rec))
    daemon = procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    echo = Client(board.ept_dir / ECHO, echo=True, window=4)
    echo.start()
    try:
        wait_for(
            lambda: len(_fault_notes(rec, kind)) >= 4 and echo.connections >= 3 and echo.current(),
            30,
            f"4 faults ({kind}) and echoes after the daemon attached again",
        )
    finally:
        procs.stop(sim)  # no more faults: the record is final
        echo.stop()
    notes = _fault_notes(rec, kind)
    if kind == "corrupt-desc":
        breaking = sum(" descriptor " in n and " of " in n for n in notes)  # an id past the table
        counter = "ring_errors"
        reason = "ring error: vring 0x200c8000: used entry"
    elif kind == "jump-index":
        breaking, counter, reason = len(notes), "ring_errors", "ring error: vring 0x200c"
    else:
        breaking, counter, reason = len(notes), "table_errors", "rewrote its resource table under a live session"
    assert breaking >= 1

    def settled() -> bool:
        h = stats(board.runtime)["host"]
        return h[counter] == h["sessions_lost"] == breaking and h["attaches"] == breaking + 1

    wait_for(settled, 10, f"the daemon to report {breaking} broken sessions and attach again after each")
    assert daemon.poll() is None
    log = procs.log("rprocd.log")
    assert log.count(reason) == breaking, log[-3000:]
    assert "Traceback" not in log
    if kind == "corrupt-desc" and breaking < len(notes):
        assert "used length" in log  # a wrong length: that message dropped, the session kept
    got = echo.all_received()
    assert len(got) == len(set(got)) and set(got) <= set(echo.sent), "an echo that was never sent, or twice"


def test_remote_restarting_at_random_is_attached_again_each_time(board: Board, tmp_path: Path) -> None:
    rec = tmp_path / "record"
    procs = board.procs
    sim = procs.sim(board.dir, "--fault", "restart-random", "--fault-seed", "5", "--record", str(rec))
    procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    echo = Client(board.ept_dir / ECHO, echo=True, window=4)
    echo.start()
    try:
        wait_for(
            lambda: len(_fault_notes(rec, "restart-random")) >= 3 and echo.connections >= 3 and echo.current(),
            30,
            "3 restarts and echoes after the daemon attached again",
        )
    finally:
        procs.stop(sim)
        echo.stop()
    restarts = len(_fault_notes(rec, "restart-random"))

    def settled() -> bool:
        h = stats(board.runtime)["host"]
        return h["sessions_lost"] == restarts and h["attaches"] == restarts + 1

    wait_for(settled, 10, f"{restarts} sessions lost and attached again")
    h = stats(board.runtime)["host"]
    assert (h["resets"], h["ring_errors"], h["table_errors"]) == (0, 0, 0)  # a fresh table needs no reset
    (remote,) = read_record(rec)
    assert restarts <= len(remote.sessions) <= restarts + 1  # (stopped before or after the last attach)
    assert [s.end for s in remote.sessions[:restarts]] == ["fault: restart-random"] * restarts


def test_fault_options() -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(["--board", "b", "--fault", "jump-index,hostile-names", "--fault-seed", "9", "--record", "r"])
    assert (a.fault, a.fault_seed, a.fault_after, a.record) == ("jump-index,hostile-names", 9, 0, "r")
    assert parse_kinds("jump-index, hostile-names,jump-index") == ("jump-index", "hostile-names")
    with pytest.raises(ValueError, match="unknown fault kind 'jump'"):
        parse_kinds("jump")
    out = subprocess.run(
        [sys.executable, "-m", "rprocd.sim.remote", "--board", "/nonexistent/x", "--fault", "nope"],
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 2 and b"unknown fault kind 'nope'" in out.stderr


def test_client_library_reads_what_a_killed_daemon_handed_over(board: Board) -> None:
    """A killed daemon's last deliveries are still in the client's socket; the library must return them."""
    procs = board.procs
    procs.sim(board.dir, "--delay-us", "50000")  # a slow remote: the daemon reads our records slowly
    daemon = procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    with Endpoint.open(ECHO, runtime_dir=board.runtime) as ept:
        for i in range(20):
            ept.send(echo_payload(i))  # most of them wait, unread, in the daemon's end of the socket
        wait_for(
            lambda: endpoint_stats(stats(board.runtime), ECHO)["rx_delivered"] >= 3,
            20,
            "three echoes handed over to the client's socket",
        )
        delivered = endpoint_stats(stats(board.runtime), ECHO)["rx_delivered"]
        procs.stop(daemon, signal.SIGKILL)
        got = []
        try:
            while True:
                got.append(seq_of(ept.recv(timeout=10)))
        except EndpointClosed:
            pass
    assert got == list(range(len(got))) and len(got) >= delivered, f"read {got}, {delivered} were handed over"


# -- nothing rprocd read is lost to a SIGKILL (issue 14, section 1) ------------------------------

SINK = "rpmsg-sink"
SINK_RECORD = 64  # bytes per record of the writer


def _outq(sock: socket.socket) -> int:
    """``SIOCOUTQ``: buffer space of what we sent that the peer has not consumed (``sk_wmem_alloc``)."""
    buf = bytearray(4)
    fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf)
    return int(struct.unpack("i", buf)[0])


def _record_charge(tmp: Path) -> int:
    """What one unconsumed SINK_RECORD-byte record adds to its sender's ``SIOCOUTQ`` on this kernel.

    ``unix_outq_len`` is ``sk_wmem_alloc``: the skbs' truesize, not their
    bytes; a socket pair measures it (1 and 3 records, to see it is linear).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as lst:
        lst.bind(str(tmp / "calibrate.sock"))
        lst.listen(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as c:
            c.connect(str(tmp / "calibrate.sock"))
            peer, _ = lst.accept()
            with peer:
                c.send(bytes(SINK_RECORD))
                one = _outq(c)
                c.send(bytes(SINK_RECORD))
                c.send(bytes(SINK_RECORD))
                assert one > 0 and _outq(c) == 3 * one
    return one


def _vring1_avail_idx(board: Path) -> int:
    pa = TCC807X.vrings[1].pa
    avail, _used, _size = vring_offsets(pa, VRING_NUM, VRING_ALIGN)
    with open(board / "memory", "rb") as f:
        f.seek(pa - TCC807X.window.pa + avail + 2)
        return int(struct.unpack("<H", f.read(2))[0])


def _connect_retry(path: Path) -> socket.socket:
    def attempt() -> socket.socket | None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            return None
        return s

    return wait_for(attempt, 20, f"a connection to {path}")  # type: ignore[return-value]


class _Writer(threading.Thread):
    """Writes SINK_RECORD-byte records as fast as the socket takes them; counts what the kernel accepted."""

    def __init__(self, sock: socket.socket):
        super().__init__(daemon=True)
        self.sock = sock
        self.accepted = 0
        self.quit = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        self.sock.settimeout(0.02)
        rec = bytes(SINK_RECORD)
        while not self.quit.is_set():
            try:
                self.sock.send(rec)
            except TimeoutError:
                continue  # full: rprocd stopped or the remote is behind
            except OSError as e:
                self.error = e
                return
            self.accepted += 1


def _wrote(writer: _Writer, n: int) -> bool:
    return writer.accepted >= n or writer.error is not None


def _stopped(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


def test_daemon_killed_20_times_during_sink_traffic_loses_nothing_it_read(board: Board, tmp_path: Path) -> None:
    """At every kill, everything rprocd had read from the client is published in vring1.

    Kill by kill: SIGSTOP rprocd mid-stream, stop the writer, and read the
    client's unread records (``SIOCOUTQ`` over the measured charge of one
    record) and vring1's ``avail.idx`` from the board.  Then SIGKILL, restart,
    and ask the sink for its count on a new connection (``STAT``).  With
    accepted = what the kernel took from the client and read = accepted -
    unread, summed over the connections so far:
    read <= published (each record rprocd read is in the ring at that instant)
    and read <= STAT == published <= accepted: 0 lost of what rprocd read.
    """
    rnd = random.Random(14)
    charge = _record_charge(tmp_path)
    procs = board.procs
    procs.sim(board.dir)
    daemon = procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    path = board.ept_dir / SINK
    avail0 = _vring1_avail_idx(board.dir)
    accepted = read = stats_sent = 0
    sock = _connect_retry(path)
    try:
        for k in range(20):
            writer = _Writer(sock)
            writer.start()
            target = rnd.randint(200, 3000)
            wait_for(partial(_wrote, writer, target), 30, f"traffic through daemon #{k}")
            os.kill(daemon.pid, signal.SIGSTOP)
            wait_for(partial(_stopped, daemon.pid), 10, f"daemon #{k} to stop")
            writer.quit.set()
            writer.join(10)
            assert writer.error is None, writer.error
            outq = _outq(sock)
            assert outq % charge == 0, f"SIOCOUTQ {outq} is not a whole number of {charge}-byte charges"
            unread = outq // charge
            published = (_vring1_avail_idx(board.dir) - avail0) & 0xFFFF  # (fewer than 65 536 in all)
            accepted += writer.accepted
            read += writer.accepted - unread
            assert read <= published - stats_sent <= accepted, (
                f"kill #{k}: rprocd read {read} records, {published - stats_sent} are in vring1, "
                f"{accepted} were accepted"
            )
            procs.stop(daemon, signal.SIGKILL)
            sock.close()
            daemon = procs.daemon(board.dir, board.runtime)
            wait_for(partial(_resumed, procs, k + 1), 20, f"daemon #{k + 1} to resume")
            sock = _connect_retry(path)
            sock.settimeout(20)
            sock.send(b"STAT")
            stats_sent += 1
            count = int(sock.recv(64).split()[0])
            assert read <= count <= accepted, f"kill #{k}: the sink counted {count}, rprocd had read {read}"
            assert count == published - (stats_sent - 1), f"kill #{k}: the sink counted {count}, {published} in vring1"
    finally:
        sock.close()
    assert read > 20 * 200 // 2  # the writers did write
