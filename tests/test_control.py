"""The control socket and every rprocctl command, against a running daemon and the simulated remote."""

from __future__ import annotations

import json
import os
import select
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rprocd.cli import ctl
from rprocd.client import Endpoint

from .launch_daemon import SIM_ENDPOINTS, Rig, control_request, wait_for

COMMANDS = [
    "endpoints",
    "send",
    "listen",
    "status",
    "stats",
    "trace",
    "create-endpoint",
    "destroy-endpoint",
    "inspect",
    "wait",
]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with Rig(tmp_path_factory.mktemp("ctl"), stream=["rpmsg-tty"]) as r:
        yield r


def ok(p: subprocess.CompletedProcess[bytes]) -> str:
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr.decode()}"
    return p.stdout.decode()


def one_line_error(p: subprocess.CompletedProcess[bytes], command: str) -> str:
    assert p.returncode != 0
    err = p.stderr.decode()
    assert err.count("\n") == 1 and err.startswith(f"rprocctl {command}: "), err
    assert "Traceback" not in err
    return err


# -- the socket itself ---------------------------------------------------------------------


def test_socket_is_group_only_and_speaks_versioned_json(rig: Rig) -> None:
    path = rig.runtime / "control"
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == os.getegid()

    hello = control_request(rig.runtime, "hello")
    assert hello["v"] == 1 and hello["id"] == 1 and hello["ok"] is True
    assert hello["result"]["remotes"] == ["main"]
    assert hello["result"]["schema"] == 1
    assert hello["result"]["peer"]["pid"] == os.getpid()
    assert {"status", "endpoints", "stats", "trace", "create-endpoint", "destroy-endpoint"} <= set(
        hello["result"]["commands"]
    )

    for req, code in (
        (b"not json\n", "bad-request"),
        (b"[1, 2]\n", "bad-request"),
        (b'{"v": 1, "cmd": "frobnicate"}\n', "unknown-command"),
        (b'{"v": 99, "cmd": "status"}\n', "unsupported-version"),
        (b'{"v": 1, "cmd": "status", "remote": "nope"}\n', "no-such-remote"),
        (b'{"v": 1, "cmd": "create-endpoint", "remote": "main"}\n', "bad-request"),
    ):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(path))
            s.sendall(req)
            reply = json.loads(s.makefile("rb").readline())
        assert reply["ok"] is False and reply["error"]["code"] == code, (req, reply)
        assert reply["v"] == 1 and reply["error"]["message"]


def test_every_request_is_logged_with_peer_credentials(rig: Rig) -> None:
    control_request(rig.runtime, "status", remote="main")
    needle = f"uid={os.getuid()} gid={os.getgid()} pid={os.getpid()}: status"
    wait_for("the request in the daemon's log", lambda: needle in (rig.tmp / "daemon.log").read_text(), 5)


def test_several_requests_on_one_connection(rig: Rig) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(rig.runtime / "control"))
        s.sendall(b'{"v":1,"id":"a","cmd":"status"}\n{"v":1,"id":"b","cmd":"endpoints"}\n')
        f = s.makefile("rb")
        a, b = json.loads(f.readline()), json.loads(f.readline())
    assert (a["id"], b["id"]) == ("a", "b")
    assert a["result"]["remotes"][0]["state"] == "attached"
    assert {e["name"] for e in b["result"]["endpoints"]} >= set(SIM_ENDPOINTS)


# -- rprocctl --------------------------------------------------------------------------------


def test_status(rig: Rig) -> None:
    out = ok(rig.ctl("status"))
    assert "main: attached" in out and "0x200c63b8" in out and "vring1 0x200c9000" in out
    (r,) = json.loads(ok(rig.ctl("status", "--json")))["remotes"]
    assert r["name"] == "main" and r["state"] == "attached" and r["attach_count"] >= 1
    assert r["features"]["names"] == ["ns"]
    assert r["table"] == {"pa": 0x200C63B8, "region": 0x200C6000, "offset": 0x3B8}
    assert [g["pa"] for g in r["rings"]] == [0x200C8000, 0x200C9000]
    assert [g["num"] for g in r["rings"]] == [8, 8]
    b = r["buffers"]
    assert (b["pa"], b["size"], b["buf_size"], b["count"], b["tx_total"]) == (0x200CA000, 0x4000, 512, 16, 8)
    assert 0 <= b["tx_free"] <= 8
    assert r["endpoints"] >= 4


