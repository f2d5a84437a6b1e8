"""Logging targets: the ``<N>`` stderr fallback as journald parses it, the journal fields, the auto choice."""

from __future__ import annotations

import asyncio
import fcntl
import io
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rprocd import logs
from rprocd.logs import bind, parse_level, setup_logging

# journald's reading of a stream line with SyslogLevelPrefix=yes: "<N>" with N in 0..7, then the text.
PREFIXED = re.compile(r"<([0-7])>(.*)")


@pytest.fixture(autouse=True)
def clean_root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without our handlers and outside systemd, and leaves the root logger as it found it."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in logs._installed:
        root.removeHandler(h)
    logs._installed.clear()
    root.handlers[:] = handlers
    root.setLevel(level)


def journald_parse(text: str) -> list[tuple[int, str]]:
    """(priority, message) per line, failing on any line journald would not read a priority from."""
    out = []
    for line in text.splitlines():
        m = PREFIXED.fullmatch(line)
        assert m, f"line without a <N> prefix: {line!r}"
        out.append((int(m[1]), m[2]))
    return out


def test_stderr_fallback_prefixes_every_line_with_its_priority() -> None:
    buf = io.StringIO()
    assert setup_logging("debug", "stderr", stream=buf) == "stderr"
    log = logging.getLogger("rprocd.test")
    log.debug("d")
    log.info("attached to %s", "main", extra={"REMOTE": "main", "ENDPOINTS": 4})
    log.warning("w")
    log.error("e")
    log.critical("c")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    lines = journald_parse(buf.getvalue())
    assert lines[:5] == [(7, "d"), (6, "attached to main [REMOTE=main ENDPOINTS=4]"), (4, "w"), (3, "e"), (2, "c")]
    trace = lines[5:]
    assert trace[0] == (3, "failed")
    assert len(trace) > 3 and all(prio == 3 for prio, _ in trace)  # the traceback lines keep the error's priority
    assert trace[-1] == (3, "RuntimeError: boom")


def test_default_level_drops_debug_and_reload_replaces_the_handler() -> None:
    buf = io.StringIO()
    setup_logging(stream=buf, target="stderr")
    log = logging.getLogger("rprocd.test")
    log.debug("per message detail")
    log.info("state change")
    assert journald_parse(buf.getvalue()) == [(6, "state change")]

    buf2 = io.StringIO()
    setup_logging("warning", "stderr", stream=buf2)  # a reload: the old handler goes, nothing is doubled
    log.info("hidden")
    log.warning("shown once")
    assert journald_parse(buf.getvalue()) == [(6, "state change")]
    assert journald_parse(buf2.getvalue()) == [(4, "shown once")]


def test_console_is_readable_and_keeps_fields_on_the_message_line() -> None:
    buf = io.StringIO()
    assert setup_logging("info", "console", stream=buf) == "console"
    try:
        raise ValueError("bad table")
    except ValueError:
        bind("rprocd.bus", REMOTE="main").exception("attach failed", extra={"ENDPOINT": "rpmsg-tty"})
    first, *rest = buf.getvalue().splitlines()
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} ERROR   rprocd\.bus: attach failed \[REMOTE=main ENDPOINT=rpmsg-tty\]", first
    )
    assert rest[0].startswith("Traceback") and rest[-1] == "ValueError: bad table"


@pytest.mark.parametrize("bad", ["loud", ""])
def test_unknown_level_or_target_is_an_error(bad: str) -> None:
    with pytest.raises(ValueError, match="log level"):
        parse_level(bad)
    with pytest.raises(ValueError, match="log target"):
        setup_logging("info", bad or "syslog")


def test_levels_are_case_insensitive() -> None:
    assert parse_level("DEBUG") == logging.DEBUG
    assert parse_level(" Warn ") == logging.WARNING
    assert parse_level(logging.ERROR) == logging.ERROR


