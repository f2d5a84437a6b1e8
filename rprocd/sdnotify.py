"""The sd_notify protocol, spoken without libsystemd.

systemd runs rprocd as ``Type=notify``: the daemon tells it when it serves
(``READY=1``), what it is doing (``STATUS=``), that its event loop still turns
(``WATCHDOG=1``), and when it reloads or stops. The protocol is one datagram of
``KEY=VALUE`` lines to the socket named by ``$NOTIFY_SOCKET`` (a path, or an
abstract name written with a leading ``@``), so it needs no library and works
the same from a pip install without libsystemd. (Not systemd-python's
``systemd.daemon.notify``: libsystemd's ``sd_notify`` opens a socket per call
and blocks without a time limit when the manager's queue is full, which would
stall the event loop; this sender keeps one socket and gives up after
``SEND_TIMEOUT``.)

Sending never raises: a daemon must keep serving even when nobody listens
(no ``$NOTIFY_SOCKET``, a manager that went away). Every send returns whether
the datagram left, for tests and for a debug log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier", "start_watchdog", "stop_watchdog"]

log = logging.getLogger(__name__)

# A send waits at most this long for room in the manager's socket queue: long
# enough to ride out a busy PID 1, short enough not to stall the event loop.
SEND_TIMEOUT = 0.5


def _address(name: str) -> str | bytes:
    """The sockaddr for ``$NOTIFY_SOCKET``: ``@foo`` is the abstract name ``\\0foo``."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


class Notifier:
    """Talks to the service manager named by ``$NOTIFY_SOCKET``, if any.

    Built from the environment the process was started with (or a mapping,
    for tests). Without ``$NOTIFY_SOCKET`` every method is a cheap no-op, so
    the daemon calls them unconditionally.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address: str | None = env.get("NOTIFY_SOCKET") or None
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments as one datagram; False if it did not leave."""
        if self.address is None:
            return False
        payload = "\n".join(assignments).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(SEND_TIMEOUT)
            self._sock.sendto(payload, _address(self.address))
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """The daemon serves: systemd's start (or reload) job is done."""
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """The state in words, shown by ``systemctl status``."""
        return self.notify(*_status(text))

    def reloading(self, status: str | None = None) -> bool:
        """A reload has begun; :meth:`ready` ends it.

        ``MONOTONIC_USEC`` lets a manager that supports it (systemd >= 253,
        ``Type=notify-reload``) match this message with the reload it asked for;
        older ones ignore it.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun: systemd stops expecting watchdog pings."""
        return self.notify("STOPPING=1", *_status(status))

    def ping(self) -> bool:
        """Keep-alive for ``WatchdogSec=``."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of ``$WATCHDOG_USEC``), or None when no watchdog is asked for.

        ``$WATCHDOG_PID``, when set, names the process the watchdog is meant
        for; a child that inherited the environment must not ping on its behalf.
        """
        if self.address is None:
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        return usec / 2 / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str | None) -> tuple[str, ...]:
    # One line per assignment: a newline inside STATUS= would start a new one.
    return () if text is None else ("STATUS=" + " ".join(text.splitlines()),)


async def _watchdog(notifier: Notifier, interval: float) -> None:
    while True:
        notifier.ping()
        await asyncio.sleep(interval)


def start_watchdog(
    loop: asyncio.AbstractEventLoop | None = None, notifier: Notifier | None = None
) -> asyncio.Task[None] | None:
    """Ping the watchdog from ``loop`` itself, every :meth:`Notifier.watchdog_interval` seconds.

    The pings are a task on the daemon's own loop, not a thread: when the loop
    is stuck (a blocking call, a busy callback) the pings stop and systemd
    restarts the service, which is the point of the watchdog. Returns None when
    no watchdog is asked for; cancel the task on shutdown (after ``stopping()``).
    """
    notifier = notifier if notifier is not None else Notifier()
    interval = notifier.watchdog_interval()
    if interval is None:
        return None
    if loop is None:
        loop = asyncio.get_running_loop()
    return loop.create_task(_watchdog(notifier, interval), name="sd-watchdog")


async def stop_watchdog(task: asyncio.Task[None] | None) -> None:
    """Cancel a task from :func:`start_watchdog` and wait for it to end."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
