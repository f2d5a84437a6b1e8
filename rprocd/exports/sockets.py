"""Endpoint sockets: ``<runtime-dir>/<NAME>/ept/<EPT>``, one ``SOCK_SEQPACKET`` record per message.

Non-blocking sockets on the loop's ``add_reader``/``add_writer``: no asyncio
stream layer on the hot path.  Flow control both ways:

* client -> remote: a record is read only when a transmit buffer is free, so a
  remote that holds every buffer makes clients' writes wait in their socket
  (the kernel blocks them), never refused or dropped;
* remote -> client: each client has a bounded queue; when a queue is full the
  endpoint's overflow policy applies: ``block`` (refuse the delivery, so the
  bus stops draining the remote), ``drop-oldest`` or ``drop-newest`` (counted).
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..files import CLIENT_RESERVE, FD_RESERVE, AcceptPause, accept_all, chgrp, clear_stale_sockets, fd_room
from ..names import MAX_SAFE, fits, safe_name
from ..rpmsg import Channel, lifecycle_logged, sparse

log = logging.getLogger("rprocd.sockets")

OVERFLOW_POLICIES = ("block", "drop-oldest", "drop-newest")
_BATCH = 64  # records read from one client per wake-up, for fairness between clients


@dataclass(frozen=True)
class EndpointPolicy:
    """What happens to the remote's messages for a client that reads slowly.

    ``block``: the client's socket buffer is the queue; when it is full the
    remote waits (nothing is lost, even if rprocd is killed).  ``drop-oldest``
    / ``drop-newest``: up to ``queue`` more messages wait in rprocd's memory
    per client, then the oldest or the newest is dropped and counted.
    """

    overflow: str = "block"
    queue: int = 256


class Transport(Protocol):
    """What the socket export needs from the daemon."""

    max_payload: int

    def send(self, ch: Channel, payload: memoryview) -> bool: ...

    def tx_available(self) -> bool: ...

    def tx_credits(self) -> int: ...

    def request_flush(self) -> None: ...

    def flush(self) -> None: ...

    def wait_for_tx(self) -> None: ...

    def rx_unblocked(self) -> None: ...


@dataclass
class EndpointStats:
    clients: int = 0
    rx_delivered: int = 0  # client deliveries (a message to 3 clients counts 3)
    rx_no_client: int = 0  # messages that found no client connected
    rx_dropped_oldest: int = 0
    rx_dropped_newest: int = 0
    rx_lost_on_close: int = 0  # queued for a client that went away
    tx_records: int = 0
    tx_oversized: int = 0
    accept_pauses: int = 0  # accept() ran out of descriptors: the listener rested a while


class _Client:
    __slots__ = ("sock", "fd", "queue", "writing", "reading", "closed")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.fd = sock.fileno()
        self.queue: deque[bytes] = deque()
        self.writing = False
        self.reading = False
        self.closed = False


@dataclass(eq=False)
class EndpointExport:
    """One channel's listening socket and its connected clients."""

    ch: Channel
    path: Path
    listener: socket.socket
    policy: EndpointPolicy
    clients: list[_Client] = field(default_factory=list)
    stats: EndpointStats = field(default_factory=EndpointStats)
    acceptor: AcceptPause | None = None

    @property
    def blocked(self) -> bool:
        limit = self.policy.queue
        return any(len(c.queue) >= limit for c in self.clients)


