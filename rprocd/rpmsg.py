"""virtio-rpmsg, host side, over two vrings and a buffer pool (sans-I/O).

Mirrors Linux ``drivers/rpmsg/virtio_rpmsg_bus.c``: ``2 * num`` buffers of
``buf_size`` bytes; the first ``num`` are posted to vring0 (the remote
fills them), the second ``num`` are the host's transmit pool, handed out and
reclaimed from vring1's used ring.  Name-service messages on address 53
create and destroy channels; local addresses are allocated from 1024 up.

The bus does no I/O.  Events go in (:meth:`RpmsgBus.process_rx`,
:meth:`RpmsgBus.reclaim_tx`, :meth:`RpmsgBus.send`); the doorbells to ring
come out of :meth:`RpmsgBus.flush`.  Deliveries go to a :class:`BusEvents`
listener, which may refuse one (``can_deliver`` returns False): the bus then
leaves that buffer in the ring and stops draining vring0 until
:meth:`process_rx` is called again, so a slow consumer slows the remote
instead of losing data.

A received message is *accepted* when the bus records it as consumed in
shared memory (``avail.used_event``, see :meth:`Vring.adopt`) — just before it
is handed over, so a host killed at any instant either has handed a message
over and recorded it, or will find it again in the ring when it resumes.
"""

from __future__ import annotations

import enum
import logging
import os
import struct
from dataclasses import dataclass
from typing import Protocol

from .hoststate import F_ANNOUNCED, F_HOST_CREATED, HostState, SavedChannel
from .layout import Region
from .memory import MemoryAccessError, MemoryMap
from .names import check_name, safe_name
from .vring import VRING_DESC_F_WRITE, Vring, VringError

HDR = struct.Struct("<IIIHH")  # src, dst, reserved, len, flags
HDR_SIZE = HDR.size
NS_MSG = struct.Struct("<32sII")  # name, addr, flags
RPMSG_NS_ADDR = 53
RPMSG_ADDR_ANY = 0xFFFFFFFF
RPMSG_RESERVED_ADDRESSES = 1024
RPMSG_NS_CREATE = 0
RPMSG_NS_DESTROY = 1
NAME_SIZE = 32
DEFAULT_MAX_CHANNELS = 256  # channels per remote ([remote.NAME] max_channels): one socket and more each
LIFECYCLE_BURST = 32  # channel lifecycle lines logged in full before they thin out (sparse)

log = logging.getLogger("rprocd.rpmsg")
# RPROCD_AB_ALWAYS_KICK=1: kick for every batch of new receive buffers (see flush), for benchmark A/B runs only
_ALWAYS_KICK = bool(os.environ.get("RPROCD_AB_ALWAYS_KICK"))


def sparse(count: int) -> bool:
    """Log the 1st, 2nd, 4th, 8th ... occurrence: a flood from the remote cannot flood the journal."""
    return count & (count - 1) == 0


def lifecycle_logged(count: int) -> bool:
    """The first :data:`LIFECYCLE_BURST` channel creations (or removals), then sparsely: churn cannot flood the log."""
    return count <= LIFECYCLE_BURST or sparse(count)


class Lengths(Protocol):
    """Message lengths by index: a list, or the ``c_int`` array a batched ``recvmmsg`` fills."""

    def __getitem__(self, i: int, /) -> int: ...


class TxResult(enum.IntEnum):
    """What became of one message handed over for sending: the caller must look (falsy only to retry)."""

    NO_BUFFER = 0  # every transmit buffer is with the remote: keep the message, try again later
    SENT = 1  # in the ring (visible to the remote after the next flush)
    REFUSED = 2  # can never be sent (the endpoint's peer is unknown): counted, logged, not retried


class RpmsgError(Exception):
    """Something the caller asked for is impossible (bad size, unknown channel)."""


