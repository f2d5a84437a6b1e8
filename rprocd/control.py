"""The control socket ``<runtime-dir>/control``: status, endpoints, stats, trace, host endpoints.

One ``SOCK_STREAM`` Unix socket speaking JSON Lines (one JSON object per line
each way); the schema, with its ``"v"`` version field, is ``docs/control.md``.
A stream socket, not a datagram one, because every runtime (``socat``, ``nc
-U``, a shell) speaks it and because ``trace --follow`` is a stream of events.

Access control is the file mode: the socket is ``0660`` and owned by the
daemon's group, so only that group's members (and root) can connect.  It is
bound under a temporary name, given its mode, then renamed into place, so it
is never reachable with the wrong mode.  Every request is logged with the
peer's uid/gid/pid from ``SO_PEERCRED``.

The server is an extension (``factory(hosts)`` in :func:`rprocd.app.serve`)
and an observer of nothing: it reads the hosts when asked.  Exports that want
to appear in ``endpoints``/``stats`` (the PTY and stream exports) implement
:class:`ExportInfo` and sit in ``host.observers``; the server finds them there.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from . import __version__
from . import rsc_table as rt
from .daemon import RemoteHost
from .files import AcceptPause, accept_all, chgrp
from .names import safe_name
from .rpmsg import RPMSG_ADDR_ANY, Channel, RpmsgError
from .session import read_table
from .trace import TraceReader

log = logging.getLogger("rprocd.control")

SCHEMA_VERSION = 1
MAX_REQUEST = 64 * 1024  # bytes in one request line
TRACE_POLL = 0.2  # seconds between looks at the trace buffer while someone follows it
TRACE_LEARN = 0.5  # seconds to watch a wrapped buffer whose write position is unknown, for a change that shows it
TRACE_LEARN_POLL = 0.05
_PEERCRED = struct.Struct("3i")  # pid, uid, gid

FEATURE_NAMES = {rt.VIRTIO_RPMSG_F_NS: "ns"}


class ControlError(Exception):
    """A request that cannot be served; ``code`` is the stable, machine-readable part."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@runtime_checkable
class ExportInfo(Protocol):
    """An extra export (pty, stream) that reports per-endpoint figures to the control socket."""

    export_kind: str

    def describe(self, ch: Channel) -> dict[str, Any] | None: ...

    def stats(self) -> dict[str, Any]: ...


# -- trace buffer --------------------------------------------------------------------


