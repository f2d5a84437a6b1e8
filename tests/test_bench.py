"""The benchmark's tools: the C remote against the board contract and the daemon, and ``python -m bench --quick``.

* The C remote (``bench/remote.c``) must be the Python simulator on the
  wire: the same resource table byte for byte, the same handshake and
  endpoints, the same checks and notification behaviour.  The contract host
  of ``tests/test_sim_remote.py`` (``MiniHost``) drives both remotes, run as
  processes, through the same checks.
* The daemon's end-to-end checks (echo, sink, source, pipelined echo, a
  remote that restarts) run against both remotes.
* ``python -m bench --quick`` completes, loses and duplicates nothing, and
  the daemon's syscalls per message in each bulk workload stay under
  ``SYSCALLS_PER_MSG_MAX``: a count (perf stat), not a time, so CI machines
  being what they are does not make it flaky.
"""

from __future__ import annotations

import json
import os
import random
import re
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

from bench.build import BuildError, build
from rprocd import rsc_table as rt
from rprocd.layout import TCC807X as L
from rprocd.sim.core import RemoteCore
from rprocd.vring import VRING_DESC_F_WRITE
from tests.conftest import REPO, Board, Procs, wait_for
from tests.test_sim_remote import BUF, HDR, HOST_ADDR, NAMES, Deadline, MiniHost, attach_and_ns

REMOTES = ["py", "c"]

# The daemon's syscalls per rpmsg message (perf stat -p, raw_syscalls:sys_enter) in each bulk
# workload (pipelined echo, sink, source) on the C remote, in every placement.  Issue 15's
# target is 0.5.  With the kill-safe batched socket hop (recvmmsg/sendmmsg), suppression and the
# doorbell read in one recvmmsg the daemon measures 0.34-0.44 (pipe), 0.44-0.48 (sink) and
# 0.28-0.50 (source); 0.50 is the floor of a source whose remote has its own CPU (per 8-entry
# ring-full: one sleep, one doorbell read, one sendmmsg to the client, one kick).  Before the
# batching, 1.2-1.5; one message per wake-up costs about 4.5.  The ceiling keeps a margin for a
# loaded machine, where batches are shorter: 0.6 failed once (sink 0.621, in fresh-check's chroot
# beside a second test suite on the same two cores, 2026-12-02); 0.75 held in every run before.
SYSCALLS_PER_MSG_MAX = 0.75
# The reference host (bench/host.c) is the instrument: ~0.06-0.27 per message in bulk today
# (start-up included).  If it needs more, the ratios measure a worse host than the machine allows.
REFERENCE_SYSCALLS_PER_MSG_MAX = 0.5
BULK = ("pipe", "sink", "source")


@pytest.fixture(scope="session")
def bins() -> dict[str, Path]:
    try:
        return build(verbose=False)
    except BuildError as e:  # gcc is part of `make deps`: a failed build is a failure, never a skip
        pytest.fail(f"cannot build the bench's C programs: {e}")


def remote_argv(kind: str, board: Path, bins: dict[str, Path], *extra: str) -> list[str]:
    if kind == "c":
        return [str(bins["remote"]), "--board", str(board), *extra]
    return [sys.executable, "-m", "rprocd.sim.remote", "--board", str(board), "--log-level", "warning", *extra]


