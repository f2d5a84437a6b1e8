"""Logging for a daemon that systemd runs and a developer runs by hand.

Three ways out, picked by :func:`setup_logging`:

``journal``
    Native journal entries through systemd-python (the ``journal`` extra,
    ``python3-systemd`` in Debian), with structured fields: pass
    ``extra={"REMOTE": "main", "ENDPOINT": "rpmsg-tty", "RX": 12}`` (or use
    :func:`bind`) and every UPPER_CASE key becomes a journal field, so
    ``journalctl -u rprocd REMOTE=main`` finds them.
``stderr``
    One line per record with the syslog priority as a ``<N>`` prefix, which
    journald turns into the entry's priority (``SyslogLevelPrefix=yes``, the
    default). This is the fallback when systemd-python is not installed, so a
    pip install without libsystemd headers still logs with the right levels.
``console``
    Plain readable lines with a timestamp, for a terminal or a file.

``auto`` picks ``journal`` when the process runs under systemd (``$JOURNAL_STREAM``
names our stderr, or ``$INVOCATION_ID`` is set), systemd-python imports and
journald's socket is there; ``stderr`` when it runs under systemd without
them; ``console`` otherwise.

Policy for callers: at the default level (``info``) the daemon logs state
changes (attach, detach, endpoints appearing, reloads, errors), never one line
per rpmsg message; per-message detail is ``debug``.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TextIO

__all__ = [
    "DEFAULT_LEVEL",
    "LEVELS",
    "TARGETS",
    "FieldsAdapter",
    "bind",
    "journal_fields",
    "parse_level",
    "setup_logging",
    "syslog_priority",
]

DEFAULT_LEVEL = "info"
LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
TARGETS = ("auto", "journal", "stderr", "console")
# Where libsystemd sends native entries. When it is missing, sd_journal_send
# drops them without an error, so "auto" checks for it before choosing the journal.
JOURNAL_SOCKET = "/run/systemd/journal/socket"

# What the journal accepts as a field name (and what sd_journal_send checks):
# upper-case letters, digits and '_', not starting with '_' (those are trusted
# fields journald adds itself) or a digit, at most 64 characters.
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# Fields the handler sets itself; a record cannot override them.
_RESERVED = frozenset({"MESSAGE", "PRIORITY"})


def parse_level(level: str | int) -> int:
    """A level name from the command line or config (case-insensitive) as a logging level."""
    if isinstance(level, int):
        return level
    try:
        return LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})") from None


def syslog_priority(levelno: int) -> int:
    """The syslog priority (0 emerg .. 7 debug) for a logging level, as journald expects it."""
    if levelno <= logging.DEBUG:
        return 7
    if levelno <= logging.INFO:
        return 6
    if levelno <= logging.WARNING:
        return 4
    if levelno <= logging.ERROR:
        return 3
    return 2


def journal_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record carries: its UPPER_CASE attributes (set through ``extra=``)."""
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and _FIELD_NAME.fullmatch(k)}


def _fields_suffix(record: logging.LogRecord) -> str:
    fields = journal_fields(record)
    if not fields:
        return ""
    return " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"


