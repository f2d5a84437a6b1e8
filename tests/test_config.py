"""The config file: the shipped tcc807x file, the built-in default, overrides, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rprocd.config import (
    ConfigError,
    EndpointOptions,
    check_main,
    format_memory_map,
    load_config,
)
from rprocd.layout import TCC807X

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "etc" / "rprocd" / "rprocd.toml"

GOOD = """
[remote.main]
backend = "uio"
shm       = { pa = 0x200c6000, size = 0x8000 }
rsc_table = { pa = 0x200c6000, size = 0x2000, offset = 0x3b8, max_size = 0x1000 }
vring0    = { pa = 0x200c8000, size = 0x1000 }
vring1    = { pa = 0x200c9000, size = 0x1000 }
buffers   = { pa = 0x200ca000, size = 0x4000 }
"""


def write(tmp_path: Path, text: str, name: str = "rprocd.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def error_of(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, text))
    return ei.value


def test_shipped_config_is_the_seed_layout() -> None:
    cfg = load_config(str(SHIPPED))
    main = cfg.remotes["main"]
    assert main.layout == TCC807X
    assert main.backend == "uio"
    assert main.uio.memory == ("rpmsg_shm",)
    assert main.doorbell.driver == "telechips" and main.doorbell.uio == "mbox"
    assert main.doorbell.word == "notifyid"
    assert main.reset_wait_ms == 50
    assert not main.lifecycle.enabled
    assert cfg.mqtt is None  # shipped with enabled = false
    assert cfg.daemon.socket_mode == 0o660
    assert main.endpoint_options("rpmsg-tty") == EndpointOptions()
    assert main.endpoint_options("anything").queue == 256


def test_builtin_default_matches_tcc807x() -> None:
    cfg = load_config(None)
    assert list(cfg.remotes) == ["main"]
    assert cfg.remotes["main"].layout == TCC807X
    assert cfg.remotes["main"].backend == "uio"
    assert cfg.daemon.runtime_dir == "/run/rprocd"
    assert cfg.mqtt is None and cfg.control.enabled


def test_check_prints_the_seed_memory_map(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main(str(SHIPPED)) == 0
    out = capsys.readouterr().out
    for line in (
        "0x200c6000-0x200ce000   0x8000  rpmsg_shm",
        "0x200c6000-0x200c8000   0x2000  rsc-table",
        "0x200c63b8-0x200c73b8   0x1000",
        "(offset 0x3b8, up to 0x1000)",
        "0x200c8000-0x200c9000   0x1000  vdev0vring0",
        "0x200c9000-0x200ca000   0x1000  vdev0vring1",
        "0x200ca000-0x200ce000   0x4000  vdev0buffer",
        "32 x 512 B",
        'telechips on uio "mbox"',
    ):
        assert line in out, line


def test_check_reports_the_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.replace("0x200c8000, size", "0x200c8001, size"))
    assert check_main(path) == 1
    err = capsys.readouterr().err
    assert "rprocd.toml: remote.main.vring0.pa: 0x200c8001 is not 4-byte aligned" in err


def test_overrides_beat_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + '\n[daemon]\nruntime_dir = "/run/x"\nlog_level = "debug"\n')
    cfg = load_config(path, overrides={"runtime_dir": "/tmp/rt", "board": "/tmp/board", "log_level": None})
    assert cfg.daemon.runtime_dir == "/tmp/rt"
    assert cfg.daemon.log_level == "debug"  # None = option not given
    main = cfg.remotes["main"]
    assert main.backend == "sim" and main.board == "/tmp/board"
    assert main.doorbell.driver == "sim" and main.doorbell.board == "/tmp/board"
    cfg = load_config(path, overrides={"remote.main.reset_wait_ms": 200, "mqtt.enabled": True})
    assert cfg.remotes["main"].reset_wait_ms == 200
    assert cfg.mqtt is not None and cfg.mqtt.host == "localhost"


def test_override_is_validated_like_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"daemon\.log_level: 'loud' is not one of"):
        load_config(write(tmp_path, GOOD), overrides={"log_level": "loud"})


# -- the five kinds of error, each naming its key ----------------------------------------------


def test_unknown_key(tmp_path: Path) -> None:
    e = error_of(tmp_path, GOOD.replace("backend =", "bakend = 1\nbackend ="))
    assert str(e).startswith(f"{tmp_path}/rprocd.toml: remote.main.bakend: unknown key")
    e = error_of(tmp_path, GOOD.replace("pa = 0x200ca000, size = 0x4000", "pa = 0x200ca000, sise = 0x4000"))
    assert "remote.main.buffers.sise: unknown key" in str(e)


def test_wrong_type(tmp_path: Path) -> None:
    e = error_of(tmp_path, GOOD.replace("size = 0x8000", 'size = "32k"'))
    assert "remote.main.shm.size: must be an integer, not a string '32k'" in str(e)
    e = error_of(tmp_path, GOOD + "\n[control]\nenabled = 1\n")
    assert "control.enabled: must be true or false" in str(e)


def test_unaligned_region(tmp_path: Path) -> None:
    e = error_of(tmp_path, GOOD.replace("0x200c8000, size", "0x200c8001, size"))
    assert str(e) == f"{tmp_path}/rprocd.toml: remote.main.vring0.pa: 0x200c8001 is not 4-byte aligned"
    e = error_of(tmp_path, GOOD.replace("offset = 0x3b8", "offset = 0x3b9"))
    assert "remote.main.rsc_table.offset: 0x3b9 is not 4-byte aligned" in str(e)


def test_overlapping_regions(tmp_path: Path) -> None:
    e = error_of(tmp_path, GOOD.replace("pa = 0x200c9000, size = 0x1000", "pa = 0x200c8800, size = 0x1000"))
    assert "remote.main.vring1: 0x200c8800-0x200c9800 overlaps vring0 0x200c8000-0x200c9000" in str(e)


def test_table_outside_its_region(tmp_path: Path) -> None:
    e = error_of(tmp_path, GOOD.replace("offset = 0x3b8", "offset = 0x1800"))
    assert "remote.main.rsc_table.offset: the table 0x200c7800+0x1000" in str(e)
    assert "does not fit in its region 0x200c6000+0x2000" in str(e)


def test_region_outside_the_window(tmp_path: Path) -> None:
    e = error_of(tmp_path, GOOD.replace("pa = 0x200ca000, size = 0x4000", "pa = 0x200ca000, size = 0x8000"))
    assert "remote.main.buffers: 0x200ca000-0x200d2000 is not inside the shared window shm" in str(e)


def test_other_errors_name_their_key(tmp_path: Path) -> None:
    assert "remote.main.backend: 'pci' is not one of uio, devmem, sim" in str(
        error_of(tmp_path, GOOD.replace('backend = "uio"', 'backend = "pci"'))
    )
    assert "remote.main.vring1: is required" in str(
        error_of(tmp_path, GOOD.replace("vring1    = { pa = 0x200c9000, size = 0x1000 }", ""))
    )
    assert "remote.main.board: the sim backend needs the board folder" in str(
        error_of(tmp_path, GOOD.replace('backend = "uio"', 'backend = "sim"'))
    )
    assert "remote.Main: remote names are [a-z0-9_-]+" in str(
        error_of(tmp_path, GOOD.replace("remote.main", "remote.Main"))
    )
    e = error_of(tmp_path, GOOD + '\n[remote.main.doorbell]\ndriver = "registers"\nuio = "ipi"\n')
    assert "remote.main.doorbell.ring: the registers doorbell needs a ring program" in str(e)
    e = error_of(tmp_path, GOOD + '\n[remote.main.doorbell]\nring = [ { op = "poke" } ]\n')
    assert "remote.main.doorbell.ring[0].op: 'poke' is not one of" in str(e)
    e = error_of(tmp_path, GOOD + "\n[mqtt]\nqos = { rx = 3 }\n")
    assert "mqtt.qos.rx: 0x3 is out of range" in str(e)
    e = error_of(tmp_path, "[remote.main\n")
    assert "rprocd.toml: not valid TOML" in str(e)
    with pytest.raises(ConfigError, match="nope.toml: no such file"):
        load_config(str(tmp_path / "nope.toml"))


def test_two_remotes_must_not_share_memory(tmp_path: Path) -> None:
    other = GOOD.replace("remote.main", "remote.second")
    e = error_of(tmp_path, GOOD + other)
    assert "remote.second.shm: 0x200c6000-0x200ce000 overlaps remote main's window" in str(e)


def test_register_doorbell_and_endpoint_options(tmp_path: Path) -> None:
    text = (
        GOOD
        + """
