"""The QEMU bed's mailbox bridge (hwtest/bridge.py) never blocks on QEMU.

QEMU takes the bridge's characters only while the guest empties the PL011's
receive FIFO (the chardev's can_receive), and a guest write to UARTDR waits
in QEMU until the bridge reads it: hw/char/pl011.c writes with
``qemu_chr_fe_write_all``, and chardev/char.c ``qemu_chr_write`` retries
EAGAIN with ``g_usleep`` on the vCPU thread.  A bridge that blocks in a send
then freezes the guest (CI's run of the bed hung that way).  Here "QEMU" is a
Unix stream server that reads nothing until the test says so, as that guest
did: the bridge must go on carrying the guest's rings to the remote, and the
remote's rings coalesce into the one character QEMU has not taken, as a
doorbell's pending flag does, and a ring after QEMU took it gets a new one.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
import time
from pathlib import Path

from rprocd.board import VirtualBoard
from tests.conftest import REPO, Procs, wait_for


def pending(sock: socket.socket) -> int:
    """Bytes queued for reading (FIONREAD)."""
    buf = bytearray(4)
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    return int(struct.unpack("i", buf)[0])


def test_the_bridge_carries_guest_rings_while_qemu_reads_none(procs: Procs, tmp_path: Path) -> None:
    board_dir, chardev = tmp_path / "board", tmp_path / "mbox.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(chardev))
    srv.listen(1)
    srv.settimeout(20)
    bridge = procs.start(
        str(REPO / "hwtest" / "bridge.py"), "--board", str(board_dir), "--chardev", str(chardev), log="bridge.log"
    )
    qemu, _ = srv.accept()  # the bridge has bound host.sock before it connects
    remote = VirtualBoard(board_dir, 0, 0, role="remote")
    remote.bind()
    # The remote rings, paced so that few find the bridge's datagram queue full (those count as not sent).
    rings = 0
    for _ in range(600):
        rings += remote.ring(1)
        time.sleep(0.002)
    # The guest rings: the bridge reads it and passes it to the remote.  (It takes the
    # remote's rings before the guest's in each pass: from here on it has taken them all.)
    qemu.sendall(b"\x05")
    wait_for(remote.drain, timeout=10, what="the guest's ring to reach the remote")
    # Coalesced: one character stands for them all while QEMU takes none (the first
    # bridge had queued ~280 by now, and then blocked in its send).
    assert pending(qemu) == 1
    # QEMU takes the character; the next ring gives a new one.
    qemu.settimeout(10)
    assert qemu.recv(16) == b"\x01"
    rings += remote.ring(1)
    wait_for(lambda: pending(qemu) == 1, timeout=10, what="a character for the ring after QEMU took the last")
    assert procs.stop(bridge) == 0
    log = procs.log("bridge.log")
    assert f"remote->guest {rings}, 2 characters, {rings - 2} coalesced" in log, log