def test_endpoints(rig: Rig) -> None:
    out = ok(rig.ctl("endpoints"))
    assert out.splitlines()[0].split()[:3] == ["NAME", "LOCAL", "REMOTE"]
    for name in SIM_ENDPOINTS:
        assert name in out
    eps = {e["name"]: e for e in json.loads(ok(rig.ctl("endpoints", "--json")))["endpoints"]}
    assert set(SIM_ENDPOINTS) <= set(eps)
    for name in SIM_ENDPOINTS:
        e = eps[name]
        assert e["local"] >= 1024 and isinstance(e["remote"], int)
        assert e["exports"]["socket"]["path"] == str(rig.runtime / "main" / "ept" / name)
        assert {"rx_msgs", "rx_bytes", "tx_msgs", "tx_bytes", "clients"} <= set(e)
    assert eps["rpmsg-tty"]["exports"]["stream"]["path"] == str(rig.runtime / "main" / "stream" / "rpmsg-tty")
    assert "stream" not in eps["rpmsg-sink"]["exports"]


def test_send_text_hex_stdin_and_json(rig: Rig) -> None:
    assert ok(rig.ctl("send", "rpmsg-tty", "hello there", "--replies", "1")) == "hello there\n"
    assert ok(rig.ctl("send", "rpmsg-client-sample", "00ff10", "--hex", "--replies", "1", "--format", "hex")) == (
        "00 ff 10\n"
    )
    assert ok(rig.ctl("send", "rpmsg-tty", "-", "--lines", "--replies", "2", input=b"one\ntwo\n")) == "one\ntwo\n"
    raw = rig.ctl("send", "rpmsg-tty", "-", "--replies", "1", "--format", "raw", input=b"\x00\x01bin\n")
    assert ok(raw).encode() == b"\x00\x01bin\n"
    res = json.loads(ok(rig.ctl("send", "rpmsg-client-sample", "ping", "--replies", "1", "--json")))
    assert res["endpoint"] == "rpmsg-client-sample" and res["sent"] == [4]
    assert res["replies"] == [{"endpoint": "rpmsg-client-sample", "len": 4, "hex": "70696e67", "text": "ping"}]


def _wait_clients(rig: Rig, name: str, n: int) -> None:
    def check() -> bool:
        eps = control_request(rig.runtime, "endpoints")["result"]["endpoints"]
        return any(e["name"] == name and e["exports"]["socket"]["clients"] >= n for e in eps)

    wait_for(f"{n} client(s) on {name}", check, 10)


