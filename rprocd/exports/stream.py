"""Stream export (opt-in per endpoint): ``<runtime-dir>/<NAME>/stream/<EPT>``, length-prefixed frames.

For runtimes without ``SOCK_SEQPACKET`` (Java before 16, Go's net without
syscall work, Node, most scripting languages' plain socket APIs): a
``SOCK_STREAM`` Unix socket where each message, both ways, is one frame::

    +----------------+---------------------------+
    | length: u16 BE | payload: `length` bytes   |   length 0..496
    +----------------+---------------------------+

A client that sends a length above 496 has broken the framing; it is
disconnected (counted in ``tx_oversized``).  Every connected client receives
every message the remote sends to the endpoint.

Flow control, as the endpoint sockets:

* client -> remote: frames are read only while a transmit buffer is free; a
  frame that finds none is kept, reading stops for every stream client, and
  it goes out first from the ``host.wait_for_tx`` callback.  A frame a client
  wrote is never dropped; the client's writes block in the kernel meanwhile.
* remote -> client: each client has a bounded queue (``queue`` frames); past
  that, new frames for that client are dropped and counted (``rx_dropped``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..daemon import RemoteHost
from ..files import CLIENT_RESERVE, AcceptPause, accept_all, clear_stale_sockets
from ..names import safe_name
from ..rpmsg import Channel
from .base import HostExport

log = logging.getLogger("rprocd.stream")

LENGTH = struct.Struct(">H")
_READ = 8192


@dataclass
class StreamStats:
    clients: int = 0
    tx_msgs: int = 0  # frames sent to the remote
    tx_bytes: int = 0
    tx_oversized: int = 0  # clients disconnected for a length above the maximum
    rx_msgs: int = 0  # frames queued or written to clients (one per client)
    rx_dropped: int = 0  # frames dropped because a client reads too slowly
    rx_no_client: int = 0


class _Client:
    __slots__ = ("sock", "fd", "inbuf", "out", "reading", "writing", "closed", "eof")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.out: deque[memoryview] = deque()  # frames (or the unsent rest of one)
        self.reading = False
        self.writing = False
        self.closed = False
        self.eof = False  # the client hung up; it goes once its held frames are sent


@dataclass(eq=False)
class _Endpoint:
    ch: Channel
    path: Path
    listener: socket.socket
    clients: list[_Client] = field(default_factory=list)
    stats: StreamStats = field(default_factory=StreamStats)
    acceptor: AcceptPause | None = None


class StreamExport(HostExport):
    """Stream sockets for the endpoints ``enabled_for(name)`` selects, on one remote.

    An observer of ``host`` (registers itself).  Synchronous: nothing to
    start; :meth:`close` (or ``await stop()``) removes every socket.
    """

    export_kind = "stream"
    subdir = "stream"

    def _init_tables(self) -> None:
        self.endpoints: dict[int, _Endpoint] = {}
        self._prepared = False

    def _prepare(self) -> None:
        clear_stale_sockets(self.dir)
        self._prepared = True

    def _remove_all(self) -> None:
        for ep in list(self.endpoints.values()):
            self._remove(ep)

    # -- observer --------------------------------------------------------------------

    def on_state(self, host: RemoteHost) -> None:
        if host.session is not None and self._paused:
            self._waiting = False  # a new session: a wait registered with the old one may never be answered
            self._resume_now()

    def on_channel(self, host: RemoteHost, ch: Channel, added: bool) -> None:
        if not added:
            ep = self.endpoints.get(ch.local)
            if ep is not None:
                self._remove(ep)
            return
        if ch.local in self.endpoints or not self.enabled_for(ch.name):
            return
        try:
            self._add(ch)
        except OSError as e:
            log.error("%s: cannot create a stream socket for endpoint %r: %s", host.name, ch.name, e)

    def on_rx(self, host: RemoteHost, ch: Channel, payload: bytes) -> None:
        ep = self.endpoints.get(ch.local)
        if ep is None:
            return
        if not ep.clients:
            ep.stats.rx_no_client += 1
            return
        frame = LENGTH.pack(len(payload)) + payload
        for c in list(ep.clients):
            if c.out:
                if len(c.out) >= self.queue:
                    ep.stats.rx_dropped += 1
                    continue
                c.out.append(memoryview(frame))
                ep.stats.rx_msgs += 1
                continue
            try:
                n = c.sock.send(frame)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                self._drop(ep, c, str(e))
                continue
            ep.stats.rx_msgs += 1
            if n < len(frame):
                c.out.append(memoryview(frame)[n:])
                self.loop.add_writer(c.fd, self._writable, ep, c)
                c.writing = True

    # -- sockets -----------------------------------------------------------------------

    def _add(self, ch: Channel) -> None:
        if not self._prepared:
            self._prepare()
        name = safe_name(ch.raw_name or ch.name)
        path = self.dir / name
        if path.parent != self.dir:
            raise OSError(f"endpoint name {ch.name!r} escapes {self.dir}")
        tmp = self.dir / f".new.{ch.local:x}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            tmp.unlink(missing_ok=True)
            sock.bind(str(tmp))
            os.chmod(tmp, self.mode)
            sock.listen(16)
            os.replace(tmp, path)  # appears only with its final mode
        except OSError:
            sock.close()
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        ep = _Endpoint(ch, path, sock)
        ep.acceptor = AcceptPause(self.loop, sock.fileno(), self._accept, ep)
        self.endpoints[ch.local] = ep
        ep.acceptor.start()
        log.info("endpoint %s: stream socket at %s", ch.name, path)

    def _remove(self, ep: _Endpoint) -> None:
        if self.endpoints.pop(ep.ch.local, None) is None:
            return
        if ep.acceptor is not None:
            ep.acceptor.cancel()
        ep.listener.close()
        with contextlib.suppress(FileNotFoundError):
            ep.path.unlink()
        for c in list(ep.clients):
            self._drop(ep, c, "endpoint removed")

    def _accept(self, ep: _Endpoint) -> None:
        for sock in accept_all(ep.listener, ep.path, ep.acceptor, reserve=CLIENT_RESERVE):
            c = _Client(sock)
            ep.clients.append(c)
            ep.stats.clients = len(ep.clients)
            if not self._paused:
                self._start_reading(ep, c)

    def _drop(self, ep: _Endpoint, c: _Client, why: str) -> None:
        if c.closed:
            return
        c.closed = True
        if c.reading:
            self.loop.remove_reader(c.fd)
        if c.writing:
            self.loop.remove_writer(c.fd)
        c.sock.close()
        ep.clients.remove(c)
        ep.stats.clients = len(ep.clients)
        log.debug("stream client of %s gone: %s", ep.path.name, why)

    # -- client -> remote ---------------------------------------------------------------

    def _start_reading(self, ep: _Endpoint, c: _Client) -> None:
        if not c.reading and not c.closed and not c.eof:
            self.loop.add_reader(c.fd, self._readable, ep, c)
            c.reading = True

    def _readable(self, ep: _Endpoint, c: _Client) -> None:
        try:
            data = c.sock.recv(_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._drop(ep, c, str(e))
            return
        if not data:
            c.eof = True
            self.loop.remove_reader(c.fd)
            c.reading = False
        else:
            c.inbuf += data
        if self._send_frames(ep, c):
            self.host.request_flush()
        self._reap(ep, c)

    def _reap(self, ep: _Endpoint, c: _Client) -> None:
        """A client that hung up goes once every complete frame it wrote has been sent."""
        if c.eof and not c.closed and not self._has_frame(c):
            self._drop(ep, c, "closed by the client")

    @staticmethod
    def _has_frame(c: _Client) -> bool:
        buf = c.inbuf
        return len(buf) >= 2 and len(buf) >= 2 + LENGTH.unpack_from(buf, 0)[0]

    def _send_frames(self, ep: _Endpoint, c: _Client) -> bool:
        """Send every complete frame in the client's buffer; pause when the transmit pool is empty."""
        buf = c.inbuf
        maxp = self.host.max_payload
        pos = 0
        sent = False
        while len(buf) - pos >= 2:
            (n,) = LENGTH.unpack_from(buf, pos)
            if n > maxp:
                ep.stats.tx_oversized += 1
                log.warning("stream client of %s sent a %d-byte frame (max %d): disconnected", ep.path.name, n, maxp)
                self._drop(ep, c, "oversized frame")
                return sent
            if len(buf) - pos < 2 + n:
                break
            if not self.host.send(ep.ch, bytes(buf[pos + 2 : pos + 2 + n])):
                self._pause()
                break
            pos += 2 + n
            ep.stats.tx_msgs += 1
            ep.stats.tx_bytes += n
            sent = True
        del buf[:pos]
        return sent

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            for ep in self.endpoints.values():
                for c in ep.clients:
                    if c.reading:
                        self.loop.remove_reader(c.fd)
                        c.reading = False
        if not self._waiting:
            self._waiting = True
            self.host.wait_for_tx(self._resume)

    def _resume(self) -> None:
        """A transmit buffer is free: send the frames held back, then read clients again."""
        self._waiting = False
        self._resume_now()

    def _resume_now(self) -> None:
        if not self._paused:
            return
        self._paused = False
        sent = False
        for ep in list(self.endpoints.values()):
            for c in list(ep.clients):
                sent |= self._send_frames(ep, c)
                self._reap(ep, c)
                if self._paused:
                    break
            if self._paused:
                break
        if sent:
            self.host.request_flush()
        if not self._paused:
            for ep in self.endpoints.values():
                for c in ep.clients:
                    self._start_reading(ep, c)

    # -- remote -> client ----------------------------------------------------------------

    def _writable(self, ep: _Endpoint, c: _Client) -> None:
        q = c.out
        while q:
            try:
                n = c.sock.send(q[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._drop(ep, c, str(e))
                return
            if n < len(q[0]):
                q[0] = q[0][n:]
                return
            q.popleft()
        self.loop.remove_writer(c.fd)
        c.writing = False

    # -- figures (ExportInfo) ------------------------------------------------------------

    def describe(self, ch: Channel) -> dict[str, Any] | None:
        ep = self.endpoints.get(ch.local)
        if ep is None:
            return None
        return {"path": str(ep.path), **vars(ep.stats)}

    def stats(self) -> dict[str, Any]:
        return {
            "sockets": len(self.endpoints),
            "paused": self._paused,
            "clients": sum(len(ep.clients) for ep in self.endpoints.values()),
            "rx_dropped": sum(ep.stats.rx_dropped for ep in self.endpoints.values()),
        }


factory = StreamExport.factory
