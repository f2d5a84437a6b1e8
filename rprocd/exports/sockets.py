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
import errno
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
from ..native import sockio
from ..rpmsg import HDR_SIZE, Channel, Lengths, TxResult, lifecycle_logged, sparse
from ..vring import UsedRecord

log = logging.getLogger("rprocd.sockets")

OVERFLOW_POLICIES = ("block", "drop-oldest", "drop-newest")
_BATCH = 64  # records read from one client per wake-up, for fairness between clients
SO_PEEK_OFF = getattr(socket, "SO_PEEK_OFF", 42)  # asm-generic/socket.h; Python 3.11 does not name it
_PEEK_FLAGS = socket.MSG_PEEK | socket.MSG_TRUNC  # MSG_TRUNC: the record's real length, so oversize shows
_CRED_SPACE = socket.CMSG_SPACE(12)  # struct ucred
_RESETS = 3  # ECONNRESET is reported once before the records a closed client left: read past it


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
    """What the socket export needs from the daemon.

    It may also offer ``send_many(ch, records, stride, lens, count) -> int``
    (:meth:`rprocd.daemon.RemoteHost.send_many`): then a run of records read
    by one ``recvmmsg`` goes to the ring in one call, each record's rpmsg
    header packed into the room left before it.
    """

    max_payload: int

    def send(self, ch: Channel, payload: memoryview) -> TxResult: ...

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
    tx_refused: int = 0  # records that can never be sent (the endpoint's peer is unknown), consumed


class _Client:
    __slots__ = (
        "sock", "fd", "queue", "writing", "reading", "closed", "eof", "peek_off", "passcred", "staged", "staged_idx",
        "slot", "nprep", "spos",
    )  # fmt: skip

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.fd = sock.fileno()
        self.queue: deque[bytes] = deque()
        self.staged: list[bytes] = []  # to go out at flush_deliveries, in one sendmmsg
        self.staged_idx: list[int] = []  # their places in the run of staged deliveries
        self.slot = self.nprep = 0  # where prepare_deliveries put the first nprep of them in the send buffer
        self.spos = 0  # how many of them flush_deliveries has dealt with
        self.writing = False
        self.reading = False
        self.closed = False
        self.eof = False  # the client shut down its writing side; it still receives
        # SO_PEEK_OFF: each MSG_PEEK returns the next record (Linux >= 3.4 for SEQPACKET; 5.10 has it)
        self.peek_off = _setopt(sock, SO_PEEK_OFF, 0)
        # SO_PASSCRED: every record read carries SCM_CREDENTIALS, so an empty record is told from EOF
        self.passcred = _setopt(sock, socket.SO_PASSCRED, 1)


