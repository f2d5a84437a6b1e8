"""rprocctl inspect: firmware ELFs built here with gcc, raw dumps, and the checks behind the warnings."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest

from rprocd import rsc_table as rt
from rprocd.cli import ctl
from rprocd.inspect import Hints, analyse
from rprocd.layout import TCC807X, Region

# a Zephyr/OpenAMP-style table: one rpmsg vdev with two vrings, one trace buffer (as the seed's)
C_TABLE = r"""
#include <stdint.h>
struct vring { uint32_t da, align, num, notifyid, reserved; };
struct table {
    uint32_t ver, num, reserved[2];
    uint32_t offset[2];
    struct { uint32_t type, id, notifyid, dfeatures, gfeatures, config_len;
             uint8_t status, num_of_vrings, pad[2]; struct vring vring[2]; } vdev;
    struct { uint32_t type, da, len, reserved; char name[32]; } trace;
} __attribute__((packed));

__attribute__((section(SECTION), used, aligned(4))) const struct table resource_table = {
    1, 2, {0, 0}, {24, 24 + 28 + 2 * 20},
    {3, 7, 0, FEATURES, 0, 0, 0, 2, {0, 0}, {{DA0, 16, NUM, 0, 0}, {DA1, 16, NUM, 1, 0}}},
    {2, TRACE_DA, 0xc00, 0, "Zephyr_log"},
};

