"""Client library: talk to the remote's endpoints and to rprocd's control socket.

Endpoints are ``SOCK_SEQPACKET`` sockets (``<runtime-dir>/<remote>/ept/<name>``),
one record per rpmsg message, so this library is thin on purpose: it finds the
socket by endpoint name, keeps message boundaries, tells an empty message from
the endpoint going away, and gives the same operations blocking
(:class:`Endpoint`, :class:`Control`) and for asyncio (:class:`AsyncEndpoint`,
:class:`AsyncControl`).  See ``docs/client.md``.

Blocking::

    from rprocd.client import Endpoint
    with Endpoint.open("rpmsg-client-sample") as ept:
        ept.send(b"ping")
        print(ept.recv(timeout=2.0))

asyncio::

    from rprocd.client import AsyncEndpoint
    async with await AsyncEndpoint.open("rpmsg-client-sample") as ept:
        await ept.send(b"ping")
        print(await ept.recv(timeout=2.0))
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import select
import socket
import struct
import termios
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from .names import safe_name

__all__ = [
    "DEFAULT_RUNTIME_DIR",
    "MAX_PAYLOAD",
    "AsyncControl",
    "AsyncEndpoint",
    "Control",
    "ControlError",
    "Endpoint",
    "EndpointClosed",
    "EndpointNotFound",
    "endpoint_path",
]

DEFAULT_RUNTIME_DIR = Path(os.environ.get("RPROCD_RUNTIME_DIR", "/run/rprocd"))
MAX_PAYLOAD = 496  # bytes in one rpmsg message (512-byte buffer less the 16-byte header)
_RECV_SIZE = MAX_PAYLOAD + 16  # a little more, so an oversized record is seen, not silently cut
# When rprocd dies with records of ours unread, Linux reports ECONNRESET once,
# then still returns the records rprocd had handed over, then end of file:
# a reset is read past (a few times at most), never taken as the end.
_RESETS = 3
SCHEMA_VERSION = 1


class EndpointNotFound(FileNotFoundError):
    """No socket for that endpoint: the remote has not announced it, or is not attached."""


class EndpointClosed(ConnectionError):
    """The endpoint went away (the remote removed it, detached, or rprocd stopped)."""


class ControlError(Exception):
    """The control socket refused a request; ``code`` is the machine-readable reason."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def endpoint_path(name: str, remote: str = "main", runtime_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where rprocd puts the socket of endpoint ``name`` (the name escaped as rprocd escapes it)."""
    base = Path(runtime_dir) if runtime_dir is not None else DEFAULT_RUNTIME_DIR
    return base / safe_name(remote) / "ept" / safe_name(name)


def _check_payload(data: bytes | bytearray | memoryview) -> None:
    if len(data) > MAX_PAYLOAD:
        raise ValueError(f"message of {len(data)} bytes exceeds the {MAX_PAYLOAD} an rpmsg message holds")


def _hung_up(sock: socket.socket) -> bool:
    """After a 0-byte read: did the peer hang up, or was it an empty message?"""
    p = select.poll()
    p.register(sock.fileno(), select.POLLRDHUP)
    return bool(p.poll(0))


_SIOCOUTQ = termios.TIOCOUTQ  # the same request number; for AF_UNIX: unix_outq_len() = sk_wmem_alloc
_INT = struct.Struct("i")
_DRAIN_FIRST, _DRAIN_MAX = 0.0002, 0.02  # poll intervals (s): nothing wakes a writer when its queue empties


def _unread(sock: socket.socket) -> int:
    """Bytes (buffer space) of records we sent that rprocd has not consumed yet (``SIOCOUTQ``).

    For AF_UNIX this is ``sk_wmem_alloc`` (``unix_outq_len``, net/unix/af_unix.c):
    a record's skb is charged to the sender until the receiver frees it, and
    rprocd frees it only after the record is published in the ring (it
    peeks first).  Raises :class:`EndpointClosed` when rprocd went away: a
    dead peer's queue is purged after our end is marked shut down, so a
    queue emptied that way is never taken for "consumed".
    """
    buf = bytearray(4)
    fcntl.ioctl(sock.fileno(), _SIOCOUTQ, buf)
    n = int(_INT.unpack(buf)[0])
    if n == 0:
        p = select.poll()
        p.register(sock.fileno(), select.POLLRDHUP)
        if p.poll(0):
            raise EndpointClosed("rprocd went away: what was not yet consumed is lost with the connection")
    return n