class SocketExport:
    """All endpoint sockets of one remote processor."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        directory: Path,
        transport: Transport,
        policy_for: Callable[[str], EndpointPolicy] = lambda name: EndpointPolicy(),
        *,
        mode: int = 0o660,
        gid: int | None = None,
    ):
        self.loop = loop
        self.dir = directory
        self.transport = transport
        self.policy_for = policy_for
        self.mode, self.gid = mode, gid
        self.exports: dict[int, EndpointExport] = {}  # by local address
        self._parked: deque[tuple[EndpointExport, _Client]] = deque()  # waiting for a tx buffer, in order
        self._rbuf = bytearray(transport.max_payload + 1)
        self._rview = memoryview(self._rbuf)
        self._poll = select.poll()
        self.directory_ready = False
        self.export_failures = 0  # channels left without a socket (no descriptor, no room, bad path)
        self._lifecycle = [0, 0]  # sockets made and removed, for pacing their log lines

    # -- lifecycle ---------------------------------------------------------------

    def prepare(self) -> None:
        """Create the directory and remove stale sockets a previous run left behind."""
        clear_stale_sockets(self.dir)
        self.directory_ready = True
        if not fits(str(self.dir), "x" * MAX_SAFE):
            log.error("runtime directory %s is too long: endpoint names over %d bytes get no socket "
                      "(sun_path holds 107)", self.dir, 107 - len(str(self.dir)) - 1)  # fmt: skip

    def _failed(self, ch: Channel, why: str) -> None:
        n = self.export_failures = self.export_failures + 1
        if sparse(n):
            log.error("endpoint %r gets no socket: %s (%d such so far)", ch.name, why, n)

    def add(self, ch: Channel) -> EndpointExport | None:
        """Make the channel's socket; None (logged at a limited rate, counted) when it cannot be made.

        Bound under a temporary name, given its mode and group, then renamed into
        place: the path never exists with the umask's mode.  A socket that would
        leave fewer than :data:`~rprocd.files.FD_RESERVE` descriptors is not made.
        """
        if not self.directory_ready:
            self.prepare()
        name = safe_name(ch.raw_name or ch.name)
        path = self.dir / name
        if path.parent != self.dir:  # cannot happen with safe_name; belt and braces
            self._failed(ch, f"path {path} escapes {self.dir}")
            return None
        if any(ex.path == path for ex in self.exports.values()):  # a 64-bit hash collision of two long names
            self._failed(ch, f"{path} is taken by another endpoint")
            return None
        tmp = self.dir / f".new.{ch.local:x}"
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        except OSError as e:
            self._failed(ch, f"socket(): {e}")
            return None
        try:
            if not fd_room(sock.fileno(), FD_RESERVE):
                raise OSError(f"fewer than {FD_RESERVE} descriptors would be left (RLIMIT_NOFILE)")
            tmp.unlink(missing_ok=True)
            sock.bind(str(tmp))
            os.chmod(tmp, self.mode)
            chgrp(tmp, self.gid)
            sock.listen(64)
            os.replace(tmp, path)  # appears only with its final mode
        except OSError as e:
            sock.close()
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            self._failed(ch, f"{path}: {e}")
            return None
        ex = EndpointExport(ch, path, sock, self.policy_for(ch.name))
        ex.acceptor = AcceptPause(self.loop, sock.fileno(), self._accept, ex)
        self.exports[ch.local] = ex
        ex.acceptor.start()
        n = self._lifecycle[0] = self._lifecycle[0] + 1
        if lifecycle_logged(n):
            log.info("endpoint %s at %s (%d sockets made so far)", name, path, n)
        return ex

    def remove(self, ch: Channel) -> None:
        ex = self.exports.pop(ch.local, None)
        if ex is None:
            return
        if ex.acceptor is not None:
            ex.acceptor.cancel()
        ex.listener.close()
        try:
            ex.path.unlink()
        except FileNotFoundError:
            pass
        for c in list(ex.clients):
            self._drop_client(ex, c, "endpoint removed")
        n = self._lifecycle[1] = self._lifecycle[1] + 1
        if lifecycle_logged(n):
            log.info("endpoint %s removed (%d removed so far)", ex.path.name, n)

    def close(self) -> None:
        for ex in list(self.exports.values()):
            self.remove(ex.ch)

    # -- clients -----------------------------------------------------------------

    def _pause_accepting(self, ex: EndpointExport) -> None:
        ex.stats.accept_pauses += 1
        if ex.acceptor is not None:
            ex.acceptor()

    def _accept(self, ex: EndpointExport) -> None:
        pause = lambda: self._pause_accepting(ex)  # noqa: E731
        for sock in accept_all(ex.listener, ex.path, pause, reserve=CLIENT_RESERVE):
            c = _Client(sock)
            ex.clients.append(c)
            ex.stats.clients = len(ex.clients)
            self._start_reading(ex, c)
            if len(ex.clients) == 1:
                self.transport.rx_unblocked()  # messages held for a client-less endpoint may flow

    def _start_reading(self, ex: EndpointExport, c: _Client) -> None:
        if not c.reading and not c.closed:
            self.loop.add_reader(c.fd, self._readable, ex, c)
            c.reading = True

    def _drop_client(self, ex: EndpointExport, c: _Client, why: str) -> None:
        if c.closed:
            return
        c.closed = True
        if c.reading:
            self.loop.remove_reader(c.fd)
        if c.writing:
            self.loop.remove_writer(c.fd)
        if c.queue:
            ex.stats.rx_lost_on_close += len(c.queue)
            log.info("client of %s gone (%s) with %d messages undelivered", ex.path.name, why, len(c.queue))
            c.queue.clear()
        c.sock.close()
        was_blocked = ex.policy.overflow == "block"
        ex.clients.remove(c)
        ex.stats.clients = len(ex.clients)
        if was_blocked:
            self.transport.rx_unblocked()

    def _readable(self, ex: EndpointExport, c: _Client) -> None:
        t = self.transport
        recv_into = c.sock.recv_into
        buf, view = self._rbuf, self._rview
        size = len(buf)
        maxp = t.max_payload
        sent = False
        credits = t.tx_credits()
        for _ in range(_BATCH):
            if not credits:
                credits = t.tx_credits()
                if not credits:
                    self._park(ex, c)
                    break
            try:
                n = recv_into(buf, size, socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                self._start_reading(ex, c)  # drained: wait for more (it may come from resume(), unregistered)
                break
            except OSError as e:
                self._drop_client(ex, c, str(e))
                break
            if n == 0 and self._hung_up(c):
                self._drop_client(ex, c, "closed by the client")
                break
            if n > maxp:
                ex.stats.tx_oversized += 1
                log.warning(
                    "client of %s wrote a %d-byte record, more than the %d an rpmsg message holds: disconnected",
                    ex.path.name, n, maxp,
                )  # fmt: skip
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._drop_client(ex, c, "oversized record")
                break
            t.send(ex.ch, view[:n])
            credits -= 1
            ex.stats.tx_records += 1
            sent = True
        else:
            self._start_reading(ex, c)  # batch done: others get their turn, then epoll brings it back
        if sent:
            t.flush()  # now, not on the next loop turn: latency; the remote's NO_NOTIFY batches kicks

    def _hung_up(self, c: _Client) -> bool:
        """After a 0-byte read: EOF, or an empty record?  Only a hung-up peer gives EOF."""
        self._poll.register(c.fd, select.POLLRDHUP)
        try:
            return bool(self._poll.poll(0))
        finally:
            self._poll.unregister(c.fd)

    def _park(self, ex: EndpointExport, c: _Client) -> None:
        """No transmit buffer: stop reading this client until one is back.

        Only clients that actually have something to send get parked (lazily,
        when they become readable), so running out of buffers costs in
        proportion to the writers, not to every connected client; and they are
        resumed in the order they parked, so every writer gets its turn.
        """
        if not self._parked:
            self.transport.wait_for_tx()
        if c.reading:
            self.loop.remove_reader(c.fd)
            c.reading = False
        self._parked.append((ex, c))

    def resume(self) -> None:
        """Transmit buffers are back: serve the parked clients at once, first parked first.

        Each reads what it has until the buffers run out again (then it parks
        at the back) or it is drained (then it waits on the loop as usual).
        """
        parked = self._parked
        tx_available = self.transport.tx_available
        while parked and tx_available():
            ex, c = parked.popleft()
            if not c.closed:
                self._readable(ex, c)

    @property
    def paused(self) -> bool:
        return bool(self._parked)

    # -- remote -> clients ---------------------------------------------------------

    def can_deliver(self, ch: Channel) -> bool:
        """False while an endpoint with the ``block`` policy has a client with a message still queued.

        With ``block`` the client's socket buffer is the queue: rprocd holds at
        most the one message a full socket refused, and takes nothing more
        from the ring meanwhile, so what is not yet with a client stays in
        shared memory, where a restarted rprocd finds it.
        """
        ex = self.exports.get(ch.local)
        if ex is None or ex.policy.overflow != "block":
            return True
        for c in ex.clients:  # noqa: SIM110 - a plain loop: this runs once per message, all() + genexpr costs more
            if c.queue:
                return False
        return True

    def has_clients(self, ch: Channel) -> bool:
        ex = self.exports.get(ch.local)
        return ex is not None and bool(ex.clients)

    def deliver(self, ch: Channel, payload: bytes) -> bool:
        """Send to every client; False when a ``block`` client's full socket made us queue it."""
        ex = self.exports.get(ch.local)
        if ex is None:
            return True
        clients = ex.clients
        if not clients:
            ex.stats.rx_no_client += 1
            return True
        policy = ex.policy
        limit = policy.queue
        dead: list[tuple[_Client, str]] | None = None
        done = True
        for c in clients:
            q = c.queue
            if q:
                if len(q) >= limit:
                    if policy.overflow == "drop-newest":
                        ex.stats.rx_dropped_newest += 1
                        continue
                    q.popleft()
                    ex.stats.rx_dropped_oldest += 1
                q.append(payload)
                continue
            try:
                c.sock.send(payload)
            except (BlockingIOError, InterruptedError):
                q.append(payload)
                self.loop.add_writer(c.fd, self._writable, ex, c)
                c.writing = True
                done = False
                continue
            except OSError as e:
                if dead is None:
                    dead = []
                dead.append((c, str(e)))  # dropped after the loop: it walks this list
                continue
            ex.stats.rx_delivered += 1
        if dead:
            for c, why in dead:
                self._drop_client(ex, c, why)
        return done or policy.overflow != "block"

    def _writable(self, ex: EndpointExport, c: _Client) -> None:
        q = c.queue
        send = c.sock.send
        while q:
            try:
                send(q[0])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._drop_client(ex, c, str(e))
                return
            q.popleft()
            ex.stats.rx_delivered += 1
        if not q:
            self.loop.remove_writer(c.fd)
            c.writing = False
        if not q and ex.policy.overflow == "block":
            self.transport.rx_unblocked()  # the bus may take the next message