class FakeJournald:
    """journald's native socket, reading datagrams the way ``src/journal/journald-native.c`` does.

    From systemd's ``server_process_native_message``: lines up to ``\n``; an
    empty line ends an entry (so does the datagram's end); a line starting with
    ``.`` or ``#`` is skipped; ``NAME=value`` is a field; a line with no ``=``
    is a field name followed by a little-endian 64-bit length, that many bytes
    of value and a ``\n`` (anything else is refused: the rest of the datagram
    is dropped).  Names must pass ``journal_field_valid`` (upper case, digits,
    ``_``, not starting with a digit, at most 64), else the field is ignored.
    An entry may come as a file descriptor (``SCM_RIGHTS``) to a sealed memfd
    with an empty datagram (``server_process_native_file``).  Documented in
    systemd's ``docs/JOURNAL_NATIVE_PROTOCOL.md``.
    """

    NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.bad = 0  # datagrams refused

    def _parse(self, data: bytes) -> list[dict[str, bytes]]:
        entries: list[dict[str, bytes]] = []
        entry: dict[str, bytes] = {}
        p = 0
        while p < len(data):
            e = data.find(b"\n", p)
            if e < 0:
                break  # trailing noise: journald ignores it and flushes what it has
            line = data[p:e]
            if not line:
                entries.append(entry)
                entry = {}
                p = e + 1
                continue
            if line[:1] in (b".", b"#"):
                p = e + 1
                continue
            if b"=" in line:
                name, _, value = line.partition(b"=")
                p = e + 1
            else:
                name = line
                if e + 9 > len(data):
                    self.bad += 1
                    break
                (n,) = struct.unpack_from("<Q", data, e + 1)
                start = e + 9
                if start + n + 1 > len(data) or data[start + n : start + n + 1] != b"\n":
                    self.bad += 1
                    break
                value = data[start : start + n]
                p = start + n + 1
            key = name.decode("ascii", "replace")
            if self.NAME.fullmatch(key) and not key.startswith("_") and not key[0].isdigit():
                entry[key] = value
        if entry:
            entries.append(entry)
        return entries

    def read(self, timeout: float = 5.0) -> list[dict[str, str]]:
        """The entries of the next datagram (or memfd), values decoded."""
        self.sock.settimeout(timeout)
        data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 20, 4)
        for fd in fds:
            try:
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                assert seals & (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE), (
                    "journald wants it sealed"
                )
                assert not data, "with a file descriptor the datagram is empty"
                data = os.pread(fd, os.fstat(fd).st_size, 0)
            finally:
                os.close(fd)
        return [{k: v.decode() for k, v in e.items()} for e in self._parse(data)]

    def entries(self, timeout: float = 0.05) -> list[dict[str, str]]:
        """Every entry waiting now (the next one within ``timeout``)."""
        out: list[dict[str, str]] = []
        while True:
            try:
                out += self.read(timeout)
            except TimeoutError:
                return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def journald(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeJournald]:
    j = FakeJournald(tmp_path / "journal.socket")
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", str(j.path))
    yield j
    j.close()


def test_journal_gets_structured_fields_and_only_valid_ones(journald: FakeJournald) -> None:
    assert setup_logging("info", "journal") == "journal"
    log = bind("rprocd.bus", REMOTE="main")
    log.info("endpoint %s up", "rpmsg-tty", extra={"ENDPOINT": "rpmsg-tty", "RX": 3, "lower": "x", "PRIORITY": "0"})
    log.debug("not at info")
    [fields] = journald.entries()
    assert fields["MESSAGE"] == "endpoint rpmsg-tty up"
    assert fields["PRIORITY"] == "6"  # not overridable by a record
    assert fields["SYSLOG_IDENTIFIER"] == "rprocd"
    assert fields["LOGGER"] == "rprocd.bus"
    assert (fields["REMOTE"], fields["ENDPOINT"], fields["RX"]) == ("main", "rpmsg-tty", "3")
    assert fields["CODE_FUNC"] == "test_journal_gets_structured_fields_and_only_valid_ones"
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", k) for k in fields), fields  # no msg, args, lower, ...
    assert journald.bad == 0


def test_a_multi_line_message_goes_as_a_binary_field(journald: FakeJournald) -> None:
    setup_logging("info", "journal")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("rprocd").exception("failed\nMESSAGE=forged", extra={"REMOTE": "a=b\nc"})
    [fields] = journald.entries()
    assert fields["MESSAGE"].startswith("failed\nMESSAGE=forged\nTraceback")  # one field, newlines and all
    assert fields["MESSAGE"].endswith("RuntimeError: boom")
    assert fields["REMOTE"] == "a=b\nc"
    assert fields["PRIORITY"] == "3" and journald.bad == 0


