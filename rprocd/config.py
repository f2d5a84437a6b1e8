"""The config file (``/etc/rprocd/rprocd.toml``): parse, validate, resolve.

The file is TOML; every table and key is checked here, once, so the rest of
rprocd can trust the dataclasses it gets.  A mistake is a :class:`ConfigError`
whose message names the file, the dotted key and the problem
(``rprocd.toml: remote.main.vring0.pa: 0x200c8001 is not 4-byte aligned``):
a config error on a headless board is read in a journal, far from the file.

Command-line options override the file: :func:`load_config` takes them as
``overrides`` and applies them to the parsed TOML *before* validation, so an
override is checked exactly like the file.
"""

from __future__ import annotations

import copy
import re
import sys
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .layout import RPMSG_BUF_SIZE, TCC807X, Layout, Region

DEFAULT_PATH = "/etc/rprocd/rprocd.toml"
BACKENDS = ("uio", "devmem", "sim")
DOORBELL_DRIVERS = ("telechips", "registers", "sim")
LOG_LEVELS = ("debug", "info", "warning", "error")
OVERFLOW = ("block", "drop-oldest", "drop-newest")
RX_ENCODINGS = ("raw", "hex", "base64", "json")
MQTT_PROTOCOLS = ("3.1.1", "5")
REG_OPS = ("write", "read", "set", "clear", "wait")
_NAME = re.compile(r"^[a-z0-9_-]+$")
MAX_CHANNELS_DEFAULT = 256  # a socket each (and a PTY or stream socket by option): see LimitNOFILE= in the unit
MAX_CHANNELS_LIMIT = 65536
_ALIGN = 4  # every region, offset and size: 32-bit words are the smallest shared unit


class ConfigError(Exception):
    """The config is wrong; the message names the file and the dotted key."""

    def __init__(self, file: str, key: str, problem: str):
        self.file, self.key, self.problem = file, key, problem
        super().__init__(f"{file}: {key}: {problem}" if key else f"{file}: {problem}")


# -- the resolved config ------------------------------------------------------------


@dataclass(frozen=True)
class DaemonConfig:
    runtime_dir: str = "/run/rprocd"
    log_level: str = "info"
    socket_mode: int = 0o660
    socket_group: str | None = None


@dataclass(frozen=True)
class EndpointOptions:
    """How one endpoint is exported (``[remote.NAME.endpoint."EPT"]``; ``"*"`` = defaults)."""

    overflow: str = "block"
    queue: int = 256
    pty: bool = False
    stream: bool = False
    mqtt_writable: bool = False


@dataclass(frozen=True)
class UioConfig:
    """Which UIO devices (by ``/sys/class/uio/uioN/name``) map the shared window."""

    memory: tuple[str, ...] = ("rpmsg_shm",)
    sysfs_root: str = "/sys"
    dev_root: str = "/dev"
    wait_timeout: float = 0.0  # seconds to wait for a missing device; 0 = forever


@dataclass(frozen=True)
class RegStep:
    """One step of a register program (see docs/hardware.md, "register programs").

    ``value`` is an int or a template: ``"{notifyid}"``/``"{word}"`` (the word
    rung), ``"{last}"`` (what the last ``read`` step returned).
    """

    op: str  # write | read | set | clear | wait
    offset: int = 0
    map: int = 0
    width: int = 32
    value: int | str = 0
    mask: int | None = None
    timeout_ms: int = 10  # op "wait": poll until (reg & mask) == value


@dataclass(frozen=True)
class DoorbellConfig:
    driver: str = "telechips"
    uio: str | None = "mbox"  # UIO name: map `map` = registers, its irq = the remote's rings
    irq_uio: str | None = None  # the interrupt from another UIO device than the registers
    map: int = 0
    offset: int = 0  # of the mailbox block inside the map
    pa: int | None = None  # devmem: registers by physical address instead of a UIO map
    size: int = 0x1000
    word: int | str = "notifyid"
    poll_ms: int = 0  # no interrupt: look at the mailbox this often
    board: str | None = None  # sim: the board folder whose datagram sockets carry the rings
    start: tuple[RegStep, ...] = ()
    ring: tuple[RegStep, ...] = ()
    ack: tuple[RegStep, ...] = ()
    stop: tuple[RegStep, ...] = ()