@contextmanager
def remote_proc(kind: str, board: Path, bins: dict[str, Path], *extra: str) -> Iterator[subprocess.Popen[str]]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(remote_argv(kind, board, bins, *extra), env=env, stderr=subprocess.PIPE, text=True)
    try:
        dl = Deadline(10)
        while not (board / "remote.sock").exists():
            assert proc.poll() is None, "the remote exited at start"
            dl.check("remote.sock")
            time.sleep(0.005)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def c_stats(proc: subprocess.Popen[str]) -> dict[str, int]:
    """The C remote's counters, from the line it prints on stderr when it stops."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    m = re.search(r"remote-c: stats (\{.*\})", err)
    assert m, err
    stats: dict[str, int] = json.loads(m.group(1))
    return stats


@contextmanager
def contract_host(
    kind: str, tmp_path: Path, bins: dict[str, Path], *extra: str
) -> Iterator[tuple[subprocess.Popen[str], MiniHost]]:
    board = tmp_path / "board"
    with remote_proc(kind, board, bins, *extra) as proc:
        host = MiniHost(board)
        try:
            yield proc, host
        finally:
            host.close()


def settle(host: MiniHost, pred: Callable[[], bool], what: str, seconds: float = 5) -> None:
    """Let the remote run (doorbells drained) until ``pred`` holds."""
    dl = Deadline(seconds)
    while not pred():
        dl.check(what)
        host.wait(dl)


# -- the C remote on the wire, beside the Python sim ----------------------------------------------


@pytest.mark.parametrize("kind", REMOTES)
def test_table_is_the_python_sims_byte_for_byte(kind: str, tmp_path: Path, bins: dict[str, Path]) -> None:
    reference = RemoteCore(memoryview(bytearray(L.window.size)))._table_raw
    with remote_proc(kind, tmp_path / "board", bins):
        raw = (tmp_path / "board" / "memory").read_bytes()
    off = L.table_pa - L.window.pa
    assert raw[off : off + len(reference)] == reference
    table = rt.parse(raw[off : off + L.rsc_size])
    (vdev,) = table.vdevs
    assert (vdev.id, vdev.dfeatures, vdev.status) == (7, 1, 0)
    assert [(v.da, v.align, v.num, v.notifyid) for v in vdev.vrings] == [
        (0x200C8000, 16, 8, 0),
        (0x200C9000, 16, 8, 1),
    ]
    (trace,) = [e for e in table.entries if isinstance(e, rt.Trace)]
    assert trace.name == "Zephyr_log"
    text = raw[trace.da - L.window.pa : trace.da - L.window.pa + trace.len]
    assert b"Booting" in text and b"waiting for the host" in text and text[-1] == 0


@pytest.mark.parametrize("kind", REMOTES)
def test_attach_announces_the_four_endpoints_in_order(kind: str, tmp_path: Path, bins: dict[str, Path]) -> None:
    with contract_host(kind, tmp_path, bins) as (_proc, host):
        dl = Deadline(10)
        host.attach()
        got = host.recv(4, dl)
        assert [(s, d) for s, d, _ in got] == [(1024 + i, 53) for i in range(4)]
        assert [struct.unpack("<32sII", p) for _, _, p in got] == [
            (n.encode().ljust(32, b"\0"), 1024 + i, 0) for i, n in enumerate(NAMES)
        ]
        assert host.status() == 7


@pytest.mark.parametrize("kind", REMOTES)
def test_echo_sink_source_as_the_contract_says(kind: str, tmp_path: Path, bins: dict[str, Path]) -> None:
    with contract_host(kind, tmp_path, bins) as (_proc, host):
        dl = Deadline(20)
        eps = attach_and_ns(host, dl)
        for name in ("rpmsg-client-sample", "rpmsg-tty"):
            for p in (b"", b"x", bytes(range(256)) + bytes(240), b"hello"):
                host.send(eps[name], p, dl, src=0x455)
                assert host.recv(1, dl) == [(eps[name], 0x455, p)]
        sink = eps["rpmsg-sink"]
        host.send(sink, b"STAT", dl)
        assert host.recv(1, dl) == [(sink, HOST_ADDR, b"0 0")]
        total = 0
        for i in range(50):
            host.send(sink, bytes(i * 9), dl)
            total += i * 9
        host.send(sink, b"STATS", dl)  # not STAT: counted
        host.send(sink, b"STAT", dl)
        assert host.recv(1, dl) == [(sink, HOST_ADDR, f"51 {total + 5}".encode())]
        src = eps["rpmsg-source"]
        for bad in (b"10 3", b"10 497", b"ten 4", b"1", b"-1 10", b""):
            host.send(src, bad, dl)  # no answer to any of these
        host.send(src, b"3000 496", dl)
        host.send(src, b"5 4\0\0", dl)  # queued behind the first; trailing NULs ignored
        got = host.recv(3005, dl)
        filler = bytes(range(256)) * 2
        for i, (s, d, p) in enumerate(got[:3000]):
            assert (s, d, len(p), int.from_bytes(p[:4], "little")) == (src, HOST_ADDR, 496, i)
            assert p[4:] == filler[:492]
        assert [p for _, _, p in got[3000:]] == [struct.pack("<I", i) for i in range(5)]
        time.sleep(0.05)
        assert host.poll_rx() == []


@pytest.mark.parametrize("kind", REMOTES)
def test_backpressure_nothing_dropped(kind: str, tmp_path: Path, bins: dict[str, Path]) -> None:
    """The host reads nothing: 8 echoes fill vring0, the remote holds the next 8 messages, then all 16 come."""
    with contract_host(kind, tmp_path, bins) as (_proc, host):
        dl = Deadline(10)
        echo = attach_and_ns(host, dl)["rpmsg-client-sample"]
        assert host.rx is not None and host.tx is not None
        sent = 0
        while sent < 16:
            if host.try_send(echo, sent.to_bytes(4, "little")):
                sent += 1
            else:
                host.wait(dl)
        settle(host, lambda: host.rx is not None and host.rx.used_pending() == 8, "vring0 full")
        time.sleep(0.1)
        host.reclaim()
        assert host.tx.inflight == 8 and not host.free  # the remote holds on to the next 8
        got = host.recv(16, dl)
        assert [int.from_bytes(p, "little") for _, _, p in got] == list(range(16))


@pytest.mark.parametrize("kind", REMOTES)
def test_notification_suppression(kind: str, tmp_path: Path, bins: dict[str, Path]) -> None:
    """The remote honours VRING_AVAIL_F_NO_INTERRUPT and, asleep, leaves VRING_USED_F_NO_NOTIFY clear."""
    with contract_host(kind, tmp_path, bins) as (_proc, host):
        dl = Deadline(10)
        eps = attach_and_ns(host, dl)
        assert host.rx is not None and host.tx is not None
        time.sleep(0.05)
        assert host.tx.kick_needed() and host.rx.kick_needed()  # idle: wants kicks on both rings
        host.tx.want_interrupts(False)
        host.rx.want_interrupts(False)
        host.board.drain()
        rung = host.board.stats.received
        host.try_send(eps["rpmsg-sink"], b"abc")
        settle(host, lambda: host.tx is not None and host.tx.used_pending() == 1, "the sink to take it")
        time.sleep(0.05)
        host.board.drain()
        assert host.board.stats.received == rung  # consumed without a doorbell
        host.rx.want_interrupts(True)
        host.send(eps["rpmsg-sink"], b"STAT", dl)
        sock = host.board.sock
        assert sock is not None
        sock.settimeout(5)
        assert len(sock.recv(8)) == 4  # the reply rings
        sock.setblocking(False)
        assert host.poll_rx() == [(eps["rpmsg-sink"], HOST_ADDR, b"1 3")]


@pytest.mark.parametrize("kind", REMOTES)
def test_status_reset_and_reattach(kind: str, tmp_path: Path, bins: dict[str, Path]) -> None:
    with contract_host(kind, tmp_path, bins) as (_proc, host):
        dl = Deadline(10)
        eps = attach_and_ns(host, dl)
        host.send(eps["rpmsg-sink"], b"12345", dl)
        host.reset()
        time.sleep(0.1)
        assert host.table().ver == 1 and host.status() == 0
        eps2 = attach_and_ns(host, dl)
        assert eps2 == eps
        host.send(eps["rpmsg-sink"], b"STAT", dl)
        assert host.recv(1, dl)[0][2] == b"0 0"  # a new session, new counters
        host.attach()  # rings set up afresh without a status drop the remote saw
        assert host.ns(dl).keys() == eps.keys()


@pytest.mark.parametrize("kind", REMOTES)
def test_bad_descriptors_returned_and_index_jump_restarts(kind: str, tmp_path: Path, bins: dict[str, Path]) -> None:
    with contract_host(kind, tmp_path, bins) as (proc, host):
        dl = Deadline(10)
        attach_and_ns(host, dl)
        assert host.tx is not None
        host.tx.add(0, 0x200C8000, 64, 0)  # outside the pool
        host.tx.add(1, L.buffers.pa + 9 * BUF, 8, 0)  # shorter than a header
        host.tx.add(2, L.buffers.pa + 10 * BUF, 64, VRING_DESC_F_WRITE)  # device-writable
        host.bufs.write(11 * BUF, HDR.pack(HOST_ADDR, 1024, 0, 100, 0))
        host.tx.add(3, L.buffers.pa + 11 * BUF, 20, 0)  # header longer than the buffer
        host.free = [4, 5, 6, 7]
        host.kick_tx()
        settle(host, lambda: host.tx is not None and host.tx.used_pending() == 4, "the bad descriptors back")
        host.reclaim()
        assert sorted(host.free) == list(range(8))
        host.tx.poke_avail(1, 100)  # 100 entries past: impossible with 8
        host.board.ring(1)
        settle(host, lambda: host.status() == 0, "the remote to restart")
        assert host.table().ver == 1
        attach_and_ns(host, dl)
        if kind == "c":
            st = c_stats(proc)
            assert (st["bad_descriptors"], st["malformed"], st["violations"], st["reboots"]) == (3, 1, 1, 1)


def test_c_remote_extra_echo_endpoints(tmp_path: Path, bins: dict[str, Path]) -> None:
    with contract_host("c", tmp_path, bins, "--extra-echo", "3") as (proc, host):
        dl = Deadline(10)
        host.attach()
        got = host.recv(7, dl)
        names = [struct.unpack("<32sII", p)[0].rstrip(b"\0").decode() for _, _, p in got]
        assert names == [*NAMES, "bench-echo-0", "bench-echo-1", "bench-echo-2"]
        for i in range(3):
            host.send(1028 + i, b"e%d" % i, dl)
            assert host.recv(1, dl) == [(1028 + i, HOST_ADDR, b"e%d" % i)]
        st = c_stats(proc)
        assert st["ns_sent"] == 7 and st["sessions"] == 1
    assert not (tmp_path / "board" / "remote.sock").exists()


def test_c_remote_sleeps_when_idle(tmp_path: Path, bins: dict[str, Path]) -> None:
    """Attached and idle, or waiting for a host: poll(), not a spin."""
    with contract_host("c", tmp_path, bins) as (proc, host):
        attach_and_ns(host, Deadline(10))

        def cpu() -> float:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        c0 = cpu()
        time.sleep(1.0)
        assert cpu() - c0 < 0.05


# -- the daemon against both remotes ------------------------------------------------------------


@pytest.fixture(params=REMOTES)
def rig(request: pytest.FixtureRequest, procs: Procs, board: Board, bins: dict[str, Path]) -> Board:
    """The daemon on a board with the Python sim or the C remote."""
    kind = request.param
    board.dir.mkdir(parents=True)
    with open(procs.tmp / "remote.log", "ab") as out:
        p = subprocess.Popen(remote_argv(kind, board.dir, bins), stdout=out, stderr=subprocess.STDOUT, env=procs.env)
    procs.procs.append(p)
    procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    return board


def test_daemon_echo(rig: Board) -> None:
    rnd = random.Random(7)
    with rig.connect("rpmsg-client-sample") as s:
        for i in range(2000):
            payload = rnd.randbytes(rnd.randint(0, 496)) if i % 10 else struct.pack("<I", i)
            s.send(payload)
            assert s.recv(1024) == payload


def test_daemon_sink_counts_everything(rig: Board) -> None:
    with rig.connect("rpmsg-sink") as s:
        payload = bytes(range(256)) * 2
        for _ in range(20_000):
            s.send(payload[:496])
        s.send(b"STAT")
        assert s.recv(100) == b"20000 9920000"


def test_daemon_source_in_order(rig: Board) -> None:
    with rig.connect("rpmsg-source") as s:
        s.send(b"20000 496")
        for seq in range(20_000):
            msg = s.recv(1024)
            assert len(msg) == 496 and struct.unpack_from("<I", msg)[0] == seq


def test_daemon_pipelined_echo(rig: Board) -> None:
    n = 10_000
    with rig.connect("rpmsg-tty") as s:
        got: list[bytes] = []

        def reader() -> None:
            for _ in range(n):
                got.append(s.recv(1024))

        t = threading.Thread(target=reader)
        t.start()
        for i in range(n):
            s.send(struct.pack("<I", i) * 4)
        t.join(120)
        assert not t.is_alive()
    assert [struct.unpack_from("<I", m)[0] for m in got] == list(range(n))


def test_daemon_reattaches_to_a_restarted_c_remote(procs: Procs, board: Board, bins: dict[str, Path]) -> None:
    board.dir.mkdir(parents=True)
    argv = remote_argv("c", board.dir, bins)
    first = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    procs.procs.append(first)
    procs.daemon(board.dir, board.runtime)
    board.wait_endpoints()
    with board.connect("rpmsg-tty") as s:
        s.send(b"before")
        assert s.recv(64) == b"before"
        first.kill()  # a crash: no goodbye
        first.wait()
        second = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        procs.procs.append(second)
        assert s.recv(64) == b""  # the old session's socket goes away
    wait_for(lambda: "rpmsg-tty" in board.endpoints() and _echoes(board), 20, "the new session")


def _echoes(board: Board) -> bool:
    try:
        with board.connect("rpmsg-tty") as s:
            s.settimeout(2)
            s.send(b"after")
            return s.recv(64) == b"after"
    except OSError:
        return False


# -- the benchmark itself -----------------------------------------------------------------------------


@pytest.mark.timeout(900)  # ~1 min on a quiet 2-CPU machine; several on one shared with other work
def test_quick_bench_completes_and_loses_nothing(tmp_path: Path, bins: dict[str, Path]) -> None:
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # Its own session: if the test is stopped (a timeout), the bench and everything it started go
    # with it (os.killpg), instead of a killed bench leaving its remote, daemon and clients behind.
    p = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = p.communicate(timeout=840)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    r = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    res = json.loads(out.read_text())
    assert res["ok"] and res["lost"] == 0 and res["failures"] == []
    for kind in ("c", "py"):
        figs = res["daemon"][kind]
        assert figs["sink"]["counted"] == figs["sink"]["n"] > 0
        assert figs["source"]["n"] > 0 and figs["pipe"]["n"] > 0 and figs["rtt"]["n"] > 0
    assert {(row["endpoints"], row["clients"]) for row in res["scaling"]} == {
        (e, c) for e in (1, 8, 64) for c in (1, 8, 32)
    }
    assert all(t["name"] and isinstance(t["pass"], bool) for t in res["targets"])
    c, ref = res["daemon"]["c"], res["limit"]["c"]
    placements = ("", "_one_cpu", "_split") if len(os.sched_getaffinity(0)) > 1 else ("", "_one_cpu")
    for mode in ("rtt", "pipe", "sink", "source"):  # every placement ran and checked its messages
        for key in (mode + p for p in placements):
            assert c[key]["lost"] == 0 and c[key]["bad"] == 0 and c[key]["n"] > 0, key
            if mode == "sink":  # the sink's own count: a duplicate would count more than was sent
                assert c[key]["counted"] == c[key]["n"], key
            assert ref[key]["lost"] == 0 and ref[key]["bad"] == 0, key  # bad: out of order or duplicated
            # woken by its safety net while the remote, asking to be kicked and with every kick read,
            # slept (a timeout while the remote did not run at all is a busy machine, not counted)
            assert ref[key]["lost_wakeups"] == 0, key
            assert c[key]["perf"]["syscalls"] > 0 and ref[key]["perf"]["syscalls"] > 0, key
    for key in (mode + p for mode in BULK for p in placements):
        daemon, reference = c[key]["perf"]["syscalls_per_msg"], ref[key]["perf"]["syscalls_per_msg"]
        assert daemon <= SYSCALLS_PER_MSG_MAX, f"{key}: the daemon made {daemon} syscalls per message"
        assert reference <= REFERENCE_SYSCALLS_PER_MSG_MAX, f"{key}: the reference host made {reference} per message"
    assert '"ok":true' in r.stdout.splitlines()[-1]  # the JSON object is the last line
    assert "targets" in r.stdout and "scaling" in r.stdout  # and the table before it