def _lines(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def trace_location(host: RemoteHost) -> tuple[int, int] | None:
    """(address, length) of the remote's trace buffer, from the live session or a fresh table read."""
    table = None
    if host.session is not None:
        table = host.session.view.table
    else:
        try:
            table = read_table(host.mem, host.layout).table
        except Exception:
            return None
    traces = table.traces
    if not traces:
        return None
    return traces[0].da, traces[0].len


def read_trace_raw(host: RemoteHost) -> bytes:
    loc = trace_location(host)
    if loc is None:
        raise ControlError("no-trace", f"{host.name}: the resource table has no trace buffer (or none is readable)")
    pa, length = loc
    if not host.mem.contains(pa, length):
        raise ControlError("no-trace", f"{host.name}: trace buffer {pa:#x}+{length:#x} is outside the mapped memory")
    return bytes(host.mem.read(pa, length))


# -- figures -------------------------------------------------------------------------


def _features(value: int) -> dict[str, Any]:
    return {"value": value, "names": [n for bit, n in FEATURE_NAMES.items() if value >> bit & 1]}


def _extra_exports(host: RemoteHost) -> list[ExportInfo]:
    return [o for o in host.observers if isinstance(o, ExportInfo)]


def remote_status(host: RemoteHost) -> dict[str, Any]:
    """The ``status`` figures of one remote (schema: docs/control.md)."""
    lay = host.layout
    s = host.session
    out: dict[str, Any] = {
        "name": host.name,
        "state": host.state,
        "detail": host.detail,
        "attached": s is not None,
        "attach_count": host.stats.attaches,
        "sessions_lost": host.stats.sessions_lost,
        "uptime": round(time.monotonic() - host.started, 3),
        "table": {"pa": lay.table_pa, "region": lay.table_region.pa, "offset": lay.rsc_offset},
        "features": None,
        "rings": [],
        "buffers": {
            "pa": lay.buffers.pa,
            "size": lay.buffers.size,
            "buf_size": lay.buf_size,
            "count": None,
            "tx_free": None,
            "tx_total": None,
        },
        "endpoints": len(host.channels),
    }
    if s is not None:
        out["features"] = _features(s.features)
        out["status"] = s.mem.read_u8(s.status_pa) if s.alive() else None
        vrs = s.view.vdev.vrings
        out["rings"] = [
            {
                "index": i,
                "pa": r.pa,
                "num": r.num,
                "align": vrs[i].align,
                "notifyid": vrs[i].notifyid,
                "inflight": r.inflight,
                "direction": "remote->host" if i == 0 else "host->remote",
            }
            for i, r in enumerate(s.rings)
        ]
        num = s.bus.num
        out["buffers"].update(count=2 * num, tx_free=s.bus.tx_free(), tx_total=num)
    return out


def endpoint_list(host: RemoteHost) -> list[dict[str, Any]]:
    """Every endpoint of one remote with its addresses, clients and counters."""
    extras = _extra_exports(host)
    out = []
    for ch in sorted(host.channels, key=lambda c: c.local):
        ex = host.sockets.exports.get(ch.local)
        exports: dict[str, Any] = {}
        clients = 0
        if ex is not None:
            exports["socket"] = {"path": str(ex.path), **vars(ex.stats)}
            clients += ex.stats.clients
        for x in extras:
            d = x.describe(ch)
            if d is not None:
                exports[x.export_kind] = d
                clients += int(d.get("clients", 0))
        out.append(
            {
                "remote_name": host.name,
                "name": ch.name,
                "escaped": safe_name(ch.raw_name or ch.name),
                "local": ch.local,
                "remote": None if ch.remote == RPMSG_ADDR_ANY else ch.remote,
                "host_created": ch.host_created,
                "announced": ch.announced,
                "clients": clients,
                "rx_msgs": ch.rx_msgs,
                "rx_bytes": ch.rx_bytes,
                "tx_msgs": ch.tx_msgs,
                "tx_bytes": ch.tx_bytes,
                "exports": exports,
            }
        )
    return out


def remote_stats(host: RemoteHost) -> dict[str, Any]:
    snap = host.snapshot()
    snap["exports"] = {x.export_kind: x.stats() for x in _extra_exports(host)}
    return snap


# -- the server ----------------------------------------------------------------------


class _Conn:
    """One connected client: its peer credentials and its open subscriptions."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        sock = writer.get_extra_info("socket")
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            self.pid, self.uid, self.gid = _PEERCRED.unpack(raw)
        except (OSError, AttributeError, struct.error):
            self.pid = self.uid = self.gid = -1
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def peer(self) -> str:
        return f"uid={self.uid} gid={self.gid} pid={self.pid}"

    def send(self, obj: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")


Handler = Callable[["_Conn", dict[str, Any], Any], Awaitable[Any]]


class ControlServer:
    """The control socket for all remotes (an :class:`~rprocd.app.Extension`)."""

    def __init__(self, path: Path, hosts: list[RemoteHost], *, mode: int = 0o660, gid: int | None = None):
        self.path = Path(path)
        self.hosts = hosts
        self.mode = mode
        self.gid = gid
        self._listener: socket.socket | None = None
        self._acceptor: AcceptPause | None = None
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accept_pauses = 0
        # per remote: where its trace buffer is written next, known from what earlier requests saw
        self._trace_trackers: dict[str, TraceReader] = {}
        self.requests = 0
        self.errors = 0
        self._handlers: dict[str, Handler] = {
            "hello": self._hello,
            "status": self._status,
            "endpoints": self._endpoints,
            "stats": self._stats,
            "trace": self._trace,
            "create-endpoint": self._create,
            "destroy-endpoint": self._destroy,
            "lifecycle": self._lifecycle,
        }

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            tmp.unlink(missing_ok=True)
            sock.bind(str(tmp))
            os.chmod(tmp, self.mode)
            chgrp(tmp, self.gid)
            os.replace(tmp, self.path)  # appears only with its final mode
            sock.listen(16)
            sock.setblocking(False)
        except OSError:
            sock.close()
            tmp.unlink(missing_ok=True)
            raise
        self._listener = sock
        # our own accept loop, not asyncio's server: out of descriptors it rests (AcceptPause) instead of
        # spinning or, on some loops, closing the server for good
        self._acceptor = AcceptPause(asyncio.get_running_loop(), sock.fileno(), self._accept)
        self._acceptor.start()
        for h in self.hosts:  # a first look now: the write position is exact while the buffer has not wrapped
            with contextlib.suppress(ControlError):
                self._trace_tracker(h).feed(read_trace_raw(h))
        log.info("control socket at %s (mode %o)", self.path, self.mode)

    def _pause_accepting(self) -> None:
        self.accept_pauses += 1
        if self._acceptor is not None:
            self._acceptor()

    def _accept(self) -> None:
        if self._listener is None:
            return
        for sock in accept_all(self._listener, self.path, self._pause_accepting):
            task = asyncio.ensure_future(self._serve(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_REQUEST)
        except OSError as e:
            log.warning("control: cannot serve a connection: %s", e)
            sock.close()
            return
        await self._client(reader, writer)

    async def stop(self) -> None:
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.cancel()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        for c in list(self._conns):
            for t in c.tasks:
                t.cancel()
            c.writer.close()
        self._conns.clear()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(tasks, timeout=2)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # -- connections -----------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        self._conns.add(conn)
        log.debug("control: connection from %s", conn.peer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    conn.send(self._error(None, "bad-request", f"request longer than {MAX_REQUEST} bytes"))
                    break
                except ConnectionError:
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                conn.send(await self._request(conn, line))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            for t in conn.tasks:
                t.cancel()
            self._conns.discard(conn)
            writer.close()

    def _error(self, rid: Any, code: str, message: str) -> dict[str, Any]:
        self.errors += 1
        return {"v": SCHEMA_VERSION, "id": rid, "ok": False, "error": {"code": code, "message": message}}

    async def _request(self, conn: _Conn, line: bytes) -> dict[str, Any]:
        self.requests += 1
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            log.info("control: %s: unparsable request", conn.peer)
            return self._error(None, "bad-request", f"not JSON: {e}")
        if not isinstance(req, dict):
            return self._error(None, "bad-request", "a request is a JSON object")
        rid = req.get("id")
        cmd = req.get("cmd")
        log.info(
            "control: %s: %s%s",
            conn.peer,
            cmd,
            "".join(f" {k}={req[k]!r}" for k in sorted(req) if k not in ("v", "id", "cmd")),
        )
        v = req.get("v", SCHEMA_VERSION)
        if v != SCHEMA_VERSION:
            return self._error(rid, "unsupported-version", f"schema version {v!r}; this server speaks {SCHEMA_VERSION}")
        handler = self._handlers.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            return self._error(rid, "unknown-command", f"unknown command {cmd!r}; known: {', '.join(self._handlers)}")
        try:
            result = await handler(conn, req, rid)
        except ControlError as e:
            log.info("control: %s: %s failed: %s", conn.peer, cmd, e)
            return self._error(rid, e.code, str(e))
        except Exception as e:  # a bug must not take the daemon down with it
            log.exception("control: %s failed", cmd)
            return self._error(rid, "internal", f"{type(e).__name__}: {e}")
        return {"v": SCHEMA_VERSION, "id": rid, "ok": True, "result": result}

    # -- helpers ---------------------------------------------------------------------

    def _selected(self, req: dict[str, Any]) -> list[RemoteHost]:
        name = req.get("remote")
        if name is None:
            return list(self.hosts)
        for h in self.hosts:
            if h.name == name:
                return [h]
        have = ", ".join(h.name for h in self.hosts)
        raise ControlError("no-such-remote", f"no remote named {name!r} (have: {have})")

    def _one(self, req: dict[str, Any]) -> RemoteHost:
        hosts = self._selected(req)
        if len(hosts) != 1:
            raise ControlError("bad-request", 'several remotes: name one with "remote"')
        return hosts[0]

    @staticmethod
    def _name(req: dict[str, Any]) -> str:
        name = req.get("name")
        if not isinstance(name, str) or not name:
            raise ControlError("bad-request", '"name" must be a non-empty string')
        return name

    # -- commands ----------------------------------------------------------------------

    async def _hello(self, conn: _Conn, req: dict[str, Any], rid: Any) -> Any:
        return {
            "server": "rprocd",
            "version": __version__,
            "schema": SCHEMA_VERSION,
            "remotes": [h.name for h in self.hosts],
            "commands": list(self._handlers),
            "peer": {"uid": conn.uid, "gid": conn.gid, "pid": conn.pid},
        }

    async def _status(self, conn: _Conn, req: dict[str, Any], rid: Any) -> Any:
        return {"remotes": [remote_status(h) for h in self._selected(req)]}

    async def _endpoints(self, conn: _Conn, req: dict[str, Any], rid: Any) -> Any:
        return {"endpoints": [e for h in self._selected(req) for e in endpoint_list(h)]}

    async def _stats(self, conn: _Conn, req: dict[str, Any], rid: Any) -> Any:
        return {
            "remotes": [remote_stats(h) for h in self._selected(req)],
            "control": {
                "requests": self.requests,
                "errors": self.errors,
                "connections": len(self._conns),
                "accept_pauses": self.accept_pauses,
            },
        }

    def _trace_tracker(self, host: RemoteHost) -> TraceReader:
        t = self._trace_trackers.get(host.name)
        if t is None:
            t = self._trace_trackers[host.name] = TraceReader(backlog=True)
        return t

    async def _trace(self, conn: _Conn, req: dict[str, Any], rid: Any) -> Any:
        """What the buffer holds now, oldest to newest (trace.TraceReader.contents), then, to a follower, what comes."""
        host = self._one(req)
        raw = read_trace_raw(host)
        tracker = self._trace_tracker(host)
        tracker.feed(raw)
        deadline = time.monotonic() + TRACE_LEARN
        while tracker.position is None and time.monotonic() < deadline:
            # wrapped before we ever looked: a change shows where the remote writes, so watch a moment for one
            await asyncio.sleep(TRACE_LEARN_POLL)
            raw = read_trace_raw(host)
            tracker.feed(raw)
        follow = bool(req.get("follow"))
        # a follower gets the unfinished last line once it ends
        text = _lines(tracker.contents(raw, unfinished=not follow))
        pa, length = trace_location(host) or (0, 0)
        if follow:
            reader = copy.copy(tracker)  # goes on from here: its position, its unfinished line
            conn.tasks.append(asyncio.ensure_future(self._follow(conn, host, reader, rid)))
        return {
            "remote": host.name,
            "pa": pa,
            "len": length,
            "text": text,
            "follow": follow,
            "position": tracker.position,
        }

    async def _follow(self, conn: _Conn, host: RemoteHost, reader: TraceReader, rid: Any) -> None:
        """Push what the remote adds to its trace buffer until the client goes away."""
        try:
            while not conn.writer.is_closing():
                await asyncio.sleep(TRACE_POLL)
                try:
                    raw = read_trace_raw(host)
                except ControlError:
                    continue  # detached, or the new table has no trace: keep waiting
                text = _lines(reader.feed(raw))
                if text:
                    conn.send({"v": SCHEMA_VERSION, "id": rid, "event": "trace", "remote": host.name, "text": text})
                    await conn.writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass

    async def _create(self, conn: _Conn, req: dict[str, Any], rid: Any) -> Any:
        host = self._one(req)
        name = self._name(req)
        dst = req.get("dst", RPMSG_ADDR_ANY)
        if dst is None:
            dst = RPMSG_ADDR_ANY
        if not isinstance(dst, int) or not 0 <= dst <= RPMSG_ADDR_ANY:
            raise ControlError("bad-request", '"dst" must be an address (0..0xffffffff) or null')
        try:
            ch = host.create_endpoint(name, remote=dst, announce=bool(req.get("announce", False)))
        except RuntimeError as e:
            raise ControlError("not-attached", str(e)) from None
        except RpmsgError as e:
            code = "exists" if "exists" in str(e) else "refused"
            raise ControlError(code, str(e)) from None
        log.info("control: %s created endpoint %r on %s (local %#x)", conn.peer, name, host.name, ch.local)
        return next(e for e in endpoint_list(host) if e["local"] == ch.local)

    async def _destroy(self, conn: _Conn, req: dict[str, Any], rid: Any) -> Any:
        host = self._one(req)
        name = self._name(req)
        try:
            host.destroy_endpoint(name)
        except RuntimeError as e:
            raise ControlError("not-attached", str(e)) from None
        except RpmsgError as e:
            raise ControlError("no-such-endpoint", str(e)) from None
        log.info("control: %s destroyed endpoint %r on %s", conn.peer, name, host.name)
        return {"remote": host.name, "name": name, "destroyed": True}

    async def _lifecycle(self, conn: _Conn, req: dict[str, Any], rid: Any) -> Any:
        host = self._one(req)
        action = req.get("action")
        if action not in ("start", "stop", "restart"):
            raise ControlError("bad-request", '"action" must be "start", "stop" or "restart"')
        log.info("control: %s asks to %s %s", conn.peer, action, host.name)
        try:
            await host.power(action)
        except RuntimeError as e:
            raise ControlError("no-lifecycle", str(e)) from None
        except OSError as e:
            raise ControlError("failed", f"{action} failed: {e}") from None
        return {"remote": host.name, "action": action, "state": host.state}


def factory(path: Path, *, mode: int = 0o660, gid: int | None = None) -> Callable[[list[RemoteHost]], ControlServer]:
    """An extension factory for :func:`rprocd.app.serve`."""
    return lambda hosts: ControlServer(path, hosts, mode=mode, gid=gid)
