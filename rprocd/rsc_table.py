"""The remoteproc resource table: parse, validate and build (sans-I/O).

Layout as in Linux ``include/linux/remoteproc.h`` and OpenAMP
``remoteproc.h`` (version 1, little-endian, packed)::

    struct resource_table { u32 ver; u32 num; u32 reserved[2]; u32 offset[num]; }
    struct fw_rsc_hdr     { u32 type; u8 data[]; }

The table is untrusted input written by the remote.  :func:`parse` works on a
snapshot (``bytes``) and either returns a fully checked :class:`ResourceTable`
or raises one :class:`TableError` subclass that says exactly what is wrong.
Offsets recorded in the entries are relative to the table start, so a caller
adds the table's physical address to reach a field in shared memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

RSC_CARVEOUT = 0
RSC_DEVMEM = 1
RSC_TRACE = 2
RSC_VDEV = 3
RSC_VENDOR_START = 128
RSC_VENDOR_END = 512

FW_RSC_ADDR_ANY = 0xFFFFFFFF
VIRTIO_ID_RPMSG = 7
VIRTIO_RPMSG_F_NS = 0  # feature bit number

# virtio status bits (legacy)
VIRTIO_CONFIG_S_ACKNOWLEDGE = 1
VIRTIO_CONFIG_S_DRIVER = 2
VIRTIO_CONFIG_S_DRIVER_OK = 4
VIRTIO_CONFIG_S_FEATURES_OK = 8
VIRTIO_CONFIG_S_NEEDS_RESET = 0x40
VIRTIO_CONFIG_S_FAILED = 0x80

HEADER = struct.Struct("<II8x")  # ver, num, reserved[2]
_HDR = struct.Struct("<I")
_CARVEOUT = struct.Struct("<IIIII32s")  # da pa len flags reserved name (also devmem)
_TRACE = struct.Struct("<III32s")  # da len reserved name
_VDEV = struct.Struct("<IIIIIBB2x")  # id notifyid dfeatures gfeatures config_len status num_of_vrings
_VRING = struct.Struct("<IIIII")  # da align num notifyid pa/reserved

VDEV_GFEATURES_OFF = 4 + 12  # from the entry start (type header included)
VDEV_STATUS_OFF = 4 + 20
VDEV_VRINGS_OFF = 4 + _VDEV.size
VRING_SIZE = _VRING.size
NAME_LEN = 32


class TableError(ValueError):
    """The resource table is malformed.  ``offset`` points at the culprit."""

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message if offset is None else f"{message} (table offset {offset:#x})")
        self.offset = offset


class TableNotReady(TableError):
    """``ver`` is not 1: the remote has not finished writing its table."""


class TableTruncated(TableError):
    """A header, offset array or entry runs past the end of the table."""


class BadEntryOffset(TableError):
    """An entry offset points inside the header, past the end, or is misaligned."""


class BadEntry(TableError):
    """An entry's own fields are inconsistent (e.g. a vdev's config runs out)."""


def _name(raw: bytes) -> str:
    """Decode a fixed 32-byte name field; bytes after the first NUL are ignored."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True)
class Carveout:
    da: int
    pa: int
    len: int
    flags: int = 0
    name: str = ""
    offset: int = 0
    type: int = RSC_CARVEOUT


@dataclass(frozen=True, slots=True)
class Devmem:
    da: int
    pa: int
    len: int
    flags: int = 0
    name: str = ""
    offset: int = 0
    type: int = RSC_DEVMEM


@dataclass(frozen=True, slots=True)
class Trace:
    da: int
    len: int
    name: str = ""
    offset: int = 0
    type: int = RSC_TRACE


@dataclass(frozen=True, slots=True)
class VdevVring:
    da: int
    align: int
    num: int
    notifyid: int
    pa: int = 0
    offset: int = 0  # of this vring descriptor within the table


@dataclass(frozen=True, slots=True)
class Vdev:
    id: int
    notifyid: int
    dfeatures: int
    gfeatures: int
    status: int
    vrings: tuple[VdevVring, ...]
    config: bytes = b""
    offset: int = 0
    type: int = RSC_VDEV

    @property
    def status_offset(self) -> int:
        return self.offset + VDEV_STATUS_OFF

    @property
    def gfeatures_offset(self) -> int:
        return self.offset + VDEV_GFEATURES_OFF


@dataclass(frozen=True, slots=True)
class Opaque:
    """A vendor entry (type 128..512) or a type this version does not know.

    Entries carry no length, so ``data`` runs to the next entry or the end of
    the table snapshot.
    """

    type: int
    data: bytes = b""
    offset: int = 0


Entry = Carveout | Devmem | Trace | Vdev | Opaque


@dataclass(frozen=True, slots=True)
class ResourceTable:
    ver: int
    entries: tuple[Entry, ...]
    size: int  # bytes covered: header, offsets and every entry's fixed part
    warnings: tuple[str, ...] = field(default=())

    def of_type(self, cls: type) -> list:
        return [e for e in self.entries if isinstance(e, cls)]

    @property
    def vdevs(self) -> list[Vdev]:
        return [e for e in self.entries if isinstance(e, Vdev)]

    @property
    def traces(self) -> list[Trace]:
        return [e for e in self.entries if isinstance(e, Trace)]


def read_version(raw: bytes) -> int:
    return _HDR.unpack_from(raw, 0)[0] if len(raw) >= 4 else -1


