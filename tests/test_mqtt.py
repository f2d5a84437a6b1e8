"""The MQTT bridge against a real mosquitto, the simulated remote and the daemon, as separate processes.

The broker is started by the tests on a free loopback port (tests/mqtt_broker.py); a
missing mosquitto fails the tests, it never skips them.  The in-process tests at the end
drive the bridge with a stand-in host where an exact sequence of events is needed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rprocd.config import MqttConfig, TlsConfig
from rprocd.exports.mqtt import MqttBridge, MqttSettings, normalize
from rprocd.layout import TCC807X
from rprocd.names import safe_name
from rprocd.rpmsg import Channel
from tests.conftest import Board
from tests.mqtt_broker import Broker, Msg, Subscriber, daemon_argv, make_certs, make_password_file, wait_until
from tests.traffic import read_record

ROOT = "rprocd/test"
BASE = f"{ROOT}/main"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "mqtt")
    b.start()
    yield b
    b.stop()


def start_daemon(board: Board, port: int, writable: tuple[str, ...] = (), **settings: Any) -> subprocess.Popen[bytes]:
    s = {"host": "127.0.0.1", "port": port, "topic_root": ROOT, "stats_interval": 0.5, **settings}
    return board.procs.start(*daemon_argv(board.dir, board.runtime, s, writable), log="rprocd.log")


def daemon_log(board: Board) -> str:
    return board.procs.log("rprocd.log")


def wait_log(board: Board, text: str, timeout: float = 10, count: int = 1) -> None:
    wait_until(lambda: daemon_log(board).count(text) >= count, timeout, f"{text!r} in the daemon's log")


def payloads(msgs: list[Msg], topic: str) -> list[bytes]:
    return [m.payload for m in msgs if m.topic == topic]


def latest_stats(sub: Subscriber, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
    def find(msgs: list[Msg]) -> dict[str, Any] | None:
        for m in reversed(msgs):
            if m.topic == f"{BASE}/stats":
                st = json.loads(m.payload)
                return st if pred(st) else None
        return None

    result: dict[str, Any] = sub.wait(find, timeout, what)
    return result


# -- state, last will, trace ----------------------------------------------------------------


def test_state_retained_last_will_on_sigkill_and_trace(broker: Broker, board: Board) -> None:
    base = f"rprocd/{safe_name(socket.gethostname())}/main"  # the default topic root
    state = f"{base}/state"
    with Subscriber(broker.port, [state, f"{base}/trace"]) as sub:
        board.procs.sim(board.dir)
        daemon = start_daemon(board, broker.port, topic_root="")
        board.wait_endpoints()
        sub.wait(lambda ms: b"attached" in payloads(ms, state), 10, "state attached")

        def attached_line(ms: list[Msg]) -> list[bytes] | None:
            lines = payloads(ms, f"{base}/trace")
            return lines if any(b"rpmsg: attached" in x for x in lines) else None

        lines = sub.wait(attached_line, 10, "the remote's trace lines")
        assert any(b"Booting rprocd simulated remote" in x for x in lines)
        assert all(b"\n" not in x for x in lines)  # one line per publication
        with Subscriber(broker.port, [state]) as late:
            (m,) = late.wait(lambda ms: [x for x in ms if x.topic == state], 5, "the retained state")
            assert (m.payload, m.retain) == (b"attached", True)

        board.procs.stop(daemon, signal.SIGKILL)
        sub.wait(lambda ms: b"offline" in payloads(ms, state), 10, "the last will")
        states = payloads(sub.msgs, state)  # (detached first if the broker was quicker than the remote)
        assert states[states.index(b"attached") :] == [b"attached", b"offline"]  # the will: the daemon said nothing
        with Subscriber(broker.port, [state]) as late:
            (m,) = late.wait(lambda ms: [x for x in ms if x.topic == state], 5, "the retained will")
            assert (m.payload, m.retain) == (b"offline", True)

        # a clean stop says detached (the remote is let go), then offline, itself
        seen = len(payloads(sub.msgs, state))
        daemon = start_daemon(board, broker.port, topic_root="")
        sub.wait(lambda ms: b"attached" in payloads(ms, state)[seen:], 15, "attached again")
        assert board.procs.stop(daemon) == 0
        sub.wait(lambda ms: payloads(ms, state)[-1:] == [b"offline"], 10, "offline on a clean stop")
        states = payloads(sub.msgs, state)[seen:]
        assert states[states.index(b"attached") :] == [b"attached", b"detached", b"offline"]
    assert "Traceback" not in daemon_log(board)


# -- rx -------------------------------------------------------------------------------------


def test_10000_rx_messages_in_order_intact(broker: Broker, board: Board) -> None:
    topic = f"{BASE}/ept/rpmsg-client-sample/rx"
    board.procs.sim(board.dir)
    start_daemon(board, broker.port, queue=10_000)  # room for all: this test is about order and content
    board.wait_endpoints()
    rnd = random.Random(5)
    sent = [rnd.randbytes(rnd.randint(0, 496)) for _ in range(10_000)]
    with Subscriber(broker.port, [topic, f"{BASE}/stats"]) as sub, board.connect("rpmsg-client-sample") as s:
        writer = threading.Thread(target=lambda: [s.send(p) for p in sent])
        writer.start()
        echoed = [s.recv(1024) for _ in sent]
        writer.join()
        assert echoed == sent
        got = sub.wait_count(topic, len(sent), 30)
        assert [m.payload for m in got] == sent
        st = latest_stats(sub, lambda st: st["mqtt"]["rx_published"] == len(sent), 10, "stats after 10 000")
        assert st["mqtt"]["rx_dropped"] == 0 and st["mqtt"]["rx_seen"] == len(sent)


def test_export_list_and_hex_encoding(broker: Broker, board: Board) -> None:
    board.procs.sim(board.dir)
    start_daemon(board, broker.port, export=["rpmsg-tty"], rx_encoding="hex")
    board.wait_endpoints()
    with Subscriber(broker.port, [f"{BASE}/ept/+/rx"]) as sub:
        with board.connect("rpmsg-client-sample") as a, board.connect("rpmsg-tty") as b:
            a.send(b"not exported")
            assert a.recv(64) == b"not exported"
            b.send(b"\x00\xffhi")
            assert b.recv(64) == b"\x00\xffhi"
        msgs = sub.wait(lambda ms: ms or None, 10, "the rpmsg-tty publication")
        # publications leave in order: one for rpmsg-client-sample would have come first
        assert (msgs[0].topic, msgs[0].payload) == (f"{BASE}/ept/rpmsg-tty/rx", b"00ff6869")


# -- tx -------------------------------------------------------------------------------------


def test_tx_only_on_writable_endpoints_and_refusals(broker: Broker, board: Board) -> None:
    board.procs.sim(board.dir)
    start_daemon(board, broker.port, ("rpmsg-tty",), protocol="5", rx_encoding="json")
    board.wait_endpoints()
    wait_log(board, "MQTT writes accepted on")
    with Subscriber(broker.port, [f"{BASE}/ept/+/rx", f"{BASE}/ept/+/error"]) as sub, board.connect("rpmsg-tty") as s:
        sub.publish(f"{BASE}/ept/rpmsg-tty/tx", b"hello from mqtt")
        assert s.recv(1024) == b"hello from mqtt"  # the remote echoed what MQTT wrote
        (m,) = sub.wait_count(f"{BASE}/ept/rpmsg-tty/rx", 1, 10)
        env = json.loads(m.payload)
        assert base64.b64decode(env["data"]) == b"hello from mqtt"
        assert (env["endpoint"], env["remote"], env["len"]) == ("rpmsg-tty", "main", 15)
        assert isinstance(env["src"], int) and isinstance(env["dst"], int) and env["ts"] > 1e9
        sub.publish(f"{BASE}/ept/rpmsg-tty/tx", b"f" * 496)
        assert s.recv(1024) == b"f" * 496

        sub.publish(f"{BASE}/ept/rpmsg-sink/tx", b"not for you")
        sub.publish(f"{BASE}/ept/no-such-ept/tx", b"nobody")
        sub.publish(f"{BASE}/ept/rpmsg-tty/tx", b"g" * 497)
        errors = {
            topic: json.loads(sub.wait_count(f"{BASE}/ept/{topic}/error", 1, 10)[0].payload)["error"]
            for topic in ("rpmsg-sink", "no-such-ept", "rpmsg-tty")
        }
        assert errors == {"rpmsg-sink": "not-writable", "no-such-ept": "no-such-endpoint", "rpmsg-tty": "too-large"}
        sub.publish(f"{BASE}/ept/rpmsg-tty/tx", b"marker")
        assert s.recv(1024) == b"marker"  # nothing of the 497 bytes went out, not even half
    with board.connect("rpmsg-sink") as k:
        k.send(b"STAT")
        assert k.recv(64) == b"0 0"  # the refused write never reached the sink
    log = daemon_log(board)
    for reason in ("not-writable", "no-such-endpoint", "too-large"):
        assert f"refused ({reason}" in log


def test_tx_waits_for_a_free_buffer_never_drops(broker: Broker, board: Board) -> None:
    board.procs.sim(board.dir, "--delay-us", "1000")  # a slow remote: 8 transmit buffers run out
    start_daemon(board, broker.port, ("rpmsg-tty",))
    board.wait_endpoints()
    wait_log(board, "MQTT writes accepted on")
    n = 200
    with Subscriber(broker.port, [f"{BASE}/stats"]) as sub, board.connect("rpmsg-tty") as s:
        infos = [sub.c.publish(f"{BASE}/ept/rpmsg-tty/tx", struct.pack("<I", i) * 8, qos=1) for i in range(n)]
        for info in infos:
            info.wait_for_publish(10)
        got = [s.recv(64) for _ in range(n)]
        assert got == [struct.pack("<I", i) * 8 for i in range(n)]
        st = latest_stats(sub, lambda st: st["mqtt"]["tx_sent"] == n, 10, f"stats with {n} writes sent")
        assert st["mqtt"]["tx_waits"] > 0  # buffers did run out, and the writes waited
        assert st["mqtt"]["tx_refused"] == {}


def sink_stat(board: Board) -> tuple[int, int]:
    with board.connect("rpmsg-sink") as k:
        k.send(b"STAT")
        n, size = k.recv(64).split()
    return int(n), int(size)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_retained_writes_refused_and_their_clear_ignored(broker: Broker, board: Board, protocol: str) -> None:
    """A retained write would reach the remote again on every (re)subscription: refused; its clear is no write."""
    board.procs.sim(board.dir)
    d = start_daemon(board, broker.port, ("rpmsg-sink",), protocol=protocol)
    board.wait_endpoints()
    wait_log(board, "MQTT writes accepted on")
    tx, err = f"{BASE}/ept/rpmsg-sink/tx", f"{BASE}/ept/rpmsg-sink/error"
    with Subscriber(broker.port, [err, f"{BASE}/stats"]) as sub:
        sub.c.publish(tx, b"retained write", qos=1, retain=True).wait_for_publish(10)
        # live, a retained write is seen as one under MQTT 5 (retain as published); 3.1.1 clears the flag
        live = 0 if protocol == "5" else 1
        if protocol == "5":
            (e,) = sub.wait_count(err, 1, 10)
            assert json.loads(e.payload)["error"] == "retained"
        sub.publish(tx, b"marker")  # in order after it: once the marker is in, the retained one was handled
        wait_until(lambda: sink_stat(board)[0] == live + 1, 10, "the marker at the sink")
        # a new rprocd subscribes again: the broker replays the retained write (3.1.1) or, asked not to, does not (5)
        board.procs.stop(d)
        d = start_daemon(board, broker.port, ("rpmsg-sink",), protocol=protocol)
        board.wait_endpoints()
        wait_log(board, "MQTT writes accepted on", count=2)
        sub.publish(tx, b"marker")
        wait_until(lambda: sink_stat(board)[0] >= 1, 10, "the second marker at the sink")
        if protocol == "3.1.1":
            (e,) = sub.wait_count(err, 1, 10)  # the replay, refused
            assert json.loads(e.payload)["error"] == "retained"
        # clearing it: an empty retained publication, which must not become a 0-byte write
        sub.c.publish(tx, b"", qos=1, retain=True).wait_for_publish(10)
        sub.publish(tx, b"last")
        wait_until(lambda: sink_stat(board)[0] == 2, 10, "the last marker at the sink")
        assert sink_stat(board) == (2, len(b"marker") + len(b"last"))  # no 0-byte write, no replayed write
        st = latest_stats(sub, lambda st: st["mqtt"]["tx_received"] >= 3, 10, "stats of the second daemon")
        cleared = st["mqtt"]["tx_retain_cleared"] + st["mqtt"]["tx_empty_ignored"]
        assert cleared == 1
        assert st["mqtt"]["tx_refused"] == ({"retained": 1} if protocol == "3.1.1" else {})
    assert "refused (retained" in daemon_log(board)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_10000_qos1_writes_to_a_slow_remote_all_arrive_in_order(
    broker: Broker, board: Board, tmp_path: Path, protocol: str
) -> None:
    """Acknowledged only once in the ring: the broker holds the rest back, nothing is refused ``busy``."""
    n = 10_000
    broker.stop()  # the broker queues what rprocd is not ready for: let it hold them all (default 1000)
    broker.conf.write_text(broker.conf.read_text() + "max_queued_messages 0\n")
    broker.start()
    rec = tmp_path / "record"
    board.procs.sim(board.dir, "--delay-us", "500", "--record", str(rec))
    start_daemon(board, broker.port, ("rpmsg-sink",), protocol=protocol)
    board.wait_endpoints()
    wait_log(board, "MQTT writes accepted on")
    tx = f"{BASE}/ept/rpmsg-sink/tx"
    with Subscriber(broker.port, [f"{BASE}/ept/+/error", f"{BASE}/stats"]) as sub:
        infos = [sub.c.publish(tx, struct.pack("<I", i) * 4, qos=1) for i in range(n)]
        for info in infos:
            info.wait_for_publish(60)  # the broker acknowledged every one
        wait_until(lambda: sink_stat(board)[0] == n, 120, f"{n} writes at the sink")
        assert sink_stat(board) == (n, 16 * n)
        st = latest_stats(sub, lambda st: st["mqtt"]["tx_sent"] == n, 10, f"stats with {n} writes sent")
        assert st["mqtt"]["tx_refused"] == {} and st["mqtt"]["tx_acked"] == n
        assert st["mqtt"]["tx_waits"] > 0  # the remote was slow: writes did wait for buffers
        assert [m.topic for m in sub.msgs if m.topic.endswith("/error")] == []
    wait_until(lambda: len(read_record(rec)[-1].sessions[-1].rx) >= n, 10, "the record of every write")
    got = [struct.unpack_from("<I", m.data)[0] for m in read_record(rec)[-1].sessions[-1].rx if m.data != b"STAT"]
    assert got == list(range(n))


def test_through_rprocd_with_a_config_file(broker: Broker, board: Board, tmp_path: Path) -> None:
    """The real command line: [mqtt] and mqtt_writable from the config file (and its default event loop)."""
    t = TCC807X
    table = f"offset = {t.rsc_offset:#x}, max_size = {t.rsc_size:#x}"
    conf = tmp_path / "rprocd.toml"
    conf.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port}
topic_root = "{ROOT}"
qos = {{ tx = 1, rx = 1 }}

[remote.main]
shm = {{ pa = {t.window.pa:#x}, size = {t.window.size:#x} }}
rsc_table = {{ pa = {t.table_region.pa:#x}, size = {t.table_region.size:#x}, {table} }}
vring0 = {{ pa = {t.vrings[0].pa:#x}, size = {t.vrings[0].size:#x} }}
vring1 = {{ pa = {t.vrings[1].pa:#x}, size = {t.vrings[1].size:#x} }}
buffers = {{ pa = {t.buffers.pa:#x}, size = {t.buffers.size:#x} }}

[remote.main.endpoint.rpmsg-client-sample]
mqtt_writable = true
""")  # fmt: skip
    board.procs.sim(board.dir)
    board.procs.daemon(board.dir, board.runtime, "-c", str(conf))
    board.wait_endpoints()
    wait_log(board, "MQTT writes accepted on")
    with Subscriber(broker.port, [f"{BASE}/state", f"{BASE}/ept/+/rx", f"{BASE}/ept/+/error"]) as sub:
        sub.wait(lambda ms: payloads(ms, f"{BASE}/state") == [b"attached"], 10, "the retained state")
        sub.publish(f"{BASE}/ept/rpmsg-client-sample/tx", b"configured writable")
        sub.publish(f"{BASE}/ept/rpmsg-tty/tx", b"not configured")
        (m,) = sub.wait_count(f"{BASE}/ept/rpmsg-client-sample/rx", 1, 10)
        assert m.payload == b"configured writable"
        (e,) = sub.wait_count(f"{BASE}/ept/rpmsg-tty/error", 1, 10)
        assert json.loads(e.payload)["error"] == "not-writable"


