"""``rprocd``: the daemon's command line (DESIGN.md contract).

``rprocd [-c FILE] [--board DIR] [--runtime-dir DIR]`` runs in the
foreground.  Without a config file it uses the built-in tcc807x layout on UIO;
``--board DIR`` selects the virtual board in DIR instead.  Options given on
the command line win over the file.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import grp
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from ..app import ExtensionFactory, RemoteSpec, serve
from ..backends.factory import open_lifecycle, open_platform
from ..config import Config, ConfigError, RemoteConfig, check_main, load_config
from ..daemon import RemoteHost
from ..exports.sockets import EndpointPolicy
from ..logs import setup_logging
from ..service import ServiceNotifier

log = logging.getLogger("rprocd")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rprocd",
        description="RPMsg host in user space: attach to a self-booted remote core and export its endpoints.",
        epilog="example: rprocd --board /tmp/board --runtime-dir /tmp/rprocd  (with: rprocctl sim --board /tmp/board)",
    )
    p.add_argument("-c", "--config", metavar="FILE", help="config file (default: the built-in tcc807x layout on UIO)")
    p.add_argument("--board", metavar="DIR", help="use the virtual board in DIR instead of UIO hardware")
    p.add_argument("--runtime-dir", metavar="DIR", help="where sockets go (default /run/rprocd)")
    p.add_argument("--check", action="store_true", help="validate the config, print the memory map and exit")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override the config's level")
    p.add_argument(
        "--event-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="auto: uvloop when installed (rprocd[fast]), else asyncio's own",
    )
    p.add_argument("--version", action="version", version=f"rprocd {__version__}")
    return p


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for or available; None means asyncio's default."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("rprocd: --event-loop uvloop, but uvloop is not installed (rprocd[fast])") from None
        return None
    return uvloop.new_event_loop


class Runtime:
    """The configuration in force; SIGHUP replaces it with what can change without a new session."""

    def __init__(self, path: str | None, overrides: dict[str, Any], config: Config):
        self.path, self.overrides, self.config = path, overrides, config
        self.notifier: ServiceNotifier | None = None

    def remote(self, name: str) -> RemoteConfig:
        return self.config.remotes[name]

    def policy_for(self, remote: str, endpoint: str) -> EndpointPolicy:
        o = self.remote(remote).endpoint_options(endpoint)
        return EndpointPolicy(o.overflow, o.queue)

    def reload(self, hosts: list[RemoteHost]) -> None:
        """Re-read the file; apply log level and endpoint policies (memory layout changes need a restart)."""
        if self.notifier:
            self.notifier.reloading()
        try:
            new = load_config(self.path, overrides=self.overrides)
        except ConfigError as e:
            log.error("reload refused, keeping the running configuration: %s", e)
        else:
            for name, rc in new.remotes.items():
                old = self.config.remotes.get(name)
                if old is None or old.layout != rc.layout or old.backend != rc.backend:
                    log.warning("reload: remote %s changed its memory layout or backend; restart rprocd to apply", name)
            self.config = new
            setup_logging(new.daemon.log_level)
            for h in hosts:
                if h.name in new.remotes:
                    for ex in h.sockets.exports.values():
                        ex.policy = self.policy_for(h.name, ex.ch.name)
            log.info("configuration reloaded from %s", self.path or "the built-in default")
        if self.notifier:
            self.notifier.reloaded()


def build(rt: Runtime, board: str | None) -> tuple[list[RemoteSpec], list[ExtensionFactory], Path, int]:
    cfg = rt.config
    runtime = Path(cfg.daemon.runtime_dir)
    gid = None
    if cfg.daemon.socket_group:
        try:
            gid = grp.getgrnam(cfg.daemon.socket_group).gr_gid
        except KeyError:
            log.warning("socket group %r does not exist; sockets keep the daemon's group", cfg.daemon.socket_group)
    specs = [
        RemoteSpec(
            name,
            rc.layout,
            functools.partial(open_platform, rc, board_dir=board),
            policy_for=functools.partial(rt.policy_for, name),
            reset_wait=rc.reset_wait_ms / 1000,
            socket_gid=gid,
            open_lifecycle=functools.partial(open_lifecycle, rc),
            max_channels=rc.max_channels,
        )
        for name, rc in cfg.remotes.items()
    ]

    def notifier(hosts: list[RemoteHost]) -> ServiceNotifier:
        rt.notifier = ServiceNotifier(hosts)
        return rt.notifier

    extensions: list[ExtensionFactory] = [notifier]
    if cfg.control.enabled:
        from ..control import factory as control_factory

        extensions.append(control_factory(runtime / "control", mode=cfg.control.socket_mode, gid=gid))
    if any(o.pty for rc in cfg.remotes.values() for o in rc.endpoints.values()):
        from ..exports.pty import factory as pty_factory

        extensions.append(pty_factory(runtime, lambda h, ept: rt.remote(h.name).endpoint_options(ept).pty))
    if any(o.stream for rc in cfg.remotes.values() for o in rc.endpoints.values()):
        from ..exports.stream import factory as stream_factory

        extensions.append(stream_factory(runtime, lambda h, ept: rt.remote(h.name).endpoint_options(ept).stream))
    if cfg.mqtt is not None and cfg.mqtt.enabled:
        from ..exports.mqtt import MqttBridge

        mqtt = cfg.mqtt
        extensions.append(
            lambda hosts: MqttBridge(mqtt, hosts, writable=lambda r, e: rt.remote(r).endpoint_options(e).mqtt_writable)
        )
    return specs, extensions, runtime, cfg.daemon.socket_mode


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.runtime_dir:
        overrides["runtime_dir"] = args.runtime_dir
    if args.board:
        overrides["board"] = args.board
    if args.log_level:
        overrides["log_level"] = args.log_level
    if args.check:
        return check_main(args.config, overrides)
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as e:
        print(f"rprocd: {e}", file=sys.stderr)
        return 2
    setup_logging(config.daemon.log_level)
    rt = Runtime(args.config, overrides, config)
    specs, extensions, runtime, mode = build(rt, args.board)
    factory = loop_factory(args.event_loop)
    log.debug("event loop: %s", "uvloop" if factory else "asyncio")
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(serve(specs, runtime, socket_mode=mode, extensions=extensions, reload=rt.reload))
    except KeyboardInterrupt:
        return 130
    except OSError as e:  # a backend that cannot open (no UIO device, no permission): one clear line
        log.critical("rprocd cannot run: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
