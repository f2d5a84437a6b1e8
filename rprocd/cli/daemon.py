"""``rprocd``: the daemon's command line (DESIGN.md contract)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from .. import __version__
from ..app import RemoteSpec, serve
from ..backends.sim import open_board
from ..layout import TCC807X


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rprocd", description="RPMsg host in user space.")
    p.add_argument("-c", "--config", metavar="FILE", help="config file (default: built-in tcc807x layout)")
    p.add_argument("--board", metavar="DIR", help="use the virtual board in DIR instead of UIO hardware")
    p.add_argument("--runtime-dir", metavar="DIR", help="where sockets go (default /run/rprocd)")
    p.add_argument("--check", action="store_true", help="validate the config, print the memory map and exit")
    p.add_argument("--log-level", default=None, help="debug, info, warning or error")
    p.add_argument("--version", action="version", version=f"rprocd {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=(args.log_level or "info").upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s"
    )
    runtime = Path(args.runtime_dir or "/run/rprocd")
    if not args.board:
        print("rprocd: UIO hardware backend not configured; use --board DIR", file=sys.stderr)
        return 2
    layout = TCC807X
    spec = RemoteSpec(layout.name, layout, lambda: open_board(args.board, layout))
    try:
        return asyncio.run(serve([spec], runtime))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
