"""rprocctl inspect: firmware ELFs built here with gcc, raw dumps, and the checks behind the warnings."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest

from rprocd import rsc_table as rt
from rprocd.cli import ctl
from rprocd.config import load_config
from rprocd.inspect import Hints, analyse
from rprocd.layout import TCC807X, Region
from tests.dt.fdt import compile_tree, problems, reserved, uio_devices

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
    assert "rsc-table@200c6000 {" in out and "reg = <0x0 0x200c6000 0x0 0x2000>;" in out  # 2 cells
    assert "rpmsg_shm@200c6000 {" in out  # UIO name rpmsg_shm, as the config and rprocd --check want
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
        "uio": {"memory": ["rpmsg_shm"]},
        "doorbell": {"driver": "telechips", "uio": "mbox"},
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
        assert "vdev0buffer@200ca000" in out and "reg = <0x0 0x200ca000 0x0 0x4000>;" in out
        assert "DRIVER_OK" in out  # a dump taken while a host was attached says so
    code, out, err = inspect(capsys, str(dump), "--base", "0x200c6000", "--table-offset", "0")  # no table there
    assert code == 1 and out == ""
    assert err.startswith("rprocctl inspect: ") and "TableNotReady" in err and err.count("\n") == 1
    code, _, err = inspect(capsys, str(dump), "--base", "0x200c6000", "--table-addr", "0x10000000")
    assert code == 1 and "outside the dump" in err


def test_board_memory_file_with_no_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 13: `rprocctl inspect .run/board/memory` (the whole 0x8000-byte window) uses the tcc807x layout."""
    memory = tmp_path / "memory"
    memory.write_bytes(seed_memory())
    code, out, err = inspect(capsys, str(memory))
    assert code == 0, err
    assert "the tcc807x layout, a 0x8000-byte window" in out
    assert "address 0x200c63b8" in out and "no problems found" in out
    assert "shm = { pa = 0x200c6000, size = 0x8000 }" in out  # the window is the file, not the span of the parts
    # any other size: one line saying which options are needed
    other = tmp_path / "dump.bin"
    other.write_bytes(seed_memory()[:0x4000])
    code, out, err = inspect(capsys, str(other))
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "no known layout's window (0x8000 bytes at 0x200c6000 (tcc807x))" in err
    assert "--base ADDR" in err and "--table-addr ADDR or --table-offset OFF" in err
    code, _, err = inspect(capsys, str(memory), "--base", "0x10000000")
    assert code == 1 and "give --table-addr ADDR or --table-offset OFF" in err and err.count("\n") == 1


def printed_sections(out: str) -> tuple[str, str]:
    """(device-tree snippet, rprocd.toml section) from `rprocctl inspect`'s text output."""
    dts = out.split("\nLinux device tree:\n\n", 1)[1].split("\nrprocd.toml:\n\n", 1)
    return dts[0], dts[1]


@pytest.mark.parametrize("seed", [False, True], ids=["soc", "soc+seed-rproc"])
@pytest.mark.parametrize("defs", [{}, {"DA0": "0xffffffff", "DA1": "0xffffffff"}], ids=["fixed", "any"])
def test_printed_snippet_compiles_onto_the_soc_and_gives_the_printed_configs_devices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], defs: dict[str, str], seed: bool
) -> None:
    """Issue 11 section 4: dtc accepts the snippet under the 2-cell root; its UIO names are the TOML's."""
    elf = build_elf(tmp_path, **defs)  # the table at 0x200c63b8, as the seed's zephyr.elf
    code, out, err = inspect(capsys, str(elf))
    assert code == 0 and "no problems found" in out, out + err
    dts, toml = printed_sections(out)
    tree = compile_tree(dts, tmp_path, seed=seed)
    warnings = [w for w in tree.warnings.splitlines() if "/shm@200c6000: duplicate unit-address" not in w]
    assert warnings == []
    conf = tmp_path / "rprocd.toml"
    conf.write_text(toml)
    rc = load_config(str(conf)).remotes["main"]
    win = rc.layout.window
    assert problems(tree, memory=rc.uio.memory, mailbox=rc.doorbell.uio, window=(win.pa, win.size)) == []
    assert sorted(d.name for d in uio_devices(tree)) == sorted([*rc.uio.memory, rc.doorbell.uio or ""])
    spans = sorted((pa, pa + size) for _, pa, size, nomap in reserved(tree) if nomap)
    parts = sorted((r.pa, r.end) for r in rc.layout.regions)
    assert spans == parts  # exactly the config's regions are reserved, and they do not overlap
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_no_mailbox_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = inspect(capsys, str(build_elf(tmp_path)), "--mailbox", "none")
    assert code == 0, err
    dts, toml = printed_sections(out)
    assert "&a55sp_a55mp_mbox" not in dts and "doorbell" not in toml and "rpmsg_shm@200c6000" in dts


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