def _setopt(sock: socket.socket, opt: int, value: int) -> bool:
    try:
        sock.setsockopt(socket.SOL_SOCKET, opt, value)
    except OSError:
        return False
    return True


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
        self._maxp = transport.max_payload
        self._rbuf = bytearray(transport.max_payload + 1)
        self._rview = memoryview(self._rbuf)
        # records after room for their rpmsg header (send_many packs it there); None: the pure-Python path
        self._batch = sockio.batch(transport.max_payload + 1, _BATCH, head=HDR_SIZE)
        self._send_many: Callable[[Channel, memoryview, int, Lengths, int], int] | None = getattr(
            transport, "send_many", None
        )
        self._sbatch = sockio.batch(transport.max_payload, _BATCH)
        self._staging: list[tuple[EndpointExport, _Client]] = []  # clients with staged deliveries
        self._order: list[EndpointExport | None] = []  # each staged delivery's endpoint, in ring order
        self._nstaged = 0
        self._poll = select.poll()
        self._hup: select.epoll | None = None  # half-closed clients, to see when they close
        self._half: dict[int, tuple[EndpointExport, _Client]] = {}
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
        if self._hup is not None:
            self.loop.remove_reader(self._hup.fileno())
            self._hup.close()
            self._hup = None

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
        if c.eof and self._half.pop(c.fd, None) is not None and self._hup is not None:
            self._hup.unregister(c.fd)
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
        """Move what the client wrote into vring1: peek, add, publish, and only then consume.

        A record is at every instant either still in the client's socket or
        published in the ring (DESIGN.md, "Kill safety and batching are not
        at odds"): a SIGKILL at any point loses nothing rprocd took.  Up to
        the free transmit buffers are peeked per batch (``SO_PEEK_OFF``: each
        ``MSG_PEEK`` returns the next record), added, published by one
        ``flush()``, then consumed; with the native helper each of the two
        socket steps is one ``recvmmsg``.
        """
        t = self.transport
        budget = _BATCH
        while budget > 0 and not c.closed:
            credits = t.tx_credits()
            if not credits:
                self._park(ex, c)
                return
            limit = min(credits, budget) if c.peek_off else 1
            if self._batch is not None and c.passcred:
                taken = self._read_native(ex, c, limit)
            else:
                taken = self._read_python(ex, c, limit)
            if taken <= 0:
                return  # drained (waiting on the loop again), parked, half-closed or dropped
            budget -= taken
        if not c.closed and not c.eof:
            self._start_reading(ex, c)  # batch done: others get their turn, then epoll brings it back

    def _read_native(self, ex: EndpointExport, c: _Client, limit: int) -> int:
        b = self._batch
        assert b is not None
        for _ in range(_RESETS):
            n = b.recv(c.fd, limit, _PEEK_FLAGS)
            if n != -errno.ECONNRESET:
                break  # (a reset is reported once, before the records the client wrote: read on)
        if n < 0:
            if n in (-errno.EAGAIN, -errno.EINTR):
                self._start_reading(ex, c)
            else:
                self._drop_client(ex, c, os.strerror(-n))
            return 0
        eof = b.eof
        lens, view, stride, head = b.lens, b.view, b.stride, b.head
        taken = 0
        oversized = -1
        many = self._send_many(ex.ch, view, stride, lens, n) if self._send_many is not None else -1
        if many >= 0:  # the whole run in one call; it stops before an oversized record or when no buffer is free
            taken = many
            ex.stats.tx_records += taken
            if taken < n:
                if lens[taken] > self._maxp:
                    oversized = lens[taken]
                else:
                    self._park(ex, c)
        else:  # one by one (a transport without send_many, or records it refuses: each counted)
            for i in range(n):
                ln = lens[i]
                if ln > self._maxp:
                    oversized = ln
                    break
                off = head + i * stride
                if not self._send_one(ex, c, view[off : off + ln]):
                    break
                taken += 1
        if taken:
            self.transport.flush()  # published: now the records may leave the socket
            b.consume(c.fd, taken)
        if taken < n and c.peek_off:
            self._rewind(c)
        if oversized >= 0:
            self._oversized(ex, c, oversized)
            return 0
        if taken < n:
            return 0  # parked
        if eof:
            self._half_closed(ex, c)
            return 0
        if n < limit:
            self._start_reading(ex, c)  # drained (no EAGAIN needed: recvmmsg returned short)
            return 0
        return taken

    def _read_python(self, ex: EndpointExport, c: _Client, limit: int) -> int:
        recv_into = c.sock.recv_into
        buf, view, size = self._rbuf, self._rview, len(self._rbuf)
        peeked = taken = 0
        resets = 0
        end = ""  # why the batch stopped early: "", "again", "eof?", "oversized", "parked", "error"
        n = 0
        while peeked < limit:
            try:
                n = recv_into(buf, size, _PEEK_FLAGS)
            except (BlockingIOError, InterruptedError):
                end = "again"
                break
            except ConnectionResetError:
                resets += 1
                if resets < _RESETS:
                    continue
                end = "error"
                break
            except OSError:
                end = "error"
                break
            peeked += 1
            if n == 0 and self._hung_up(c):
                end = "eof?"  # end of file, or an empty record just before it: told apart below
                break
            if n > self._maxp:
                end = "oversized"
                break
            if not self._send_one(ex, c, view[:n]):
                end = "parked"
                break
            taken += 1
        if taken:
            self.transport.flush()  # published: now the records may leave the socket
            for _ in range(taken):
                recv_into(buf, 0, socket.MSG_TRUNC)  # dequeue: never fails for a record we peeked
        if c.peek_off and taken < peeked:
            self._rewind(c)
        if end == "again":
            self._start_reading(ex, c)
            return 0
        if end == "error":
            self._drop_client(ex, c, "read failed")
            return 0
        if end == "oversized":
            self._oversized(ex, c, n)
            return 0
        if end == "parked":
            return 0
        if end == "eof?":
            if not self._empty_record_next(c):
                self._half_closed(ex, c)
                return 0
            if not self._send_one(ex, c, view[:0]):
                return 0
            self.transport.flush()
            recv_into(buf, 0, socket.MSG_TRUNC)
            taken += 1
        return taken

    def _send_one(self, ex: EndpointExport, c: _Client, payload: memoryview) -> bool:
        """Queue one record in the ring; False when no buffer took it (the client is parked)."""
        r = self.transport.send(ex.ch, payload)
        if r is TxResult.SENT:
            ex.stats.tx_records += 1
            return True
        if r is TxResult.REFUSED:  # can never be sent (counted and logged by the daemon): consumed
            ex.stats.tx_refused += 1
            return True
        self._park(ex, c)  # TxResult.NO_BUFFER: the record stays in the socket
        return False

    def _rewind(self, c: _Client) -> None:
        """Records were peeked but not consumed: peek from the head of the queue again."""
        try:
            c.sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
        except OSError:
            c.peek_off = False

    def _oversized(self, ex: EndpointExport, c: _Client, n: int) -> None:
        ex.stats.tx_oversized += 1
        log.warning(
            "client of %s wrote a %d-byte record, more than the %d an rpmsg message holds: disconnected",
            ex.path.name, n, self._maxp,
        )  # fmt: skip
        try:
            c.sock.recv_into(self._rbuf, 0, socket.MSG_TRUNC)  # refused for good: consumed, so no reset
            c.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._drop_client(ex, c, "oversized record")

    def _empty_record_next(self, c: _Client) -> bool:
        """After a 0-byte peek from a peer that shut down: an empty record (True), or end of file?

        Both read 0 bytes.  A record carries the ``SCM_CREDENTIALS`` message
        of a socket with ``SO_PASSCRED`` (``scm_recv``); end of file returns
        before it (``unix_dgram_recvmsg``).  The records before it are
        consumed, so a plain peek (offset off) sees the head of the queue.
        """
        s = c.sock
        try:
            if c.peek_off:
                s.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, -1)
            _data, anc, _flags, _addr = s.recvmsg(0, _CRED_SPACE, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False
        finally:
            if c.peek_off:
                self._rewind(c)
        return bool(anc)

    def _half_closed(self, ex: EndpointExport, c: _Client) -> None:
        """The client shut down its writing side: it still receives until it closes (socket semantics)."""
        c.eof = True
        if c.reading:
            self.loop.remove_reader(c.fd)
            c.reading = False
        if self._hup is None:
            self._hup = select.epoll()
            self.loop.add_reader(self._hup.fileno(), self._hung_up_clients)
        self._hup.register(c.fd, 0)  # epoll reports EPOLLHUP whatever the mask: the client closed
        self._half[c.fd] = (ex, c)

    def _hung_up_clients(self) -> None:
        assert self._hup is not None
        for fd, _ev in self._hup.poll(0):
            item = self._half.get(fd)
            if item is not None:
                self._drop_client(item[0], item[1], "closed by the client")

    def _hung_up(self, c: _Client) -> bool:
        """After a 0-byte read: did the peer shut down (then it is EOF, or an empty record before it)?"""
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

    def stage(self, ch: Channel, payload: bytes) -> None:
        """Deliver to every client, at the next :meth:`flush_deliveries` (one ``sendmmsg`` per client)."""
        idx = self._nstaged
        self._nstaged = idx + 1
        ex = self.exports.get(ch.local)
        self._order.append(ex)
        if ex is None:
            return
        clients = ex.clients
        if not clients:
            ex.stats.rx_no_client += 1
            return
        for c in clients:
            if c.queue:
                self._enqueue(ex, c, payload)
                continue
            if not c.staged:
                self._staging.append((ex, c))
            c.staged.append(payload)
            c.staged_idx.append(idx)

    def prepare_deliveries(self) -> None:
        """Lay the staged messages out in the send buffer, so that sending them is one call each.

        Done before :meth:`flush_deliveries`, so that between each record and
        its hand-over there is one store and one call.
        """
        b = self._sbatch
        if b is None:
            return
        view, lens, stride, cap = b.view, b.lens, b.stride, b.count
        pos = 0
        for _ex, c in self._staging:
            msgs = c.staged
            k = min(len(msgs), cap - pos) if len(msgs) > 1 else 0
            c.slot, c.nprep = pos, k
            for i in range(k):
                p = msgs[i]
                ln = len(p)
                off = (pos + i) * stride
                view[off : off + ln] = p
                lens[pos + i] = ln
            pos += k

    def flush_deliveries(self, record: UsedRecord | None = None) -> int:
        """Send what :meth:`stage` queued; how many of the last staged were not wholly handed over.

        The run goes out in ring order, one chunk of consecutive messages for
        one endpoint at a time (one ``sendmmsg`` per client of the chunk),
        and ``record`` (the bus's "accepted", armed at the run's end) is
        moved to each chunk's end just before the chunk leaves: by the
        native helper within its ``sendmmsg`` call, else by
        :meth:`UsedRecord.commit`. So a SIGKILL at any moment leaves the
        record at a prefix of what the clients have (the one gap being the
        few instructions between that store and the system call), also when
        a run interleaves two endpoints, as an echo and a stream do.

        A ``block`` client whose socket fills keeps the rest in its queue;
        the record goes back to the first message it refused (in the same
        native call), nothing more of the run leaves (it waits in the
        clients' queues), and the staged deliveries from that one on are
        reported, so the bus leaves them in the ring until they are out.
        """
        n, self._nstaged = self._nstaged, 0
        order = self._order
        end = record.value if record is not None else 0
        first = n  # the first staged message a full block client refused
        dead: list[tuple[EndpointExport, _Client]] | None = None
        i = 0
        while i < n:
            ex = order[i]
            j = i + 1
            while j < n and order[j] is ex:
                j += 1
            if ex is not None:
                cnt = j - i
                if record is not None and first == n:
                    record.arm((end - (n - j)) & 0xFFFF)  # this chunk and all before it: handed over
                lowered = (end - (n - i)) & 0xFFFF if ex.policy.overflow == "block" and first == n else -1
                for c in ex.clients:
                    a = c.spos
                    idxs = c.staged_idx
                    if a >= len(idxs) or idxs[a] != i:
                        continue  # (it had a queue: what it gets is queued behind it)
                    c.spos = a + cnt
                    if c.closed:
                        continue
                    if first < n:  # held back behind a full block client: nothing more leaves in this run
                        for x in range(a, a + cnt):
                            self._enqueue(ex, c, c.staged[x])
                        continue
                    k = self._send_chunk(c, a, cnt, record, lowered)
                    if k < 0:
                        if dead is None:
                            dead = []
                        dead.append((ex, c))
                        continue
                    ex.stats.rx_delivered += k
                    if k < cnt:
                        for x in range(a + k, a + cnt):
                            self._enqueue(ex, c, c.staged[x])
                        if lowered >= 0 and i + k < first:
                            first = i + k
            i = j
        for _ex, c in self._staging:
            c.staged.clear()
            c.staged_idx.clear()
            c.spos = c.nprep = 0
        self._staging.clear()
        order.clear()
        if record is not None:
            record.arm((end - (n - first)) & 0xFFFF)  # the bus commits it (a no-op store where it was made)
        if dead:
            for ex, c in dead:
                self._drop_client(ex, c, "send failed")
        return n - first

    def _send_chunk(self, c: _Client, a: int, cnt: int, record: UsedRecord | None, lowered: int) -> int:
        """Send ``c.staged[a:a + cnt]``; how many the socket took (stops at the first refused); -1: it is gone.

        ``record`` is made just before the first of them leaves; ``lowered``
        (>= 0, a ``block`` client) is the record's value at the chunk's
        start, to move it back to the first message refused.
        """
        b = self._sbatch
        if b is not None and cnt > 1 and a + cnt <= c.nprep:  # laid out by prepare_deliveries: one call
            if record is not None and record.pending and record.addr:
                record.pending = False  # made by the helper, right before its sendmmsg (and lowered after it)
                r = b.send_recorded(c.fd, cnt, c.slot + a, record.addr, record.value, lowered)
                if r < 0:
                    return 0 if r in (-errno.EAGAIN, -errno.EINTR) else -1
                return r
            if record is not None:
                record.commit()
            r = b.send(c.fd, cnt, c.slot + a)
            if r < 0:
                if r not in (-errno.EAGAIN, -errno.EINTR):
                    return -1
                r = 0
        else:
            if record is not None:
                record.commit()
            send = c.sock.send
            staged = c.staged
            r = 0
            while r < cnt:
                try:
                    send(staged[a + r])
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    if r == 0:
                        return -1
                    break
                r += 1
        if r < cnt and lowered >= 0 and record is not None:
            record.arm((lowered + r) & 0xFFFF)
            record.commit()
        return r

    def _enqueue(self, ex: EndpointExport, c: _Client, payload: bytes) -> None:
        """Behind what already waits for this client, within the endpoint's overflow policy."""
        q = c.queue
        policy = ex.policy
        if policy.overflow != "block" and len(q) >= policy.queue:
            if policy.overflow == "drop-newest":
                ex.stats.rx_dropped_newest += 1
                return
            q.popleft()
            ex.stats.rx_dropped_oldest += 1
        q.append(payload)
        if not c.writing:
            self.loop.add_writer(c.fd, self._writable, ex, c)
            c.writing = True

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