def test_an_entry_too_large_for_a_datagram_goes_as_a_sealed_memfd(journald: FakeJournald) -> None:
    journald.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sender = logs.NativeJournal(str(journald.path))
    sender._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # EMSGSIZE well below the text's size
    big = "x" * 300_000
    sender.send(big, REMOTE="main")
    sender.close()
    [fields] = journald.entries()
    assert fields == {"MESSAGE": big, "REMOTE": "main"}


def test_context_fields_follow_tasks_and_callbacks(journald: FakeJournald) -> None:
    """``logs.context``: what the daemon uses to put REMOTE/ENDPOINT on every entry of a remote's task."""
    setup_logging("info", "journal")
    log = logging.getLogger("rprocd")

    async def remote() -> None:
        loop = asyncio.get_running_loop()
        with logs.context(ENDPOINT="rpmsg-tty"):
            done = asyncio.Event()

            def callback() -> None:
                log.info("from a callback")
                done.set()

            loop.call_soon(callback)
        log.info("in the task")
        await done.wait()

    async def main() -> None:
        with logs.context(REMOTE="main"):
            task = asyncio.get_running_loop().create_task(remote())
        log.info("outside")
        await task

    asyncio.run(main())
    got = {e["MESSAGE"]: (e.get("REMOTE"), e.get("ENDPOINT")) for e in journald.entries()}
    assert got == {
        "outside": (None, None),
        "in the task": ("main", None),
        "from a callback": ("main", "rpmsg-tty"),
    }


def test_journal_unreachable_falls_back_to_prefixed_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", str(tmp_path / "nobody-listens"))
    buf = io.StringIO()
    setup_logging("info", "journal", stream=buf)
    logging.getLogger("rprocd").warning("still seen", extra={"REMOTE": "main"})
    assert journald_parse(buf.getvalue()) == [(4, "still seen [REMOTE=main]")]


