"""``rprocctl inspect FILE``: decode a resource table from a firmware ELF or a memory dump.

The I/O half of :mod:`rprocd.inspect`: find the table (the ``.resource_table``
section, else the ``resource_table`` symbol, with pyelftools; or an address in
a raw dump), then print the report, the device-tree snippet and the
rprocd.toml section.

A dump with no ``--base``/``--table-*`` options whose size is that of a known
layout's whole window (the virtual board's ``memory`` file, a dump of
``rpmsg_shm``) is read with that layout: its base, table address and window.
Any other dump needs the options, and the error says which.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..inspect import DEFAULT_MAX_TABLE, Hints, Report, analyse
from ..layout import KNOWN_LAYOUTS, TCC807X_MAILBOX, Layout, Region
from .ctl_cmds import Failure, add_json, guarded

SECTION = ".resource_table"
SYMBOL = "resource_table"


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (decimal or 0x...)") from None


def _region(name: str) -> object:
    def parse(text: str) -> Region:
        pa, sep, size = text.partition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"{text!r}: expected PA:SIZE, e.g. 0x200c6000:0x8000")
        return Region(name, _int(pa), _int(size))

    return parse


def table_from_elf(path: Path) -> tuple[int, bytes, str]:
    """(address, bytes, where) of the resource table in a firmware ELF."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            loaded = [s for s in elf.iter_sections() if s["sh_flags"] & 2 and s["sh_type"] != "SHT_NOBITS"]
            # the symbol first: it is exact even when the section starts with padding
            for symtab in elf.iter_sections():
                if not isinstance(symtab, SymbolTableSection):
                    continue
                for sym in symtab.get_symbol_by_name(SYMBOL) or []:
                    addr, size = sym["st_value"], sym["st_size"] or DEFAULT_MAX_TABLE
                    for s in loaded:
                        lo = s["sh_addr"]
                        if lo <= addr < lo + s["sh_size"]:
                            data = s.data()[addr - lo : addr - lo + size]
                            return addr, data, f"ELF {path.name}, symbol {SYMBOL} at {addr:#x} in section {s.name}"
            sec = elf.get_section_by_name(SECTION)
            if sec is not None and sec in loaded and sec["sh_size"]:
                return sec["sh_addr"], sec.data(), f"ELF {path.name}, section {SECTION} at {sec['sh_addr']:#x}"
    except ELFError as e:
        raise Failure(f"{path}: not a readable ELF file: {e}") from None
    raise Failure(f"{path}: no {SECTION} section and no {SYMBOL} symbol with contents (is it the remote's image?)")


def known_layout(size: int) -> tuple[str, Layout] | None:
    """(board, layout) whose whole window is ``size`` bytes (a dump of it, or the virtual board's memory file)."""
    for board, lay in KNOWN_LAYOUTS.items():
        if lay.window.size == size:
            return board, lay
    return None


def table_from_dump(path: Path, data: bytes, args: argparse.Namespace) -> tuple[int, bytes, str, Layout | None]:
    """(address, bytes, where, layout) of the table in a raw dump of physical memory starting at ``--base``.

    ``layout`` is the known layout the dump was read with, when no option said where the table is.
    """
    lay = None
    board = ""
    if args.table_addr is None and args.table_offset is None:
        known = known_layout(len(data))
        if known is not None:
            board, lay = known
        if lay is None:
            sizes = ", ".join(f"{k.window.size:#x} bytes at {k.window.pa:#x} ({b})" for b, k in KNOWN_LAYOUTS.items())
            raise Failure(
                f"{path}: a {len(data):#x}-byte dump is no known layout's window ({sizes}): "
                "give --base ADDR (its first byte's physical address) and --table-addr ADDR or --table-offset OFF"
            )
        if args.base not in (None, lay.window.pa):
            raise Failure(
                f"{path}: --base {args.base:#x} is not the {board} window's {lay.window.pa:#x}, so the table's place "
                "is unknown: give --table-addr ADDR or --table-offset OFF"
            )
    base = args.base if args.base is not None else (lay.window.pa if lay else 0)
    if args.table_addr is not None:
        off = args.table_addr - base
    elif args.table_offset is not None:
        off = args.table_offset
    else:
        assert lay is not None
        off = lay.table_pa - base
    if not 0 <= off < len(data):
        raise Failure(
            f"table at {base + off:#x} is outside the dump ({base:#x}-{base + len(data):#x}); "
            "give --base and --table-addr or --table-offset"
        )
    where = f"dump {path.name} (base {base:#x}), offset {off:#x}"
    if lay is not None:
        where += f": the {board} layout, a {len(data):#x}-byte window"
    return base + off, data[off : off + args.table_size], where, lay


