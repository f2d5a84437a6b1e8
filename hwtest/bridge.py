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
  (GIC SPI 8) to uio_pdrv_genirq.

Rings coalesce, as a real doorbell's pending flag does: while a character
that QEMU has not yet taken waits in the socket (``SIOCOUTQ`` > 0), a new ring
adds none.  That character reaches the guest after the ring, and the guest
looks at every vring on each interrupt (a ring is a hint, shared/sim-board.md).
So at most one character waits here and one in the PL011.

And this process never blocks on QEMU.  QEMU takes our characters only as
fast as the guest empties the PL011's receive FIFO (the chardev's
can_receive), while the guest's write to UARTDR waits in QEMU until we read
it: hw/char/pl011.c writes with ``qemu_chr_fe_write_all``, and chardev/char.c
``qemu_chr_write`` retries EAGAIN with ``g_usleep`` on the vCPU thread.  The
first bridge sent a character per ring with a blocking ``sendall``: in a CI
run, once about 280 of them (212 KB of socket buffer) were queued, the vCPU
sat in that loop, the bridge in ``sendall``, and the guest stopped (gdb on
QEMU: g_usleep <- qemu_chr_write on the vCPU thread).

Usage: bridge.py --board DIR --chardev SOCK
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import termios
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


def unread(sock: socket.socket) -> int:
    """Bytes we sent that QEMU has not read yet (``SIOCOUTQ``: AF_UNIX unix_outq_len)."""
    buf = bytearray(4)
    fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf)
    return int(struct.unpack("i", buf)[0])


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
    uart.setblocking(False)
    to_guest = to_remote = coalesced = 0
    owed = False  # a ring that found the socket full (it never is: one character at most waits)
    while not stop:
        try:
            r, w, _ = select.select([uart, dgram], [uart] if owed else [], [], 0.5)
        except InterruptedError:
            continue
        # The remote's rings first: when a guest ring read in this pass reaches the remote,
        # every ring the remote sent before the select returned has been taken.
        n = board.drain() if dgram in r else 0
        if n and (owed or unread(uart)):
            coalesced += n  # the waiting character reaches the guest after these rings
        elif n:
            owed, coalesced = True, coalesced + n - 1
        if uart in r:
            try:
                data = uart.recv(4096)
            except BlockingIOError:
                data = None
            if data == b"":
                break  # QEMU exited
            for ch in data or b"":
                board.ring(ch)
                to_remote += 1
        if owed and (uart in w or n):
            try:
                uart.send(b"\x01")
            except BlockingIOError:
                continue  # still owed: sent once the socket is writable
            owed, to_guest = False, to_guest + 1
    print(
        f"bridge: rings guest->remote {to_remote}; remote->guest {board.stats.received},"
        f" {to_guest} characters, {coalesced} coalesced",
        file=sys.stderr,
    )
    board.close()
    uart.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
