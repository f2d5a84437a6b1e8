"""``rprocctl sim``: the simulated remote core (shared/sim-board.md)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sim",
        help="run the simulated remote core on a virtual board",
        description="Play the Zephyr/OpenAMP remote on the virtual board in DIR.",
        epilog="example: rprocctl sim --board /tmp/board --delay-us 200",
    )
    from ..sim import remote

    remote.add_arguments(p)
    p.set_defaults(func=remote.run_from_args)
