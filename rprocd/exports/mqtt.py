"""The MQTT bridge: each remote's endpoints as topics (DESIGN.md, MQTT contract).

Topics, under ``<root>/<NAME>`` (root ``rprocd/<hostname>`` unless configured):

* ``state``: retained; ``attached``, ``detached`` (waiting, resetting or
  stopped), ``offline`` (last will, and on a clean stop);
* ``ept/<EPT>/rx``: every message the remote sends on an exported endpoint
  (raw bytes; hex, base64 or a JSON envelope by configuration);
* ``ept/<EPT>/tx``: writes to the remote, honoured for endpoints configured
  writable only; ``ept/<EPT>/error``: why a write was refused;
* ``stats``: periodic JSON; ``trace``: the lines of the remote's trace buffer.

``<NAME>`` and ``<EPT>`` are :func:`~rprocd.names.safe_name` escapes, so a
hostile endpoint name can never form a wildcard or an extra topic level.

Why it is built this way:

* The bridge watches the daemon as an observer.  ``on_rx`` is on the hot
  path, so it only appends to a bounded queue (dropping the oldest, counted);
  a publisher task empties the queue while the broker is there.  The local
  sockets never wait for MQTT.
* aiomqtt does not reconnect, and its client cannot outlive a connection in a
  useful way, so each connection is a fresh client in a loop with capped
  exponential backoff and jitter.  On every connect the retained state is
  published again and the tx subscription renewed.
* MQTT allows one last will per connection and the contract wants one per
  remote, so each remote has its own connection (client id
  ``<id>-<NAME>`` when there are several).
* Publications are pipelined (up to :data:`BATCH` in flight); ones still in
  flight when the connection breaks go back to the head of their queue, so
  nothing is lost silently and order is kept (QoS 1 may then repeat one, as
  QoS 1 allows).
* Writes from MQTT meet backpressure, not refusals: a QoS 1/2 write is
  acknowledged (PUBACK, PUBCOMP) only once its message is in the ring
  (paho's manual acknowledgement, in arrival order as MQTT wants), so a slow
  remote leaves them with the broker: it sends no more than its in-flight
  window (mosquitto's ``max_inflight_messages``; under MQTT 5 our Receive
  Maximum, :data:`RECEIVE_MAX`) and queues the rest (mosquitto's
  ``max_queued_messages``, whose drops are the broker's to count).  Only
  QoS 0 writes, which nobody acknowledges, can find the queue full (``busy``).
* A retained write would be sent again on every (re)subscription: retained
  tx publications are refused (``retained``, on ``…/error``) and an empty
  retained one (how a retained message is cleared) is ignored.  Under MQTT 5
  the subscription asks for no retained messages and for the retain flag as
  published; under 3.1.1 the flag only shows on replayed retained messages,
  and an empty live write cannot be told from a clear, so empty writes are
  ignored there (counted in ``tx_empty_ignored``).
* aiomqtt is imported only when the bridge starts, so a system without it
  runs the daemon with a log line instead of failing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..memory import MemoryAccessError
from ..names import safe_name
from ..rpmsg import Channel
from ..trace import TraceReader

if TYPE_CHECKING:
    from ..daemon import RemoteHost

log = logging.getLogger("rprocd.mqtt")

BATCH = 64  # publications in flight at once on one connection
CONTROL_QUEUE = 1000  # state changes and error replies waiting for the broker
TRACE_QUEUE = 1000  # trace lines waiting for the broker
TX_QUEUE = 256  # QoS 0 MQTT writes waiting for a transmit buffer (QoS 1/2 ones are held back by the broker)
RECEIVE_MAX = 64  # MQTT 5 Receive Maximum: unacknowledged QoS 1/2 writes the broker may send us
STABLE = 10.0  # seconds a connection must last before the reconnect backoff starts over
QOS_DEFAULTS = {"state": 1, "rx": 0, "tx": 1, "stats": 0, "trace": 0}
RX_ENCODINGS = ("raw", "hex", "base64", "json")

Writable = Callable[[str, str], bool]


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MqttTls:
    """TLS settings; TLS is on when ``ca`` or ``cert`` is given."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    insecure: bool = False  # do not check the broker's host name