void _start(void) {}
"""

SEED = {
    "SECTION": '".resource_table"',
    "DA0": "0x200c8000",
    "DA1": "0x200c9000",
    "NUM": "8",
    "FEATURES": "1",
    "TRACE_DA": "0x200c7400",
}


def build_elf(tmp: Path, name: str = "zephyr", start: str = "0x200c63b8", **defs: str) -> Path:
    """Compile and link a firmware ELF whose table is placed at ``start`` (as Zephyr's linker script does)."""
    src = tmp / f"{name}.c"
    src.write_text(C_TABLE)
    macros = {**SEED, **defs}
    section = macros["SECTION"].strip('"')
    elf = tmp / f"{name}.elf"
    cmd = ["gcc", "-O1", "-nostdlib", "-static", "-no-pie", f"-Wl,--section-start={section}={start}"]
    cmd += [f"-D{k}={v}" for k, v in macros.items()]
    subprocess.run([*cmd, "-o", str(elf), str(src)], check=True, capture_output=True, timeout=60)
    return elf


def inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = ctl.main(["inspect", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_seed_elf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    elf = build_elf(tmp_path)
    code, out, err = inspect(capsys, str(elf))
    assert code == 0, err
    assert "address 0x200c63b8" in out
    assert "offset 0x3b8 in the 0x200c6000 region" in out
    assert "0x200c8000-0x200c9000" in out and "vdev0vring0" in out
    assert "0x200c9000-0x200ca000" in out and "vdev0vring1" in out
    assert "0x200ca000-0x200cc000" in out and "vdev0buffer" in out  # 2 x 8 x 512 when the window is unknown
    assert "trace buffer 'Zephyr_log'" in out and "0x200c7400-0x200c8000" in out
    assert "no problems found" in out
    assert "rsc_table: rsc-table@200c6000" in out and "reg = <0x200c6000 0x2000>;" in out
    assert "rsc_table = { pa = 0x200c6000, size = 0x2000, offset = 0x3b8, max_size = 0x1000 }" in out


def test_seed_elf_with_window_gives_the_seed_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    elf = build_elf(tmp_path)
    code, out, err = inspect(capsys, str(elf), "--shm", "0x200c6000:0x8000", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["ok"] is True and rep["warnings"] == []
    assert rep["table"]["pa"] == 0x200C63B8 and rep["table"]["offset"] == 0x3B8
    assert rep["region"] == {"name": "rsc-table", "pa": 0x200C6000, "size": 0x2000}
    assert [v["pa"] for v in rep["vrings"]] == [0x200C8000, 0x200C9000]
    assert rep["buffers"] == {"name": "vdev0buffer", "pa": 0x200CA000, "size": 0x4000}
    assert rep["trace"] == {"name": "Zephyr_log", "pa": 0x200C7400, "len": 0xC00}
    section = tomllib.loads(rep["toml"])["remote"]["main"]
    assert section == {
        "backend": "uio",
        "shm": {"pa": 0x200C6000, "size": 0x8000},
        "rsc_table": {"pa": 0x200C6000, "size": 0x2000, "offset": 0x3B8, "max_size": 0x1000},
        "vring0": {"pa": 0x200C8000, "size": 0x1000},
        "vring1": {"pa": 0x200C9000, "size": 0x1000},
        "buffers": {"pa": 0x200CA000, "size": 0x4000},
    }
    # the config loader turns that section into exactly the built-in tcc807x layout
    from rprocd import config

    toml = tmp_path / "rprocd.toml"
    toml.write_text(rep["toml"])
    lay = config.load_config(str(toml)).remotes["main"].layout
    assert (lay.window, lay.table_pa, lay.vrings, lay.buffers) == (
        TCC807X.window,
        TCC807X.table_pa,
        TCC807X.vrings,
        TCC807X.buffers,
    )


def test_table_found_by_symbol_when_the_section_has_another_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elf = build_elf(tmp_path, SECTION='".openamp_rsc"')
    code, out, err = inspect(capsys, str(elf))
    assert code == 0, err
    assert "symbol resource_table at 0x200c63b8" in out and "offset 0x3b8 in the 0x200c6000 region" in out


@pytest.mark.parametrize(
    ("defs", "args", "warning"),
    [
        ({"DA0": "0x200c6400"}, [], "vring0 0x200c6400+0xe6 overlaps the resource table 0x200c63b8+0x8c"),
        ({"NUM": "64"}, ["--shm", "0x200c6000:0x8000"], "too small for 2 x 64 x 512 = 0x10000 bytes"),
        ({"FEATURES": "0"}, [], "lacks VIRTIO_RPMSG_F_NS"),
        ({"TRACE_DA": "0x20000000"}, [], "the trace buffer 'Zephyr_log' 0x20000000+0xc00 is outside any region"),
        ({"DA1": "0x300c9000"}, ["--shm", "0x200c6000:0x8000"], "vring1 0x300c9000+0xe6 is outside any region"),
        ({"DA1": "0x200c8000"}, [], "vring0 0x200c8000+0xe6 and vring1 0x200c8000+0xe6 overlap"),
    ],
)
def test_broken_tables_give_the_specific_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], defs: dict[str, str], args: list[str], warning: str
) -> None:
    elf = build_elf(tmp_path, **defs)
    code, out, err = inspect(capsys, str(elf), *args)
    assert code == 0, err
    assert warning in out, out
    assert "no problems found" not in out
    code, out, _ = inspect(capsys, str(elf), "--strict", "--json", *args)
    assert code == 3 and any(warning in w for w in json.loads(out)["warnings"])


def seed_memory() -> bytes:
    """A dump of the whole seed window: the table at rsc-offset 0x3b8, as the remote writes it."""
    mem = bytearray(TCC807X.window.size)
    table = rt.build(
        [
            rt.Vdev(
                id=7,
                notifyid=0,
                dfeatures=1,
                gfeatures=1,
                status=7,
                vrings=(rt.VdevVring(0x200C8000, 16, 8, 0), rt.VdevVring(0x200C9000, 16, 8, 1)),
            ),
            rt.Trace(da=0x200C7400, len=0xC00, name="Zephyr_log"),
        ]
    )
    off = TCC807X.table_pa - TCC807X.window.pa
    mem[off : off + len(table)] = table
    return bytes(mem)


def test_raw_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = tmp_path / "shm.bin"
    dump.write_bytes(seed_memory())
    for where in (["--table-offset", "0x3b8"], ["--table-addr", "0x200c63b8"]):
        code, out, err = inspect(capsys, str(dump), "--base", "0x200c6000", *where, "--shm", "0x200c6000:0x8000")
        assert code == 0, err
        assert "address 0x200c63b8" in out and "offset 0x3b8 in the 0x200c6000 region" in out
        assert "vdev0buffer@200ca000" in out and "reg = <0x200ca000 0x4000>;" in out
        assert "DRIVER_OK" in out  # a dump taken while a host was attached says so
    code, out, err = inspect(capsys, str(dump), "--base", "0x200c6000")  # offset 0: no table there
    assert code == 1 and out == ""
    assert err.startswith("rprocctl inspect: ") and "TableNotReady" in err and err.count("\n") == 1
    code, _, err = inspect(capsys, str(dump), "--base", "0x200c6000", "--table-addr", "0x10000000")
    assert code == 1 and "outside the dump" in err


def test_not_a_firmware(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = inspect(capsys, str(tmp_path / "missing.elf"))
    assert code == 1 and err.startswith("rprocctl inspect: ") and err.count("\n") == 1
    elf = tmp_path / "empty.elf"
    elf.write_bytes(b"\x7fELF" + bytes(60))
    code, _, err = inspect(capsys, str(elf))
    assert code == 1 and err.startswith("rprocctl inspect: ") and err.count("\n") == 1


# -- the sans-I/O analysis ------------------------------------------------------------------


def seed_table(**vdev: object) -> bytes:
    fields: dict = dict(id=7, notifyid=0, dfeatures=1, gfeatures=0, status=0)
    fields.update(
        vrings=(rt.VdevVring(0x200C8000, 16, 8, 0), rt.VdevVring(0x200C9000, 16, 8, 1)),
    )
    fields.update(vdev)
    return rt.build([rt.Vdev(**fields), rt.Trace(da=0x200C7400, len=0xC00, name="Zephyr_log")])


def test_analyse_seed_layout_is_the_builtin_one() -> None:
    rep = analyse(0x200C63B8, seed_table(), Hints(shm=TCC807X.window))
    assert rep.warnings == []
    assert rep.layout == TCC807X


def test_analyse_any_da_places_the_vrings_after_the_table_region() -> None:
    any_da = (rt.VdevVring(rt.FW_RSC_ADDR_ANY, 16, 8, 0), rt.VdevVring(rt.FW_RSC_ADDR_ANY, 16, 8, 1))
    rep = analyse(0x200C63B8, seed_table(vrings=any_da), Hints(rsc_region=TCC807X.table_region))
    assert [v.pa for v in rep.vrings] == [0x200C8000, 0x200C9000]
    assert any("da ANY" in a for a in rep.assumptions)


def test_analyse_explicit_buffers_and_carveout() -> None:
    small = Region("vdev0buffer", 0x200CA000, 0x1000)
    rep = analyse(0x200C63B8, seed_table(), Hints(buffers=small))
    assert any("too small for 2 x 8 x 512 = 0x2000 bytes" in w for w in rep.warnings)
    table = rt.build(
        [
            rt.Vdev(
                id=7,
                notifyid=0,
                dfeatures=1,
                gfeatures=0,
                status=0,
                vrings=(rt.VdevVring(0x200C8000, 16, 8, 0), rt.VdevVring(0x200C9000, 16, 8, 1)),
            ),
            rt.Carveout(da=0x200CB000, pa=0x200CB000, len=0x3000, name="vdev0buffer"),
        ]
    )
    rep = analyse(0x200C63B8, table)
    assert rep.buffers == Region("vdev0buffer", 0x200CB000, 0x3000) and rep.warnings == []


def test_analyse_bad_tables() -> None:
    rep = analyse(0x200C63B8, b"\x01\x00\x00\x00" + bytes(4))
    assert rep.table is None and rep.error and "TableTruncated" in rep.error
    no_vdev = rt.build([rt.Trace(da=0x200C7400, len=0x100, name="log")])
    rep = analyse(0x200C63B8, no_vdev)
    assert any("no rpmsg vdev" in w for w in rep.warnings)
    bad_num = seed_table(vrings=(rt.VdevVring(0x200C8000, 16, 6, 0), rt.VdevVring(0x200C9000, 16, 6, 1)))
    rep = analyse(0x200C63B8, bad_num)
    assert any("not a power of two" in w for w in rep.warnings)
    same_id = seed_table(vrings=(rt.VdevVring(0x200C8000, 16, 8, 0), rt.VdevVring(0x200C9000, 16, 8, 0)))
    assert any("share notifyid" in w for w in analyse(0x200C63B8, same_id).warnings)
