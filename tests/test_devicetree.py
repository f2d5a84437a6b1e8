"""docs/hardware.md's device-tree snippet, compiled with dtc onto a model of the tcc807x sub-core's tree.

The model (tests/dt/tcc807x-subcore.dtsi) is written from Telechips' BSP
(tcc807x-subcore-mbox.dtsi, tcc807x-subcore-ipi.dtsi); the seed's remoteproc
nodes (tests/dt/seed-rproc.dtsi) are compiled in as well, since a board may
still carry them.  The snippet is taken from the documentation itself (between
its ``rprocd-dt-snippet`` markers), so the page and this test cannot drift.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rprocd.config import load_config
from rprocd.layout import TCC807X
from tests.dt.fdt import HERE, MBOX_PATH, DtcError, compile_tree, problems, reserved, uio_devices

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "hardware.md"
SHIPPED = ROOT / "etc" / "rprocd" / "rprocd.toml"
WINDOW = (TCC807X.window.pa, TCC807X.window.size)


def documented_snippet(text: str) -> str:
    """The ```dts block between the rprocd-dt-snippet markers of docs/hardware.md."""
    m = re.search(r"<!-- rprocd-dt-snippet:begin[^>]*-->\n```dts\n(.*?)```\n<!-- rprocd-dt-snippet:end -->", text, re.S)
    if m is None:
        raise AssertionError(f"{DOC}: no ```dts block between the rprocd-dt-snippet markers")
    return m.group(1)


def expected_names() -> tuple[tuple[str, ...], str | None]:
    """The UIO names the shipped config (and so `rprocd --check`) looks for."""
    rc = load_config(str(SHIPPED)).remotes["main"]
    return rc.uio.memory, rc.doorbell.uio


@pytest.mark.parametrize("seed", [False, True], ids=["soc", "soc+seed-rproc"])
def test_documented_snippet_gives_rprocd_its_devices(tmp_path: Path, seed: bool) -> None:
    snippet = documented_snippet(DOC.read_text())
    tree = compile_tree(snippet, tmp_path, seed=seed)
    warnings = [w for w in tree.warnings.splitlines() if w]
    if seed:  # the seed's disabled `shm@200c6000` (which the docs say to remove) shares the unit address
        warnings = [w for w in warnings if "/shm@200c6000: duplicate unit-address" not in w]
    assert warnings == []  # dtc is quiet: reg lengths, cells, phandles all right
    memory, mailbox = expected_names()
    assert memory == ("rpmsg_shm",) and mailbox == "mbox"
    assert problems(tree, memory=memory, mailbox=mailbox, window=WINDOW) == []
    devs = {d.name: d for d in uio_devices(tree)}
    assert sorted(devs) == ["mbox", "rpmsg_shm"]  # exactly these two, nothing else handed to UIO
    assert devs["rpmsg_shm"].maps == ((0x200C6000, 0x8000),) and devs["rpmsg_shm"].irq is None
    assert devs["rpmsg_shm"].map_names == ("rpmsg_shm@200c6000",)
    assert devs["mbox"].path == MBOX_PATH and devs["mbox"].maps == ((0x17470000, 0x100),)
    assert devs["mbox"].irq == (0, 242, 4)  # GIC_SPI 242 IRQ_TYPE_LEVEL_HIGH, the receive interrupt
    ipi = tree.node("/tcc_ipi_main")
    assert ipi is not None and not ipi.available  # the kernel client is off
    for other in ("/tcc_ipi_micom", "/tcc_ipi_hsm"):
        node = tree.node(other)
        assert node is not None and node.available  # the other mailboxes' clients are untouched
    spans = sorted((pa, size) for _, pa, size, nomap in reserved(tree) if nomap)
    assert spans == [(0x200C6000, 0x2000), (0x200C8000, 0x1000), (0x200C9000, 0x1000), (0x200CA000, 0x4000)]


