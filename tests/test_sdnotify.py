"""sd_notify: the Notifier against a fake manager socket, and the daemon end to end.

The last test (``test_daemon_speaks_sd_notify``) runs the real ``rprocd`` CLI
and the simulated remote; it depends on the daemon wiring the Notifier in
(``rprocd/cli/daemon.py``, the lead's part).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rprocd.sdnotify import Notifier, start_watchdog, stop_watchdog

REPO = Path(__file__).resolve().parents[1]


class FakeManager:
    """The manager's side of $NOTIFY_SOCKET: a bound datagram socket we read messages from."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sender: subprocess.Popen[bytes] | None = None  # when set, its exit ends a wait early
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.messages: list[dict[str, str]] = []

    def _read(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        msg = dict(line.split("=", 1) for line in data.decode().splitlines())
        self.messages.append(msg)
        return msg

    def wait_for(self, pred: Callable[[dict[str, str]], bool], timeout: float, what: str) -> dict[str, str]:
        """The next message matching ``pred``, read within ``timeout`` seconds, or a failure naming ``what``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self._read(min(left, 0.5))
            if msg is not None and pred(msg):
                return msg
            if msg is None and self.sender is not None and self.sender.poll() is not None:
                pytest.fail(f"no {what}: the daemon exited with {self.sender.returncode}; got {self.messages[-10:]}")
        pytest.fail(f"no {what} within {timeout}s; got {self.messages[-10:]}")

    def drain(self) -> list[dict[str, str]]:
        out = []
        while (msg := self._read(0.001)) is not None:
            out.append(msg)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeManager]:
    abstract = f"@rprocd-test-{uuid.uuid4().hex}"
    m = FakeManager(str(tmp_path / "notify.sock") if request.param == "path" else abstract)
    yield m
    m.close()


def test_messages_reach_the_manager(manager: FakeManager) -> None:
    n = Notifier({"NOTIFY_SOCKET": manager.address})
    assert n.enabled
    assert n.ready("attached to main: 4 endpoints")
    assert n.status("waiting for the remote's resource table")
    assert n.ping()
    assert n.stopping()
    got = [manager.wait_for(lambda m: True, 2, f"message {i}") for i in range(4)]
    assert got == [
        {"READY": "1", "STATUS": "attached to main: 4 endpoints"},
        {"STATUS": "waiting for the remote's resource table"},
        {"WATCHDOG": "1"},
        {"STOPPING": "1"},
    ]
    n.close()


def test_reloading_carries_the_monotonic_clock(manager: FakeManager) -> None:
    n = Notifier({"NOTIFY_SOCKET": manager.address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading("reloading the configuration")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    msg = manager.wait_for(lambda m: True, 2, "RELOADING")
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after
    assert msg["STATUS"] == "reloading the configuration"


def test_a_newline_in_status_cannot_forge_an_assignment(manager: FakeManager) -> None:
    Notifier({"NOTIFY_SOCKET": manager.address}).status("line one\nREADY=1")
    assert manager.wait_for(lambda m: True, 2, "STATUS") == {"STATUS": "line one READY=1"}


def test_without_a_manager_nothing_is_sent_and_nothing_raises(tmp_path: Path) -> None:
    quiet = Notifier({})
    assert not quiet.enabled
    assert not quiet.ready() and not quiet.ping() and not quiet.status("x")
    assert quiet.watchdog_interval() is None
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.enabled
    assert not gone.ready()  # ENOENT: reported, not raised
    gone.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),  # meant for another process
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/run/x", **env}).watchdog_interval() == expected
    assert Notifier(env).watchdog_interval() is None  # no manager, no watchdog


def test_watchdog_pings_come_from_the_loop_and_stop_when_it_is_stuck(manager: FakeManager) -> None:
    n = Notifier({"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "40000"})  # ping every 20 ms

    async def main() -> tuple[int, int]:
        task = start_watchdog(notifier=n)
        assert task is not None
        await asyncio.sleep(0.2)  # at least a few pings while the loop turns
        while_turning = len(manager.drain())
        time.sleep(0.2)  # the loop is stuck: no ping may leave during this
        while_stuck = len(manager.drain())
        await stop_watchdog(task)
        assert task.done()
        return while_turning, while_stuck

    while_turning, while_stuck = asyncio.run(main())
    assert while_turning >= 3
    assert while_stuck == 0
    loop = asyncio.new_event_loop()
    try:
        assert start_watchdog(loop, Notifier({"NOTIFY_SOCKET": manager.address})) is None  # no WATCHDOG_USEC
    finally:
        loop.close()


# --- end to end: needs the daemon (rprocd/cli/daemon.py) to call the Notifier ---------------------------------


def _cli(module: str, *args: str) -> list[str]:
    """The console script ``module:main`` run by this interpreter, exactly as the installed entry point does."""
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())", *args]


def _attached(m: dict[str, str]) -> bool:
    return "attached" in m.get("STATUS", "") and "detached" not in m.get("STATUS", "")


def test_daemon_speaks_sd_notify(tmp_path: Path) -> None:
    """READY=1 while waiting, WATCHDOG=1 pings, STATUS on attach and detach, RELOADING=1..READY=1 on SIGHUP,
    STOPPING=1 on SIGTERM."""
    board, rundir = tmp_path / "board", tmp_path / "run"
    board.mkdir()
    manager = FakeManager(str(tmp_path / "notify.sock"))
    env = {**os.environ, "NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "400000", "PYTHONPATH": str(REPO)}
    env.pop("WATCHDOG_PID", None)
    env.pop("INVOCATION_ID", None)
    procs: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(cmd, cwd=tmp_path, stdin=subprocess.DEVNULL, env=env)
        procs.append(p)
        return p

    sim_env = {k: v for k, v in env.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    try:
        daemon = manager.sender = start(
            _cli("rprocd.cli.daemon", "--board", str(board), "--runtime-dir", str(rundir)), env=env
        )
        ready = manager.wait_for(lambda m: m.get("READY") == "1", 30, "READY=1 before the remote is there")
        assert "waiting" in ready.get("STATUS", "") or any("waiting" in m.get("STATUS", "") for m in manager.messages)
        for i in range(3):
            manager.wait_for(lambda m: m.get("WATCHDOG") == "1", 5, f"watchdog ping {i + 1}")

        sim = start(_cli("rprocd.cli.ctl", "sim", "--board", str(board)), env=sim_env)
        attached = manager.wait_for(_attached, 30, "STATUS= saying attached")
        assert "main" in attached["STATUS"]

        # A remote that restarts writes its table afresh: the daemon detaches, then attaches again.
        sim.terminate()
        sim.wait(10)
        start(_cli("rprocd.cli.ctl", "sim", "--board", str(board)), env=sim_env)
        manager.wait_for(lambda m: "STATUS" in m and not _attached(m), 30, "STATUS= after the remote restarted")
        manager.wait_for(_attached, 30, "STATUS= saying attached again")

        manager.drain()
        daemon.send_signal(signal.SIGHUP)
        reloading = manager.wait_for(lambda m: m.get("RELOADING") == "1", 10, "RELOADING=1 after SIGHUP")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        manager.wait_for(lambda m: m.get("READY") == "1", 10, "READY=1 after the reload")

        daemon.send_signal(signal.SIGTERM)
        manager.sender = None  # exiting is what it should do now
        manager.wait_for(lambda m: m.get("STOPPING") == "1", 10, "STOPPING=1 after SIGTERM")
        assert daemon.wait(10) == 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.kill()
                p.wait(10)
        manager.close()


# --- start-up: READY ordering, no UIO devices yet, signals, command-line errors -------------------------------


def _uio_config(tmp_path: Path) -> Path:
    """The shipped config, with an empty sysfs and /dev: a board whose UIO devices are not there (yet)."""
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    (sysfs / "class" / "uio").mkdir(parents=True)
    dev.mkdir()
    text = (REPO / "etc" / "rprocd" / "rprocd.toml").read_text()
    text = text.replace('runtime_dir = "/run/rprocd"', f'runtime_dir = "{tmp_path / "run"}"', 1)
    text = text.replace(
        'memory = ["rpmsg_shm"]', f'memory = ["rpmsg_shm"]\nsysfs_root = "{sysfs}"\ndev_root = "{dev}"', 1
    )
    assert str(sysfs) in text and str(tmp_path / "run") in text
    cfg = tmp_path / "rprocd.toml"
    cfg.write_text(text)
    return cfg


def _control_hello(path: Path) -> dict[str, object]:
    import json

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(10)
        c.connect(str(path))
        c.sendall(b'{"v": 1, "id": 1, "cmd": "status"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = c.recv(65536)
            assert chunk, "the control socket closed without an answer"
            data += chunk
    reply: dict[str, object] = json.loads(data)
    return reply


def test_ready_without_uio_devices_after_the_control_socket_listens(tmp_path: Path) -> None:
    """Issue 11 section 6 / issue 13 section 3: no UIO device yet, and still READY=1 with a STATUS saying
    what it waits for, sent only once the control socket serves; one hint in the log; SIGTERM while
    waiting ends it cleanly (status 0, a log line)."""
    cfg = _uio_config(tmp_path)
    manager = FakeManager(str(tmp_path / "notify.sock"))
    env = {**os.environ, "NOTIFY_SOCKET": manager.address, "PYTHONPATH": str(REPO)}
    for k in ("WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID", "JOURNAL_STREAM"):
        env.pop(k, None)
    daemon = subprocess.Popen(
        _cli("rprocd.cli.daemon", "-c", str(cfg)), env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    manager.sender = daemon
    try:
        ready = manager.wait_for(lambda m: m.get("READY") == "1", 30, "READY=1 with no UIO device")
        # READY=1 came after bind+listen+rename of the control socket: it answers right now.
        status = _control_hello(tmp_path / "run" / "control")
        assert status["ok"] is True
        assert "waiting for UIO device(s) rpmsg_shm, mbox" in ready.get("STATUS", ""), ready
        [remote] = status["result"]["remotes"]  # type: ignore[index]
        assert remote["state"] == "waiting" and "rpmsg_shm, mbox" in remote["detail"], remote
        daemon.send_signal(signal.SIGTERM)
        manager.sender = None
        manager.wait_for(lambda m: m.get("STOPPING") == "1", 10, "STOPPING=1 after SIGTERM")
        _, err = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate(timeout=10)
        manager.close()
    text = err.decode()
    assert daemon.returncode == 0, text
    hints = [line for line in text.splitlines() if "uio_pdrv_genirq" in line]
    assert len(hints) == 1, text
    for words in ("rpmsg_shm, mbox", "device-tree overlay", "of_id=generic-uio", "docs/hardware.md", "--board DIR"):
        assert words in hints[0], (words, hints[0])
    assert "SIGTERM: stopping" in text


def test_a_stop_request_before_the_loop_serves_is_a_clean_exit(tmp_path: Path) -> None:
    """SIGTERM while the configuration is still being read (before the event loop owns the signals)."""
    code = (
        "import os, signal, sys, time\n"
        "import rprocd.cli.daemon as d\n"
        "def slow(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        "d.load_config = slow\n"
        "sys.exit(d.main(['--board', sys.argv[1]]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, timeout=20)
    assert (r.returncode, r.stderr.decode().strip()) == (0, "rprocd: SIGTERM: stopping before rprocd served")


def test_a_board_folder_whose_parent_is_missing_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    board = tmp_path / "nonexistent" / "dir"
    r = subprocess.run(
        _cli("rprocd.cli.daemon", "--board", str(board), "--runtime-dir", str(tmp_path / "run")),
        env=env,
        capture_output=True,
        timeout=30,
    )
    lines = r.stderr.decode().splitlines()
    assert r.returncode == 2 and len(lines) == 1, lines
    assert str(board) in lines[0] and "does not exist" in lines[0]
    assert not (tmp_path / "nonexistent").exists()


def test_a_config_error_exits_2_with_and_without_check(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[daemon]\nlog_level = "loud"\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    codes = []
    for extra in ([], ["--check"]):
        r = subprocess.run(_cli("rprocd.cli.daemon", *extra, "-c", str(cfg)), env=env, capture_output=True, timeout=30)
        assert "log_level" in r.stderr.decode(), r.stderr
        codes.append(r.returncode)
    assert codes == [2, 2]


def test_ready_is_sent_only_once_the_control_socket_exists(tmp_path: Path) -> None:
    """Deterministic form of the ordering (strace showed sendto READY=1 before the bind of control):
    at the moment the daemon says READY=1, the control socket is in place."""
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "import rprocd.sdnotify as sd\n"
        "orig = sd.Notifier.ready\n"
        "def ready(self, status=None):\n"
        "    print('control at READY:', Path(sys.argv[2], 'control').is_socket(), flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return orig(self, status)\n"
        "sd.Notifier.ready = ready\n"
        "from rprocd.cli.daemon import main\n"
        "sys.exit(main(['--board', sys.argv[1], '--runtime-dir', sys.argv[2]]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "board"), str(tmp_path / "run")],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert (r.returncode, r.stdout.decode()) == (0, "control at READY: True\n"), r.stderr.decode()