@guarded
def cmd_inspect(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise Failure(f"{path}: {e.strerror}") from None
    lay = None
    if data[:4] == b"\x7fELF" and not args.raw:
        addr, raw, origin = table_from_elf(path)
    else:
        addr, raw, origin, lay = table_from_dump(path, data, args)
    shm = args.shm if args.shm is not None or lay is None else lay.window
    mailbox = TCC807X_MAILBOX if args.mailbox == "tcc807x" else None
    hints = Hints(name=args.name, rsc_region=args.rsc_region, shm=shm, buffers=args.buffers, mailbox=mailbox)
    rep: Report = analyse(addr, raw, hints, origin=origin)
    if rep.table is None:
        raise Failure(f"{origin}: no usable resource table at {addr:#x}: {rep.error}")
    if args.json:
        json.dump(rep.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(rep.text())
        sys.stdout.write("\nLinux device tree:\n\n" + rep.dts())
        sys.stdout.write("\nrprocd.toml:\n\n" + rep.toml())
    if rep.warnings and args.strict:
        return 3
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="decode a resource table from a firmware ELF or a memory dump; print the memory map",
        description=(
            "Decode and check the remote's resource table (from the .resource_table section or the\n"
            "resource_table symbol of a Zephyr/OpenAMP ELF, or from a raw memory dump), then print\n"
            "the memory map, the device-tree reserved-memory snippet and the rprocd.toml section.\n"
            "Exit status: 0 decoded, 1 no usable table, 3 warnings with --strict."
        ),
        epilog=(
            "examples: rprocctl inspect build/zephyr/zephyr.elf --shm 0x200c6000:0x8000\n"
            "          rprocctl inspect shm.bin --base 0x200c6000 --table-offset 0x3b8\n"
            "          rprocctl inspect .run/board/memory   (a 0x8000-byte window: the tcc807x layout)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="firmware ELF or raw memory dump")
    p.add_argument("--raw", action="store_true", help="treat FILE as a raw dump even if it looks like an ELF")
    p.add_argument(
        "--base",
        type=_int,
        default=None,
        metavar="ADDR",
        help="dump: physical address of its first byte (default: a known layout's, for a dump of its size)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--table-offset", type=_int, metavar="OFF", help="dump: the table's offset in the file")
    g.add_argument("--table-addr", type=_int, metavar="ADDR", help="dump: the table's physical address")
    p.add_argument(
        "--table-size", type=_int, default=DEFAULT_MAX_TABLE, metavar="N", help="dump: bytes to read (0x1000)"
    )
    p.add_argument(
        "--rsc-region", type=_region("rsc-table"), metavar="PA:SIZE", help="reserved region holding the table"
    )
    p.add_argument("--shm", type=_region("rpmsg_shm"), metavar="PA:SIZE", help="the whole shared window")
    p.add_argument("--buffers", type=_region("vdev0buffer"), metavar="PA:SIZE", help="the rpmsg buffer pool")
    p.add_argument("--name", default="main", help="remote name for the rprocd.toml section (default main)")
    p.add_argument(
        "--mailbox",
        choices=("tcc807x", "none"),
        default="tcc807x",
        help="the SoC mailbox node the device-tree snippet hands to UIO (default tcc807x; none: leave it out)",
    )
    p.add_argument("--strict", action="store_true", help="exit with status 3 when there are warnings")
    add_json(p)
    p.set_defaults(func=cmd_inspect)
