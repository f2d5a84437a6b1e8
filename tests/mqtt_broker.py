"""MQTT test helpers: a real mosquitto on a free loopback port, a subscriber, test certificates,
and a daemon launcher (``python -m tests.mqtt_broker``) that runs rprocd with the MQTT bridge.

mosquitto is required, never skipped: without it the tests fail saying how to install it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout: float, what: str, poll: float = 0.02) -> Any:
    """Poll ``pred`` until truthy; fail after ``timeout`` seconds saying what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def mosquitto_binary() -> str:
    path = MOSQUITTO if os.access(MOSQUITTO, os.X_OK) else shutil.which("mosquitto")
    if not path:
        raise AssertionError(
            f"mosquitto is needed for the MQTT tests and was not found at {MOSQUITTO} or on PATH "
            "(Debian/Ubuntu: apt-get install mosquitto)"
        )
    return path


class Broker:
    """One mosquitto process on 127.0.0.1:<port>; stop() and start() again keep the port."""

    def __init__(
        self,
        tmp: Path,
        *,
        tls: dict[str, str] | None = None,
        password_file: Path | None = None,
        require_certificate: bool = False,
    ):
        self.bin = mosquitto_binary()
        self.dir = tmp
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        # run as ourselves: mosquitto started by root otherwise switches to user mosquitto, which cannot
        # read the test's files under a private temporary folder
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"user {getpass.getuser()}"]
        if password_file is not None:
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines += ["allow_anonymous true"]
        if tls is not None:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
            if require_certificate:
                lines += ["require_certificate true"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([self.bin, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT)
        proc = self.proc

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"mosquitto exited with {proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                return False
            return True

        wait_until(listening, 10, f"mosquitto listening on port {self.port}")

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@dataclass
class Msg:
    topic: str
    payload: bytes
    retain: bool
    at: float


class Subscriber:
    """A test-side MQTT client (paho, its own thread) that records what it receives."""

    def __init__(self, port: int, topics: list[str], *, client_id: str = "", **tls_and_auth: Any):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.msgs: list[Msg] = []
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.answered = threading.Event()
        self.connack: Any = None
        self.topics = topics
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{os.getpid()}-{id(self)}")
        if "username" in tls_and_auth:
            self.c.username_pw_set(tls_and_auth["username"], tls_and_auth.get("password"))
        if "ca" in tls_and_auth:
            self.c.tls_set(
                ca_certs=tls_and_auth["ca"], certfile=tls_and_auth.get("cert"), keyfile=tls_and_auth.get("key")
            )
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.port = port

    def _on_connect(self, c: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self.connack = rc
        self.answered.set()
        if not rc.is_failure:
            c.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, c: Any, userdata: Any, m: Any) -> None:
        with self.cond:
            self.msgs.append(Msg(m.topic, bytes(m.payload), bool(m.retain), time.monotonic()))
            self.cond.notify_all()

    def connect(self, timeout: float = 10) -> Subscriber:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.c.connect("127.0.0.1", self.port, keepalive=30)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.c.loop_start()
        if not self.subscribed.wait(timeout):
            raise AssertionError(f"subscription to {self.topics} not acknowledged within {timeout}s")
        return self

    def refused(self, timeout: float = 10) -> str:
        """Connect expecting the broker to say no; return its reason."""
        self.c.connect("127.0.0.1", self.port, keepalive=30)
        self.c.loop_start()
        try:
            if not self.answered.wait(timeout):
                raise AssertionError(f"no CONNACK within {timeout}s")
            if not self.connack.is_failure:
                raise AssertionError("the broker accepted a connection it should have refused")
            return str(self.connack)
        finally:
            self.c.disconnect()
            self.c.loop_stop()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()

    def __enter__(self) -> Subscriber:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on(self, topic: str) -> list[Msg]:
        with self.cond:
            return [m for m in self.msgs if m.topic == topic]

    def wait(self, pred: Callable[[list[Msg]], Any], timeout: float, what: str) -> Any:
        """Wait until ``pred(messages so far)`` is truthy; return its value."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred(self.msgs)
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = [(m.topic, m.payload[:60]) for m in self.msgs[-5:]]
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last messages: {tail}")
                self.cond.wait(left)

    def wait_count(self, topic: str, n: int, timeout: float) -> list[Msg]:
        def enough(msgs: list[Msg]) -> list[Msg] | None:
            mine = [m for m in msgs if m.topic == topic]
            return mine if len(mine) >= n else None

        result: list[Msg] = self.wait(enough, timeout, f"{n} messages on {topic}")
        return result

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.c.publish(topic, payload, qos=qos).wait_for_publish(10)


def make_certs(d: Path) -> dict[str, str]:
    """A test CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl CLI)."""
    d.mkdir(parents=True, exist_ok=True)
    openssl = shutil.which("openssl")
    if not openssl:
        raise AssertionError("the openssl command is needed to make test certificates (apt-get install openssl)")

    def run(*args: str) -> None:
        r = subprocess.run([openssl, *args], cwd=d, capture_output=True, text=True)
        if r.returncode:
            raise AssertionError(f"openssl {' '.join(args)} failed: {r.stderr}")

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")  # quick to make, unlike RSA
    run("req", "-x509", *key, "-nodes", "-days", "2", "-subj", "/CN=rprocd test CA",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("client", [])):
        run("req", *key, "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.crt", *ext)  # fmt: skip
    return {k: str(d / f) for k, f in (("ca", "ca.crt"), ("cert", "server.crt"), ("key", "server.key"),
                                         ("client_cert", "client.crt"), ("client_key", "client.key"))}  # fmt: skip


def make_password_file(path: Path, user: str, password: str) -> Path:
    tool = shutil.which("mosquitto_passwd")
    if not tool:
        raise AssertionError("mosquitto_passwd (package mosquitto) is needed for the password test")
    r = subprocess.run([tool, "-b", "-c", str(path), user, password], capture_output=True, text=True)
    if r.returncode:
        raise AssertionError(f"mosquitto_passwd failed: {r.stderr}")
    return path


# -- the daemon with the bridge (a subprocess of the tests) ----------------------------------


def daemon_argv(board: Path, runtime: Path, settings: dict[str, Any], writable: tuple[str, ...] = ()) -> list[str]:
    return ["-m", "tests.mqtt_broker", "--board", str(board), "--runtime-dir", str(runtime),
            "--settings", json.dumps(settings), *(a for w in writable for a in ("--writable", w))]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run rprocd on a virtual board with ``MqttBridge(settings)``: what the CLI will do with ``[mqtt]``."""
    p = argparse.ArgumentParser(prog="python -m tests.mqtt_broker")
    p.add_argument("--board", required=True)
    p.add_argument("--runtime-dir", required=True)
    p.add_argument("--settings", required=True, help="MqttSettings fields as JSON")
    p.add_argument("--writable", action="append", default=[], help="an endpoint writable from MQTT")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    from rprocd.app import RemoteSpec, serve
    from rprocd.backends.sim import open_board
    from rprocd.exports.mqtt import MqttBridge, MqttSettings, MqttTls
    from rprocd.layout import TCC807X

    raw = json.loads(args.settings)
    if raw.get("tls"):
        raw["tls"] = MqttTls(**raw["tls"])
    if isinstance(raw.get("export"), list):
        raw["export"] = tuple(raw["export"])
    settings = MqttSettings(**raw)
    writable = set(args.writable)
    layout = TCC807X
    spec = RemoteSpec(layout.name, layout, lambda: open_board(args.board, layout))

    def bridge(hosts: list[Any]) -> MqttBridge:
        return MqttBridge(settings, hosts, writable=lambda r, e: e in writable, reconnect_min=0.2,
                          reconnect_max=1.0, trace_interval=0.2)  # fmt: skip

    return asyncio.run(serve([spec], Path(args.runtime_dir), extensions=[bridge]))


if __name__ == "__main__":
    sys.exit(main())