[remote.main.doorbell]
driver = "registers"
uio = "ipi"
start = [ { op = "write", offset = 0x18, value = 0x01000000 } ]
ring  = [ { op = "write", offset = 0x00, value = "{notifyid}" } ]
ack   = [ { op = "read", offset = 0x10 }, { op = "write", offset = 0x10, value = "{last}" } ]
stop  = [ { op = "write", offset = 0x1c, value = 0x01000000 } ]

[remote.main.endpoint."*"]
queue = 16
overflow = "drop-oldest"

[remote.main.endpoint."rpmsg-tty"]
pty = true
"""
    )
    cfg = load_config(write(tmp_path, text))
    rc = cfg.remotes["main"]
    db = rc.doorbell
    assert [s.op for s in db.ack] == ["read", "write"] and db.ack[1].value == "{last}"
    assert db.ring[0].value == "{notifyid}"
    assert rc.endpoint_options("rpmsg-tty") == EndpointOptions("drop-oldest", 16, True, False, False)
    assert rc.endpoint_options("other") == EndpointOptions("drop-oldest", 16, False, False, False)
    assert "registers on uio" in format_memory_map(cfg)


def test_mqtt_section(tmp_path: Path) -> None:
    text = (
        GOOD
        + """
[mqtt]
host = "broker"
protocol = "5"
tls = { ca = "/etc/ssl/ca.pem" }
export = ["rpmsg-tty"]
qos = { rx = 1 }
"""
    )
    m = load_config(write(tmp_path, text)).mqtt
    assert m is not None and m.host == "broker" and m.protocol == "5"
    assert m.tls is not None and m.tls.ca == "/etc/ssl/ca.pem"
    assert m.export == ("rpmsg-tty",) and m.qos["rx"] == 1 and m.qos["tx"] == 1


def test_check_from_the_command_line() -> None:
    """`python -c check_main` as the daemon CLI will call it (no daemon needed)."""
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; from rprocd.config import check_main; sys.exit(check_main({str(SHIPPED)!r}))",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "vdev0buffer" in r.stdout


def test_max_channels(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD)).remotes["main"].max_channels == 256  # the default
    cfg = load_config(write(tmp_path, GOOD.replace("backend =", "max_channels = 1000\nbackend =")))
    assert cfg.remotes["main"].max_channels == 1000
    e = error_of(tmp_path, GOOD.replace("backend =", "max_channels = 0\nbackend ="))
    assert str(e) == f"{tmp_path}/rprocd.toml: remote.main.max_channels: 0 is out of range (1..65536)"
    e = error_of(tmp_path, GOOD.replace("backend =", 'max_channels = "many"\nbackend ='))
    assert "remote.main.max_channels: must be an integer" in str(e)
