"""``rprocd``: the daemon's command line (DESIGN.md contract).

``rprocd [-c FILE] [--board DIR] [--runtime-dir DIR]`` runs in the
foreground.  Without a config file it uses the built-in tcc807x layout on UIO;
``--board DIR`` selects the virtual board in DIR instead.  Options given on
the command line win over the file.

Exit status: 0 after a clean stop (SIGTERM/SIGINT, at any moment, also while
waiting for devices), 1 when it cannot run (a device that cannot be opened),
2 for a usage or configuration error (with or without ``--check``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import grp
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from ..app import ExtensionFactory, RemoteSpec, serve
from ..backends.factory import _uio_names, open_lifecycle, open_platform
from ..backends.uio import lookup
from ..config import Config, ConfigError, RemoteConfig, check_main, load_config
from ..daemon import RemoteHost
from ..exports.sockets import EndpointPolicy
from ..logs import setup_logging
from ..service import ServiceNotifier

log = logging.getLogger("rprocd")

EXIT_FAILURE = 1  # could not run: a device that cannot be opened, no permission
EXIT_CONFIG = 2  # usage or configuration error, the same as argparse's usage errors


class _EarlySignal(Exception):
    """SIGTERM/SIGINT before the event loop took the signals over (rprocd.app.serve)."""


def _early_signal(signum: int, _frame: object) -> None:
    raise _EarlySignal(signal.Signals(signum).name)


def _missing_devices(rc: RemoteConfig, board: str | None) -> list[str]:
    """The UIO devices this remote needs that do not exist (yet)."""
    if board is not None or rc.backend == "sim":
        return []
    names = _uio_names(rc)
    found = lookup(names, rc.uio.sysfs_root, rc.uio.dev_root) if names else {}
    return [n for n in names if n not in found]


def _waiting_for(rc: RemoteConfig, board: str | None) -> str | None:
    """What opening the remote will wait for, in words; logs, once, how to make the devices appear."""
    missing = _missing_devices(rc, board)
    if not missing:
        if board is not None or rc.backend == "sim":
            where = Path(board or rc.board or ".").resolve()
            log.info(
                "%s: waiting on the virtual board in %s (start the remote: rprocctl sim --board %s)",
                rc.name,
                where,
                where,
                extra={"REMOTE": rc.name},
            )
        return None
    devices = ", ".join(missing)
    log.warning(
        "%s: no UIO device named %s under %s/class/uio yet. They come from the device-tree overlay "
        "(generic-uio nodes; see docs/hardware.md, installed as /usr/share/doc/rprocd/hardware.md.gz) "
        "bound by uio_pdrv_genirq (modprobe uio_pdrv_genirq of_id=generic-uio, or "
        "uio_pdrv_genirq.of_id=generic-uio on the kernel command line); rprocd serves meanwhile and "
        "attaches when they appear. No board? --board DIR runs on the virtual board in DIR "
        "(rprocctl sim --board DIR).",
        rc.name,
        devices,
        rc.uio.sysfs_root,
        extra={"REMOTE": rc.name},
    )
    return f"waiting for UIO device(s) {devices}"


def _board_error(config: Config, board: str | None) -> str | None:
    """A virtual board folder whose parent does not exist: a typo, not a folder to create."""
    for rc in config.remotes.values():
        directory = board if board is not None else rc.board if rc.backend == "sim" else None
        if directory is None:
            continue
        parent = Path(directory).absolute().parent
        if not parent.is_dir():
            return f"board folder {directory}: {parent} does not exist (create it, or fix --board)"
    return None


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
            waiting_for=functools.partial(_waiting_for, rc, board),
        )
        for name, rc in cfg.remotes.items()
    ]

    def notifier(hosts: list[RemoteHost]) -> ServiceNotifier:
        rt.notifier = ServiceNotifier(hosts)
        return rt.notifier

    extensions: list[ExtensionFactory] = []
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
    # Last: it says READY=1 when it starts, and serve() starts the extensions in order, so systemd
    # hears READY only once the control socket and every other export listen.
    extensions.append(notifier)
    return specs, extensions, runtime, cfg.daemon.socket_mode


def main(argv: list[str] | None = None) -> int:
    # From the first moment: until serve() takes the signals over on its loop, a stop request ends
    # rprocd cleanly, with a log line and status 0 (not the default action's silent 143).
    previous = {sig: signal.signal(sig, _early_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _main(argv)
    except _EarlySignal as e:
        if logging.getLogger().handlers:
            log.info("%s: stopping before rprocd served", e)
        else:  # before setup_logging: an INFO record would go nowhere
            print(f"rprocd: {e}: stopping before rprocd served", file=sys.stderr)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.runtime_dir:
        overrides["runtime_dir"] = args.runtime_dir
    if args.board:
        overrides["board"] = args.board
    if args.log_level:
        overrides["log_level"] = args.log_level
    if args.check:
        return EXIT_CONFIG if check_main(args.config, overrides) else 0
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as e:
        print(f"rprocd: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if (why := _board_error(config, args.board)) is not None:
        print(f"rprocd: {why}", file=sys.stderr)
        return EXIT_CONFIG
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
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