def test_listen_json_and_hex(rig: Rig) -> None:
    argv = [sys.executable, "-m", "rprocd.cli.ctl", "--runtime-dir", str(rig.runtime)]
    lis = subprocess.Popen(
        [*argv, "listen", "rpmsg-source", "--count", "3", "--json", "--timeout", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=rig.env,
    )
    try:
        _wait_clients(rig, "rpmsg-source", 1)
        with Endpoint.open("rpmsg-source", runtime_dir=rig.runtime) as ept:
            ept.send(b"3 8")
            mine = [ept.recv(timeout=5) for _ in range(3)]
        out, err = lis.communicate(timeout=15)
    finally:
        if lis.poll() is None:
            lis.kill()
            lis.wait()
    assert lis.returncode == 0, err.decode()
    recs = [json.loads(line) for line in out.decode().splitlines()]
    assert [r["len"] for r in recs] == [8, 8, 8]
    assert [struct.unpack_from("<I", bytes.fromhex(r["hex"]))[0] for r in recs] == [0, 1, 2]
    assert [bytes.fromhex(r["hex"]) for r in recs] == mine

    lis = subprocess.Popen(
        [*argv, "listen", "rpmsg-sink", "--count", "1", "--format", "hex", "--timeout", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=rig.env,
    )
    try:
        _wait_clients(rig, "rpmsg-sink", 1)
        with Endpoint.open("rpmsg-sink", runtime_dir=rig.runtime) as ept:
            ept.send(b"STAT")
            stat_reply = ept.recv(timeout=5)
        out, err = lis.communicate(timeout=15)
    finally:
        if lis.poll() is None:
            lis.kill()
            lis.wait()
    assert lis.returncode == 0, err.decode()
    assert out.decode() == stat_reply.hex(" ") + "\n"


def test_stats(rig: Rig) -> None:
    with Endpoint.open("rpmsg-sink", runtime_dir=rig.runtime) as ept:
        for _ in range(5):
            ept.send(b"12345")
        before = ept.request(b"STAT").split()
    assert int(before[0]) >= 5
    (r,) = json.loads(ok(rig.ctl("stats", "--json")))["remotes"]
    assert r["state"] == "attached" and r["host"]["attaches"] >= 1
    assert r["bus"]["tx_msgs"] >= 6 and r["bus"]["rx_msgs"] >= 1
    assert "doorbell" in r and "stream" in r["exports"]
    sink = next(e for e in r["endpoints"] if e["name"] == "rpmsg-sink")
    assert sink["tx_msgs"] >= 6
    out = ok(rig.ctl("stats"))
    assert out.startswith("main:\n") and "  host.attaches " in out and "  bus.tx_msgs " in out


def test_trace_and_follow(rig: Rig) -> None:
    out = ok(rig.ctl("trace"))
    assert "*** Booting rprocd simulated remote" in out and "rpmsg: attached" in out
    res = json.loads(ok(rig.ctl("trace", "--json")))
    assert res["remote"] == "main" and res["text"] == out
    assert res["pa"] and res["len"]

    argv = [sys.executable, "-m", "rprocd.cli.ctl", "--runtime-dir", str(rig.runtime), "trace", "-f", "--json"]
    fol = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=rig.env)
    try:
        assert fol.stdout is not None
        first = json.loads(_readline(fol.stdout, 10))
        assert "rpmsg: attached" in first["text"] and first["follow"] is True
        with Endpoint.open("rpmsg-source", runtime_dir=rig.runtime) as ept:
            ept.send(b"not-a-request")  # the simulated remote complains in its trace buffer
        ev = json.loads(_readline(fol.stdout, 10))
        assert ev["remote"] == "main" and "not-a-request" in ev["text"]
    finally:
        fol.terminate()
        fol.wait(timeout=5)


def _readline(f: object, timeout: float) -> bytes:
    fd = f.fileno()  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"no line within {timeout}s (have {buf!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise EOFError(buf)
        buf += chunk
    return buf


def test_create_and_destroy_endpoint(rig: Rig) -> None:
    sample = next(
        e
        for e in control_request(rig.runtime, "endpoints")["result"]["endpoints"]
        if e["name"] == "rpmsg-client-sample"
    )
    created = json.loads(ok(rig.ctl("create-endpoint", "host-echo", "--dst", str(sample["remote"]), "--json")))
    assert created["name"] == "host-echo" and created["host_created"] is True and created["announced"] is False
    assert created["local"] >= 1024 and created["remote"] == sample["remote"]
    path = rig.runtime / "main" / "ept" / "host-echo"
    assert Path(created["exports"]["socket"]["path"]) == path and path.exists()
    # a message on the host endpoint goes to the echo endpoint, which answers to the host endpoint
    with Endpoint.open("host-echo", runtime_dir=rig.runtime) as ept:
        assert ept.request(b"via host endpoint") == b"via host endpoint"
    err = one_line_error(rig.ctl("create-endpoint", "host-echo"), "create-endpoint")
    assert "exists" in err

    out = ok(rig.ctl("create-endpoint", "announced-ept", "--announce"))
    assert out.startswith("created announced-ept: local 0x") and "announced" in out
    assert json.loads(ok(rig.ctl("destroy-endpoint", "announced-ept", "--json"))) == {
        "remote": "main",
        "name": "announced-ept",
        "destroyed": True,
    }
    assert ok(rig.ctl("destroy-endpoint", "host-echo")) == "destroyed host-echo\n"
    assert not path.exists()
    names = {e["name"] for e in json.loads(ok(rig.ctl("endpoints", "--json")))["endpoints"]}
    assert "host-echo" not in names and "announced-ept" not in names
    one_line_error(rig.ctl("destroy-endpoint", "host-echo"), "destroy-endpoint")
    one_line_error(rig.ctl("destroy-endpoint", "rpmsg-tty"), "destroy-endpoint")  # the remote's, not ours


def test_errors_are_one_line(rig: Rig, tmp_path: Path) -> None:
    assert "no endpoint 'nope'" in one_line_error(rig.ctl("send", "nope", "x"), "send")
    one_line_error(rig.ctl("listen", "nope"), "listen")
    assert "exceeds 496" in one_line_error(rig.ctl("send", "rpmsg-tty", "x" * 497), "send")
    assert "no reply" in one_line_error(
        rig.ctl("send", "rpmsg-sink", "x", "--replies", "1", "--timeout", "0.3"), "send"
    )
    assert "no remote named" in one_line_error(rig.ctl("--remote", "other", "status"), "status")
    gone = [sys.executable, "-m", "rprocd.cli.ctl", "--runtime-dir", str(tmp_path)]
    for cmd in ("status", "stats", "trace", "create-endpoint", "endpoints"):
        extra = ["x"] if cmd == "create-endpoint" else []
        p = subprocess.run([*gone, cmd, *extra], capture_output=True, timeout=20, env=rig.env)
        assert "rprocd is not running" in one_line_error(p, cmd)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        ctl.main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and f"rprocctl {command}" in out.split("example", 1)[1]
    if command != "inspect":
        assert "--json" in out


# -- the stream export --------------------------------------------------------------------


def _frame(payload: bytes) -> bytes:
    return struct.pack(">H", len(payload)) + payload


def _read_frames(s: socket.socket, n: int, timeout: float = 10) -> list[bytes]:
    deadline = time.monotonic() + timeout
    buf = b""
    out: list[bytes] = []
    while len(out) < n:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError(f"stream closed after {len(out)} frames")
        buf += chunk
        while len(buf) >= 2 and len(buf) >= 2 + struct.unpack_from(">H", buf)[0]:
            size = struct.unpack_from(">H", buf)[0]
            out.append(buf[2 : 2 + size])
            buf = buf[2 + size :]
    assert not buf
    return out


def test_stream_export_echo_with_length_prefix(rig: Rig) -> None:
    path = rig.runtime / "main" / "stream" / "rpmsg-tty"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    msgs = [bytes([i % 256]) * (i % 497) for i in range(300)]  # 0..496 bytes, empty ones included
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        blob = b"".join(_frame(m) for m in msgs)
        # written in odd-sized pieces: frames split across writes must be reassembled
        sent = 0
        got: list[bytes] = []
        while sent < len(blob):
            s.sendall(blob[sent : sent + 777])
            sent += 777
            if len(got) < sent // 600:
                got += _read_frames(s, 1)
        got += _read_frames(s, len(msgs) - len(got))
    assert got == msgs

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # a broken length is refused, not forwarded
        s.connect(str(path))
        s.sendall(struct.pack(">H", 497) + b"x" * 497)
        s.settimeout(5)
        assert s.recv(10) == b""
    eps = control_request(rig.runtime, "endpoints")["result"]["endpoints"]
    st = next(e for e in eps if e["name"] == "rpmsg-tty")["exports"]["stream"]
    assert st["tx_oversized"] == 1 and st["tx_msgs"] >= len(msgs)


# -- rprocctl wait, and endpoints without a daemon -------------------------------------------------


def test_wait_for_the_remote_and_its_endpoints(rig: Rig) -> None:
    ok(rig.ctl("wait", "--timeout", "10"))
    ok(rig.ctl("wait", "--endpoint", "rpmsg-tty", "-e", "rpmsg-client-sample", "--timeout", "10"))
    err = one_line_error(rig.ctl("wait", "--endpoint", "rpmsg-tty", "--endpoint", "nope", "--timeout", "0.5"), "wait")
    assert "no endpoint nope on main" in err and "gave up after 0.5 s" in err
    assert "no remote named" in one_line_error(rig.ctl("--remote", "other", "wait", "--timeout", "5"), "wait")


def test_wait_started_before_the_daemon_returns_once_the_endpoint_exists(tmp_path: Path) -> None:
    """What ``ExecStartPre=rprocctl wait --endpoint ...`` in a client unit relies on."""
    rig = Rig(tmp_path)
    argv = [sys.executable, "-m", "rprocd.cli.ctl", "--runtime-dir", str(rig.runtime)]
    waiter = subprocess.Popen([*argv, "wait", "--endpoint", "rpmsg-tty", "--timeout", "120"], env=rig.env)
    try:
        assert waiter.poll() is None  # nothing to wait on yet: it must still be waiting
        with rig:
            assert waiter.wait(120) == 0
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    gone = subprocess.run([*argv, "wait", "--timeout", "0.3"], capture_output=True, timeout=20, env=rig.env)
    assert "rprocd is not running" in one_line_error(gone, "wait")


def test_endpoints_after_the_daemon_was_killed_is_a_failure(tmp_path: Path) -> None:
    """SIGKILL leaves the sockets behind: listing them would show dead endpoints as if they worked."""
    with Rig(tmp_path) as rig:
        daemon = next(p for name, p in rig.procs if name == "daemon")
        daemon.kill()
        daemon.wait(10)
        assert (rig.runtime / "main" / "ept" / "rpmsg-tty").exists()  # left behind
        err = one_line_error(rig.ctl("endpoints"), "endpoints")
        assert "rprocd is not running" in err
        assert rig.ctl("endpoints").returncode == 1
