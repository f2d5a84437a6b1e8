"""Assemble and run the daemon: remotes, exports, signals, systemd."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .backends import Platform
from .daemon import RemoteHost
from .exports.sockets import EndpointPolicy
from .layout import Layout
from .lifecycle import Lifecycle

log = logging.getLogger("rprocd")


@dataclass
class RemoteSpec:
    """Everything needed to serve one remote processor."""

    name: str
    layout: Layout
    open_platform: Callable[[], Platform | Awaitable[Platform]]
    policy_for: Callable[[str], EndpointPolicy] = field(default=lambda name: EndpointPolicy())
    reset_wait: float = 0.05
    socket_gid: int | None = None
    open_lifecycle: Callable[[], Awaitable[Lifecycle | None]] | None = None
    max_channels: int = 256


class Extension(Protocol):
    """A part of the daemon beside the endpoint sockets (MQTT bridge, control socket, ...).

    Built from the list of hosts once they exist; it registers itself as an
    observer on them if it wants events.  ``start`` runs before the hosts
    attach, ``stop`` after they stopped; neither may block the loop.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ExtensionFactory = Callable[[list[RemoteHost]], Extension]


async def serve(
    remotes: list[RemoteSpec],
    runtime_dir: Path,
    *,
    socket_mode: int = 0o660,
    extensions: list[ExtensionFactory] = (),  # type: ignore[assignment]
    stop_event: asyncio.Event | None = None,
    reload: Callable[[list[RemoteHost]], None] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or ``stop_event``); returns the exit status.

    ``reload`` is called on SIGHUP (on the loop) to re-read the configuration.
    """
    loop = asyncio.get_running_loop()
    runtime_dir.mkdir(parents=True, exist_ok=True)
    hosts: list[RemoteHost] = []
    platforms: list[Platform] = []
    started: list[Extension] = []
    try:
        for spec in remotes:
            opened = spec.open_platform()
            platform = await opened if inspect.isawaitable(opened) else opened
            platforms.append(platform)
            hosts.append(
                RemoteHost(
                    spec.name,
                    spec.layout,
                    platform,
                    runtime_dir,
                    policy_for=spec.policy_for,
                    reset_wait=spec.reset_wait,
                    socket_mode=socket_mode,
                    socket_gid=spec.socket_gid,
                    max_channels=spec.max_channels,
                )
            )
            if spec.open_lifecycle is not None:
                lc = await spec.open_lifecycle()
                if lc is not None:
                    hosts[-1].lifecycle = lc
                    platform.closers.append(lc.close)

        def stop(why: str) -> None:
            log.info("%s: stopping", why)
            for h in hosts:
                h.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig.name)
        if reload is not None:
            loop.add_signal_handler(signal.SIGHUP, reload, hosts)
        if stop_event is not None:
            waiter = asyncio.ensure_future(stop_event.wait())
            waiter.add_done_callback(lambda _f: stop("stop requested"))
        for factory in extensions:
            ext = factory(hosts)
            await ext.start()
            started.append(ext)
        log.info("rprocd serving %d remote(s) under %s", len(hosts), runtime_dir)
        await asyncio.gather(*(h.run() for h in hosts))
    finally:
        for ext in reversed(started):
            try:
                await ext.stop()
            except Exception:
                log.exception("stopping %s", type(ext).__name__)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        for p in platforms:
            p.close()
    return 0