def _connect(path: Path, name: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        s.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        s.close()
        raise EndpointNotFound(errno.ENOENT, f"no endpoint {name!r} (no socket at {path})") from None
    except BaseException:
        s.close()
        raise
    return s


# -- endpoints: blocking -----------------------------------------------------------


class Endpoint:
    """A connection to one endpoint; every :meth:`send` is one rpmsg message, every :meth:`recv` one reply."""

    def __init__(self, sock: socket.socket, name: str = ""):
        self.sock = sock
        self.name = name

    @classmethod
    def open(cls, name: str, *, remote: str = "main", runtime_dir: str | os.PathLike[str] | None = None) -> Endpoint:
        """Connect to endpoint ``name`` of ``remote``; raises :class:`EndpointNotFound`."""
        return cls(_connect(endpoint_path(name, remote, runtime_dir), name), name)

    def send(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Send one message (0..496 bytes); blocks while rprocd has no transmit buffer for it."""
        _check_payload(data)
        self.sock.settimeout(timeout)
        try:
            self.sock.send(data)
        except (BrokenPipeError, ConnectionResetError):
            raise EndpointClosed(f"endpoint {self.name!r} is gone") from None

    def drain(self, timeout: float | None = None) -> None:
        """Wait until rprocd has put every message sent so far into the ring (``SIOCOUTQ`` is 0).

        After it returns, a SIGKILL of rprocd loses none of them: each is in
        the ring, where the remote takes it (docs/reliability.md).  Raises
        :class:`TimeoutError`, or :class:`EndpointClosed` if rprocd went away
        first (then some may be lost: the connection took them along).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _DRAIN_FIRST
        while _unread(self.sock):
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"endpoint {self.name!r}: messages still waiting after {timeout} s")
            time.sleep(pause)
            pause = min(pause * 2, _DRAIN_MAX)

    def recv(self, timeout: float | None = None) -> bytes:
        """The next message from the remote; raises :class:`TimeoutError` or :class:`EndpointClosed`."""
        self.sock.settimeout(timeout)
        for _ in range(_RESETS):
            try:
                data = self.sock.recv(_RECV_SIZE)
                break
            except ConnectionResetError:
                continue  # see _RESETS: what a dead rprocd handed over still follows
        else:
            raise EndpointClosed(f"endpoint {self.name!r} is gone")
        if not data and _hung_up(self.sock):
            raise EndpointClosed(f"endpoint {self.name!r} is gone")
        return data

    def request(self, data: bytes | bytearray | memoryview, timeout: float | None = 5.0) -> bytes:
        """Send one message and return the next one received (for request/reply endpoints)."""
        self.send(data, timeout)
        return self.recv(timeout)

    def __iter__(self) -> Iterator[bytes]:
        """Messages until the endpoint goes away."""
        while True:
            try:
                yield self.recv()
            except EndpointClosed:
                return

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


# -- endpoints: asyncio ------------------------------------------------------------


class AsyncEndpoint:
    """:class:`Endpoint` for asyncio: the same operations, awaited on the running loop."""

    def __init__(self, sock: socket.socket, name: str = ""):
        sock.setblocking(False)
        self.sock = sock
        self.name = name
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(
        cls, name: str, *, remote: str = "main", runtime_dir: str | os.PathLike[str] | None = None
    ) -> AsyncEndpoint:
        """Connect to endpoint ``name`` of ``remote``; raises :class:`EndpointNotFound`."""
        return cls(_connect(endpoint_path(name, remote, runtime_dir), name), name)

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one message (0..496 bytes); waits while rprocd has no transmit buffer for it."""
        _check_payload(data)
        try:
            await self._loop.sock_sendall(self.sock, data)
        except (BrokenPipeError, ConnectionResetError):
            raise EndpointClosed(f"endpoint {self.name!r} is gone") from None

    async def drain(self, timeout: float | None = None) -> None:
        """:meth:`Endpoint.drain`: wait until every message sent so far is in the ring."""
        async with asyncio.timeout(timeout):
            pause = _DRAIN_FIRST
            while _unread(self.sock):
                await asyncio.sleep(pause)
                pause = min(pause * 2, _DRAIN_MAX)

    async def recv(self, timeout: float | None = None) -> bytes:
        """The next message; raises :class:`TimeoutError` or :class:`EndpointClosed`."""
        async with asyncio.timeout(timeout):
            for _ in range(_RESETS):
                try:
                    data = await self._loop.sock_recv(self.sock, _RECV_SIZE)
                    break
                except ConnectionResetError:
                    continue  # see _RESETS: what a dead rprocd handed over still follows
            else:
                raise EndpointClosed(f"endpoint {self.name!r} is gone")
        if not data and _hung_up(self.sock):
            raise EndpointClosed(f"endpoint {self.name!r} is gone")
        return data

    async def request(self, data: bytes | bytearray | memoryview, timeout: float | None = 5.0) -> bytes:
        async with asyncio.timeout(timeout):
            await self.send(data)
            return await self.recv()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self.recv()
            except EndpointClosed:
                return

    def fileno(self) -> int:
        return self.sock.fileno()

    async def aclose(self) -> None:
        self.sock.close()

    def close(self) -> None:
        self.sock.close()

    async def __aenter__(self) -> AsyncEndpoint:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


# -- control socket ----------------------------------------------------------------


def control_path(runtime_dir: str | os.PathLike[str] | None = None) -> Path:
    return (Path(runtime_dir) if runtime_dir is not None else DEFAULT_RUNTIME_DIR) / "control"


class _ControlBase:
    def __init__(self) -> None:
        self._next_id = 0

    def _encode(self, cmd: str, params: dict[str, Any]) -> tuple[int, bytes]:
        self._next_id += 1
        req = {"v": SCHEMA_VERSION, "id": self._next_id, "cmd": cmd}
        req.update({k: v for k, v in params.items() if v is not None})
        return self._next_id, json.dumps(req).encode() + b"\n"

    @staticmethod
    def _result(line: bytes) -> Any:
        if not line:
            raise ConnectionError("rprocd closed the control connection")
        msg = json.loads(line)
        if not msg.get("ok"):
            err = msg.get("error") or {}
            raise ControlError(str(err.get("code", "error")), str(err.get("message", "request failed")))
        return msg.get("result")


class Control(_ControlBase):
    """Blocking client of ``<runtime-dir>/control`` (schema: docs/control.md).

    ``request("status", remote="main")`` returns the ``result`` object or
    raises :class:`ControlError`; the named methods are shorthands.
    """

    def __init__(self, runtime_dir: str | os.PathLike[str] | None = None, *, timeout: float | None = 10.0):
        super().__init__()
        self.path = control_path(runtime_dir)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError):
            self.sock.close()
            raise FileNotFoundError(errno.ENOENT, f"rprocd is not running (no control socket at {self.path})") from None
        except PermissionError:
            self.sock.close()
            raise PermissionError(errno.EACCES, f"not allowed to use {self.path} (join rprocd's group)") from None
        self._file = self.sock.makefile("rb")

    def request(self, cmd: str, **params: Any) -> Any:
        _, data = self._encode(cmd, params)
        self.sock.sendall(data)
        return self._result(self._file.readline())

    def events(self) -> Iterator[dict[str, Any]]:
        """Events pushed after a subscribing request (``trace`` with ``follow=True``)."""
        self.sock.settimeout(None)
        for line in self._file:
            yield json.loads(line)

    def status(self, remote: str | None = None) -> list[dict[str, Any]]:
        return list(self.request("status", remote=remote)["remotes"])

    def endpoints(self, remote: str | None = None) -> list[dict[str, Any]]:
        return list(self.request("endpoints", remote=remote)["endpoints"])

    def create_endpoint(
        self, name: str, *, remote: str | None = None, announce: bool = False, dst: int | None = None
    ) -> dict[str, Any]:
        return dict(self.request("create-endpoint", remote=remote, name=name, announce=announce, dst=dst))

    def destroy_endpoint(self, name: str, *, remote: str | None = None) -> None:
        self.request("destroy-endpoint", remote=remote, name=name)

    def close(self) -> None:
        self._file.close()
        self.sock.close()

    def __enter__(self) -> Control:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncControl(_ControlBase):
    """:class:`Control` for asyncio: ``await AsyncControl.connect()``, then ``await c.request(...)``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        super().__init__()
        self._reader, self._writer = reader, writer

    @classmethod
    async def connect(cls, runtime_dir: str | os.PathLike[str] | None = None) -> AsyncControl:
        path = control_path(runtime_dir)
        try:
            r, w = await asyncio.open_unix_connection(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise FileNotFoundError(errno.ENOENT, f"rprocd is not running (no control socket at {path})") from None
        return cls(r, w)

    async def request(self, cmd: str, **params: Any) -> Any:
        _, data = self._encode(cmd, params)
        self._writer.write(data)
        await self._writer.drain()
        return self._result(await self._reader.readline())

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while line := await self._reader.readline():
            yield json.loads(line)

    async def create_endpoint(
        self, name: str, *, remote: str | None = None, announce: bool = False, dst: int | None = None
    ) -> dict[str, Any]:
        return dict(await self.request("create-endpoint", remote=remote, name=name, announce=announce, dst=dst))

    async def destroy_endpoint(self, name: str, *, remote: str | None = None) -> None:
        await self.request("destroy-endpoint", remote=remote, name=name)

    async def aclose(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except ConnectionError:
            pass

    async def __aenter__(self) -> AsyncControl:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
