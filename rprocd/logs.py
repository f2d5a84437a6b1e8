"""Logging for a daemon that systemd runs and a developer runs by hand.

Three ways out, picked by :func:`setup_logging`:

``journal``
    Native journal entries with structured fields, sent by systemd-python's
    ``systemd.journal.send`` when it is installed (the ``journal`` extra;
    Debian's ``python3-systemd``, which the package depends on), else by
    :class:`NativeJournal`, the same protocol spoken directly (pip cannot
    build systemd-python without libsystemd's headers):
    pass ``extra={"REMOTE": "main", "ENDPOINT": "rpmsg-tty", "RX": 12}`` (or
    use :func:`bind`) and every UPPER_CASE key becomes a journal field.  The
    daemon also sets ``REMOTE`` and ``ENDPOINT`` for whole stretches of code
    with :func:`context` (a remote's task, an endpoint's socket callbacks), so
    every entry logged there carries them and ``journalctl -u rprocd
    REMOTE=main ENDPOINT=rpmsg-tty`` finds them.
``stderr``
    One line per record with the syslog priority as a ``<N>`` prefix, which
    journald turns into the entry's priority (``SyslogLevelPrefix=yes``, the
    default). This is the fallback under systemd when journald's native
    socket is not there; it keeps the levels but not the fields.
``console``
    Plain readable lines with a timestamp, for a terminal or a file.

``auto`` picks ``journal`` when the process runs under systemd (``$JOURNAL_STREAM``
names our stderr, or ``$INVOCATION_ID`` is set) and journald's socket is
there; ``stderr`` when it runs under systemd without it; ``console`` otherwise.

Policy for callers: at the default level (``info``) the daemon logs state
changes (attach, detach, endpoints appearing, reloads, errors), never one line
per rpmsg message; per-message detail is ``debug``.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import importlib
import logging
import os
import re
import socket
import struct
import sys
import types
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, TextIO

__all__ = [
    "DEFAULT_LEVEL",
    "LEVELS",
    "TARGETS",
    "FieldsAdapter",
    "NativeJournal",
    "bind",
    "context",
    "journal_fields",
    "journal_sender",
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
# Where journald reads native entries (journald-native.c, server_open_native_socket).
# "auto" checks that it exists before choosing the journal.
SYSTEM_JOURNAL_SOCKET = "/run/systemd/journal/socket"  # the one libsystemd sends to
JOURNAL_SOCKET = SYSTEM_JOURNAL_SOCKET

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


_NO_FIELDS: Mapping[str, str] = types.MappingProxyType({})
_CONTEXT: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("rprocd_log_fields", default=_NO_FIELDS)


@contextlib.contextmanager
def context(**fields: str) -> Iterator[None]:
    """``with context(REMOTE="main"):`` every record logged inside carries these journal fields.

    A context variable, so it follows asyncio: a task created inside keeps the
    fields for its whole life, and so does every loop callback registered from
    there (``call_soon``, ``add_reader``: each captures the current context).
    Fields given with ``extra=`` win over these.
    """
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def context_fields() -> Mapping[str, str]:
    """The fields :func:`context` set where the caller runs."""
    return _CONTEXT.get()


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

_LE64 = struct.Struct("<Q")


class NativeJournal:
    """A sender of journald's native protocol: ``send(MESSAGE, **FIELDS)``, like ``systemd.journal.send``.

    Written from systemd's ``docs/JOURNAL_NATIVE_PROTOCOL.md`` and the reader
    it describes, ``src/journal/journald-native.c``
    (``server_process_native_message``, ``server_process_native_file``): one
    ``SOCK_DGRAM`` datagram per entry to ``/run/systemd/journal/socket``; each
    field is ``NAME=value\n``, or, when the value holds a newline,
    ``NAME\n`` + the value's length as a little-endian 64-bit integer + the
    value + ``\n``.  An entry too large for one datagram (``EMSGSIZE``) goes
    as a sealed memfd passed with ``SCM_RIGHTS`` and an empty datagram, as
    ``sd_journal_sendv`` does.  Field names must match what journald accepts
    (``journal_field_valid``: upper case, digits, ``_``, not first ``_``);
    others are dropped here rather than making journald drop the entry.
    Raises OSError when journald cannot be reached, so the handler can fall back.
    """

    def __init__(self, path: str = SYSTEM_JOURNAL_SOCKET) -> None:
        self.path = path
        self._sock: socket.socket | None = None

    @staticmethod
    def encode(fields: Mapping[str, Any]) -> bytes:
        out = bytearray()
        for name, value in fields.items():
            if not _FIELD_NAME.fullmatch(name):
                continue
            data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
            if b"\n" in data:
                out += name.encode() + b"\n" + _LE64.pack(len(data)) + data + b"\n"
            else:
                out += name.encode() + b"=" + data + b"\n"
        return bytes(out)

    def send(self, message: str, **fields: Any) -> None:
        payload = self.encode({"MESSAGE": message, **fields})
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto(payload, self.path)
        except OSError as e:
            if e.errno != errno.EMSGSIZE:
                raise
            self._send_memfd(payload)

    def _send_memfd(self, payload: bytes) -> None:
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, payload)
            fcntl.fcntl(
                fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            )
            assert self._sock is not None
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
            self._sock.sendmsg([b""], rights, 0, self.path)  # (socket.send_fds would drop the address)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class JournalHandler(logging.Handler):
    """Sends records to the journal as native entries with their structured fields.

    Ours rather than ``systemd.journal.JournalHandler``: that one forwards every
    record attribute (``msg``, ``args``, ...) as a field, where we send only the
    UPPER_CASE ones, plus the fields of :func:`context`. When the journal
    cannot be reached the record still goes to stderr with its ``<N>`` prefix
    instead of being lost.
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
                **_CONTEXT.get(),
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

    def close(self) -> None:
        owner = getattr(self._send, "__self__", None)  # a NativeJournal's socket goes with the handler
        if isinstance(owner, NativeJournal):
            owner.close()
        super().close()


def journal_sender(path: str = SYSTEM_JOURNAL_SOCKET) -> JournalSend:
    """What sends entries to the journal at ``path``.

    systemd-python's ``systemd.journal.send`` when it is importable and
    ``path`` is the system journal (libsystemd knows no other); otherwise a
    :class:`NativeJournal`. Both raise OSError when journald cannot be reached.
    """
    if path == SYSTEM_JOURNAL_SOCKET:
        try:  # (by name: mypy would take the repo's systemd/ folder for the package)
            journal = importlib.import_module("systemd.journal")
        except ImportError:
            pass
        else:
            send: JournalSend = journal.send
            return send
    return NativeJournal(path).send


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
    an unknown level or target.
    """
    levelno = parse_level(level)
    if target not in TARGETS:
        raise ValueError(f"unknown log target {target!r} (one of {', '.join(TARGETS)})")
    out = stream if stream is not None else sys.stderr

    if target == "auto":
        if not _under_systemd(out):
            target = "console"
        elif os.path.exists(JOURNAL_SOCKET):
            target = "journal"
        else:
            target = "stderr"

    handler: logging.Handler
    if target == "journal":
        handler = JournalHandler(journal_sender(JOURNAL_SOCKET), identifier, fallback=stream)
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
