"""``rprocctl``: the companion tool.  Each command lives in a small module that registers itself."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import __version__

# modules with ``register(subparsers)``; each command sets ``func(args) -> int``
COMMAND_MODULES = ["rprocd.cli.ept_cmds", "rprocd.cli.ctl_cmds", "rprocd.cli.inspect_cmd", "rprocd.cli.sim_cmd"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rprocctl", description="Talk to rprocd and the remote core.")
    p.add_argument("--version", action="version", version=f"rprocctl {__version__}")
    p.add_argument(
        "--runtime-dir",
        default=os.environ.get("RPROCD_RUNTIME_DIR", "/run/rprocd"),
        help="rprocd's runtime directory (default $RPROCD_RUNTIME_DIR or /run/rprocd)",
    )
    p.add_argument("--remote", "-r", default="main", help="remote processor name (default main)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:
        print(f"rprocctl {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
