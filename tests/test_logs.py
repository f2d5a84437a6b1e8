"""Logging targets: the ``<N>`` stderr fallback as journald parses it, the journal fields, the auto choice."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


class FakeJournal:
    """Stands for ``systemd.journal``: records what ``send`` was given, or fails like an absent journald."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    def send(self, message: str, **fields: Any) -> None:
        if self.fail:
            raise FileNotFoundError(2, "No such file or directory")
        self.sent.append((message, fields))


def install_fake_journal(monkeypatch: pytest.MonkeyPatch, journal: FakeJournal) -> None:
    pkg = types.ModuleType("systemd")
    mod = types.ModuleType("systemd.journal")
    mod.send = journal.send  # type: ignore[attr-defined]
    pkg.journal = mod  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "systemd", pkg)
    monkeypatch.setitem(sys.modules, "systemd.journal", mod)


def test_journal_gets_structured_fields_and_only_valid_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    journal = FakeJournal()
    install_fake_journal(monkeypatch, journal)
    assert setup_logging("info", "journal") == "journal"
    log = bind("rprocd.bus", REMOTE="main")
    log.info("endpoint %s up", "rpmsg-tty", extra={"ENDPOINT": "rpmsg-tty", "RX": 3, "lower": "x", "PRIORITY": "0"})
    log.debug("not at info")
    [(message, fields)] = journal.sent
    assert message == "endpoint rpmsg-tty up"
    assert fields["PRIORITY"] == "6"  # not overridable by a record
    assert fields["SYSLOG_IDENTIFIER"] == "rprocd"
    assert fields["LOGGER"] == "rprocd.bus"
    assert (fields["REMOTE"], fields["ENDPOINT"], fields["RX"]) == ("main", "rpmsg-tty", 3)
    assert fields["CODE_FUNC"] == "test_journal_gets_structured_fields_and_only_valid_ones"
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", k) for k in fields), fields  # no msg, args, lower, ...


def test_journal_unreachable_falls_back_to_prefixed_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_journal(monkeypatch, FakeJournal(fail=True))
    buf = io.StringIO()
    setup_logging("info", "journal", stream=buf)
    logging.getLogger("rprocd").warning("still seen", extra={"REMOTE": "main"})
    assert journald_parse(buf.getvalue()) == [(4, "still seen [REMOTE=main]")]


def test_journal_target_without_systemd_python_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "systemd.journal", None)  # makes the import fail
    with pytest.raises(ValueError, match="python3-systemd"):
        setup_logging("info", "journal")


def _as_stderr_of_a_unit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> io.TextIOWrapper:
    """A stream whose (dev, inode) $JOURNAL_STREAM names, as systemd sets it for StandardError=journal."""
    f = open(tmp_path / "stream", "w")  # noqa: SIM115 - closed by the caller
    st = os.fstat(f.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    return f


def test_auto_under_systemd_prefers_the_journal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_fake_journal(monkeypatch, FakeJournal())
    journald = tmp_path / "journal.socket"
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", str(journald))
    with _as_stderr_of_a_unit(monkeypatch, tmp_path) as f:
        assert setup_logging(stream=f) == "stderr"  # no journald listening: entries would vanish
        journald.touch()
        assert setup_logging(stream=f) == "journal"


def test_auto_under_systemd_without_systemd_python_uses_prefixes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "systemd.journal", None)
    with _as_stderr_of_a_unit(monkeypatch, tmp_path) as f:
        assert setup_logging(stream=f) == "stderr"
    buf = io.StringIO()
    monkeypatch.delenv("JOURNAL_STREAM")
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    assert setup_logging(stream=buf) == "stderr"


def test_auto_outside_systemd_is_console(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_fake_journal(monkeypatch, FakeJournal())
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", str(tmp_path))  # exists
    with open(tmp_path / "other", "w") as f:
        monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # inherited, but names some other stream
        assert setup_logging(stream=f) == "console"


def test_fallback_in_a_real_process_is_what_journald_reads(tmp_path: Path) -> None:
    """The daemon's process, started the way systemd starts it without systemd-python: prefixes on stderr."""
    code = (
        "import logging, sys; sys.modules['systemd.journal'] = None\n"
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