@dataclass(eq=False, slots=True)
class Channel:
    """One endpoint pair: a remote address and the local address we gave it."""

    name: str  # decoded, possibly with backslash escapes for undecodable bytes
    remote: int
    local: int
    raw_name: bytes = b""
    host_created: bool = False  # made by the host (control socket), not announced by the remote
    announced: bool = False  # the host announced it to the remote by name service
    rx_msgs: int = 0
    rx_bytes: int = 0
    tx_msgs: int = 0
    tx_bytes: int = 0


class BusEvents(Protocol):
    def channel_added(self, ch: Channel) -> None: ...

    def channel_removed(self, ch: Channel) -> None: ...

    def can_deliver(self, ch: Channel) -> bool:
        """Whether a message for ``ch`` can be taken now; False holds it in the ring."""
        ...

    # A listener may also offer ``flush_deliveries() -> int``: then :meth:`deliver` only stages a
    # message, the bus accepts a run of them at once and calls it to hand them over in one go (one
    # sendmmsg per client); it returns how many of the last ones were not wholly handed over.

    def deliver(self, ch: Channel, src: int, payload: bytes) -> bool:
        """Take one message (only after :meth:`can_deliver` said yes).

        True when it is wholly handed over; False when some of it waits in the
        consumer's memory for a slow reader: the bus then keeps the ring entry
        (not recorded, buffer not re-posted) until :meth:`can_deliver` says the
        reader caught up, so a host killed meanwhile finds it again.
        """
        ...


@dataclass
class BusStats:
    rx_msgs: int = 0
    rx_bytes: int = 0
    tx_msgs: int = 0
    tx_bytes: int = 0
    rx_unknown_dst: int = 0  # no channel at that local address
    rx_bad: int = 0  # malformed header or length
    ns_bad: int = 0  # malformed or hostile name-service message
    ns_created: int = 0
    ns_destroyed: int = 0
    ns_refused: int = 0  # announcements past max_channels
    event_errors: int = 0  # a consumer raised on a message or a channel event (contained, buffer re-posted)
    tx_waits: int = 0  # a send found the pool empty
    held: int = 0  # times a consumer held the remote back (backpressure), parked ones included
    parked: int = 0  # deliveries that waited, handed over, for a slow reader


