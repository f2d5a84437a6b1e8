"""Being a systemd service: READY/STATUS/WATCHDOG/RELOADING/STOPPING from the daemon's loop."""

from __future__ import annotations

import asyncio

from .daemon import RemoteHost
from .rpmsg import Channel
from .sdnotify import Notifier, start_watchdog, stop_watchdog


class ServiceNotifier:
    """An extension and observer: tells the service manager what the daemon is doing, in words.

    Without ``$NOTIFY_SOCKET`` every call is a no-op, so it is always installed.
    """

    def __init__(self, hosts: list[RemoteHost], notifier: Notifier | None = None):
        self.hosts = hosts
        self.notifier = notifier or Notifier()
        self._watchdog: asyncio.Task[None] | None = None
        self._last = ""

    def status_text(self) -> str:
        return "; ".join(h.detail if h.state == "attached" else f"{h.name}: {h.detail}" for h in self.hosts)

    def _update(self) -> None:
        text = self.status_text()
        if text != self._last:
            self._last = text
            self.notifier.status(text)

    async def start(self) -> None:
        for h in self.hosts:
            h.observers.append(self)
        self._last = self.status_text()
        self.notifier.ready(self._last)
        self._watchdog = start_watchdog(asyncio.get_running_loop(), self.notifier)

    async def stop(self) -> None:
        self.notifier.stopping("stopping")
        await stop_watchdog(self._watchdog)
        self.notifier.close()

    def reloading(self) -> None:
        self.notifier.reloading("reloading the configuration")

    def reloaded(self) -> None:
        self._last = self.status_text()
        self.notifier.ready(self._last)

    # -- Observer ---------------------------------------------------------------------

    def on_state(self, host: RemoteHost) -> None:
        if host.state == "stopping":
            self.notifier.stopping("stopping")  # at once, from the signal: systemd stops expecting pings
        else:
            self._update()

    def on_channel(self, host: RemoteHost, ch: Channel, added: bool) -> None:
        self._update()

    def on_rx(self, host: RemoteHost, ch: Channel, payload: bytes) -> None:
        pass
