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

from . import logs
from .backends import Platform
from .daemon import RemoteHost
from .exports.sockets import EndpointPolicy
from .layout import Layout
from .lifecycle import Lifecycle
from .memory import MemoryMap

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
    # What opening the platform will wait for, in words ("waiting for UIO device(s) mbox"), or None:
    # the host's state until the platform is open, so that status and STATUS= say it.
    waiting_for: Callable[[], str | None] | None = None


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

    Start-up order (issue 11 section 6, issue 13 section 3): signal handlers
    first; then one host per remote, *before* its platform opens (on a board
    the UIO devices may appear much later, or never), so that every extension
    (control socket, systemd notifier, ...) serves from the start and reports
    "waiting for UIO device(s) ..." in words; the extensions start in list
    order, so a notifier placed last says READY=1 only once everything before
    it listens.  Each remote then opens its platform and runs in its own task,
    with ``REMOTE=<name>`` in the log context (see :func:`rprocd.logs.context`).
    """
    loop = asyncio.get_running_loop()
    hosts: list[RemoteHost] = []
    platforms: list[Platform] = []
    started: list[Extension] = []
    tasks: list[asyncio.Task[None]] = []
    stopping = False

    def stop(why: str) -> None:
        nonlocal stopping
        if not stopping:
            log.info("%s: stopping", why)
        stopping = True
        for h in hosts:
            h.stop()
        for t, h in zip(tasks, hosts, strict=False):
            if not h.opened:  # still waiting for its devices: nothing to detach
                t.cancel()

    errors: list[BaseException] = []

    def failed(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (e := task.exception()) is not None:
            errors.append(e)
            stop(f"{task.get_name()} failed")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig.name)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, reload, hosts)
    try:
        runtime_dir.mkdir(parents=True, exist_ok=True)
        if stop_event is not None:
            waiter = asyncio.ensure_future(stop_event.wait())
            waiter.add_done_callback(lambda _f: stop("stop requested"))
        for spec in remotes:
            hosts.append(
                RemoteHost(
                    spec.name,
                    spec.layout,
                    unopened_platform(spec.name),
                    runtime_dir,
                    policy_for=spec.policy_for,
                    reset_wait=spec.reset_wait,
                    socket_mode=socket_mode,
                    socket_gid=spec.socket_gid,
                    max_channels=spec.max_channels,
                    opened=False,
                )
            )
            if spec.waiting_for is not None and (what := spec.waiting_for()):
                hosts[-1].note_waiting(what)
        for factory in extensions:
            ext = factory(hosts)
            await ext.start()
            started.append(ext)
        log.info("rprocd serving %d remote(s) under %s", len(hosts), runtime_dir)
        if not stopping:
            for spec, host in zip(remotes, hosts, strict=True):
                with logs.context(REMOTE=spec.name):
                    task = loop.create_task(_run_remote(spec, host, platforms), name=f"remote {spec.name}")
                task.add_done_callback(failed)
                tasks.append(task)
            await asyncio.gather(*tasks, return_exceptions=True)
            if errors:
                raise errors[0]  # the first remote that could not run (no device, no permission)
    finally:
        for h in hosts:
            h.stop()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
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


async def _run_remote(spec: RemoteSpec, host: RemoteHost, platforms: list[Platform]) -> None:
    """Open the remote's platform (waiting for its devices, maybe for long), then serve it until stopped."""
    opened = spec.open_platform()
    platform = await opened if inspect.isawaitable(opened) else opened
    platforms.append(platform)
    if spec.open_lifecycle is not None:
        lc = await spec.open_lifecycle()
        if lc is not None:
            host.lifecycle = lc
            platform.closers.append(lc.close)
    host.use_platform(platform)
    await host.run()


class _NoDoorbell:
    """The doorbell of a remote whose devices are not open yet: rings nothing, counts nothing."""

    def start(self, loop: asyncio.AbstractEventLoop, on_ring: Callable[[], None]) -> None:
        raise RuntimeError("the remote's platform is not open yet")

    def ring(self, word: int) -> None:
        pass

    def stop(self) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {}


def unopened_platform(name: str) -> Platform:
    """A stand-in until the real platform opens: no memory (every access fails cleanly), a silent doorbell."""
    return Platform(MemoryMap([]), _NoDoorbell(), f"{name}: not open yet")
