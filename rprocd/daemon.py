"""The daemon: one asyncio loop that attaches to remotes and moves their messages.

:class:`RemoteHost` is the attach state machine for one remote processor::

    waiting --(valid table, status 0)--> attached --(status lost / table changed / ring error)--> waiting
       |--(DRIVER_OK when rprocd starts, the saved state checks out)--> attached (resumed, see Session.resume)
       \\--(DRIVER_OK otherwise: a session nobody can take over)--> reset (status 0, ring, wait) --> waiting
    any state --(rprocctl stop)--> offline --(rprocctl start)--> waiting   (opt-in lifecycle)

Wake-ups: a doorbell from the remote services the rings at once; besides that
one timer per remote (``CHECK_INTERVAL``, a few times a second) looks at the
table while waiting and, while attached, checks that the session is still
alive and services the rings once, so a lost doorbell never strands a message
for longer than that.  Nothing else runs while idle.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import logs
from . import rsc_table as rt
from .backends import Platform
from .exports.sockets import EndpointPolicy, SocketExport
from .layout import Layout
from .lifecycle import Lifecycle
from .memory import MemoryAccessError
from .names import safe_name
from .rpmsg import DEFAULT_MAX_CHANNELS, RPMSG_ADDR_ANY, Channel, Lengths, RpmsgError, TxResult, sparse
from .session import AttachError, Session, TableView, read_table
from .vring import UsedRecord, VringError

log = logging.getLogger("rprocd")

CHECK_INTERVAL = 0.25
# The endpoint count in "attached to NAME: N endpoints" is logged once it held this long
# (announcements come one by one right after an attach); STATUS= and observers see each change.
SETTLE_LOG = 0.5
# vring0 interrupts off while draining (Linux virtqueue_disable_cb / enable_cb_prepare + re-check);
# RPROCD_AB_NO_SUPPRESS=1 turns it off, for benchmark A/B runs only
SUPPRESS = not os.environ.get("RPROCD_AB_NO_SUPPRESS")
RX_PASSES = 4  # drain passes per service before other callbacks get a turn
OFFLINE = "remote stopped on request ('rprocctl start' boots it)"


def endpoint_field(ch: Channel) -> str:
    """The journal's ENDPOINT= for a channel: its socket's name (the remote's name, escaped: never raw bytes)."""
    return safe_name(ch.raw_name or ch.name)


class Observer(Protocol):
    """Something that watches a remote (MQTT bridge, control socket, systemd status)."""

    def on_state(self, host: RemoteHost) -> None: ...

    def on_channel(self, host: RemoteHost, ch: Channel, added: bool) -> None: ...

    def on_rx(self, host: RemoteHost, ch: Channel, payload: bytes) -> None: ...


@dataclass
class HostStats:
    attaches: int = 0
    sessions_lost: int = 0
    resets: int = 0
    resumes: int = 0
    ring_errors: int = 0
    table_errors: int = 0
    tx_refused: int = 0  # sends to an endpoint that cannot send (peer address unknown)
    callback_errors: int = 0  # an event's handling raised: contained, logged at a limited rate


class RemoteHost:
    """One remote processor: its platform, session, exports and observers."""

    def __init__(
        self,
        name: str,
        layout: Layout,
        platform: Platform,
        runtime_dir: Path,
        *,
        policy_for: Callable[[str], EndpointPolicy] = lambda name: EndpointPolicy(),
        reset_wait: float = 0.05,
        resume_grace: float = 5.0,
        socket_mode: int = 0o660,
        socket_gid: int | None = None,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        opened: bool = True,
    ):
        self.name = name
        self.layout = layout
        self.platform = platform
        self.mem = platform.memory
        self.reset_wait = reset_wait
        self.state = "waiting"
        self.detail = "waiting for the remote's resource table"
        self.session: Session | None = None
        self.stats = HostStats()
        self.observers: list[Observer] = []
        self.max_payload = layout.buf_size - 16
        self.max_channels = max_channels
        self.loop = asyncio.get_running_loop()
        self.sockets = SocketExport(
            self.loop, runtime_dir / name / "ept", self, policy_for, mode=socket_mode, gid=socket_gid
        )
        self._wake = asyncio.Event()
        self._lost = asyncio.Event()
        self._flush_pending = False
        self._service_pending = False
        self._stopping = False
        self._last_table_error = ""
        self._timer: asyncio.TimerHandle | None = None
        self._tx_waiters: list[Callable[[], None]] = []
        self._may_resume = True  # only a fresh process resumes; our own broken session is reset
        self.resume_grace = resume_grace
        self._grace_until = 0.0
        self.lifecycle: Lifecycle | None = None  # [remote.NAME.lifecycle], opt-in
        self._powered_off = False
        self.started = time.monotonic()
        self._opened = opened  # False: ``platform`` is a stand-in until use_platform()
        self._logged = ""  # the last detail logged
        self._settle: asyncio.TimerHandle | None = None
        self._ctx = contextvars.copy_context()  # the remote's own log context, set in run()

    # -- public ------------------------------------------------------------------

    @property
    def opened(self) -> bool:
        """Whether the real platform is in place (:mod:`rprocd.app` opens it after the host exists)."""
        return self._opened

    def use_platform(self, platform: Platform) -> None:
        """The remote's memory and doorbell, once they could be opened; call before :meth:`run`."""
        self.platform, self.mem, self._opened = platform, platform.memory, True

    def note_waiting(self, detail: str) -> None:
        """The state before the platform opens, in words ("waiting for UIO device(s) mbox")."""
        self._set_state("waiting", detail)

    @property
    def channels(self) -> list[Channel]:
        return list(self.session.bus.channels.values()) if self.session else []

    async def run(self) -> None:
        """Attach, serve, re-attach when the remote restarts, until :meth:`stop`."""
        self._ctx = contextvars.copy_context()  # REMOTE=<name> (rprocd.app runs us in it)
        self.sockets.prepare()
        self.platform.doorbell.start(self.loop, self._on_ring)
        self._arm_timer()
        try:
            while not self._stopping:
                view = await self._wait_for_table()
                if view is None:
                    break
                if view.status & rt.VIRTIO_CONFIG_S_DRIVER_OK:
                    if not (self._may_resume and self._resume(view)):
                        self._may_resume = False
                        await self._reset(view)
                        continue
                elif not self._attach(view):
                    await self._sleep(CHECK_INTERVAL)
                    continue
                self._may_resume = False
                await self._lost.wait()
                if self._stopping:
                    break
                self._teardown()
        finally:
            self._shutdown()

    def stop(self) -> None:
        self._stopping = True
        self._set_state("stopping", "stopping")
        self._wake.set()
        self._lost.set()

    # -- waiting and attaching -----------------------------------------------------

    def _set_state(self, state: str, detail: str, *, settle: bool = False) -> None:
        """Change state; observers hear at once, the log line waits for the detail to settle when asked."""
        if (state, detail) == (self.state, self.detail):
            return
        if self._settle is not None and not settle:
            self._log_settled()  # the line still waiting comes first
        self.state, self.detail = state, detail
        if settle:
            if self._settle is not None:
                self._settle.cancel()
            self._settle = self.loop.call_later(SETTLE_LOG, self._log_settled, context=self._ctx)
        else:
            self._log_settled()
        for o in self.observers:
            o.on_state(self)

    def _log_settled(self) -> None:
        if self._settle is not None:
            self._settle.cancel()
            self._settle = None
        if self.detail != self._logged:
            self._logged = self.detail
            log.info("%s: %s", self.name, self.detail, extra={"REMOTE": self.name})  # also from outside its task

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _wait_for_table(self) -> TableView | None:
        self._set_state("waiting", "waiting for the remote's resource table")
        while not self._stopping:
            if self._powered_off:
                self._set_state("offline", OFFLINE)
                await self._sleep(CHECK_INTERVAL)
                continue
            if self.state == "offline":
                self._set_state("waiting", "waiting for the remote's resource table")
            try:
                view = read_table(self.mem, self.layout)
            except rt.TableNotReady:
                self._note_table_problem("")
            except (rt.TableError, AttachError, MemoryAccessError) as e:
                self._note_table_problem(str(e))
            else:
                self._last_table_error = ""
                return view
            await self._sleep(CHECK_INTERVAL)
        return None

    def _note_table_problem(self, why: str) -> None:
        if why and why != self._last_table_error:
            self.stats.table_errors += 1
            log.error("%s: resource table at %#x unusable: %s", self.name, self.layout.table_pa, why)
            self._set_state("waiting", f"waiting for a usable resource table ({why})")
        self._last_table_error = why

    async def _reset(self, view: TableView) -> None:
        """The table says DRIVER_OK but we hold no session: never zero rings under a live remote."""
        self.stats.resets += 1
        log.warning("%s: remote is in a session of an earlier host; resetting it", self.name)
        self._set_state("resetting", "resetting the remote's earlier session")
        self.mem.write_u8(self.layout.table_pa + view.vdev.status_offset, 0)
        self.platform.doorbell.ring(view.notifyids[0])
        await asyncio.sleep(self.reset_wait)

    def _attach(self, view: TableView) -> bool:
        self._lost.clear()
        try:
            session = Session(self.mem, self.layout, view, self)
            session.bus.max_channels = self.max_channels
            kicks = session.attach()
        except (AttachError, RpmsgError, MemoryAccessError, ValueError) as e:
            self._note_table_problem(str(e))
            return False
        self.session = session
        self.stats.attaches += 1
        for word in kicks:
            self.platform.doorbell.ring(word)
        self._set_state("attached", self._attached_detail(), settle=True)
        self.service()  # the remote may have rung before we listened
        return True

    def _resume(self, view: TableView) -> bool:
        """Take over the session a dead predecessor left; False if that is not safe."""
        self._lost.clear()
        try:
            session = Session(self.mem, self.layout, view, self)
        except (AttachError, RpmsgError, MemoryAccessError, ValueError) as e:
            log.warning("%s: cannot resume: %s", self.name, e)
            return False
        session.bus.max_channels = self.max_channels
        self.session = session  # channel_added during resume needs it
        self._grace_until = time.monotonic() + self.resume_grace
        try:
            result = session.resume()
        except (VringError, MemoryAccessError) as e:
            result = str(e)
        if isinstance(result, str):
            self.session = None
            log.warning("%s: cannot resume the earlier host's session (%s); resetting the remote", self.name, result)
            return False
        self.stats.resumes += 1
        self.stats.attaches += 1
        for word in result:
            self.platform.doorbell.ring(word)
        self._set_state("attached", self._attached_detail(), settle=True)
        self.loop.call_later(self.resume_grace, self.request_service)
        self.service()
        return True

    def _attached_detail(self) -> str:
        n = len(self.session.bus.channels) if self.session else 0
        return f"attached to {self.name}: {n} endpoint{'s' if n != 1 else ''}"

    def _teardown(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        session.bus.close()  # channel_removed for each: sockets go away
        self.sockets.resume()
        if not self._stopping:
            self.stats.sessions_lost += 1

    def _session_lost(self, why: str) -> None:
        if self.session is None or self._lost.is_set():
            return
        log.warning("%s: session ended: %s", self.name, why)
        self._lost.set()

    def _shutdown(self) -> None:
        if self._timer:
            self._timer.cancel()
        session, self.session = self.session, None
        if session is not None:
            for word in session.detach():
                self.platform.doorbell.ring(word)
        for ex in list(self.sockets.exports.values()):  # any left: each removal logged with its ENDPOINT=
            with logs.context(ENDPOINT=endpoint_field(ex.ch)):
                self.sockets.remove(ex.ch)
        self.sockets.close()
        self._set_state("stopped", "stopped")

    # -- wake-ups ----------------------------------------------------------------

    def _arm_timer(self) -> None:
        self._timer = self.loop.call_later(CHECK_INTERVAL, self._tick)

    def _contain(self, what: str, e: Exception) -> None:
        """An event's handling failed: count it, log it at a limited rate; the loop and the session go on."""
        n = self.stats.callback_errors = self.stats.callback_errors + 1
        if sparse(n):
            log.error("%s: %s failed: %s: %s (callback_errors: %d so far)", self.name, what, type(e).__name__, e, n,
                      exc_info=n == 1)  # fmt: skip

    def _tick(self) -> None:
        self._arm_timer()
        try:
            self._check()
        except Exception as e:
            self._contain("the periodic check", e)

    def _check(self) -> None:
        s = self.session
        if s is None:
            self._wake.set()
            return
        lost = s.lost_reason()
        if lost is not None:
            self._session_lost(lost)
        elif not s.table_intact():
            self.stats.table_errors += 1
            self._session_lost("the remote rewrote its resource table under a live session")
        else:
            self.service()
            for i in s.bus.owed_kicks():  # a remote waiting for buffers without looking again (see flush)
                self.platform.doorbell.ring(s.notifyids[i])

    def _on_ring(self) -> None:
        if self.session is not None:
            self.service()
        else:
            self._wake.set()

    def service(self) -> None:
        """Look at both vrings: reclaim transmit buffers, drain received messages, ring."""
        self._service_pending = False
        s = self.session
        if s is None or self._lost.is_set():
            return
        bus = s.bus
        try:
            rx = bus.rx
            for _ in range(RX_PASSES):
                bus.reclaim_tx()
                if (self.sockets.paused or self._tx_waiters) and bus.tx_free():
                    bus.want_tx_space(False)
                    self.sockets.resume()
                    waiters, self._tx_waiters = self._tx_waiters, []
                    for w in waiters:
                        w()
                    if self.sockets.paused:  # writers parked again: the next freed buffer must wake us
                        bus.want_tx_space(True)
                if SUPPRESS:
                    rx.want_interrupts(False)  # the remote need not ring for what this pass will see anyway
                bus.process_rx()
                self.flush()  # re-posted buffers and queued sends out, kicks as the remote wants them
                if not SUPPRESS:
                    break
                # interrupts back on, then look once more (the barrier also orders the tx flag store
                # before the tx used-ring load): vring0 entries, and freed buffers writers wait for
                more_rx = rx.enable_interrupts_and_check() and not bus.rx_held
                more_tx = (self.sockets.paused or bool(self._tx_waiters)) and bus.tx.used_pending() > 0
                if not (more_rx or more_tx):
                    break
            else:
                self.request_service()  # still more: once the loop's other callbacks had their turn
        except (VringError, MemoryAccessError) as e:
            self.stats.ring_errors += 1
            self._session_lost(f"ring error: {e}")
        except Exception as e:  # a bug must not escape into the loop (one traceback per doorbell)
            self._contain("servicing the rings", e)

    def flush(self) -> None:
        """Publish what was queued for the remote and ring it if it wants to hear."""
        self._flush_pending = False
        s = self.session
        if s is None:
            return
        for i in s.bus.flush():
            self.platform.doorbell.ring(s.notifyids[i])

    # -- Transport (for the socket export) ------------------------------------------

    def send(self, ch: Channel, payload: bytes | bytearray | memoryview) -> TxResult:
        """Queue one message to the remote (visible after the next flush).

        ``NO_BUFFER`` (falsy) when every transmit buffer is with the remote;
        ``REFUSED`` when it can never be sent (the endpoint's peer is
        unknown): counted and logged, so that it is not retried.
        """
        s = self.session
        if s is None:
            return TxResult.NO_BUFFER
        try:
            return TxResult.SENT if s.bus.send_to(ch, payload) else TxResult.NO_BUFFER
        except RpmsgError as e:
            self.stats.tx_refused += 1
            log.warning("%s: message of %d bytes not sent: %s", self.name, len(payload), e)
            return TxResult.REFUSED

    def send_many(self, ch: Channel, records: memoryview, stride: int, lens: Lengths, count: int) -> int:
        """Queue a batch of records (see :meth:`RpmsgBus.send_many`); how many went.

        -1 when they can never be sent (the endpoint's peer is unknown): the
        caller then hands them to :meth:`send` one by one, which counts and
        logs each.
        """
        s = self.session
        if s is None:
            return 0
        try:
            return s.bus.send_many(ch, records, stride, lens, count)
        except RpmsgError:
            return -1

    def tx_available(self) -> bool:
        return self.tx_credits() > 0

    def tx_credits(self) -> int:
        """How many messages can be sent now (free transmit buffers, reclaiming if there are none)."""
        s = self.session
        if s is None:
            return 0
        bus = s.bus
        n = bus.tx_free()
        if n:
            return n
        try:
            bus.reclaim_tx()
        except (VringError, MemoryAccessError) as e:
            self.stats.ring_errors += 1
            self._session_lost(f"ring error: {e}")
            return 0
        return bus.tx_free()

    def request_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self.flush, context=self._ctx)  # the remote's log context, not the caller's

    def wait_for_tx(self, callback: Callable[[], None] | None = None) -> None:
        """No transmit buffer is free: get woken (``callback``, and the sockets resume) when one is."""
        s = self.session
        if s is None:
            return
        if callback is not None:
            self._tx_waiters.append(callback)
        self.flush()  # the remote must see what we queued, or it will never free anything
        s.bus.want_tx_space(True)
        self.request_service()  # the remote may have freed buffers before it saw the flag

    def request_service(self) -> None:
        if not self._service_pending:
            self._service_pending = True
            self.loop.call_soon(self.service, context=self._ctx)

    def rx_unblocked(self) -> None:
        self.request_service()

    # -- the remote's power (opt-in lifecycle) ---------------------------------------------

    async def power(self, action: str) -> None:
        """``start``, ``stop`` or ``restart`` the remote core, as remoteproc's ``state`` file does.

        Stopping ends the session first (status 0, endpoints removed) and keeps
        rprocd from attaching to the halted core's stale table until ``start``.
        """
        lc = self.lifecycle
        if lc is None:
            raise RuntimeError(f"no lifecycle configured for {self.name} ([remote.{self.name}.lifecycle])")
        if action not in ("start", "stop", "restart"):
            raise ValueError(f"unknown action {action!r}: start, stop or restart")
        if action in ("stop", "restart"):
            self._powered_off = True
            s = self.session
            if s is not None:
                for word in s.detach():
                    self.platform.doorbell.ring(word)
                self._session_lost(f"remote {action} requested")
        if action == "stop":
            lc.stop()
            self._set_state("offline", OFFLINE)
            return
        if action == "start":
            lc.start()
        else:
            await lc.restart()
        self._powered_off = False
        self._wake.set()

    # -- host-side endpoints (control socket) ------------------------------------------

    def create_endpoint(self, name: str, *, remote: int = RPMSG_ADDR_ANY, announce: bool = False) -> Channel:
        """Create a host-side endpoint; raises :class:`RpmsgError` (or RuntimeError when detached)."""
        s = self.session
        if s is None:
            raise RuntimeError(f"{self.name} is not attached")
        ch = s.bus.create_endpoint(name, remote=remote, announce=announce)
        self.request_flush()
        return ch

    def destroy_endpoint(self, name: str) -> None:
        s = self.session
        if s is None:
            raise RuntimeError(f"{self.name} is not attached")
        s.bus.destroy_endpoint(name)
        self.request_flush()

    # -- BusEvents -----------------------------------------------------------------

    def channel_added(self, ch: Channel) -> None:
        """Each export on its own: one that fails (contained, counted) does not keep the others from it.

        ENDPOINT=<name> in the log context: the exports' lines, and every callback they register
        (the socket's accept, its clients), carry it to the journal.
        """
        with logs.context(ENDPOINT=endpoint_field(ch)):
            try:
                self.sockets.add(ch)
            except Exception as e:
                self._contain(f"exporting endpoint {ch.name!r}", e)
            self._tell_observers(ch, True)
        if self.state == "attached":
            self._set_state("attached", self._attached_detail(), settle=True)

    def channel_removed(self, ch: Channel) -> None:
        with logs.context(ENDPOINT=endpoint_field(ch)):
            try:
                self.sockets.remove(ch)
            except Exception as e:
                self._contain(f"removing endpoint {ch.name!r}", e)
            self._tell_observers(ch, False)
        if self.state == "attached" and self.session is not None:
            self._set_state("attached", self._attached_detail(), settle=True)

    def _tell_observers(self, ch: Channel, added: bool) -> None:
        for o in self.observers:
            try:
                o.on_channel(self, ch, added)
            except Exception as e:
                self._contain(f"{type(o).__name__} on endpoint {ch.name!r}", e)

    def can_deliver(self, ch: Channel) -> bool:
        ok = self.sockets.can_deliver(ch)
        if ok and self._grace_until and not self.sockets.has_clients(ch):
            # just resumed: clients of the dead host are reconnecting; keep their messages in the ring
            if time.monotonic() < self._grace_until:
                return False
            self._grace_until = 0.0
        return ok

    def deliver(self, ch: Channel, src: int, payload: bytes) -> bool:
        self.sockets.stage(ch, payload)  # to the sockets at flush_deliveries, with the rest of the run
        for o in self.observers:
            o.on_rx(self, ch, payload)
        return True

    def prepare_deliveries(self) -> None:
        self.sockets.prepare_deliveries()

    def flush_deliveries(self, record: UsedRecord | None = None) -> int:
        """Hand the run of staged messages to the sockets; how many of the last ones wait for a slow reader.

        ``record`` (the bus's "accepted") is made before the first message leaves.
        """
        return self.sockets.flush_deliveries(record)

    # -- figures -------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Counters and state, for stats and the control socket."""
        out: dict = {
            "name": self.name,
            "state": self.state,
            "detail": self.detail,
            "uptime": round(time.monotonic() - self.started, 3),
            "host": vars(self.stats).copy(),
            "sockets": {"export_failures": self.sockets.export_failures, "max_channels": self.max_channels},
            "doorbell": self.platform.doorbell.stats(),
        }
        s = self.session
        if s is not None:
            bus = s.bus
            out["features"] = s.features
            out["bus"] = vars(bus.stats).copy()
            out["tx_free"] = bus.tx_free()
            out["rings"] = [{"pa": r.pa, "num": r.num, "inflight": r.inflight} for r in s.rings]
        out["endpoints"] = [
            {
                "name": ex.ch.name,
                "path": str(ex.path),
                "local": ex.ch.local,
                "remote": ex.ch.remote,
                "rx_msgs": ex.ch.rx_msgs,
                "rx_bytes": ex.ch.rx_bytes,
                "tx_msgs": ex.ch.tx_msgs,
                "tx_bytes": ex.ch.tx_bytes,
                **vars(ex.stats),
            }
            for ex in self.sockets.exports.values()
        ]
        return out