# -- broker outage --------------------------------------------------------------------------


def test_broker_outage_sockets_unaffected_mqtt_resumes_drops_exact(broker: Broker, board: Board) -> None:
    q = 50
    rx = f"{BASE}/ept/rpmsg-client-sample/rx"
    board.procs.sim(board.dir)
    start_daemon(board, broker.port, queue=q)
    board.wait_endpoints()
    with board.connect("rpmsg-client-sample") as s:

        def echo(payload: bytes) -> None:
            s.send(payload)
            assert s.recv(64) == payload

        n1 = 100
        with Subscriber(broker.port, [rx]) as sub:
            for i in range(n1):
                echo(b"p1-%d" % i)
            sub.wait_count(rx, n1, 10)  # all published: nothing queued or in flight
        broker.stop()
        wait_log(board, "MQTT connection to 127.0.0.1")  # the bridge knows the broker is gone

        # ten seconds without a broker: every echo still comes back at once
        m, per_second = 0, [0]
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < 10:
            echo(b"p2-%d" % m)
            m += 1
            while len(per_second) <= int(elapsed):
                per_second.append(0)
            per_second[int(elapsed)] += 1
        # counts, not timing: the socket path never waited for MQTT (a stall shows as a second without echoes)
        assert len(per_second) >= 10 and min(per_second) >= 10, per_second
        assert "MQTT connected" not in daemon_log(board).split("connection to 127.0.0.1")[-1]

        broker.start()
        with Subscriber(broker.port, [f"{BASE}/state", f"{BASE}/stats", rx]) as sub:
            sub.wait(lambda ms: payloads(ms, f"{BASE}/state") == [b"attached"], 10, "the state again")
            with Subscriber(broker.port, [f"{BASE}/state"]) as late:  # republished retained: the broker kept nothing
                (st_msg,) = late.wait(lambda ms: ms, 5, "the retained state")
                assert (st_msg.payload, st_msg.retain) == (b"attached", True)

            def drained(st: dict[str, Any]) -> bool:
                return st["mqtt"]["connected"] and st["mqtt"]["rx_queued"] == st["mqtt"]["rx_in_flight"] == 0

            st = latest_stats(sub, drained, 10, "stats with the queue drained")
            mq = st["mqtt"]
            assert mq["rx_dropped"] == m - q == st["drops"]["mqtt_queue_full"]
            assert mq["rx_published"] == n1 + q
            assert mq["rx_requeued"] == 0 and mq["connections_lost"] == 1

            # the queue kept the newest q of the outage, in order (the subscriber may have joined mid-way)
            seen = [p for p in payloads(sub.msgs, rx) if p.startswith(b"p2-")]
            kept = [b"p2-%d" % i for i in range(m - q, m)]
            assert seen == kept[len(kept) - len(seen) :]

            n3 = 20
            for i in range(n3):
                echo(b"p3-%d" % i)
            sub.wait(lambda ms: payloads(ms, rx)[-1:] == [b"p3-%d" % (n3 - 1)], 10, "MQTT after the outage")
            assert [p for p in payloads(sub.msgs, rx) if p.startswith(b"p3-")] == [b"p3-%d" % i for i in range(n3)]
            st = latest_stats(sub, lambda st: st["mqtt"]["rx_published"] == n1 + q + n3, 10, "final stats")
            assert st["mqtt"]["rx_dropped"] == m - q