class RpmsgBus:
    """The host's rpmsg bus for one vdev."""

    def __init__(
        self,
        mem: MemoryMap,
        rx: Vring,
        tx: Vring,
        buffers: Region,
        events: BusEvents,
        *,
        buf_size: int = 512,
        ns: bool = True,
        max_channels: int = DEFAULT_MAX_CHANNELS,
    ):
        if rx.num != tx.num:
            raise RpmsgError(f"vring sizes differ ({rx.num} and {tx.num})")
        self.num = rx.num
        self.buf_size = buf_size
        self.max_payload = buf_size - HDR_SIZE
        need = 2 * self.num * buf_size
        if need > buffers.size:
            raise RpmsgError(f"{2 * self.num} buffers of {buf_size} bytes need {need:#x}, {buffers} is smaller")
        self.mem, self.rx, self.tx, self.events, self.ns = mem, rx, tx, events, ns
        self.max_channels = max_channels
        self.pool_pa = buffers.pa
        self._bufs = mem.span(buffers.pa, need)  # aligned accesses and device copies only (rprocd.memory)
        self.tx_base = self.num * buf_size  # offset of the transmit half
        self._free: list[int] = list(range(self.num - 1, -1, -1))  # tx buffer (= descriptor) ids
        self.channels: dict[int, Channel] = {}  # by local address
        # by the name's bytes: two names that display alike (b"x\xff" and b"x\\xff") are two channels
        self.by_name: dict[bytes, Channel] = {}
        self._next_addr = RPMSG_RESERVED_ADDRESSES
        self._held: tuple[int, int] | None = None  # rx (desc, len) refused by a consumer
        self._parked: list[tuple[int, Channel]] = []  # rx descs handed over, partly waiting for a slow reader
        self._flush_deliveries = getattr(events, "flush_deliveries", None)  # staged, batched deliveries
        self._prepare_deliveries = getattr(events, "prepare_deliveries", None)
        self._staged: list[tuple[int, Channel]] = []  # rx descs delivered, to accept at _flush_staged
        self._kick_owed = False  # flush() skipped a vring0 kick: the remote had buffers left
        self.stats = BusStats()
        spare_pa = buffers.pa + need
        self.state = HostState(mem, spare_pa, buffers.end - spare_pa)

    # -- session -----------------------------------------------------------------

    def start(self) -> None:
        """Post every receive buffer to vring0, exactly once (fresh rings only)."""
        bs = self.buf_size
        for i in range(self.num):
            self.rx.add(i, self.pool_pa + i * bs, bs, VRING_DESC_F_WRITE)
        self.rx.want_interrupts(True)
        self.tx.want_interrupts(False)  # tx-complete interrupts only while someone waits
        self._save_state()

    def resume(self, saved: list[SavedChannel]) -> tuple[int, int]:
        """Take over live rings and the saved channels; returns (rx re-posted, tx freed).

        Raises :class:`~rprocd.vring.VringError` when the rings are not ones we left.
        """
        bs, pool, num = self.buf_size, self.pool_pa, self.num
        rx_back = self.rx.adopt(lambda d, addr, ln, fl: addr == pool + d * bs and ln == bs and fl == VRING_DESC_F_WRITE)
        tx_back = self.tx.adopt(
            lambda d, addr, ln, fl: addr == pool + (num + d) * bs and HDR_SIZE <= ln <= bs and fl == 0
        )
        for d in rx_back:  # processed by the previous host, never handed back
            self.rx.add(d, pool + d * bs, bs, VRING_DESC_F_WRITE)
        self._free = sorted(tx_back, reverse=True)
        for c in saved:
            name = c.raw_name.decode("utf-8", "backslashreplace")
            ch = Channel(
                name=name,
                remote=c.remote,
                local=c.local,
                raw_name=c.raw_name,
                host_created=bool(c.flags & F_HOST_CREATED),
                announced=bool(c.flags & F_ANNOUNCED),
            )
            self.channels[ch.local] = ch
            self.by_name[c.raw_name] = ch
            self._next_addr = max(self._next_addr, ch.local + 1)
            self._channel_event(ch, True)
        return len(rx_back), len(tx_back)

    def _save_state(self) -> None:
        """Keep the channel table where a restarted host finds it (see :mod:`rprocd.hoststate`)."""
        chans = [
            SavedChannel(
                c.raw_name,
                c.remote,
                c.local,
                (F_HOST_CREATED if c.host_created else 0) | (F_ANNOUNCED if c.announced else 0),
            )
            for c in self.channels.values()
        ]
        self.state.save((self.rx.pa, self.tx.pa), self.num, chans)

    def close(self) -> None:
        """Drop every channel (the session ended).  The saved state stays for a successor."""
        for ch in list(self.channels.values()):
            self._remove(ch, save=False)

    # -- receive -----------------------------------------------------------------

    @property
    def rx_held(self) -> bool:
        """A consumer holds the remote back (a message waits in the ring or for a slow reader)."""
        return self._held is not None or bool(self._parked)

    def process_rx(self) -> int:
        """Handle every message the remote has sent; returns how many."""
        rx = self.rx
        n = 0
        parked = self._parked
        if parked:
            for _desc, ch in parked:
                if not self.events.can_deliver(ch):
                    return 0  # the slow reader still has it queued
            self._parked = []
            rx.record_used(back=1 if self._held is not None else 0)  # now wholly delivered
            for desc, _ch in parked:
                rx.add(desc, self.pool_pa + desc * self.buf_size, self.buf_size, VRING_DESC_F_WRITE)
        held = self._held
        if held is not None:
            self._held = None
            if not self._handle(*held):
                self._flush_staged()
                return 0
            n += 1
        pending = rx.used_pending()
        while pending:
            desc, length = rx.pop_used()
            pending -= 1
            if not self._handle(desc, length):
                break
            n += 1
            if not pending:
                if not self._flush_staged():
                    return n
                pending = rx.used_pending()
        self._flush_staged()
        return n

    def _flush_staged(self) -> bool:
        """Accept the staged deliveries and hand them over at once; False if a slow reader parked some.

        The record comes first (as for one message): a host killed between
        the two loses that run, one that dies after it has handed it over.
        The consumer makes the record itself, as late as it can
        (:class:`rprocd.vring.UsedRecord`: with the native helper, a few
        instructions before its ``sendmmsg``).  What a full ``block`` client
        could not take stays in the ring, not accepted, until it is out.
        """
        staged = self._staged
        if not staged:
            return True
        assert self._flush_deliveries is not None
        rx = self.rx
        back = 1 if self._held is not None else 0  # (a refused message is the last one taken)
        if self._prepare_deliveries is not None:
            self._prepare_deliveries()  # everything but the send itself, before the record
        record = rx.arm_record(back)  # accepted: made by the consumer just before it hands the run over
        unsent = self._flush_deliveries(record)
        record.commit()  # (if it sent nothing)
        if unsent:
            rx.record_used(back + unsent)  # partly queued in our memory: the ring keeps them until they are out
            self._parked = staged[-unsent:]
            self.stats.parked += unsent
            self.stats.held += 1  # the remote is held back all the same
            del staged[-unsent:]
        bs = self.buf_size
        for desc, _ch in staged:
            rx.add(desc, self.pool_pa + desc * bs, bs, VRING_DESC_F_WRITE)
        staged.clear()
        return not unsent

    def _handle(self, desc: int, length: int) -> bool:
        """Dispatch one received buffer and repost it; False if the consumer refused it."""
        bs = self.buf_size
        off = desc * bs
        bufs = self._bufs
        if length < HDR_SIZE or length > bs:
            self._bad("rx_bad", f"descriptor {desc}: used length {length} outside [{HDR_SIZE}, {bs}]")
        else:
            read = bufs.read  # device copies (memcpy_fromio) straight into the bytes handed on
            src, dst, _res, mlen, _flags = HDR.unpack(read(off, HDR_SIZE))
            if mlen > length - HDR_SIZE:
                self._bad("rx_bad", f"message of {mlen} bytes in a {length}-byte buffer")
            else:
                data = read(off + HDR_SIZE, mlen)
                ch = self.channels.get(dst)
                if ch is not None:
                    if not self.events.can_deliver(ch):
                        self._held = (desc, length)
                        self.stats.held += 1
                        return False
                    if ch.remote == RPMSG_ADDR_ANY:
                        ch.remote = src  # a host-created endpoint learns its peer from the first message
                        self._save_state()
                    rx = self.rx
                    staging = self._flush_deliveries is not None
                    if not staging:
                        rx.record_used()  # accepted, just before it is handed over
                    ch.rx_msgs += 1
                    ch.rx_bytes += mlen
                    self.stats.rx_msgs += 1
                    self.stats.rx_bytes += mlen
                    if staging:  # accepted and handed over with the rest of the run: _flush_staged
                        try:
                            self.events.deliver(ch, src, data)
                        except Exception as e:  # a consumer's failure loses this message (counted), never the buffer
                            self._event_error(f"delivering {mlen} bytes to {ch.name!r}", e)
                            rx.add(desc, self.pool_pa + off, bs, VRING_DESC_F_WRITE)
                            return True
                        self._staged.append((desc, ch))
                        return True
                    try:
                        done = self.events.deliver(ch, src, data)
                    except Exception as e:  # a consumer's failure loses this message (counted), never the buffer
                        self._event_error(f"delivering {mlen} bytes to {ch.name!r}", e)
                        done = True
                    if done:
                        rx.add(desc, self.pool_pa + off, bs, VRING_DESC_F_WRITE)
                        return True
                    rx.record_used(back=1)  # partly queued in our memory: the ring keeps it until it is out
                    self._parked = [(desc, ch)]
                    self.stats.parked += 1
                    self.stats.held += 1  # the remote is held back all the same
                    return False
                elif dst == RPMSG_NS_ADDR and self.ns:
                    if not self._flush_before(desc, length):
                        return False
                    try:
                        self._name_service(data, src)
                    except (VringError, MemoryAccessError):
                        raise
                    except Exception as e:  # whatever became of the announcement, its buffer goes back
                        self._event_error("a name-service message", e)
                else:
                    self.stats.rx_unknown_dst += 1
                    if sparse(self.stats.rx_unknown_dst):
                        log.warning(
                            "dropped %d-byte message from %#x to unknown address %#x (%d such so far)",
                            mlen, src, dst, self.stats.rx_unknown_dst,
                        )  # fmt: skip
        if not self._flush_before(desc, length):
            return False
        self.rx.record_used()
        self.rx.add(desc, self.pool_pa + off, bs, VRING_DESC_F_WRITE)
        return True

    def _flush_before(self, desc: int, length: int) -> bool:
        """Hand the staged deliveries over before a message that is not one; False: it waits (held)."""
        if not self._staged:
            return True
        self._held = (desc, length)  # (counted out of what _flush_staged accepts)
        if self._flush_staged():
            self._held = None
            return True
        return False

    def _bad(self, counter: str, why: str) -> None:
        n = getattr(self.stats, counter) + 1
        setattr(self.stats, counter, n)
        if sparse(n):
            log.warning("remote sent a bad message: %s (%s: %d so far)", why, counter, n)

    def _event_error(self, what: str, e: Exception) -> None:
        n = self.stats.event_errors = self.stats.event_errors + 1
        if sparse(n):
            log.error("handling %s failed: %s: %s (event_errors: %d so far)", what, type(e).__name__, e, n,
                      exc_info=n == 1)  # fmt: skip

    def _channel_event(self, ch: Channel, added: bool) -> None:
        """Tell the consumer; its failure (no socket, say) leaves the channel as the remote sees it."""
        try:
            if added:
                self.events.channel_added(ch)
            else:
                self.events.channel_removed(ch)
        except Exception as e:
            self._event_error(f"the {'creation' if added else 'removal'} of channel {ch.name!r}", e)

    def _name_service(self, data: bytes, src: int) -> None:
        if len(data) != NS_MSG.size:
            self._bad("ns_bad", f"name-service message of {len(data)} bytes, expected {NS_MSG.size}")
            return
        raw, addr, flags = NS_MSG.unpack(data)
        nul = raw.find(b"\0")
        if nul >= 0:
            raw = raw[:nul]
        why = check_name(raw)
        if why is not None:
            self._bad("ns_bad", f"name-service name is empty or not NUL-terminated ({why})")
            return
        name = raw.decode("utf-8", "backslashreplace")
        if addr in (RPMSG_ADDR_ANY, RPMSG_NS_ADDR) or addr < 0:
            self._bad("ns_bad", f"name-service address {addr:#x} for {name!r}")
            return
        if flags & 1 == RPMSG_NS_DESTROY:
            ch = self.by_name.get(raw)
            if ch is None or ch.remote != addr:
                self._bad("ns_bad", f"destroy of unknown channel {name!r} at {addr:#x}")
                return
            n = self.stats.ns_destroyed = self.stats.ns_destroyed + 1
            if lifecycle_logged(n):
                log.info(
                    "remote destroyed channel %r (addr %#x; %d destroyed so far)",
                    name,
                    addr,
                    n,
                    extra={"ENDPOINT": safe_name(raw)},
                )
            self._remove(ch)
            return
        old = self.by_name.get(raw)
        if old is not None:
            if old.remote != addr:
                self._bad("ns_bad", f"channel {name!r} announced again at {addr:#x} (is at {old.remote:#x})")
            return
        if len(self.channels) >= self.max_channels:
            n = self.stats.ns_refused = self.stats.ns_refused + 1
            if sparse(n):
                log.warning(
                    "remote announced channel %r past the limit of %d channels (max_channels): refused "
                    "(ns_refused: %d so far)", name, self.max_channels, n,
                )  # fmt: skip
            return
        ch = Channel(name=name, remote=addr, local=self._alloc_addr(), raw_name=raw)
        self.channels[ch.local] = ch
        self.by_name[raw] = ch
        self._save_state()
        n = self.stats.ns_created = self.stats.ns_created + 1
        if lifecycle_logged(n):
            log.info(
                "remote announced channel %r: remote %#x, local %#x (%d so far)",
                name,
                addr,
                ch.local,
                n,
                extra={"ENDPOINT": safe_name(raw)},
            )
        self._channel_event(ch, True)

    def create_endpoint(self, name: str, *, remote: int = RPMSG_ADDR_ANY, announce: bool = False) -> Channel:
        """A host-side endpoint (like ``RPMSG_CREATE_EPT_IOCTL``), optionally announced to the remote.

        Until its remote address is known (given here, or learned from the first
        message the remote sends to it) it can receive but not send.
        """
        raw = name.encode()
        why = check_name(raw)
        if why is not None:
            raise RpmsgError(f"endpoint name {name!r} refused: {why} (1 to {NAME_SIZE - 1} bytes without NUL)")
        if raw in self.by_name:
            raise RpmsgError(f"an endpoint named {name!r} exists already")
        if len(self.channels) >= self.max_channels:
            raise RpmsgError(f"{len(self.channels)} endpoints exist already, the limit (max_channels)")
        ch = Channel(name=name, remote=remote, local=self._alloc_addr(), raw_name=raw, host_created=True)
        if announce:
            if not self.ns:
                raise RpmsgError("the remote did not negotiate name service; cannot announce")
            if not self.send(ch.local, RPMSG_NS_ADDR, NS_MSG.pack(raw, ch.local, RPMSG_NS_CREATE)):
                raise RpmsgError("no transmit buffer free for the announcement; try again")
            ch.announced = True
        self.channels[ch.local] = ch
        self.by_name[raw] = ch
        self._save_state()
        self._channel_event(ch, True)
        return ch

    def destroy_endpoint(self, name: str) -> None:
        """Remove a host-created endpoint (announcing its end if it was announced)."""
        ch = self.by_name.get(name.encode())
        if ch is None or not ch.host_created:
            raise RpmsgError(f"no host-created endpoint named {name!r}")
        if ch.announced:
            self.send(ch.local, RPMSG_NS_ADDR, NS_MSG.pack(ch.raw_name, ch.local, RPMSG_NS_DESTROY))
        self._remove(ch)

    def _alloc_addr(self) -> int:
        a = self._next_addr
        while a in self.channels:
            a += 1
        self._next_addr = a + 1
        return a

    def _remove(self, ch: Channel, *, save: bool = True) -> None:
        self.channels.pop(ch.local, None)
        if self.by_name.get(ch.raw_name) is ch:
            del self.by_name[ch.raw_name]
        if save:
            self._save_state()
        self._channel_event(ch, False)

    # -- transmit ----------------------------------------------------------------

    def reclaim_tx(self) -> int:
        """Take back the transmit buffers the remote has consumed."""
        tx = self.tx
        n = tx.used_pending()
        free = self._free
        for _ in range(n):
            desc, _len = tx.pop_used()
            free.append(desc)
        if n:
            tx.record_used()
        return n

    def tx_free(self) -> int:
        return len(self._free)

    def send(self, src: int, dst: int, payload: bytes | bytearray | memoryview) -> bool:
        """Queue one message; False when every transmit buffer is with the remote.

        The message is visible to the remote only after :meth:`flush`.
        """
        n = len(payload)
        if n > self.max_payload:
            raise RpmsgError(f"payload of {n} bytes exceeds {self.max_payload}")
        free = self._free
        if not free:
            self.stats.tx_waits += 1
            return False
        desc = free.pop()
        off = self.tx_base + desc * self.buf_size
        # header and payload in one device copy (memcpy_toio): never pack_into or a slice of the window
        self._bufs.write(off, HDR.pack(src, dst, 0, n, 0) + payload)
        self.tx.add(desc, self.pool_pa + off, HDR_SIZE + n, 0)
        st = self.stats
        st.tx_msgs += 1
        st.tx_bytes += n
        return True

    def send_many(self, ch: Channel, records: memoryview, stride: int, lens: Lengths, count: int) -> int:
        """Queue up to ``count`` messages to ``ch`` from a caller's batch buffer, in order; how many were queued.

        Message ``i`` is ``lens[i]`` bytes at ``records[i * stride + HDR_SIZE:]``;
        the :data:`HDR_SIZE` bytes before it are the caller's room for the rpmsg
        header, packed there (the caller's memory, never the window), so that
        header and payload go to the buffer in one device copy and no bytes
        are built per message.  Stops before a message over
        :attr:`max_payload` (the caller refuses it) and when every transmit
        buffer is with the remote.  Visible to the remote after :meth:`flush`.
        """
        if ch.remote == RPMSG_ADDR_ANY:
            raise RpmsgError(f"endpoint {ch.name!r} does not know its remote address yet")
        free = self._free
        src, dst, maxp, bs = ch.local, ch.remote, self.max_payload, self.buf_size
        base, pool = self.tx_base, self.pool_pa
        write, add, pack_into = self._bufs.write, self.tx.add, HDR.pack_into
        done = nbytes = 0
        while done < count:
            n = lens[done]
            if n > maxp:
                break
            if not free:
                self.stats.tx_waits += 1
                break
            o = done * stride
            pack_into(records, o, src, dst, 0, n, 0)
            desc = free.pop()
            off = base + desc * bs
            write(off, records[o : o + HDR_SIZE + n])  # one device copy (memcpy_toio)
            add(desc, pool + off, HDR_SIZE + n, 0)
            done += 1
            nbytes += n
        st = self.stats
        st.tx_msgs += done
        st.tx_bytes += nbytes
        ch.tx_msgs += done
        ch.tx_bytes += nbytes
        return done

    def send_to(self, ch: Channel, payload: bytes | bytearray | memoryview) -> bool:
        if ch.remote == RPMSG_ADDR_ANY:
            raise RpmsgError(f"endpoint {ch.name!r} does not know its remote address yet")
        if self.send(ch.local, ch.remote, payload):
            ch.tx_msgs += 1
            ch.tx_bytes += len(payload)
            return True
        return False

    def want_tx_space(self, on: bool) -> None:
        """Ask for (or stop asking for) an interrupt when the remote frees tx buffers."""
        self.tx.want_interrupts(on)

    def flush(self) -> list[int]:
        """Publish new avail entries; return the vring indices (0, 1) whose remote wants a kick.

        New receive buffers are kicked for only when the remote had used every
        buffer posted before (``used.idx`` had caught up with the old
        ``avail.idx``): a remote with a buffer left finds the new ones when it
        needs them.  Both sides store, fence, load (our ``avail.idx`` store,
        the full barrier of :meth:`Vring.kick_needed`, our ``used.idx`` load;
        the remote's ``used.idx`` store, the barrier after it turns its
        notifications back on, its ``avail.idx`` load), so a last use we do
        not see is followed by a look that sees the new buffers.  A skipped
        kick is owed: :meth:`owed_kicks` rings it from the periodic check, for
        a remote that sleeps waiting for buffers without that look.
        """
        kicks = []
        rx, tx = self.rx, self.tx
        if rx.published() != rx.avail_idx:
            before = rx.published()
            rx.publish()
            if rx.kick_needed():
                if _ALWAYS_KICK or rx.used_all(before):
                    kicks.append(0)
                    self._kick_owed = False
                else:
                    self._kick_owed = True
        if tx.published() != tx.avail_idx:
            tx.publish()
            if tx.kick_needed():
                kicks.append(1)
        return kicks

    def owed_kicks(self) -> list[int]:
        """The vring0 kick :meth:`flush` skipped since the last one it returned (once), for the periodic check."""
        if not self._kick_owed:
            return []
        self._kick_owed = False
        return [0]
