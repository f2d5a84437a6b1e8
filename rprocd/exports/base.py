"""What the opt-in per-endpoint exports (PTY, stream socket) share.

Each is one object per remote: an observer of its host that makes an export
for every endpoint ``enabled_for(name)`` selects, under
``<runtime-dir>/<NAME>/<subdir>/``.  The subclass says how to make and
remove one (``on_channel``/``_remove_all``); this class does the wiring.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..names import safe_name

if TYPE_CHECKING:
    from ..daemon import RemoteHost
    from ..rpmsg import Channel

DEFAULT_QUEUE = 256  # messages waiting for a slow reader, per endpoint or client


class HostExport:
    """Base of :class:`~rprocd.exports.pty.PtyExport` and :class:`~rprocd.exports.stream.StreamExport`.

    Synchronous: the constructor registers the observer and exports the
    endpoints that exist already; :meth:`close` (or ``await stop()``) removes
    everything.  Subclasses make their tables in :meth:`_init_tables`, which
    runs before the first :meth:`on_channel`.
    """

    export_kind = ""
    subdir = ""

    def __init__(
        self,
        host: RemoteHost,
        runtime_dir: Path,
        enabled_for: Callable[[str], bool],
        *,
        queue: int = DEFAULT_QUEUE,
        mode: int = 0o660,
    ):
        self.host = host
        self.loop = host.loop
        self.dir = Path(runtime_dir) / safe_name(host.name) / self.subdir
        self.enabled_for = enabled_for
        self.queue = queue
        self.mode = mode
        self._paused = False  # no transmit buffer: clients are not read
        self._waiting = False  # a host.wait_for_tx callback is registered
        self._init_tables()
        host.observers.append(self)
        for ch in host.channels:  # endpoints that exist already
            self.on_channel(host, ch, True)

    def _init_tables(self) -> None:
        raise NotImplementedError

    def on_state(self, host: RemoteHost) -> None:
        raise NotImplementedError

    def on_channel(self, host: RemoteHost, ch: Channel, added: bool) -> None:
        raise NotImplementedError

    def on_rx(self, host: RemoteHost, ch: Channel, payload: bytes) -> None:
        raise NotImplementedError

    def _remove_all(self) -> None:
        raise NotImplementedError

    # -- extension -------------------------------------------------------------------

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.close()

    def close(self) -> None:
        self._remove_all()
        with contextlib.suppress(ValueError):
            self.host.observers.remove(self)

    @classmethod
    def factory(cls, runtime_dir: Path, enabled_for: Callable[[RemoteHost, str], bool]) -> Callable[..., Any]:
        """An extension factory for :func:`rprocd.app.serve`: one export per host."""

        def make(hosts: list[RemoteHost]) -> _Group:
            return _Group([cls(h, runtime_dir, functools.partial(enabled_for, h)) for h in hosts])

        return make


class _Group:
    """Several per-host exports as one extension."""

    def __init__(self, members: list[HostExport]):
        self.members = members

    async def start(self) -> None:
        for m in self.members:
            await m.start()

    async def stop(self) -> None:
        for m in self.members:
            await m.stop()
