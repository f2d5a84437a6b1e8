"""The resource table parser on plain bytes: valid tables and every malformed case."""

from __future__ import annotations

import struct

import pytest

from rprocd import rsc_table as rt


def seed_entries(any_da: bool = False) -> list[rt.Entry]:
    da0, da1 = (rt.FW_RSC_ADDR_ANY, rt.FW_RSC_ADDR_ANY) if any_da else (0x200C8000, 0x200C9000)
    return [
        rt.Vdev(
            id=rt.VIRTIO_ID_RPMSG, notifyid=0, dfeatures=1, gfeatures=0, status=0,
            vrings=(rt.VdevVring(da0, 16, 8, 0), rt.VdevVring(da1, 16, 8, 1)),
        ),
        rt.Trace(da=0x200C7400, len=0xC00, name="Zephyr_log"),
    ]  # fmt: skip


def test_roundtrip_seed_table() -> None:
    raw = rt.build(seed_entries())
    t = rt.parse(raw + bytes(64))
    assert t.ver == 1
    (vdev,) = t.vdevs
    assert vdev.id == 7 and vdev.dfeatures == 1 and vdev.status == 0
    assert [v.da for v in vdev.vrings] == [0x200C8000, 0x200C9000]
    assert [v.notifyid for v in vdev.vrings] == [0, 1]
    assert vdev.offset == 16 + 8
    assert vdev.status_offset == vdev.offset + 24
    assert raw[vdev.status_offset] == 0
    (trace,) = t.traces
    assert trace.name == "Zephyr_log" and trace.da == 0x200C7400
    assert t.size == len(raw)
    assert t.warnings == ()


def test_every_standard_type_and_vendor() -> None:
    entries: list[rt.Entry] = [
        rt.Carveout(da=0x1000, pa=0x2000, len=0x100, flags=3, name="carve"),
        rt.Devmem(da=0x3000, pa=0x4000, len=0x200, name="dev"),
        rt.Trace(da=0x5000, len=0x40, name="log"),
        rt.Vdev(
            id=7, notifyid=2, dfeatures=1, gfeatures=0, status=0,
            vrings=(rt.VdevVring(0x100, 16, 4, 0),), config=b"\x01\x02\x03",
        ),
        rt.Opaque(type=200, data=b"vendor!!"),
    ]  # fmt: skip
    t = rt.parse(rt.build(entries))
    kinds = [type(e).__name__ for e in t.entries]
    assert kinds == ["Carveout", "Devmem", "Trace", "Vdev", "Opaque"]
    c = t.entries[0]
    assert isinstance(c, rt.Carveout) and (c.da, c.pa, c.len, c.flags, c.name) == (0x1000, 0x2000, 0x100, 3, "carve")
    v = t.entries[3]
    assert isinstance(v, rt.Vdev) and v.config == b"\x01\x02\x03" and len(v.vrings) == 1
    o = t.entries[4]
    assert isinstance(o, rt.Opaque) and o.type == 200 and o.data == b"vendor!!"


def test_unknown_type_is_kept_with_a_warning() -> None:
    t = rt.parse(rt.build([rt.Opaque(type=7, data=b"abcd")]))
    assert isinstance(t.entries[0], rt.Opaque)
    assert "unknown resource type 7" in t.warnings[0]


def test_name_without_nul_and_undecodable() -> None:
    raw = bytearray(rt.build([rt.Trace(da=0, len=4, name="x")]))
    off = 16 + 4 + 4 + 12
    raw[off : off + 32] = b"\xff" * 32
    (tr,) = rt.parse(raw).traces
    assert tr.name == "\\xff" * 32


@pytest.mark.parametrize(
    "mutate, error, text",
    [
        (lambda b: b[:8], rt.TableTruncated, "shorter than its 16-byte header"),
        (lambda b: struct.pack("<I", 0) + b[4:], rt.TableNotReady, "version is 0"),
        (lambda b: struct.pack("<I", 2) + b[4:], rt.TableNotReady, "version is 2"),
        (lambda b: b[:4] + struct.pack("<I", 100000) + b[8:], rt.TableTruncated, "entry offsets do not fit"),
        (lambda b: b[:16] + struct.pack("<I", 8) + b[20:], rt.BadEntryOffset, "outside the table body"),
        (lambda b: b[:16] + struct.pack("<I", 0x10000) + b[20:], rt.BadEntryOffset, "outside the table body"),
        (lambda b: b[:16] + struct.pack("<I", 26) + b[20:], rt.BadEntryOffset, "not 4-byte aligned"),
        (lambda b: b[:40], rt.TableTruncated, "vdev"),
        (lambda b: b[:24 + 28 + 20], rt.TableTruncated, "2 vrings"),
        (lambda b: b[:24 + 20] + struct.pack("<I", 0x1000) + b[24 + 24:], rt.TableTruncated, "config"),
        (lambda b: b[:-10], rt.TableTruncated, "trace"),
    ],
    ids=[
        "short-header", "ver-0", "ver-2", "num-huge", "offset-in-header", "offset-past-end",
        "offset-misaligned", "vdev-truncated", "vrings-truncated", "config-len-huge", "trace-truncated",
    ],
)  # fmt: skip
def test_malformed_tables(mutate, error, text) -> None:
    entries = seed_entries()
    if "vdev" in text or "vrings" in text or "config" in text:
        entries = entries[:1]  # the vdev alone, so that it is the entry that runs out
    raw = rt.build(entries)
    with pytest.raises(error, match=text):
        rt.parse(mutate(raw))


def test_errors_are_value_errors_with_offsets() -> None:
    raw = rt.build(seed_entries()[:1])[:40]
    with pytest.raises(rt.TableError) as ei:
        rt.parse(raw)
    assert ei.value.offset == 20  # header (16) + one offset (4)
    assert isinstance(ei.value, ValueError)


def test_carveout_and_devmem_truncated() -> None:
    for cls in (rt.Carveout, rt.Devmem):
        raw = rt.build([cls(da=0, pa=0, len=1, name="c")])
        with pytest.raises(rt.TableTruncated, match="carveout|devmem"):
            rt.parse(raw[:-1])


def test_name_too_long_refused_by_builder() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        rt.build([rt.Trace(da=0, len=1, name="x" * 32)])