class FieldsAdapter(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds fixed structured fields, merged with each call's own ``extra``.

    (The stdlib adapter replaces a call's ``extra`` with its own instead.)
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def bind(logger: logging.Logger | str, **fields: Any) -> FieldsAdapter:
    """``bind("rprocd.bus", REMOTE="main")``: a logger whose records all carry these fields."""
    if isinstance(logger, str):
        logger = logging.getLogger(logger)
    return FieldsAdapter(logger, fields)


class PrefixFormatter(logging.Formatter):
    """``<N>message [FIELD=value ...]``, the form journald reads from a service's stderr.

    Every line of a multi-line record (a traceback) gets the prefix: journald
    reads each line as its own entry, and an unprefixed line would be logged
    at the unit's default priority.
    """

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        text = super().format(record) + _fields_suffix(record)
        return "\n".join(prefix + line for line in text.splitlines() or [""])


class ConsoleFormatter(logging.Formatter):
    """``12:00:00.123 INFO    rprocd.daemon: message [FIELD=value]`` for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        suffix = _fields_suffix(record)
        if not suffix:
            return text
        first, sep, rest = text.partition("\n")  # fields on the message line, not after a traceback
        return first + suffix + sep + rest


JournalSend = Callable[..., Any]


class JournalHandler(logging.Handler):
    """Sends records to the journal as native entries with their structured fields.

    Ours rather than ``systemd.journal.JournalHandler``: that one forwards every
    record attribute (``msg``, ``args``, ...) as a field, where we send only the
    UPPER_CASE ones. When the journal cannot be reached the record still goes
    to stderr with its ``<N>`` prefix instead of being lost.
    """

    def __init__(self, send: JournalSend, identifier: str, fallback: TextIO | None = None) -> None:
        super().__init__()
        self._send = send
        self._identifier = identifier
        self._fallback = fallback
        self._prefix = PrefixFormatter()
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            fields = {
                "SYSLOG_IDENTIFIER": self._identifier,
                "LOGGER": record.name,
                **journal_fields(record),
            }
            self._send(
                msg,
                PRIORITY=str(syslog_priority(record.levelno)),
                CODE_FILE=record.pathname,
                CODE_LINE=record.lineno,
                CODE_FUNC=record.funcName,
                **fields,
            )
        except OSError:
            stream = self._fallback if self._fallback is not None else sys.stderr
            try:
                stream.write(self._prefix.format(record) + "\n")
                stream.flush()
            except Exception:
                self.handleError(record)
        except Exception:
            self.handleError(record)


def _journal_send() -> JournalSend | None:
    try:
        journal = importlib.import_module("systemd.journal")
    except ImportError:
        return None
    send: JournalSend = journal.send
    return send


def _journal_stream_is(stream: TextIO) -> bool:
    """Whether ``$JOURNAL_STREAM`` (``DEV:INODE``) names ``stream``: systemd connected it to journald."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError):
        return False


def _under_systemd(stream: TextIO) -> bool:
    return _journal_stream_is(stream) or bool(os.environ.get("INVOCATION_ID"))


# Handlers setup_logging installed, so that a reload replaces them instead of adding more.
_installed: list[logging.Handler] = []


def setup_logging(
    level: str | int = DEFAULT_LEVEL,
    target: str = "auto",
    *,
    stream: TextIO | None = None,
    identifier: str = "rprocd",
) -> str:
    """Send the root logger's records to ``target`` at ``level``; returns the target used.

    Call again (on a config reload) to change either: the handlers of the
    previous call are replaced. ``stream`` is where the ``stderr`` and
    ``console`` targets write (default ``sys.stderr``). Raises ValueError for
    an unknown level or target, and for ``journal`` without systemd-python.
    """
    levelno = parse_level(level)
    if target not in TARGETS:
        raise ValueError(f"unknown log target {target!r} (one of {', '.join(TARGETS)})")
    out = stream if stream is not None else sys.stderr

    send = _journal_send() if target in ("auto", "journal") else None
    if target == "auto":
        if not _under_systemd(out):
            target = "console"
        elif send is not None and os.path.exists(JOURNAL_SOCKET):
            target = "journal"
        else:
            target = "stderr"

    handler: logging.Handler
    if target == "journal":
        if send is None:
            raise ValueError("log target 'journal' needs systemd-python (Debian: python3-systemd)")
        handler = JournalHandler(send, identifier, fallback=stream)
    else:
        handler = logging.StreamHandler(out)
        handler.setFormatter(PrefixFormatter() if target == "stderr" else ConsoleFormatter())

    root = logging.getLogger()
    for old in _installed:
        root.removeHandler(old)
        old.close()
    _installed[:] = [handler]
    root.addHandler(handler)
    root.setLevel(levelno)
    logging.captureWarnings(True)
    return target