@dataclass(frozen=True)
class LifecycleConfig:
    """Start/stop/restart of the remote core (opt-in; default off)."""

    enabled: bool = False
    method: str = "gpio"  # gpio | registers
    chip: str = "/dev/gpiochip0"
    line: int = 0
    active_low: bool = False  # gpio: the line holds the core in reset when driven active
    pulse_ms: int = 10  # restart: how long reset is held
    uio: str | None = None  # registers: UIO name of the block ...
    pa: int | None = None  # ... or its physical address (/dev/mem)
    size: int = 0x1000
    start: tuple[RegStep, ...] = ()
    stop: tuple[RegStep, ...] = ()


@dataclass(frozen=True)
class RemoteConfig:
    name: str
    layout: Layout
    backend: str = "uio"
    board: str | None = None
    reset_wait_ms: int = 50
    uio: UioConfig = field(default_factory=UioConfig)
    devmem_path: str = "/dev/mem"
    doorbell: DoorbellConfig = field(default_factory=DoorbellConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    endpoints: dict[str, EndpointOptions] = field(default_factory=dict)
    max_channels: int = 256  # channels the remote may have at once; announcements past it are refused

    def endpoint_options(self, name: str) -> EndpointOptions:
        """Options for endpoint ``name``: its own table over the ``"*"`` table over the defaults."""
        return self.endpoints.get(name) or self.endpoints.get("*") or EndpointOptions()


@dataclass(frozen=True)
class TlsConfig:
    ca: str = ""
    cert: str = ""
    key: str = ""
    insecure: bool = False


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = True
    host: str = "localhost"
    port: int = 1883
    client_id: str = ""
    keepalive: int = 30
    protocol: str = "3.1.1"
    username: str = ""
    password_file: str = ""
    tls: TlsConfig | None = None
    topic_root: str = ""
    rx_encoding: str = "raw"
    export: str | tuple[str, ...] = "all"
    queue: int = 1000
    stats_interval: float = 10.0
    qos: dict[str, int] = field(default_factory=lambda: {"state": 1, "rx": 0, "tx": 1, "stats": 0, "trace": 0})


@dataclass(frozen=True)
class ControlConfig:
    enabled: bool = True
    socket_mode: int = 0o660


@dataclass(frozen=True)
class Config:
    path: str | None
    daemon: DaemonConfig
    remotes: dict[str, RemoteConfig]
    mqtt: MqttConfig | None
    control: ControlConfig


# -- the built-in default ------------------------------------------------------------------


def _default_text() -> str:
    t = TCC807X
    return f"""
[remote.main]
backend = "uio"
shm = {{ pa = {t.window.pa:#x}, size = {t.window.size:#x} }}
rsc_table = {{ pa = {t.table_region.pa:#x}, size = {t.table_region.size:#x}, \
offset = {t.rsc_offset:#x}, max_size = {t.rsc_size:#x} }}
vring0 = {{ pa = {t.vrings[0].pa:#x}, size = {t.vrings[0].size:#x} }}
vring1 = {{ pa = {t.vrings[1].pa:#x}, size = {t.vrings[1].size:#x} }}
buffers = {{ pa = {t.buffers.pa:#x}, size = {t.buffers.size:#x} }}
"""


# -- loading -------------------------------------------------------------------------------


def load_config(path: str | None, *, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate ``path`` (``None``: the built-in tcc807x default).

    ``overrides`` are command-line options, applied over the file before
    validation.  Keys: ``runtime_dir``, ``log_level``, ``board`` (selects the
    sim backend in that folder for the one remote, or remote ``main``), or any
    dotted key of the file (``"remote.main.backend"``, ``"mqtt.enabled"``).
    """
    fname = path if path is not None else "<built-in default>"
    if path is None:
        raw = tomllib.loads(_default_text())
    else:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(fname, "", "no such file") from None
        except OSError as e:
            raise ConfigError(fname, "", e.strerror or str(e)) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(fname, "", f"not valid TOML: {e}") from None
    if overrides:
        raw = _apply_overrides(fname, raw, overrides)
    return _Parser(fname).config(raw, path)


def _apply_overrides(fname: str, raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("runtime_dir", "log_level"):
            raw.setdefault("daemon", {})[key] = value
        elif key == "board":
            remotes = raw.get("remote")
            if not isinstance(remotes, dict) or not remotes:
                raise ConfigError(fname, "remote", "no [remote.NAME] table for --board")
            name = "main" if "main" in remotes else next(iter(remotes)) if len(remotes) == 1 else None
            if name is None:
                raise ConfigError(fname, "remote", "--board needs a remote named 'main' when there are several")
            r = remotes[name]
            r["backend"] = "sim"
            r["board"] = value
            db = r.get("doorbell")
            if isinstance(db, dict) and db.get("driver") not in (None, "sim"):
                r["doorbell"] = {"driver": "sim"}
        else:
            parts = key.split(".")
            node = raw
            for p in parts[:-1]:
                node = node.setdefault(p, {})
                if not isinstance(node, dict):
                    raise ConfigError(fname, key, "override goes through a value that is not a table")
            node[parts[-1]] = value
    return raw


class _Parser:
    """Walks the TOML tree; every check reports the dotted key it was at."""

    def __init__(self, fname: str):
        self.fname = fname

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.fname, key, problem)

    # -- primitive checks ---------------------------------------------------------------------

    def table(self, v: Any, key: str, allowed: Iterable[str]) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(key, f"must be a table, not {_tname(v)}")
        allowed = set(allowed)
        for k in v:
            if k not in allowed:
                where = f"{key}.{k}" if key else k
                hint = ", ".join(sorted(allowed))
                raise self.fail(where, f"unknown key (allowed here: {hint})")
        return v

    def get(self, t: dict[str, Any], key: str, k: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if k not in t:
            return default
        v = t[k]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(v, kinds) and not (isinstance(v, bool) and bool not in kinds)
        if float in kinds and isinstance(v, int) and not isinstance(v, bool):
            return float(v)
        if not ok:
            want = " or ".join(_TYPENAMES.get(x, x.__name__) for x in kinds)
            raise self.fail(f"{key}.{k}", f"must be {want}, not {_tname(v)} {v!r}")
        return v

    def integer(self, t: dict[str, Any], key: str, k: str, default: int | None, lo: int = 0, hi: int = 2**64) -> Any:
        v = self.get(t, key, k, int, default)
        if v is not None and not lo <= v <= hi:
            raise self.fail(f"{key}.{k}", f"{_hex(v)} is out of range ({_hex(lo)}..{_hex(hi)})")
        return v

    def choice(self, t: dict[str, Any], key: str, k: str, choices: tuple[str, ...], default: str) -> str:
        v = self.get(t, key, k, str, default)
        if v not in choices:
            raise self.fail(f"{key}.{k}", f"{v!r} is not one of {', '.join(choices)}")
        return v

    def required(self, t: dict[str, Any], key: str, k: str) -> Any:
        if k not in t:
            raise self.fail(f"{key}.{k}", "is required")
        return t[k]

    def aligned(self, key: str, v: int, align: int = _ALIGN) -> int:
        if v % align:
            raise self.fail(key, f"{_hex(v)} is not {align}-byte aligned")
        return v

    # -- sections ------------------------------------------------------------------------------

    def config(self, raw: dict[str, Any], path: str | None) -> Config:
        self.table(raw, "", ("daemon", "remote", "mqtt", "control"))
        daemon = self.daemon(raw.get("daemon", {}))
        remotes_raw = raw.get("remote")
        if remotes_raw is None:
            raise self.fail("remote", "at least one [remote.NAME] table is required")
        if not isinstance(remotes_raw, dict) or not remotes_raw:
            raise self.fail("remote", "must hold at least one [remote.NAME] table")
        remotes = {}
        for name, r in remotes_raw.items():
            if not _NAME.match(name):
                raise self.fail(f"remote.{name}", "remote names are [a-z0-9_-]+")
            remotes[name] = self.remote(name, r)
        self.no_shared_memory(remotes)
        mqtt = self.mqtt(raw["mqtt"]) if "mqtt" in raw else None
        control = self.control(raw.get("control", {}))
        return Config(path, daemon, remotes, mqtt, control)

    def daemon(self, t: Any) -> DaemonConfig:
        key = "daemon"
        t = self.table(t, key, ("runtime_dir", "log_level", "socket_mode", "socket_group"))
        d = DaemonConfig()
        return DaemonConfig(
            runtime_dir=self.get(t, key, "runtime_dir", str, d.runtime_dir),
            log_level=self.choice(t, key, "log_level", LOG_LEVELS, d.log_level),
            socket_mode=self.integer(t, key, "socket_mode", d.socket_mode, 0, 0o7777),
            socket_group=self.get(t, key, "socket_group", str, None) or None,
        )

    def region(self, r: dict[str, Any], key: str, k: str, name: str, extra: tuple[str, ...] = ()) -> Region:
        sub = f"{key}.{k}"
        t = self.table(self.required(r, key, k), sub, ("pa", "size", *extra))
        pa = self.aligned(f"{sub}.pa", self.integer(self.required_t(t, sub, "pa"), sub, "pa", None))
        size = self.integer(self.required_t(t, sub, "size"), sub, "size", None, 1)
        self.aligned(f"{sub}.size", size)
        if pa + size > 2**64:
            raise self.fail(sub, f"{_hex(pa)}+{_hex(size)} runs past the end of the address space")
        return Region(name, pa, size)

    def required_t(self, t: dict[str, Any], key: str, k: str) -> dict[str, Any]:
        self.required(t, key, k)
        return t

    def remote(self, name: str, r: Any) -> RemoteConfig:
        key = f"remote.{name}"
        r = self.table(
            r,
            key,
            (
                "backend", "board", "shm", "rsc_table", "vring0", "vring1", "buffers", "reset_wait_ms",
                "uio", "devmem", "doorbell", "lifecycle", "endpoint", "max_channels",
            ),
        )  # fmt: skip
        backend = self.choice(r, key, "backend", BACKENDS, "uio")
        board = self.get(r, key, "board", str, None)
        if backend == "sim" and not board:
            raise self.fail(f"{key}.board", "the sim backend needs the board folder (or --board DIR)")
        window = self.region(r, key, "shm", "rpmsg_shm")
        table = self.region(r, key, "rsc_table", "rsc-table", ("offset", "max_size"))
        tt = r["rsc_table"]
        sub = f"{key}.rsc_table"
        offset = self.aligned(f"{sub}.offset", self.integer(tt, sub, "offset", 0))
        max_size = self.aligned(f"{sub}.max_size", self.integer(tt, sub, "max_size", table.size - offset, 1))
        if offset >= table.size or offset + max_size > table.size:
            raise self.fail(
                f"{sub}.offset",
                f"the table {_hex(table.pa + offset)}+{_hex(max_size)} (offset {_hex(offset)}, max_size "
                f"{_hex(max_size)}) does not fit in its region {_hex(table.pa)}+{_hex(table.size)}",
            )
        v0 = self.region(r, key, "vring0", "vdev0vring0")
        v1 = self.region(r, key, "vring1", "vdev0vring1")
        bufs = self.region(r, key, "buffers", "vdev0buffer")
        keys = {"rpmsg_shm": "shm", "rsc-table": "rsc_table", "vdev0vring0": "vring0",
                "vdev0vring1": "vring1", "vdev0buffer": "buffers"}  # fmt: skip
        for reg in (table, v0, v1, bufs):
            if not window.contains(reg.pa, reg.size):
                raise self.fail(
                    f"{key}.{keys[reg.name]}",
                    f"{_span(reg)} is not inside the shared window shm {_span(window)}",
                )
        ordered = sorted((table, v0, v1, bufs), key=lambda x: x.pa)
        for a, b in zip(ordered, ordered[1:], strict=False):
            if a.end > b.pa:
                raise self.fail(f"{key}.{keys[b.name]}", f"{_span(b)} overlaps {keys[a.name]} {_span(a)}")
        if bufs.size < 2 * RPMSG_BUF_SIZE:
            raise self.fail(
                f"{key}.buffers.size", f"{_hex(bufs.size)} holds fewer than two {RPMSG_BUF_SIZE}-byte buffers"
            )
        layout = Layout(name, window, table, offset, max_size, (v0, v1), bufs)
        problems = layout.check()
        if problems:  # belt and braces: the checks above should have caught it
            raise self.fail(key, "; ".join(problems))
        reset_wait = self.integer(r, key, "reset_wait_ms", 50, 0, 60_000)
        uio = self.uio(r.get("uio", {}), f"{key}.uio")
        devmem = self.table(r.get("devmem", {}), f"{key}.devmem", ("path",))
        devmem_path = self.get(devmem, f"{key}.devmem", "path", str, "/dev/mem")
        doorbell = self.doorbell(r.get("doorbell", {}), f"{key}.doorbell", backend, board)
        lifecycle = self.lifecycle(r.get("lifecycle", {}), f"{key}.lifecycle")
        endpoints = self.endpoints(r.get("endpoint", {}), f"{key}.endpoint")
        max_channels = self.get(r, key, "max_channels", int, MAX_CHANNELS_DEFAULT)
        if not 1 <= max_channels <= MAX_CHANNELS_LIMIT:
            raise self.fail(f"{key}.max_channels", f"{max_channels} is out of range (1..{MAX_CHANNELS_LIMIT})")
        return RemoteConfig(
            name, layout, backend, board, reset_wait, uio, devmem_path, doorbell, lifecycle, endpoints, max_channels
        )

    def no_shared_memory(self, remotes: dict[str, RemoteConfig]) -> None:
        items = sorted(remotes.values(), key=lambda rc: rc.layout.window.pa)
        for a, b in zip(items, items[1:], strict=False):
            if a.backend != "sim" and b.backend != "sim" and a.layout.window.end > b.layout.window.pa:
                raise self.fail(
                    f"remote.{b.name}.shm",
                    f"{_span(b.layout.window)} overlaps remote {a.name}'s window {_span(a.layout.window)}",
                )

    def uio(self, t: Any, key: str) -> UioConfig:
        t = self.table(t, key, ("memory", "sysfs_root", "dev_root", "wait_timeout"))
        d = UioConfig()
        mem = self.get(t, key, "memory", (list, str), list(d.memory))
        mem = [mem] if isinstance(mem, str) else mem
        if not mem or not all(isinstance(m, str) and m for m in mem):
            raise self.fail(f"{key}.memory", "must be a non-empty list of UIO names")
        wait = self.get(t, key, "wait_timeout", float, d.wait_timeout)
        if wait < 0:
            raise self.fail(f"{key}.wait_timeout", "must be >= 0 (0 waits forever)")
        return UioConfig(
            tuple(mem),
            self.get(t, key, "sysfs_root", str, d.sysfs_root),
            self.get(t, key, "dev_root", str, d.dev_root),
            wait,
        )

    def steps(self, t: dict[str, Any], key: str, k: str) -> tuple[RegStep, ...]:
        lst = self.get(t, key, k, list, [])
        out = []
        for i, s in enumerate(lst):
            sk = f"{key}.{k}[{i}]"
            s = self.table(s, sk, ("op", "offset", "map", "width", "value", "mask", "timeout_ms"))
            op = self.choice(s, sk, "op", REG_OPS, "write")
            width = self.integer(s, sk, "width", 32, 8, 32)
            if width not in (8, 16, 32):
                raise self.fail(f"{sk}.width", f"{width} is not 8, 16 or 32")
            offset = self.integer(s, sk, "offset", 0, 0, 2**32)
            self.aligned(f"{sk}.offset", offset, width // 8)
            value = self.get(s, sk, "value", (int, str), 0)
            if isinstance(value, str) and value not in ("{notifyid}", "{word}", "{last}"):
                raise self.fail(f"{sk}.value", f"{value!r}: a template is one of {{notifyid}}, {{word}}, {{last}}")
            if isinstance(value, int) and not 0 <= value < 2**width:
                raise self.fail(f"{sk}.value", f"{_hex(value)} does not fit in {width} bits")
            mask = self.integer(s, sk, "mask", None, 0, 2**width - 1)
            out.append(
                RegStep(op, offset, self.integer(s, sk, "map", 0, 0, 4), width, value, mask,
                        self.integer(s, sk, "timeout_ms", 10, 0, 10_000))
            )  # fmt: skip
        return tuple(out)

    def doorbell(self, t: Any, key: str, backend: str, board: str | None) -> DoorbellConfig:
        allowed = ("driver", "uio", "irq_uio", "map", "offset", "pa", "size", "word", "poll_ms", "board",
                   "start", "ring", "ack", "stop")  # fmt: skip
        t = self.table(t, key, allowed)
        default_driver = "sim" if backend == "sim" else "telechips"
        driver = self.choice(t, key, "driver", DOORBELL_DRIVERS, default_driver)
        word = self.get(t, key, "word", (int, str), "notifyid")
        if isinstance(word, str) and word != "notifyid":
            raise self.fail(f"{key}.word", f'{word!r}: must be "notifyid" or an integer')
        if isinstance(word, int) and not 0 <= word < 2**32:
            raise self.fail(f"{key}.word", f"{_hex(word)} does not fit in 32 bits")
        pa = self.integer(t, key, "pa", None)
        if pa is not None:
            self.aligned(f"{key}.pa", pa)
        uio = self.get(t, key, "uio", str, None if (pa is not None or driver == "sim") else "mbox")
        db = DoorbellConfig(
            driver=driver,
            uio=uio or None,
            irq_uio=self.get(t, key, "irq_uio", str, None) or None,
            map=self.integer(t, key, "map", 0, 0, 4),
            offset=self.aligned(f"{key}.offset", self.integer(t, key, "offset", 0, 0, 2**32)),
            pa=pa,
            size=self.integer(t, key, "size", 0x1000, 4, 2**32),
            word=word,
            poll_ms=self.integer(t, key, "poll_ms", 0, 0, 60_000),
            board=self.get(t, key, "board", str, None) or (board if driver == "sim" else None),
            start=self.steps(t, key, "start"),
            ring=self.steps(t, key, "ring"),
            ack=self.steps(t, key, "ack"),
            stop=self.steps(t, key, "stop"),
        )
        if driver == "sim" and not db.board:
            raise self.fail(f"{key}.board", "the sim doorbell needs the board folder")
        if driver in ("telechips", "registers") and db.uio is None and db.pa is None:
            raise self.fail(f"{key}.uio", f"the {driver} doorbell needs a UIO name (uio) or an address (pa)")
        if driver == "registers" and not db.ring:
            raise self.fail(f"{key}.ring", "the registers doorbell needs a ring program")
        if driver in ("telechips", "registers") and db.uio is None and db.irq_uio is None and db.poll_ms == 0:
            raise self.fail(f"{key}.poll_ms", "without a UIO device there is no interrupt: set poll_ms")
        return db

    def lifecycle(self, t: Any, key: str) -> LifecycleConfig:
        allowed = ("enabled", "method", "chip", "line", "active_low", "pulse_ms", "uio", "pa", "size",
                   "start", "stop")  # fmt: skip
        t = self.table(t, key, allowed)
        d = LifecycleConfig()
        lc = LifecycleConfig(
            enabled=self.get(t, key, "enabled", bool, False),
            method=self.choice(t, key, "method", ("gpio", "registers"), "gpio"),
            chip=self.get(t, key, "chip", str, d.chip),
            line=self.integer(t, key, "line", 0, 0, 4096),
            active_low=self.get(t, key, "active_low", bool, False),
            pulse_ms=self.integer(t, key, "pulse_ms", 10, 0, 60_000),
            uio=self.get(t, key, "uio", str, None),
            pa=self.integer(t, key, "pa", None),
            size=self.integer(t, key, "size", 0x1000, 4, 2**32),
            start=self.steps(t, key, "start"),
            stop=self.steps(t, key, "stop"),
        )
        if lc.enabled and lc.method == "registers":
            if lc.uio is None and lc.pa is None:
                raise self.fail(f"{key}.uio", "register lifecycle needs a UIO name (uio) or an address (pa)")
            if not lc.start or not lc.stop:
                raise self.fail(f"{key}.start", "register lifecycle needs start and stop programs")
        return lc

    def endpoints(self, t: Any, key: str) -> dict[str, EndpointOptions]:
        t = self.table(t, key, t.keys() if isinstance(t, dict) else ())
        parsed: dict[str, dict[str, Any]] = {}
        for name, e in t.items():
            ek = f'{key}."{name}"' if not _NAME.match(name) else f"{key}.{name}"
            e = self.table(e, ek, ("overflow", "queue", "pty", "stream", "mqtt_writable"))
            vals: dict[str, Any] = {}
            if "overflow" in e:
                vals["overflow"] = self.choice(e, ek, "overflow", OVERFLOW, "block")
            if "queue" in e:
                vals["queue"] = self.integer(e, ek, "queue", 256, 1, 1_000_000)
            for b in ("pty", "stream", "mqtt_writable"):
                if b in e:
                    vals[b] = self.get(e, ek, b, bool, False)
            parsed[name] = vals
        base = replace(EndpointOptions(), **parsed.get("*", {}))
        out = {"*": base}
        for name, vals in parsed.items():
            if name != "*":
                out[name] = replace(base, **vals)
        return out

    def mqtt(self, t: Any) -> MqttConfig | None:
        key = "mqtt"
        allowed = ("enabled", "host", "port", "client_id", "keepalive", "protocol", "username", "password_file",
                   "tls", "topic_root", "rx_encoding", "export", "queue", "stats_interval", "qos")  # fmt: skip
        t = self.table(t, key, allowed)
        enabled = self.get(t, key, "enabled", bool, True)
        d = MqttConfig()
        tls = None
        if "tls" in t:
            tk = f"{key}.tls"
            tt = self.table(t["tls"], tk, ("ca", "cert", "key", "insecure"))
            tc = TlsConfig(
                self.get(tt, tk, "ca", str, ""),
                self.get(tt, tk, "cert", str, ""),
                self.get(tt, tk, "key", str, ""),
                self.get(tt, tk, "insecure", bool, False),
            )
            if tc.key and not tc.cert:
                raise self.fail(f"{tk}.key", "a client key needs its certificate (cert)")
            tls = tc if (tc.ca or tc.cert) else None
        export = self.get(t, key, "export", (str, list), "all")
        if isinstance(export, str) and export != "all":
            raise self.fail(f"{key}.export", f'{export!r}: must be "all" or a list of endpoint names')
        if isinstance(export, list):
            if not all(isinstance(x, str) for x in export):
                raise self.fail(f"{key}.export", "must be a list of endpoint names (strings)")
            export = tuple(export)
        qos = dict(d.qos)
        if "qos" in t:
            qk = f"{key}.qos"
            qt = self.table(t["qos"], qk, tuple(qos))
            for k in qt:
                qos[k] = self.integer(qt, qk, k, 0, 0, 2)
        interval = self.get(t, key, "stats_interval", float, d.stats_interval)
        if interval < 0:
            raise self.fail(f"{key}.stats_interval", "must be >= 0 (0 turns stats off)")
        m = MqttConfig(
            enabled=enabled,
            host=self.get(t, key, "host", str, d.host),
            port=self.integer(t, key, "port", d.port, 1, 65535),
            client_id=self.get(t, key, "client_id", str, ""),
            keepalive=self.integer(t, key, "keepalive", d.keepalive, 0, 65535),
            protocol=self.choice(t, key, "protocol", MQTT_PROTOCOLS, d.protocol),
            username=self.get(t, key, "username", str, ""),
            password_file=self.get(t, key, "password_file", str, ""),
            tls=tls,
            topic_root=self.get(t, key, "topic_root", str, "").rstrip("/"),
            rx_encoding=self.choice(t, key, "rx_encoding", RX_ENCODINGS, d.rx_encoding),
            export=export,
            queue=self.integer(t, key, "queue", d.queue, 1, 10_000_000),
            stats_interval=interval,
            qos=qos,
        )
        return m if enabled else None

    def control(self, t: Any) -> ControlConfig:
        key = "control"
        t = self.table(t, key, ("enabled", "socket_mode"))
        return ControlConfig(
            self.get(t, key, "enabled", bool, True), self.integer(t, key, "socket_mode", 0o660, 0, 0o7777)
        )


_TYPENAMES: dict[type, str] = {
    int: "an integer", str: "a string", bool: "true or false", float: "a number", list: "an array", dict: "a table",
}  # fmt: skip


def _tname(v: Any) -> str:
    return _TYPENAMES.get(type(v), type(v).__name__)


def _hex(v: int) -> str:
    return f"{v:#x}"


def _span(r: Region) -> str:
    return f"{r.pa:#010x}-{r.end:#010x}"


# -- --check ---------------------------------------------------------------------------------


def format_memory_map(config: Config) -> str:
    """The resolved memory map of every remote, as ``rprocd --check`` prints it."""
    lines = [f"config: {config.path or '<built-in default>'}"]
    d = config.daemon
    lines.append(f"runtime dir: {d.runtime_dir}  (log {d.log_level}, sockets {d.socket_mode:#o})")
    for rc in config.remotes.values():
        lay = rc.layout
        lines.append("")
        lines.append(f"remote {rc.name}: backend {_backend_text(rc)}")
        lines.append(f"  doorbell: {_doorbell_text(rc.doorbell)}")
        rows: list[tuple[str, Region, str]] = [
            ("shm", lay.window, "shared window"),
            ("rsc_table", lay.table_region, "resource-table region"),
        ]
        rows.append(("  table", Region("table", lay.table_pa, lay.rsc_size),
                     f"resource table (offset {lay.rsc_offset:#x}, up to {lay.rsc_size:#x})"))  # fmt: skip
        rows.append(("vring0", lay.vrings[0], "remote -> host"))
        rows.append(("vring1", lay.vrings[1], "host -> remote"))
        nbuf = lay.buffers.size // lay.buf_size
        rows.append(("buffers", lay.buffers, f"rpmsg buffers ({nbuf} x {lay.buf_size} B)"))
        for key, reg, note in rows:
            name = reg.name if reg.name != "table" else ""
            lines.append(f"  {key:<10} {reg.pa:#010x}-{reg.end:#010x} {reg.size:>#8x}  {name:<12} {note}")
        gaps = _gaps(lay)
        for g in gaps:
            lines.append(f"  {'(unused)':<10} {g.pa:#010x}-{g.end:#010x} {g.size:>#8x}")
        if rc.lifecycle.enabled:
            lc = rc.lifecycle
            what = (
                f"gpio {lc.chip} line {lc.line}" if lc.method == "gpio" else f"registers ({lc.uio or hex(lc.pa or 0)})"
            )
            lines.append(f"  lifecycle: {what}")
        else:
            lines.append("  lifecycle: off")
        eps = {k: v for k, v in rc.endpoints.items() if k != "*"}
        if eps:
            lines.append("  endpoints: " + ", ".join(sorted(eps)))
    m = config.mqtt
    lines.append("")
    lines.append(f"mqtt: {m.host}:{m.port} (MQTT {m.protocol}{', TLS' if m.tls else ''})" if m else "mqtt: off")
    lines.append(f"control socket: {'on' if config.control.enabled else 'off'}")
    return "\n".join(lines) + "\n"


def _gaps(lay: Layout) -> list[Region]:
    out, pos = [], lay.window.pa
    for r in sorted(lay.regions, key=lambda r: r.pa):
        if r.pa > pos:
            out.append(Region("gap", pos, r.pa - pos))
        pos = max(pos, r.end)
    if pos < lay.window.end:
        out.append(Region("gap", pos, lay.window.end - pos))
    return out


def _backend_text(rc: RemoteConfig) -> str:
    if rc.backend == "sim":
        return f"sim (virtual board {rc.board})"
    if rc.backend == "uio":
        return f"uio (devices {', '.join(rc.uio.memory)} under {rc.uio.sysfs_root}/class/uio)"
    return f"devmem ({rc.devmem_path})"


def _doorbell_text(db: DoorbellConfig) -> str:
    if db.driver == "sim":
        return f"sim (datagrams in {db.board})"
    where = f'uio "{db.uio}" map {db.map}' if db.uio else f"registers at {db.pa:#x}"
    if db.pa is not None and db.uio:
        where = f'registers at {db.pa:#x}, irq from uio "{db.uio}"'
    word = "the vring notifyid" if db.word == "notifyid" else f"{db.word:#x}"
    poll = f", polled every {db.poll_ms} ms" if db.poll_ms else ""
    return f"{db.driver} on {where}{' + ' + hex(db.offset) if db.offset else ''}, word {word}{poll}"


def check_main(
    path: str | None, overrides: dict[str, Any] | None = None, *, out: Callable[[str], Any] | None = None
) -> int:
    """``rprocd --check -c FILE``: print the resolved memory map (0) or the error (1)."""
    try:
        cfg = load_config(path, overrides=overrides)
    except ConfigError as e:
        print(f"rprocd: {e}", file=sys.stderr)
        return 1
    (out or sys.stdout.write)(format_memory_map(cfg))
    return 0