def test_the_old_snippet_is_caught(tmp_path: Path) -> None:
    """Before issue 11: placeholders dtc rejects; filled in, the mailbox is disabled and its client kept."""
    with pytest.raises(DtcError):
        compile_tree("/ {\n\tmbox@<mbox-base> {\n\t\treg = <0x0 <mbox-base> 0x0 0x1000>;\n\t};\n};\n", tmp_path)
    old = (HERE / "old-snippet-filled.dtsi").read_text()
    memory, mailbox = expected_names()
    tree = compile_tree(old, tmp_path)
    found = problems(tree, memory=memory, mailbox=mailbox, window=WINDOW)
    assert "0 enabled generic-uio nodes named 'mbox' (want 1): []" in found
    assert "/tcc_ipi_main (kernel client of the mailbox) is enabled" in found
    # on a tree that still has the seed's disabled reserved nodes, its reservations vanish too
    tree = compile_tree(old, tmp_path, seed=True)
    found = problems(tree, memory=memory, mailbox=mailbox, window=WINDOW)
    assert any("is not all reserved no-map" in p for p in found), found


def test_one_cell_reg_under_the_two_cell_root_is_caught(tmp_path: Path) -> None:
    """What `rprocctl inspect` printed before: dtc warns about the reg length and the kernel ignores the node."""
    one_cell = "/ {\n\treserved-memory {\n\t\t#address-cells = <1>;\n\t\t#size-cells = <1>;\n\t\tranges;\n" \
        "\t\tr@200c6000 { reg = <0x200c6000 0x8000>; no-map; };\n\t};\n};\n"  # fmt: skip
    tree = compile_tree(one_cell, tmp_path)
    assert "reg" in tree.warnings or "ranges" in tree.warnings
    found = problems(tree, memory=(), mailbox=None, window=WINDOW)
    assert any("#address-cells [1] differs from the root's [2]" in p for p in found), found


def test_the_uio_model_follows_uio_pdrv_genirq(tmp_path: Path) -> None:
    """uio_devices() as uio_pdrv_genirq_probe: "%pOFn" (no unit address) or linux,uio-name; irq index 0 only;
    of_device_is_available on the node and its parents; one map per reg entry, named the node's full name."""
    snippet = """/ {
	plain@10000000 { compatible = "generic-uio"; reg = <0x0 0x10000000 0x0 0x100>, <0x0 0x10001000 0x0 0x20>; };
	renamed@10002000 { compatible = "generic-uio"; linux,uio-name = "other"; reg = <0x0 0x10002000 0x0 0x1000>; };
	two-irqs@10003000 { compatible = "generic-uio"; reg = <0x0 0x10003000 0x0 0x1000>;
		interrupts = <GIC_SPI 5 IRQ_TYPE_LEVEL_HIGH>, <GIC_SPI 6 IRQ_TYPE_LEVEL_HIGH>; };
	off@10004000 { compatible = "generic-uio"; reg = <0x0 0x10004000 0x0 0x1000>; status = "disabled"; };
	bus {
		#address-cells = <2>;
		#size-cells = <2>;
		ranges;
		status = "disabled";
		child@10005000 { compatible = "generic-uio"; reg = <0x0 0x10005000 0x0 0x1000>; };
	};
	other@10006000 { compatible = "simple-bus", "generic-uio"; reg = <0x0 0x10006000 0x0 0x1000>; status = "ok"; };
};
"""
    devs = {d.path: d for d in uio_devices(compile_tree(snippet, tmp_path))}
    assert sorted(devs) == ["/other@10006000", "/plain@10000000", "/renamed@10002000", "/two-irqs@10003000"]
    assert devs["/plain@10000000"].name == "plain"
    assert devs["/plain@10000000"].maps == ((0x10000000, 0x100), (0x10001000, 0x20))
    assert devs["/plain@10000000"].map_names == ("plain@10000000", "plain@10000000")
    assert devs["/renamed@10002000"].name == "other" and devs["/other@10006000"].name == "other"
    assert devs["/two-irqs@10003000"].irq == (0, 5, 4) and devs["/plain@10000000"].irq is None