# -- TLS and password -------------------------------------------------------------------------


def test_tls_client_certificate_and_password_file(tmp_path: Path, board: Board) -> None:
    certs = make_certs(tmp_path / "certs")
    pw = make_password_file(tmp_path / "passwd", "rprocd", "s3cret pass")
    tls_broker = Broker(tmp_path / "tls-broker", tls=certs, password_file=pw, require_certificate=True)
    tls_broker.start()
    try:
        client_tls = {"ca": certs["ca"], "cert": certs["client_cert"], "key": certs["client_key"]}
        # the broker really insists: a client with the right certificate but no password is turned away
        assert "authori" in Subscriber(tls_broker.port, ["#"], **client_tls).refused()
        (tmp_path / "password").write_text("s3cret pass\n")
        board.procs.sim(board.dir)
        start_daemon(
            board, tls_broker.port, username="rprocd", password_file=str(tmp_path / "password"),
            tls={"ca": certs["ca"], "cert": certs["client_cert"], "key": certs["client_key"]}, rx_encoding="base64",
        )  # fmt: skip
        board.wait_endpoints()
        creds = {"username": "rprocd", "password": "s3cret pass", **client_tls}
        with Subscriber(tls_broker.port, [f"{BASE}/state", f"{BASE}/ept/+/rx"], **creds) as sub:
            sub.wait(lambda ms: b"attached" in payloads(ms, f"{BASE}/state"), 10, "state over TLS")
            with board.connect("rpmsg-tty") as s:
                s.send(b"over tls")
                assert s.recv(64) == b"over tls"
            (m,) = sub.wait_count(f"{BASE}/ept/rpmsg-tty/rx", 1, 10)
            assert base64.b64decode(m.payload) == b"over tls"
    finally:
        tls_broker.stop()


