"""The far side of the bed's mailbox: QEMU's PL011 <-> the virtual board's doorbells.

The guest's mailbox is virt's second PL011; its chardev is a Unix stream socket
that QEMU serves (``-chardev socket,server=on``).  This process is the
mailbox's other end, the part of a real mailbox that sits on the remote core's
side of the bus:

* a character the guest writes to UARTDR (rprocd's ``ring`` program) becomes
  one 4-byte doorbell datagram to ``D/remote.sock`` (the word is the
  character: the vring's notifyid);
* a doorbell datagram the remote sends to ``D/host.sock`` becomes one
  character into the PL011's receive path, which raises its RX interrupt
  (GIC SPI 8) to uio_pdrv_genirq.  Rings that queue up while one character
  waits are coalesced into it: a ring is a hint (shared/sim-board.md), and
  the receiver looks at every vring anyway.

Usage: bridge.py --board DIR --chardev SOCK
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rprocd.board import VirtualBoard  # noqa: E402


def connect(path: str, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--board", required=True)
    p.add_argument("--chardev", required=True)
    args = p.parse_args(argv)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    board = VirtualBoard(args.board, 0, 0, role="host")
    dgram = board.bind()
    uart = connect(args.chardev, 30)
    to_guest = to_remote = 0
    while not stop:
        try:
            r, _, _ = select.select([uart, dgram], [], [], 0.5)
        except InterruptedError:
            continue
        if uart in r:
            data = uart.recv(4096)
            if not data:
                break  # QEMU exited
            for ch in data:
                board.ring(ch)
                to_remote += 1
        if dgram in r and board.drain():
            uart.sendall(b"\x01")
            to_guest += 1
    print(f"bridge: rings guest->remote {to_remote}, remote->guest {to_guest} ({board.stats})", file=sys.stderr)
    board.close()
    uart.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
