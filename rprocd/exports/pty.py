"""PTY export (opt-in per endpoint): a pseudo-terminal at ``<runtime-dir>/<NAME>/tty/<EPT>``.

For programs written for the kernel's ``/dev/ttyRPMSG*``: they open a tty,
maybe set it raw, and read/write bytes.  rprocd holds the master side; the
symlink points at the slave (``/dev/pts/N``).  The slave starts in raw mode
(no echo, no line editing, no CR/LF mangling), so bytes pass unchanged.

A tty is a byte stream, so message boundaries are not kept: each read from
the master (at most 496 bytes) becomes one rpmsg message, as the kernel's
``rpmsg_tty`` does with each write; each message from the remote is written
to the master as it comes.

Flow control, as the endpoint sockets:

* client -> remote: the master is read only when a transmit buffer is free
  (``host.tx_available``); when none is, reading stops and resumes from the
  ``host.wait_for_tx`` callback.  A byte a client wrote is never dropped: it
  waits in the tty, and the client's ``write`` blocks when the tty is full.
* remote -> client: a message the tty cannot take now is queued per endpoint
  (bounded, ``queue`` messages); past that, new messages are dropped and
  counted (``rx_dropped``): a slow reader must never stall the whole remote.

The daemon keeps its own handle on the slave open, so the master never sees
a hang-up when a client closes its side and the path stays valid.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import termios
import tty
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..daemon import RemoteHost
from ..files import chgrp
from ..names import safe_name
from ..rpmsg import Channel
from .base import HostExport

log = logging.getLogger("rprocd.pty")


@dataclass
class PtyStats:
    tx_msgs: int = 0  # messages sent to the remote (reads from the master)
    tx_bytes: int = 0
    rx_msgs: int = 0  # messages written to the tty
    rx_bytes: int = 0
    rx_dropped: int = 0  # messages dropped because the tty reader is too slow
    tx_waits: int = 0  # reading paused because no transmit buffer was free


@dataclass(eq=False)
class _Pty:
    ch: Channel
    master: int
    slave: int
    tty_path: str
    link: Path
    out: deque[memoryview] = field(default_factory=deque)
    writing: bool = False
    reading: bool = False
    closed: bool = False
    stats: PtyStats = field(default_factory=PtyStats)


class PtyExport(HostExport):
    """PTYs for the endpoints ``enabled_for(name)`` selects, on one remote.

    An observer of ``host`` (registers itself).  Synchronous: nothing to
    start; :meth:`close` (or ``await stop()``) removes every pty.
    """

    export_kind = "pty"
    subdir = "tty"

    def _init_tables(self) -> None:
        self.ptys: dict[int, _Pty] = {}  # by local address
        self.errors = 0

    def _remove_all(self) -> None:
        for p in list(self.ptys.values()):
            self._remove(p)

    # -- observer --------------------------------------------------------------------

    def on_state(self, host: RemoteHost) -> None:
        if host.session is not None and self._paused:
            self._resume()  # a new session: a wait registered with the old one may never be answered

    def on_channel(self, host: RemoteHost, ch: Channel, added: bool) -> None:
        if not added:
            p = self.ptys.pop(ch.local, None)
            if p is not None:
                self._remove(p)
            return
        if ch.local in self.ptys or not self.enabled_for(ch.name):
            return
        try:
            self._add(ch)
        except OSError as e:
            self.errors += 1
            log.error("%s: cannot create a pty for endpoint %r: %s", host.name, ch.name, e)

    def on_rx(self, host: RemoteHost, ch: Channel, payload: bytes) -> None:
        p = self.ptys.get(ch.local)
        if p is None or p.closed:
            return
        if p.out:
            self._enqueue(p, payload)
            return
        try:
            n = os.write(p.master, payload)
        except BlockingIOError:
            n = 0
        except OSError as e:
            log.warning("pty of %s: write failed: %s", ch.name, e)
            p.stats.rx_dropped += 1
            return
        if n == len(payload):
            p.stats.rx_msgs += 1
            p.stats.rx_bytes += n
            return
        self._enqueue(p, payload, n)

    # -- pty lifecycle -----------------------------------------------------------------

    def _add(self, ch: Channel) -> None:
        name = safe_name(ch.raw_name or ch.name)
        link = self.dir / name
        if link.parent != self.dir:
            raise OSError(errno.EINVAL, f"endpoint name {ch.name!r} escapes {self.dir}")
        self.dir.mkdir(parents=True, exist_ok=True)
        master, slave = os.openpty()
        try:
            tty.setraw(slave, termios.TCSANOW)
            os.set_blocking(master, False)
            os.set_inheritable(master, False)
            os.set_inheritable(slave, False)
            path = os.ttyname(slave)
            with contextlib.suppress(OSError):  # the daemon's group may use it, as the sockets (0660)
                chgrp(slave, os.getegid())
            with contextlib.suppress(OSError):
                os.fchmod(slave, self.mode)
            tmp = link.with_name(f".{name}.tmp")
            tmp.unlink(missing_ok=True)
            os.symlink(path, tmp)
            os.replace(tmp, link)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        p = _Pty(ch, master, slave, path, link)
        self.ptys[ch.local] = p
        if not self._paused:
            self._start_reading(p)
        log.info("endpoint %s: pty %s at %s", ch.name, path, link)

    def _remove(self, p: _Pty) -> None:
        if p.closed:
            return
        p.closed = True
        self.ptys.pop(p.ch.local, None)
        if p.reading:
            self.loop.remove_reader(p.master)
        if p.writing:
            self.loop.remove_writer(p.master)
        with contextlib.suppress(OSError):
            if p.link.is_symlink() and os.readlink(p.link) == p.tty_path:
                p.link.unlink()
        os.close(p.master)  # the client sees a hang-up (EIO/POLLHUP) on its side
        os.close(p.slave)
        log.info("endpoint %s: pty %s removed", p.ch.name, p.tty_path)

    # -- client -> remote ---------------------------------------------------------------

    def _start_reading(self, p: _Pty) -> None:
        if not p.reading and not p.closed:
            self.loop.add_reader(p.master, self._readable, p)
            p.reading = True

    def _readable(self, p: _Pty) -> None:
        host = self.host
        maxp = host.max_payload
        sent = False
        for _ in range(16):  # bounded batch, for fairness with the rest of the loop
            if not host.tx_available():
                self._pause()
                break
            try:
                data = os.read(p.master, maxp)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # EIO: no slave open (cannot happen while we hold one)
                log.debug("pty of %s: read: %s", p.ch.name, e)
                break
            if not data:
                break
            if not host.send(p.ch, data):  # tx_available said yes: cannot happen, but never drop
                log.error("pty of %s: transmit buffer vanished; %d bytes lost", p.ch.name, len(data))
                self.errors += 1
                break
            p.stats.tx_msgs += 1
            p.stats.tx_bytes += len(data)
            sent = True
        if sent:
            host.request_flush()

    def _pause(self) -> None:
        """No transmit buffer: stop reading every pty until the host says one is free."""
        if not self._paused:
            self._paused = True
            for p in self.ptys.values():
                if p.reading:
                    self.loop.remove_reader(p.master)
                    p.reading = False
                p.stats.tx_waits += 1
        if not self._waiting:
            self._waiting = True
            self.host.wait_for_tx(self._resume)

    def _resume(self) -> None:
        self._waiting = False
        if not self._paused:
            return
        self._paused = False
        for p in list(self.ptys.values()):
            self._start_reading(p)

    # -- remote -> client ----------------------------------------------------------------

    def _enqueue(self, p: _Pty, payload: bytes, written: int = 0) -> None:
        if written:  # part of this message is in the tty already: the rest must follow it
            p.stats.rx_msgs += 1
            p.stats.rx_bytes += len(payload)
            p.out.append(memoryview(payload)[written:])
        elif len(p.out) >= self.queue:
            p.stats.rx_dropped += 1
            if p.stats.rx_dropped in (1, 10, 100) or p.stats.rx_dropped % 1000 == 0:
                log.warning("pty of %s: reader too slow, %d messages dropped", p.ch.name, p.stats.rx_dropped)
            return
        else:
            p.stats.rx_msgs += 1
            p.stats.rx_bytes += len(payload)
            p.out.append(memoryview(payload))
        if not p.writing:
            self.loop.add_writer(p.master, self._writable, p)
            p.writing = True

    def _writable(self, p: _Pty) -> None:
        q = p.out
        while q:
            try:
                n = os.write(p.master, q[0])
            except BlockingIOError:
                return
            except OSError as e:
                log.warning("pty of %s: write failed: %s; %d messages dropped", p.ch.name, e, len(q))
                p.stats.rx_dropped += len(q)
                q.clear()
                break
            if n < len(q[0]):
                q[0] = q[0][n:]
                return
            q.popleft()
        self.loop.remove_writer(p.master)
        p.writing = False

    # -- figures (ExportInfo) ------------------------------------------------------------

    def describe(self, ch: Channel) -> dict[str, Any] | None:
        p = self.ptys.get(ch.local)
        if p is None:
            return None
        return {"path": str(p.link), "tty": p.tty_path, "queued": len(p.out), **vars(p.stats)}

    def stats(self) -> dict[str, Any]:
        return {
            "ptys": len(self.ptys),
            "paused": self._paused,
            "errors": self.errors,
            "rx_dropped": sum(p.stats.rx_dropped for p in self.ptys.values()),
        }


factory = PtyExport.factory