def parse(raw: bytes | bytearray | memoryview) -> ResourceTable:
    """Parse and check a table snapshot; raise a :class:`TableError` if it is bad."""
    raw = bytes(raw)
    size = len(raw)
    if size < HEADER.size:
        raise TableTruncated(f"table of {size} bytes is shorter than its {HEADER.size}-byte header")
    ver, num = HEADER.unpack_from(raw, 0)
    if ver != 1:
        raise TableNotReady(f"table version is {ver}, not 1 (not written yet, or not a table)")
    offsets_end = HEADER.size + 4 * num
    if num > (size - HEADER.size) // 4:
        raise TableTruncated(f"{num} entry offsets do not fit in a {size}-byte table")
    offsets = struct.unpack_from(f"<{num}I", raw, HEADER.size)
    for i, off in enumerate(offsets):
        if off < offsets_end or off + 4 > size:
            raise BadEntryOffset(f"entry {i} offset {off:#x} is outside the table body [{offsets_end:#x}, {size:#x})")
        if off % 4:
            raise BadEntryOffset(f"entry {i} offset {off:#x} is not 4-byte aligned")
    ordered = sorted(set(offsets))
    entries: list[Entry] = []
    warnings: list[str] = []
    end = offsets_end
    for i, off in enumerate(offsets):
        (rtype,) = _HDR.unpack_from(raw, off)
        body = off + 4

        def need(n: int, what: str, i: int = i, off: int = off, body: int = body) -> None:
            if body + n > size:
                raise TableTruncated(f"entry {i} ({what}) needs {n} bytes, table ends first", off)

        entry: Entry
        if rtype in (RSC_CARVEOUT, RSC_DEVMEM):
            need(_CARVEOUT.size, "carveout" if rtype == RSC_CARVEOUT else "devmem")
            da, pa, ln, flags, _res, name = _CARVEOUT.unpack_from(raw, body)
            cls = Carveout if rtype == RSC_CARVEOUT else Devmem
            entry = cls(da=da, pa=pa, len=ln, flags=flags, name=_name(name), offset=off)
            stop = body + _CARVEOUT.size
        elif rtype == RSC_TRACE:
            need(_TRACE.size, "trace")
            da, ln, _res, name = _TRACE.unpack_from(raw, body)
            entry = Trace(da=da, len=ln, name=_name(name), offset=off)
            stop = body + _TRACE.size
        elif rtype == RSC_VDEV:
            need(_VDEV.size, "vdev")
            vid, notifyid, dfeat, gfeat, cfg_len, status, nvr = _VDEV.unpack_from(raw, body)
            vr_off = body + _VDEV.size
            need(_VDEV.size + nvr * _VRING.size + cfg_len, f"vdev with {nvr} vrings and {cfg_len}-byte config")
            vrings = []
            for k in range(nvr):
                at = vr_off + k * _VRING.size
                da, align, vnum, vnotify, vpa = _VRING.unpack_from(raw, at)
                vrings.append(VdevVring(da, align, vnum, vnotify, vpa, offset=at))
            cfg_off = vr_off + nvr * _VRING.size
            entry = Vdev(
                id=vid,
                notifyid=notifyid,
                dfeatures=dfeat,
                gfeatures=gfeat,
                status=status,
                vrings=tuple(vrings),
                config=raw[cfg_off : cfg_off + cfg_len],
                offset=off,
            )
            stop = cfg_off + cfg_len
        else:
            nxt = next((o for o in ordered if o > off), size)
            entry = Opaque(type=rtype, data=raw[body:nxt], offset=off)
            stop = body
            if not RSC_VENDOR_START <= rtype <= RSC_VENDOR_END:
                warnings.append(f"entry {i}: unknown resource type {rtype}, ignored")
        entries.append(entry)
        end = max(end, stop)
    return ResourceTable(ver=ver, entries=tuple(entries), size=end, warnings=tuple(warnings))


def _pack_name(name: str) -> bytes:
    raw = name.encode()
    if len(raw) >= NAME_LEN:
        raise ValueError(f"name {name!r} does not fit in {NAME_LEN - 1} bytes")
    return raw


def pack_entry(e: Entry) -> bytes:
    """The bytes of one entry, type header included."""
    if isinstance(e, (Carveout, Devmem)):
        return _HDR.pack(e.type) + _CARVEOUT.pack(e.da, e.pa, e.len, e.flags, 0, _pack_name(e.name))
    if isinstance(e, Trace):
        return _HDR.pack(RSC_TRACE) + _TRACE.pack(e.da, e.len, 0, _pack_name(e.name))
    if isinstance(e, Vdev):
        out = _HDR.pack(RSC_VDEV) + _VDEV.pack(
            e.id, e.notifyid, e.dfeatures, e.gfeatures, len(e.config), e.status, len(e.vrings)
        )
        for v in e.vrings:
            out += _VRING.pack(v.da, v.align, v.num, v.notifyid, v.pa)
        out += e.config
        return out + b"\0" * (-len(out) % 4)
    return _HDR.pack(e.type) + e.data + b"\0" * (-len(e.data) % 4)


def build(entries: list[Entry] | tuple[Entry, ...], ver: int = 1) -> bytes:
    """A version-``ver`` table holding ``entries`` in order (offsets computed)."""
    bodies = [pack_entry(e) for e in entries]
    off = HEADER.size + 4 * len(bodies)
    offsets = []
    for b in bodies:
        offsets.append(off)
        off += len(b)
    return HEADER.pack(ver, len(bodies)) + struct.pack(f"<{len(offsets)}I", *offsets) + b"".join(bodies)