@dataclass(frozen=True)
class MqttSettings:
    """What the bridge reads from ``[mqtt]``.

    :class:`rprocd.config.MqttConfig` has these fields; the bridge accepts any
    object with them (``qos`` and ``tls`` may be mappings or objects), so it
    can be driven from tests without the config parser.
    """

    enabled: bool = True
    host: str = "localhost"
    port: int = 1883
    client_id: str = ""  # "" -> rprocd-<hostname>-<pid>
    keepalive: int = 30
    protocol: str = "3.1.1"  # or "5"
    username: str = ""
    password_file: str = ""  # read at start; $VARS expanded (systemd: ${CREDENTIALS_DIRECTORY}/...)
    tls: MqttTls | None = None
    topic_root: str = ""  # "" -> rprocd/<hostname>
    rx_encoding: str = "raw"
    export: str | Sequence[str] = "all"
    queue: int = 1000
    stats_interval: float = 10.0  # 0: no stats
    qos: Mapping[str, int] = field(default_factory=lambda: dict(QOS_DEFAULTS))


def _get(obj: Any, name: str, default: Any) -> Any:
    if obj is None:
        return default
    v = obj.get(name, default) if isinstance(obj, Mapping) else getattr(obj, name, default)
    return default if v is None else v


def normalize(cfg: Any) -> MqttSettings:
    """An :class:`MqttSettings` from any object (or mapping) with those fields; checks values."""
    d = MqttSettings()
    tls_obj = _get(cfg, "tls", None)
    tls = None
    if tls_obj is not None:
        tls = MqttTls(
            str(_get(tls_obj, "ca", "")),
            str(_get(tls_obj, "cert", "")),
            str(_get(tls_obj, "key", "")),
            bool(_get(tls_obj, "insecure", False)),
        )
        if not (tls.ca or tls.cert):
            tls = None
    qos_obj = _get(cfg, "qos", None)
    qos = {k: int(_get(qos_obj, k, v)) for k, v in QOS_DEFAULTS.items()}
    export = _get(cfg, "export", "all")
    if not isinstance(export, str):
        export = tuple(str(x) for x in export)
    s = MqttSettings(
        enabled=bool(_get(cfg, "enabled", d.enabled)),
        host=str(_get(cfg, "host", d.host)),
        port=int(_get(cfg, "port", d.port)),
        client_id=str(_get(cfg, "client_id", "")),
        keepalive=int(_get(cfg, "keepalive", d.keepalive)),
        protocol=str(_get(cfg, "protocol", d.protocol)),
        username=str(_get(cfg, "username", "")),
        password_file=str(_get(cfg, "password_file", "")),
        tls=tls,
        topic_root=str(_get(cfg, "topic_root", "")).rstrip("/"),
        rx_encoding=str(_get(cfg, "rx_encoding", d.rx_encoding)),
        export=export,
        queue=int(_get(cfg, "queue", d.queue)),
        stats_interval=float(_get(cfg, "stats_interval", d.stats_interval)),
        qos=qos,
    )
    problems = []
    if s.protocol not in ("3.1.1", "5"):
        problems.append(f"protocol {s.protocol!r} (3.1.1 or 5)")
    if s.rx_encoding not in RX_ENCODINGS:
        problems.append(f"rx_encoding {s.rx_encoding!r} ({', '.join(RX_ENCODINGS)})")
    if isinstance(s.export, str) and s.export != "all":
        problems.append(f'export {s.export!r} ("all" or a list of endpoint names)')
    if s.queue < 1:
        problems.append(f"queue {s.queue} (at least 1)")
    if any(not 0 <= q <= 2 for q in qos.values()):
        problems.append(f"qos {qos} (0, 1 or 2)")
    root = s.topic_root
    if root and (any(c in root for c in "+#\0") or "//" in root or root.startswith("/")):
        problems.append(f"topic_root {root!r} (no wildcards, no empty levels)")
    if problems:
        raise ValueError("bad MQTT settings: " + "; ".join(problems))
    return s


# -- per remote ------------------------------------------------------------------------------


@dataclass
class LinkCounters:
    """What one remote's MQTT link has done (reported in ``stats``)."""

    connects: int = 0
    connect_failures: int = 0
    connections_lost: int = 0
    rx_seen: int = 0  # messages from the remote on exported endpoints
    rx_bytes_seen: int = 0
    rx_published: int = 0
    rx_dropped: int = 0  # the queue was full: the oldest was dropped
    rx_requeued: int = 0  # in flight when a connection broke: published again later
    tx_received: int = 0  # writes that arrived on .../tx
    tx_sent: int = 0
    tx_bytes: int = 0
    tx_waits: int = 0  # a write found no free transmit buffer and waited
    tx_acked: int = 0  # QoS 1/2 writes acknowledged to the broker (once in the ring, or refused)
    tx_retain_cleared: int = 0  # empty retained publications on .../tx: ignored, never a 0-byte write
    tx_empty_ignored: int = 0  # MQTT 3.1.1: empty writes, indistinguishable from a retained clear
    tx_refused: dict[str, int] = field(default_factory=dict)  # by reason
    errors_published: int = 0
    control_dropped: int = 0
    trace_lines: int = 0
    trace_published: int = 0
    trace_dropped: int = 0
    stats_published: int = 0


