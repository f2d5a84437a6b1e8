"""The bed's remote core: rprocd's simulated remote on the guest's real RAM.

``python3 hwtest/remote.py --board DIR`` runs :class:`rprocd.sim.remote.SimRemote`
unchanged, with the tcc807x layout moved to the bed's base (0x60000000): the
seed's offsets, the bed's addresses (the vrings' ``da`` in the resource table
are guest-physical).  ``DIR/memory`` is the file behind QEMU's second memory
node (``memory-backend-file,share=on``), so this process and the guest share
the same pages; its doorbells are the virtual board's datagrams, which
hwtest/bridge.py turns into the guest's PL011.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rprocd.layout import TCC807X, Layout, Region  # noqa: E402
from rprocd.sim.remote import SimRemote  # noqa: E402

BED_BASE = 0x60000000


def relocate(layout: Layout, base: int) -> Layout:
    """The same layout with every region moved by ``base - window.pa``."""
    delta = base - layout.window.pa

    def mv(r: Region) -> Region:
        return dataclasses.replace(r, pa=r.pa + delta)

    return dataclasses.replace(
        layout,
        window=mv(layout.window),
        table_region=mv(layout.table_region),
        vrings=(mv(layout.vrings[0]), mv(layout.vrings[1])),
        buffers=mv(layout.buffers),
    )


BED = relocate(TCC807X, BED_BASE)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--board", required=True, help="virtual board folder whose memory is QEMU's backend file")
    p.add_argument("--base", type=lambda s: int(s, 0), default=BED_BASE, help="guest-physical base of the window")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="remote: %(levelname)s: %(message)s", stream=sys.stderr)
    remote = SimRemote(args.board, layout=relocate(TCC807X, args.base))
    signal.signal(signal.SIGTERM, lambda *_: remote.request_stop())
    signal.signal(signal.SIGINT, lambda *_: remote.request_stop())
    try:
        remote.run()
    finally:
        snap = remote.snapshot()
        remote.close()
        logging.info("stopped: %s", snap["stats"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