# -- in process: the bridge with a stand-in host ---------------------------------------------


class FakeHost:
    """What the bridge uses of a RemoteHost, with a transmit pool the test controls."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.state = "attached"
        self.detail = ""
        self.observers: list[Any] = []
        self.max_payload = 496
        self.session: Any = SimpleNamespace(view=SimpleNamespace(table=SimpleNamespace(traces=[])))
        self.channels: list[Channel] = []
        self.free = 0
        self.sent: list[tuple[str, bytes]] = []
        self.waiters: list[Callable[[], None]] = []
        self.flushes = 0

    def add(self, ch: Channel) -> None:
        self.channels.append(ch)
        for o in self.observers:
            o.on_channel(self, ch, True)

    def rx(self, ch: Channel, payload: bytes) -> None:
        for o in self.observers:
            o.on_rx(self, ch, payload)

    def send(self, ch: Channel, payload: bytes) -> bool:
        if not self.free:
            return False
        self.free -= 1
        self.sent.append((ch.name, bytes(payload)))
        return True

    def wait_for_tx(self, callback: Callable[[], None] | None = None) -> None:
        if callback is not None:
            self.waiters.append(callback)

    def release(self, n: int) -> None:
        self.free += n
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            w()

    def request_flush(self) -> None:
        self.flushes += 1

    def flush(self) -> None:
        self.flushes += 1

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "uptime": 1.0, "host": {"attaches": 1}, "endpoints": []}


async def until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (v := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
    return v


def bridge_for(port: int, host: FakeHost, **kw: Any) -> MqttBridge:
    settings = MqttSettings(host="127.0.0.1", port=port, topic_root=ROOT, stats_interval=0, **kw)
    hosts: Any = [host]
    return MqttBridge(settings, hosts, writable=lambda r, e: e == "rpmsg-tty", reconnect_min=0.1, reconnect_max=0.5)


def test_hostile_names_cannot_form_topics_and_export_list(broker: Broker) -> None:
    hostile = Channel(name="a/+#", remote=0x400, local=0x400, raw_name=b"a/+#\xff")
    secret = Channel(name="secret", remote=0x401, local=0x401, raw_name=b"secret")

    async def run() -> list[Msg]:
        host = FakeHost()
        bridge = bridge_for(broker.port, host, export=("a/+#", "rpmsg-tty"))
        with Subscriber(broker.port, [f"{ROOT}/#"]) as sub:
            await bridge.start()
            await until(lambda: bridge.links[0].connected, 10, "connected")
            host.add(hostile)
            host.add(secret)
            host.rx(secret, b"not exported")
            host.rx(hostile, b"x")
            await until(lambda: payloads(sub.msgs, f"{BASE}/ept/a%2F%2B%23%FF/rx"), 10, "the escaped topic")
            await bridge.stop()
            return list(sub.msgs)

    msgs = asyncio.run(run())
    rx = [m for m in msgs if m.topic.endswith("/rx")]
    assert [(m.topic, m.payload) for m in rx] == [(f"{BASE}/ept/a%2F%2B%23%FF/rx", b"x")]
    assert [m.payload for m in msgs if m.topic == f"{BASE}/state"][-1] == b"offline"


def test_write_without_free_buffer_waits_then_goes(broker: Broker) -> None:
    tty = Channel(name="rpmsg-tty", remote=0x400, local=0x400, raw_name=b"rpmsg-tty")

    async def run() -> None:
        host = FakeHost()
        bridge = bridge_for(broker.port, host)
        await bridge.start()
        host.add(tty)
        link = bridge.links[0]
        await until(lambda: link.tx_subscribed, 10, "the tx subscription")
        with Subscriber(broker.port, [f"{BASE}/ept/+/error"]) as sub:
            for i in range(5):
                sub.publish(f"{BASE}/ept/rpmsg-tty/tx", b"w%d" % i)
            await until(lambda: link.c.tx_received == 5, 10, "5 writes received")
            assert host.sent == [] and len(host.waiters) == 1 and link.c.tx_waits == 1  # held, not dropped
            host.release(2)
            await until(lambda: len(host.sent) == 2, 5, "2 writes sent")
            assert len(host.waiters) == 1  # waiting again for the other 3
            host.release(10)
            await until(lambda: len(host.sent) == 5, 5, "all writes sent")
            assert host.sent == [("rpmsg-tty", b"w%d" % i) for i in range(5)]
            assert host.flushes >= 2 and sub.msgs == []
        await bridge.stop()

    asyncio.run(run())


def test_starts_and_retries_without_a_broker(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def run() -> None:
        host = FakeHost()
        bridge = bridge_for(port, host)
        await asyncio.wait_for(bridge.start(), 1)  # never waits for the broker
        ch = Channel(name="rpmsg-tty", remote=0x400, local=0x400, raw_name=b"rpmsg-tty")
        host.add(ch)
        for i in range(bridge.settings.queue + 7):
            host.rx(ch, b"%d" % i)
        link = bridge.links[0]
        await until(lambda: link.c.connect_failures >= 3, 10, "three attempts")
        assert link.c.rx_dropped == 7 and len(link.rxq) == bridge.settings.queue
        assert link.rxq[0][2] == b"7"  # the oldest went first
        await asyncio.wait_for(bridge.stop(), 5)

    with caplog.at_level(logging.WARNING, "rprocd.mqtt"):
        asyncio.run(run())
    assert sum("cannot connect" in r.getMessage() for r in caplog.records) == 1  # once, not once per attempt


def test_aiomqtt_missing_leaves_the_daemon_running(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "aiomqtt", None)  # import aiomqtt -> ImportError
    host = FakeHost()

    async def run() -> None:
        bridge = MqttBridge(MqttSettings(), [host])  # type: ignore[list-item]
        await bridge.start()
        assert bridge.links == [] and host.observers == []
        await bridge.stop()

    with caplog.at_level(logging.INFO, "rprocd.mqtt"):
        asyncio.run(run())
    assert "MQTT disabled: aiomqtt is not installed" in caplog.text


def test_unreadable_password_file_disables_mqtt_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost()

    async def run() -> None:
        bridge = MqttBridge(MqttSettings(username="u", password_file=str(tmp_path / "missing")), [host])  # type: ignore[list-item]
        await bridge.start()
        assert bridge.links == [] and host.observers == []

    with caplog.at_level(logging.ERROR, "rprocd.mqtt"):
        asyncio.run(run())
    assert "MQTT disabled: cannot read the MQTT password file" in caplog.text


def test_accepts_the_config_files_mqtt_section() -> None:
    cfg = MqttConfig(port=8883, tls=TlsConfig(ca="/ca.pem"), export=("rpmsg-tty",), qos={"state": 2, "rx": 1})
    s = normalize(cfg)
    assert (s.port, s.tls and s.tls.ca, s.export, s.qos["state"], s.qos["rx"], s.qos["tx"]) == (
        8883, "/ca.pem", ("rpmsg-tty",), 2, 1, 1,
    )  # fmt: skip
    assert normalize(MqttConfig()).tls is None
    for bad in ({"protocol": "4"}, {"rx_encoding": "utf7"}, {"topic_root": "a/+/b"}, {"queue": 0}):
        with pytest.raises(ValueError):
            normalize(MqttSettings(**bad))