class _Lost(Exception):
    """A session worker ended without an error of its own."""


class _Ack:
    """One QoS 1/2 write to acknowledge on the connection it came on, once handled."""

    __slots__ = ("paho", "mid", "qos", "done")

    def __init__(self, paho: Any, mid: int, qos: int):
        self.paho, self.mid, self.qos, self.done = paho, mid, qos, False


class _Link:
    """One remote's MQTT connection, queues and observer callbacks."""

    def __init__(self, bridge: MqttBridge, host: RemoteHost, client_id: str):
        self.b = bridge
        self.host = host
        self.client_id = client_id
        base = f"{bridge.root}/{safe_name(host.name)}"
        self.base = base
        self.state_topic = f"{base}/state"
        self.stats_topic = f"{base}/stats"
        self.trace_topic = f"{base}/trace"
        self.ept_prefix = f"{base}/ept/"
        self.c = LinkCounters()
        self.qmax = bridge.settings.queue
        self.rxq: deque[tuple[str, Channel, bytes, float]] = deque()
        self.ctlq: deque[tuple[str, str, bytes, int, bool]] = deque()  # (kind, topic, payload, qos, retain)
        self.traceq: deque[str] = deque()
        self.txq: deque[tuple[Channel, str, bytes, _Ack | None]] = deque()
        self.acks: deque[_Ack] = deque()  # in arrival order: MQTT wants acknowledgements in that order
        self.paho: Any = None  # the connection's paho client, for acknowledgements
        self.mqtt5 = False
        self.rx_topics: dict[Channel, str] = {}
        self.by_level: dict[str, Channel] = {}
        self.wake = asyncio.Event()
        self.sub_changed = asyncio.Event()
        self.want_tx = False
        self.tx_subscribed = False
        self.tx_blocked = False
        self.connected = False
        self.busy = False
        self.rx_in_flight = 0
        self.announced_state: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.trace_task: asyncio.Task[None] | None = None
        self.started = time.monotonic()
        self.loop = asyncio.get_running_loop()

    # -- observer (synchronous, on the daemon's hot path) ---------------------------------

    def on_state(self, host: RemoteHost) -> None:
        state = _mqtt_state(host.state)
        if state != self.announced_state:
            self.announced_state = state
            if self.connected:
                self._control("state", self.state_topic, state.encode(), self.b.qos["state"], True)
        if self.tx_blocked:
            self.loop.call_soon(self._pump_tx)

    def on_channel(self, host: RemoteHost, ch: Channel, added: bool) -> None:
        level = safe_name(ch.raw_name or ch.name)
        if added:
            self.by_level[level] = ch
            if self.b.exported(ch.name, level):
                self.rx_topics[ch] = f"{self.ept_prefix}{level}/rx"
            if not self.want_tx and self.b.is_writable(host.name, ch.name):
                self.want_tx = True
                self.sub_changed.set()
            return
        if self.by_level.get(level) is ch:
            del self.by_level[level]
        self.rx_topics.pop(ch, None)
        if any(c is ch for c, _, _, _ in self.txq):
            keep: deque[tuple[Channel, str, bytes, _Ack | None]] = deque()
            for item in self.txq:
                if item[0] is ch:
                    self._refuse(item[1], "no-such-endpoint", "the endpoint went away before the write was sent",
                                 len(item[2]))  # fmt: skip
                    self._handled(item[3])
                else:
                    keep.append(item)
            self.txq = keep
            self._send_acks()
            if self.tx_blocked:
                self.loop.call_soon(self._pump_tx)

    def on_rx(self, host: RemoteHost, ch: Channel, payload: bytes) -> None:
        topic = self.rx_topics.get(ch)
        if topic is None:
            return
        c = self.c
        c.rx_seen += 1
        c.rx_bytes_seen += len(payload)
        q = self.rxq
        if len(q) >= self.qmax:
            q.popleft()
            c.rx_dropped += 1
        q.append((topic, ch, payload, time.time() if self.b.json_rx else 0.0))
        self.wake.set()

    # -- queues -----------------------------------------------------------------------------

    def _control(self, kind: str, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if len(self.ctlq) >= CONTROL_QUEUE:
            self.ctlq.popleft()
            self.c.control_dropped += 1
        self.ctlq.append((kind, topic, payload, qos, retain))
        self.wake.set()

    def _trace_line(self, line: str) -> None:
        self.c.trace_lines += 1
        if len(self.traceq) >= TRACE_QUEUE:
            self.traceq.popleft()
            self.c.trace_dropped += 1
        self.traceq.append(line)
        self.wake.set()

    def _take(self) -> tuple[str, list[Any], list[tuple[str, bytes, int, bool]]]:
        """Up to BATCH queued publications of one kind: (kind, the queue items, what to publish)."""
        if self.ctlq:
            items: list[Any] = [self.ctlq.popleft() for _ in range(min(BATCH, len(self.ctlq)))]
            return "control", items, [(t, p, q, r) for _, t, p, q, r in items]
        if self.traceq:
            items = [self.traceq.popleft() for _ in range(min(BATCH, len(self.traceq)))]
            qos = self.b.qos["trace"]
            return "trace", items, [(self.trace_topic, line.encode(), qos, False) for line in items]
        if self.rxq:
            items = [self.rxq.popleft() for _ in range(min(BATCH, len(self.rxq)))]
            qos, enc = self.b.qos["rx"], self.b.encode_rx
            return "rx", items, [(topic, enc(self.host, ch, data, ts), qos, False) for topic, ch, data, ts in items]
        return "", [], []

    def _settle(self, kind: str, items: list[Any], ok: list[bool]) -> None:
        """Count what was published; put what was not back at the head of its queue, in order."""
        queues: dict[str, deque[Any]] = {"control": self.ctlq, "trace": self.traceq, "rx": self.rxq}
        q = queues[kind]
        back = [item for item, good in zip(items, ok, strict=True) if not good]
        q.extendleft(reversed(back))
        n = len(items) - len(back)
        c = self.c
        if kind == "rx":
            c.rx_published += n
            c.rx_requeued += len(back)
        elif kind == "trace":
            c.trace_published += n
        else:
            c.errors_published += sum(1 for item, good in zip(items, ok, strict=True) if good and item[0] == "error")

    # -- the connection loop ------------------------------------------------------------------

    async def run(self, mod: ModuleType) -> None:
        """Connect, serve, reconnect with capped exponential backoff and jitter, until the bridge stops."""
        b = self.b
        failures = 0
        since = 0.0
        where = f"{b.settings.host}:{b.settings.port}"
        while not b.stopping.is_set():
            reason = ""
            session = False
            try:
                client = b.new_client(mod, self)
                async with client:
                    session = True
                    since = time.monotonic()
                    self.c.connects += 1
                    log.info("%s: MQTT connected to %s as %s", self.host.name, where, self.client_id)
                    await self._session(client)
            except (mod.MqttError, OSError, _Lost) as e:
                reason = _why(e)
            except Exception as e:  # a bug must not end MQTT for the daemon's lifetime
                log.exception("%s: MQTT session failed", self.host.name)
                reason = _why(e)
            finally:
                self.connected = False
                self.tx_subscribed = False
                # writes still queued go to the remote all the same; their acknowledgements died with the
                # connection (the broker's clean session forgets them), so they must not reach the next one
                self.acks.clear()
                self.paho = None
            if b.stopping.is_set():
                break
            if session:
                if time.monotonic() - since >= STABLE:
                    failures = 0  # a connection that flaps keeps backing off
                self.c.connections_lost += 1
                log.warning("%s: MQTT connection to %s lost: %s", self.host.name, where, reason)
            else:
                self.c.connect_failures += 1
                level = logging.WARNING if failures == 0 else logging.DEBUG
                log.log(level, "%s: MQTT cannot connect to %s: %s (retrying)", self.host.name, where, reason)
            delay = min(b.reconnect_max, b.reconnect_min * 2**failures)
            delay = delay / 2 + random.uniform(0, delay / 2)
            failures += 1
            try:
                await asyncio.wait_for(b.stopping.wait(), delay)
            except TimeoutError:
                pass

    async def _session(self, client: Any) -> None:
        b = self.b
        # the retained state first, so a subscriber never sees the queue drain before it
        self.ctlq = deque(i for i in self.ctlq if i[0] != "state")
        self.announced_state = _mqtt_state(self.host.state)
        self.connected = True
        await client.publish(self.state_topic, self.announced_state.encode(), qos=b.qos["state"], retain=True)
        stop: asyncio.Future[Any] = asyncio.ensure_future(b.stopping.wait())
        workers: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._receive(client)),
            asyncio.ensure_future(self._publish(client)),
            asyncio.ensure_future(self._subscriptions(client)),
            asyncio.ensure_future(self._stats(client)),
        ]
        try:
            done, _ = await asyncio.wait([stop, *workers], return_when=asyncio.FIRST_COMPLETED)
            for t in workers:
                if t in done:
                    t.result()  # raises the worker's error: the session is over
                    raise _Lost("a session worker ended")
            await self._drain(b.drain_timeout)
            await client.publish(self.state_topic, b"offline", qos=b.qos["state"], retain=True, timeout=b.drain_timeout)
            self.announced_state = "offline"
        finally:
            for t in [stop, *workers]:
                t.cancel()
            await asyncio.gather(stop, *workers, return_exceptions=True)

    async def _drain(self, timeout: float) -> None:
        """On a clean stop: give the publisher a moment to empty the queues."""
        deadline = time.monotonic() + timeout
        while (self.ctlq or self.traceq or self.rxq or self.busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def _receive(self, client: Any) -> None:
        paho = getattr(client, "_client", None)  # aiomqtt 2.x has no manual acknowledgement of its own
        self.paho = paho
        async for msg in client.messages:
            payload = msg.payload
            if not isinstance(payload, bytes | bytearray):
                payload = b"" if payload is None else str(payload).encode()
            ack = None
            if msg.qos > 0 and paho is not None:
                ack = _Ack(paho, msg.mid, msg.qos)
                self.acks.append(ack)
            self._on_write(msg.topic.value, bytes(payload), bool(msg.retain), ack)
            self._send_acks()

    def _handled(self, ack: _Ack | None) -> None:
        if ack is not None:
            ack.done = True

    def _send_acks(self) -> None:
        """Acknowledge the handled writes at the head of the line (in order; a waiting one holds the rest)."""
        acks = self.acks
        while acks and acks[0].done:
            a = acks.popleft()
            if a.paho is self.paho:
                a.paho.ack(a.mid, a.qos)
                self.c.tx_acked += 1

    async def _publish(self, client: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            kind, items, pubs = self._take()
            if not items:
                self.busy = False
                self.wake.clear()
                await self.wake.wait()
                continue
            self.busy = True
            self.rx_in_flight = len(items) if kind == "rx" else 0
            tasks = [
                loop.create_task(client.publish(t, p, qos=q, retain=r, timeout=math.inf)) for t, p, q, r in pubs
            ]  # created in order, so paho queues them in order
            try:
                await asyncio.wait(tasks)
            finally:
                # settle without awaiting (this may run while being cancelled): what has not
                # completed goes back to its queue and is published again on the next connection
                ok = [t.done() and not t.cancelled() and t.exception() is None for t in tasks]
                for t in tasks:
                    t.cancel()
                self._settle(kind, items, ok)
                self.rx_in_flight = 0
            err = next((e for t in tasks if not t.cancelled() and (e := t.exception()) is not None), None)
            if err is not None:
                raise err

    async def _subscriptions(self, client: Any) -> None:
        while True:
            self.sub_changed.clear()
            if self.want_tx and not self.tx_subscribed:
                topic = self.ept_prefix + "+/tx"
                if self.mqtt5:
                    from paho.mqtt.subscribeoptions import SubscribeOptions

                    # no retained writes replayed on (re)subscription; the retain flag as published on live ones
                    opts = SubscribeOptions(
                        qos=self.b.qos["tx"], retainAsPublished=True, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND
                    )
                    await client.subscribe(topic, options=opts)
                else:
                    await client.subscribe(topic, qos=self.b.qos["tx"])
                self.tx_subscribed = True
                log.info(
                    "%s: MQTT writes accepted on %s+/tx (writable endpoints only)", self.host.name, self.ept_prefix
                )
            await self.sub_changed.wait()

    async def _stats(self, client: Any) -> None:
        interval = self.b.settings.stats_interval
        if interval <= 0:
            await asyncio.Future()  # no stats: wait for the session to end
        while True:
            payload = json.dumps(self.stats(), separators=(",", ":"), default=str).encode()
            await client.publish(self.stats_topic, payload, qos=self.b.qos["stats"], timeout=math.inf)
            self.c.stats_published += 1
            await asyncio.sleep(interval)

    # -- writes from MQTT ---------------------------------------------------------------------

    def _on_write(self, topic: str, payload: bytes, retain: bool = False, ack: _Ack | None = None) -> None:
        """One publication on ``…/tx``: queued for the remote (``ack`` done once it is in the ring) or refused."""
        if not (topic.startswith(self.ept_prefix) and topic.endswith("/tx")):
            self._handled(ack)
            return
        level = topic[len(self.ept_prefix) : -len("/tx")]
        if not level or "/" in level:
            self._handled(ack)
            return
        c = self.c
        c.tx_received += 1
        ch = self.by_level.get(level)
        host = self.host
        if not payload and (retain or not self.mqtt5):
            # clearing a retained write (or, under 3.1.1, what cannot be told from one): nothing to send
            if retain:
                c.tx_retain_cleared += 1
            else:
                c.tx_empty_ignored += 1
            self._handled(ack)
            return
        if retain:
            self._refuse(level, "retained", "retained writes are refused: the broker would replay them on every "
                         "subscription (publish with retain false; clear it with an empty retained message)",
                         len(payload))  # fmt: skip
            self._handled(ack)
            return
        if ch is None:
            self._refuse(level, "no-such-endpoint", f"{host.name} has no endpoint {level}", len(payload))
        elif not self.b.is_writable(host.name, ch.name):
            self._refuse(level, "not-writable", f"endpoint {level} is not configured writable", len(payload))
        elif len(payload) > host.max_payload:
            self._refuse(level, "too-large", f"{len(payload)} bytes, an rpmsg message holds {host.max_payload}",
                         len(payload))  # fmt: skip
        elif ack is None and len(self.txq) >= TX_QUEUE:
            # QoS 0: nobody acknowledges it, so nothing holds the broker back; the broker's window bounds the rest
            self._refuse(level, "busy", f"{TX_QUEUE} writes are already waiting for the remote", len(payload))
        else:
            self.txq.append((ch, level, payload, ack))
            if not self.tx_blocked:
                self._pump_tx()
            return
        self._handled(ack)

    def _refuse(self, level: str, reason: str, detail: str, size: int) -> None:
        c = self.c
        c.tx_refused[reason] = n = c.tx_refused.get(reason, 0) + 1
        if n <= 10 or n % 1000 == 0:
            log.warning("%s: MQTT write of %d bytes to %s refused (%s, #%d): %s",
                        self.host.name, size, level, reason, n, detail)  # fmt: skip
        body = {"error": reason, "detail": detail, "bytes": size, "ts": time.time()}
        self._control("error", f"{self.ept_prefix}{level}/error", json.dumps(body).encode(), self.b.qos["tx"], False)

    def _pump_tx(self) -> None:
        """Send queued writes in order; when no buffer is free, wait for the daemon to call back."""
        self.tx_blocked = False
        host = self.host
        sent = False
        q = self.txq
        acked = False
        while q:
            ch, level, payload, ack = q[0]
            if self.by_level.get(level) is not ch:
                q.popleft()
                self._refuse(level, "no-such-endpoint", "the endpoint went away before the write was sent",
                             len(payload))  # fmt: skip
                self._handled(ack)
                acked = True
                continue
            if not host.send(ch, payload):
                if host.session is None:
                    break  # detached: on_channel will refuse what is queued
                self.tx_blocked = True
                self.c.tx_waits += 1
                host.wait_for_tx(self._tx_ready)
                break
            q.popleft()
            self.c.tx_sent += 1
            self.c.tx_bytes += len(payload)
            sent = True
            if ack is not None:
                ack.done = acked = True
        if sent and acked:
            host.flush()  # published in the ring before the broker hears of it
        elif sent:
            host.request_flush()
        if acked:
            self._send_acks()

    def _tx_ready(self) -> None:
        # called from inside the daemon's ring service: do the sending a moment later
        if self.tx_blocked:
            self.loop.call_soon(self._pump_tx)

    # -- trace ---------------------------------------------------------------------------

    async def poll_trace(self, interval: float) -> None:
        """Read the remote's trace buffer every ``interval`` seconds while attached; queue new lines."""
        reader = TraceReader(backlog=True)
        session: object = None
        where: tuple[int, int] | None = None
        host = self.host
        while True:
            await asyncio.sleep(interval)
            s = host.session
            if s is None or host.state != "attached":
                if session is not None:
                    for line in reader.flush():
                        self._trace_line(line)
                    session = None
                continue
            if s is not session:
                session = s
                reader.reset()
                traces = s.view.table.traces
                where = (traces[0].da, traces[0].len) if traces else None
            if where is None:
                continue
            try:
                snap = host.mem.read(*where)
            except MemoryAccessError as e:
                log.warning("%s: trace buffer %#x+%#x unreadable: %s", host.name, where[0], where[1], e)
                where = None
                continue
            for line in reader.feed(snap):
                self._trace_line(line)

    # -- figures -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The ``stats`` publication: the daemon's figures for this remote plus the bridge's own."""
        snap = self.host.snapshot()
        bus = snap.get("bus", {})
        eps = snap.get("endpoints", [])
        rings = snap.get("rings", [])
        c = self.c

        def total(key: str) -> int:
            return sum(int(e.get(key, 0)) for e in eps)

        hs = snap.get("host", {})
        return {
            "remote": self.host.name,
            "state": snap.get("state"),
            "uptime": snap.get("uptime"),
            "attaches": hs.get("attaches", 0),
            # this session's traffic, both ways (all endpoints)
            "rx": {"messages": bus.get("rx_msgs", 0), "bytes": bus.get("rx_bytes", 0)},
            "tx": {"messages": bus.get("tx_msgs", 0), "bytes": bus.get("tx_bytes", 0)},
            "drops": {
                "mqtt_queue_full": c.rx_dropped,
                "mqtt_trace_queue_full": c.trace_dropped,
                "mqtt_control_queue_full": c.control_dropped,
                "mqtt_tx_refused": sum(c.tx_refused.values()),
                "socket_no_client": total("rx_no_client"),
                "socket_drop_oldest": total("rx_dropped_oldest"),
                "socket_drop_newest": total("rx_dropped_newest"),
                "socket_lost_on_close": total("rx_lost_on_close"),
                "socket_oversized": total("tx_oversized"),
                "rx_unknown_dst": bus.get("rx_unknown_dst", 0),
                "rx_bad": bus.get("rx_bad", 0),
                "ns_bad": bus.get("ns_bad", 0),
                "tx_refused": hs.get("tx_refused", 0),
            },
            "buffers": {
                "tx_free": snap.get("tx_free", 0),
                "tx_total": rings[1]["num"] if len(rings) > 1 else 0,
                "tx_waits": bus.get("tx_waits", 0),
                "rx_held": bus.get("held", 0),
            },
            "rings": [{"num": r.get("num"), "inflight": r.get("inflight")} for r in rings],
            "mqtt": {
                "connected": self.connected,
                "rx_queued": len(self.rxq),
                "rx_in_flight": self.rx_in_flight,
                "queue_size": self.b.settings.queue,
                "uptime": round(time.monotonic() - self.started, 3),
                **{k: v for k, v in vars(c).items() if k != "tx_refused"},
                "tx_refused": dict(c.tx_refused),
            },
            "host": snap,
        }


def _mqtt_state(state: str) -> str:
    return "attached" if state == "attached" else "detached"


def _why(e: BaseException) -> str:
    why = str(e) or type(e).__name__
    cause = e.__cause__
    if cause is not None and str(cause) and str(cause) not in why:
        why += f" ({cause})"
    return why


# -- the extension ---------------------------------------------------------------------------


class MqttBridge:
    """Exports every remote's state, endpoints, stats and trace over MQTT (an ``app.serve`` extension).

    ``cfg``: an :class:`MqttSettings` or any object with its fields (such as
    ``rprocd.config.MqttConfig``).  ``writable(remote, endpoint)`` says
    whether writes from MQTT may reach that endpoint (default: none).
    """

    def __init__(
        self,
        cfg: Any,
        hosts: list[RemoteHost],
        *,
        writable: Writable = lambda r, e: False,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        trace_interval: float = 1.0,
        drain_timeout: float = 2.0,
    ):
        self.cfg = cfg
        self.hosts = hosts
        self.writable = writable
        self.reconnect_min, self.reconnect_max = reconnect_min, reconnect_max
        self.trace_interval = trace_interval
        self.drain_timeout = drain_timeout
        self.hostname = socket.gethostname()
        self.settings: MqttSettings = MqttSettings()
        self.root = ""
        self.qos: dict[str, int] = dict(QOS_DEFAULTS)
        self.json_rx = False
        self.links: list[_Link] = []
        self.stopping = asyncio.Event()
        self.active = False
        self._password: str | None = None
        self._tls: ssl.SSLContext | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Check the settings, read the password, and start one connection per remote (never blocks)."""
        try:
            s = normalize(self.cfg)
        except (ValueError, TypeError) as e:
            log.error("MQTT disabled: %s", e)
            return
        if not s.enabled:
            log.info("MQTT disabled by configuration")
            return
        try:
            import aiomqtt
        except ImportError:
            log.warning("MQTT disabled: aiomqtt is not installed")
            return
        try:
            self._password = self._read_password(s)
            self._tls = self._tls_context(s)
        except (OSError, ValueError) as e:
            log.error("MQTT disabled: %s", e)
            return
        self.settings = s
        self.root = s.topic_root or f"rprocd/{safe_name(self.hostname)}"
        self.qos = dict(s.qos)
        self.json_rx = s.rx_encoding == "json"
        base_id = s.client_id or f"rprocd-{self.hostname}-{os.getpid()}"
        several = len(self.hosts) > 1
        for h in self.hosts:
            link = _Link(self, h, f"{base_id}-{h.name}" if several else base_id)
            self.links.append(link)
            for ch in h.channels:
                link.on_channel(h, ch, True)
            link.announced_state = _mqtt_state(h.state)
            # configured names can say up front that writes are wanted (others say so when they appear)
            if not isinstance(s.export, str) and any(self.is_writable(h.name, n) for n in s.export):
                link.want_tx = True
            h.observers.append(link)
            link.task = asyncio.create_task(link.run(aiomqtt), name=f"mqtt-{h.name}")
            link.trace_task = asyncio.create_task(link.poll_trace(self.trace_interval), name=f"mqtt-trace-{h.name}")
        self.active = True
        log.info("MQTT: %s:%d, topics under %s/<remote>, rx as %s, export %s",
                 s.host, s.port, self.root, s.rx_encoding,
                 s.export if isinstance(s.export, str) else ", ".join(s.export))  # fmt: skip

    async def stop(self) -> None:
        """Publish ``offline`` (retained) on every connection and disconnect cleanly."""
        self.stopping.set()
        tasks = [t for link in self.links for t in (link.task, link.trace_task) if t is not None]
        for link in self.links:
            if link.trace_task is not None:
                link.trace_task.cancel()
            if link in link.host.observers:
                link.host.observers.remove(link)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.drain_timeout + 3)
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.active = False

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each remote's ``stats`` publication, by remote name."""
        return {link.host.name: link.stats() for link in self.links}

    # -- helpers for the links --------------------------------------------------------------

    def exported(self, name: str, level: str) -> bool:
        export = self.settings.export
        return isinstance(export, str) or name in export or level in export

    def is_writable(self, remote: str, endpoint: str) -> bool:
        try:
            return bool(self.writable(remote, endpoint))
        except Exception:
            log.exception("writable(%r, %r) failed; treating the endpoint as read-only", remote, endpoint)
            return False

    def encode_rx(self, host: RemoteHost, ch: Channel, data: bytes, ts: float) -> bytes:
        enc = self.settings.rx_encoding
        if enc == "raw":
            return data
        if enc == "hex":
            return data.hex().encode()
        if enc == "base64":
            return base64.b64encode(data)
        body = {
            "ts": ts,
            "remote": host.name,
            "endpoint": ch.name,
            "src": ch.remote,
            "dst": ch.local,
            "len": len(data),
            "data": base64.b64encode(data).decode(),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @staticmethod
    def _read_password(s: MqttSettings) -> str | None:
        if not s.password_file:
            return None
        path = os.path.expandvars(s.password_file)
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().rstrip("\r\n")
        except OSError as e:
            raise OSError(f"cannot read the MQTT password file {path}: {e.strerror or e}") from None

    @staticmethod
    def _tls_context(s: MqttSettings) -> ssl.SSLContext | None:
        t = s.tls
        if t is None:
            return None
        try:
            ctx = ssl.create_default_context(cafile=t.ca or None)
            if t.cert:
                ctx.load_cert_chain(t.cert, t.key or None)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"TLS files (ca {t.ca!r}, cert {t.cert!r}, key {t.key!r}): {e}") from None
        if t.insecure:
            ctx.check_hostname = False
        return ctx

    def new_client(self, mod: ModuleType, link: _Link) -> Any:
        """A fresh aiomqtt client for one connection attempt (created on the running loop)."""
        s = self.settings
        kw: dict[str, Any] = {
            "identifier": link.client_id,
            "protocol": mod.ProtocolVersion.V5 if s.protocol == "5" else mod.ProtocolVersion.V311,
            "will": mod.Will(link.state_topic, b"offline", self.qos["state"], True),
            "keepalive": s.keepalive,
            "timeout": 10,
        }
        if s.username:
            kw["username"] = s.username
            kw["password"] = self._password
        if self._tls is not None:
            kw["tls_context"] = self._tls
            if s.tls is not None and s.tls.insecure:
                kw["tls_insecure"] = True
        link.mqtt5 = s.protocol == "5"
        if link.mqtt5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.ReceiveMaximum = RECEIVE_MAX  # the broker sends no more unacknowledged writes than this
            kw["properties"] = props
        client = mod.Client(s.host, s.port, **kw)
        client.pending_calls_threshold = 2 * BATCH + 16  # pipelining is deliberate: no warning for it
        # aiomqtt 2.x passes no manual_ack to paho: set it on paho's client, whose ack(mid, qos) we call
        client._client.manual_ack_set(True)
        return client
