"""Assemble and run the daemon: remotes, exports, signals, systemd."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .backends import Platform
from .daemon import RemoteHost
from .exports.sockets import EndpointPolicy
from .layout import Layout

log = logging.getLogger("rprocd")


@dataclass
class RemoteSpec:
    """Everything needed to serve one remote processor."""

    name: str
    layout: Layout
    open_platform: Callable[[], Platform]
    policy_for: Callable[[str], EndpointPolicy] = field(default=lambda name: EndpointPolicy())
    reset_wait: float = 0.05


async def serve(remotes: list[RemoteSpec], runtime_dir: Path, *, socket_mode: int = 0o660) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status."""
    loop = asyncio.get_running_loop()
    runtime_dir.mkdir(parents=True, exist_ok=True)
    hosts: list[RemoteHost] = []
    platforms: list[Platform] = []
    try:
        for spec in remotes:
            platform = spec.open_platform()
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
                )
            )

        def stop(signame: str) -> None:
            log.info("%s: stopping", signame)
            for h in hosts:
                h.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig.name)
        log.info("rprocd serving %d remote(s) under %s", len(hosts), runtime_dir)
        await asyncio.gather(*(h.run() for h in hosts))
    finally:
        for p in platforms:
            p.close()
    return 0