ANY_DA = (rt.VdevVring(rt.FW_RSC_ADDR_ANY, 16, 8, 0), rt.VdevVring(rt.FW_RSC_ADDR_ANY, 16, 8, 1))


def test_analyse_any_da_places_the_vrings_after_the_table_region() -> None:
    rep = analyse(0x200C63B8, seed_table(vrings=ANY_DA), Hints(rsc_region=TCC807X.table_region))
    assert [v.pa for v in rep.vrings] == [0x200C8000, 0x200C9000]
    assert any("da ANY" in a for a in rep.assumptions)


def spans_of(rep: object) -> list[tuple[str, int, int]]:
    """Every part the report places or decodes: the table, the trace buffer, the vrings, the buffer pool."""
    from rprocd.inspect import Report

    assert isinstance(rep, Report) and rep.table is not None and rep.buffers is not None
    out = [("table", rep.table_pa, rep.table_pa + rep.table.size)]
    out += [("trace", t.da, t.da + t.len) for t in rep.table.traces]
    out += [(f"vring{v.index}", v.pa, v.pa + v.size) for v in rep.vrings if v.pa is not None]
    out.append(("buffers", rep.buffers.pa, rep.buffers.end))
    return out


@pytest.mark.parametrize(
    "hints",
    [
        Hints(),  # the case: no hints at all
        Hints(rsc_region=Region("rsc-table", 0x200C6000, 0x1000)),  # a region that ends below the trace buffer
        Hints(shm=TCC807X.window),
    ],
    ids=["no-hints", "small-region", "window"],
)
def test_analyse_any_da_never_proposes_an_overlap(hints: Hints) -> None:
    """With FW_RSC_ADDR_ANY vrings, vring0 must not land on the trace buffer it has just decoded (0x200c7400)."""
    rep = analyse(0x200C63B8, seed_table(vrings=ANY_DA), hints)
    assert rep.overlaps == [] and not any("overlap" in w for w in rep.warnings), rep.warnings
    parts = spans_of(rep)
    for i, (a, lo, hi) in enumerate(parts):
        for b, lo2, hi2 in parts[i + 1 :]:
            assert not (lo < hi2 and lo2 < hi), f"{a} {lo:#x}-{hi:#x} overlaps {b} {lo2:#x}-{hi2:#x}"
    lay = rep.layout
    assert lay is not None and lay.check() == []
    assert rep.vrings[0].pa == 0x200C8000  # the first free page past the trace buffer's 0x200c7000-0x200c8000
    assert "not written" not in rep.dts() and "not written" not in rep.toml()


def test_an_overlapping_layout_is_not_printed() -> None:
    rep = analyse(0x200C63B8, seed_table(vrings=(rt.VdevVring(0x200C7800, 16, 8, 0), ANY_DA[1])))
    assert any("overlaps vring0" in w for w in rep.overlaps), rep.warnings  # the firmware's own vring0 on the trace
    assert rep.dts().startswith("/* not written: the layout overlaps") and rep.toml().startswith("# not written")


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
    assert rep.buffers == Region("vdev0buffer", 0x200CB000, 0x3000)
    assert rep.warnings == ["0x200ca000-0x200cb000 of the shared window is in no reserved region: Linux may use "
                            "those pages (--rsc-region, --buffers)"]  # fmt: skip


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


def test_the_live_virtual_boards_memory_file(running: object, capsys: pytest.CaptureFixture[str]) -> None:
    """What a new user types after `make run`: `rprocctl inspect .run/board/memory`, no options."""
    from tests.conftest import Board

    assert isinstance(running, Board)
    code, out, err = inspect(capsys, str(running.dir / "memory"))
    assert code == 0, err
    assert "the tcc807x layout, a 0x8000-byte window" in out and "address 0x200c63b8" in out
    assert "DRIVER_OK" in out  # rprocd is attached
    _, toml = printed_sections(out)
    assert "shm = { pa = 0x200c6000, size = 0x8000 }" in toml


def test_printed_snippet_for_the_seed_is_the_documented_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """inspect and docs/hardware.md agree: the same UIO devices and the same reservations on the SoC model."""
    from tests.test_devicetree import DOC, documented_snippet

    code, out, err = inspect(capsys, str(build_elf(tmp_path)), "--shm", "0x200c6000:0x8000")
    assert code == 0, err
    (tmp_path / "printed").mkdir()
    (tmp_path / "doc").mkdir()
    printed = compile_tree(printed_sections(out)[0], tmp_path / "printed", seed=True)
    documented = compile_tree(documented_snippet(DOC.read_text()), tmp_path / "doc", seed=True)
    assert uio_devices(printed) == uio_devices(documented)
    assert reserved(printed) == reserved(documented)
    for path in ("/tcc_ipi_main", "/mbox@17470000"):
        a, b = printed.node(path), documented.node(path)
        assert a is not None and b is not None and a.props == b.props