def _as_stderr_of_a_unit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> io.TextIOWrapper:
    """A stream whose (dev, inode) $JOURNAL_STREAM names, as systemd sets it for StandardError=journal."""
    f = open(tmp_path / "stream", "w")  # noqa: SIM115 - closed by the caller
    st = os.fstat(f.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    return f


def test_auto_under_systemd_prefers_the_journal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    journald = tmp_path / "journal.socket"
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", str(journald))
    with _as_stderr_of_a_unit(monkeypatch, tmp_path) as f:
        assert setup_logging(stream=f) == "stderr"  # no journald listening: entries would vanish
        journald.touch()
        assert setup_logging(stream=f) == "journal"
    buf = io.StringIO()
    monkeypatch.delenv("JOURNAL_STREAM")
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    assert setup_logging(stream=buf) == "journal"
    journald.unlink()
    assert setup_logging(stream=buf) == "stderr"


def test_auto_outside_systemd_is_console(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", str(tmp_path))  # exists
    with open(tmp_path / "other", "w") as f:
        monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # inherited, but names some other stream
        assert setup_logging(stream=f) == "console"


def test_fallback_in_a_real_process_is_what_journald_reads(tmp_path: Path) -> None:
    """The daemon's process, started the way systemd starts it without journald's socket: prefixes on stderr."""
    code = (
        "import logging, sys; import rprocd.logs; rprocd.logs.JOURNAL_SOCKET = '/nonexistent'\n"
        "from rprocd.logs import setup_logging\n"
        "print(setup_logging('info'), file=sys.stdout)\n"
        "logging.getLogger('rprocd').info('serving', extra={'REMOTE': 'main'})\n"
        "logging.getLogger('rprocd').error('two\\nlines')\n"
    )
    env = {**os.environ, "INVOCATION_ID": "0" * 32, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("JOURNAL_STREAM", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.strip() == "stderr"
    assert journald_parse(r.stderr) == [(6, "serving [REMOTE=main]"), (3, "two"), (3, "lines")]


def _cli(module: str, *args: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())", *args]


def test_the_daemons_entries_name_their_remote_and_endpoint(tmp_path: Path) -> None:
    """The real daemon under a fake journald: REMOTE= on every entry about the remote, ENDPOINT= on every
    entry about an endpoint (as ``journalctl -u rprocd REMOTE=main ENDPOINT=...`` is documented to find),
    and the attach is one line once the announcements settled, not one per endpoint; the simulated
    remote's final stats count the session the daemon just ended."""
    journald = FakeJournald(tmp_path / "journal.socket")
    board, rundir = tmp_path / "board", tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "INVOCATION_ID": "1" * 32}
    env.pop("JOURNAL_STREAM", None)
    env.pop("NOTIFY_SOCKET", None)
    daemon_code = (
        "import sys, rprocd.logs as logs; logs.JOURNAL_SOCKET = sys.argv[1]\n"
        "from rprocd.cli.daemon import main; sys.exit(main(sys.argv[2:]))"
    )
    sim_log = open(tmp_path / "sim.log", "wb")  # noqa: SIM115 - the child's stderr, closed below
    sim = subprocess.Popen(_cli("rprocd.cli.ctl", "sim", "--board", str(board)), env=env, stderr=sim_log)
    sim_log.close()
    daemon = subprocess.Popen(
        [sys.executable, "-c", daemon_code, str(journald.path), "--board", str(board), "--runtime-dir", str(rundir)],
        env=env,
    )
    entries: list[dict[str, str]] = []
    try:
        deadline = time.monotonic() + 60
        while not any(e["MESSAGE"].startswith("main: attached") for e in entries):
            assert time.monotonic() < deadline, f"no attach within 60 s: {[e['MESSAGE'] for e in entries]}"
            assert daemon.poll() is None, f"rprocd exited with {daemon.returncode}"
            entries += journald.entries(0.5)
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as c:
            c.settimeout(10)
            c.connect(str(rundir / "main" / "ept" / "rpmsg-client-sample"))
            c.send(b"hello")
            assert c.recv(496) == b"hello"
        # Stopped in a live session (as Ctrl-C on `make run` stops both): its final figures count that session's end.
        sim.send_signal(signal.SIGTERM)
        assert sim.wait(30) == 0
        [stopped] = [line for line in (tmp_path / "sim.log").read_text().splitlines() if "stopped: " in line]
        assert "'sessions': 1," in stopped and "'sessions_ended': 1," in stopped, stopped
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
        entries += journald.entries(0.2)
    finally:
        for p in (daemon, sim):
            if p.poll() is None:
                p.kill()
            p.wait(10)
        journald.close()
    messages = [e["MESSAGE"] for e in entries]
    assert journald.bad == 0
    about_remote = [e for e in entries if e["MESSAGE"].startswith("main:") or "channel '" in e["MESSAGE"]]
    assert len(about_remote) >= 4, messages
    assert all(e.get("REMOTE") == "main" for e in about_remote), [e for e in about_remote if "REMOTE" not in e]
    endpoints = ("rpmsg-client-sample", "rpmsg-tty", "rpmsg-sink", "rpmsg-source")
    for ept in endpoints:
        about = [e for e in entries if re.search(rf"\b{ept}\b", e["MESSAGE"])]
        assert len(about) >= 3, (ept, messages)  # announced, socket created, socket removed
        assert all((e.get("REMOTE"), e.get("ENDPOINT")) == ("main", ept) for e in about), about
    assert [m for m in messages if m.startswith("main: attached")] == ["main: attached to main: 4 endpoints"]
    assert f"main: waiting on the virtual board in {board} (start the remote: rprocctl sim --board {board})" in messages


def test_the_journal_is_sent_by_systemd_python_where_it_is_installed(tmp_path: Path) -> None:
    """Debian's interpreter has python3-systemd (the package depends on it; ``make deps`` installs it):
    entries to the system journal go through libsystemd's ``systemd.journal.send``; another socket, or an
    interpreter without it (this venv: pip cannot build systemd-python), gets :class:`logs.NativeJournal`."""
    code = (
        "import sys; from rprocd import logs\n"
        "for s in (logs.journal_sender(), logs.journal_sender(sys.argv[1])):\n"
        "    print(getattr(s, '__self__', None).__class__.__name__, s.__module__, s.__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run(
        ["/usr/bin/python3", "-c", code, str(tmp_path / "j")], env=env, capture_output=True, text=True, check=True
    )
    assert r.stdout.splitlines() == ["NoneType systemd.journal send", "NativeJournal rprocd.logs send"]
    here = logs.journal_sender()
    assert isinstance(getattr(here, "__self__", None), logs.NativeJournal)
