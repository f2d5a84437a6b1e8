"""Sequence-numbered traffic and the bookkeeping to account for every message (issue 4 tests).

* :class:`Client` talks to one endpoint socket across reconnections (the
  endpoint goes away and comes back when the remote or the daemon restarts)
  and keeps what it received per connection;
* :func:`read_record` parses the simulated remote's ``--record`` file
  (:mod:`rprocd.sim.record`) into processes and sessions;
* :func:`stats`, :func:`endpoint_stats` read the daemon's counters from its
  control socket; :func:`host_progress` reads, from the board's memory file,
  how far the host got through vring0.

Every wait has a deadline; nothing here sleeps to let time pass except the
short poll intervals of those waits.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rprocd.client import Control
from rprocd.layout import TCC807X
from rprocd.vring import vring_offsets

SEQ = struct.Struct("<I")
ECHO_TAG = b"echo"
VRING_NUM = 8  # the simulated remote's rings
VRING_ALIGN = 16


def seq_of(data: bytes) -> int:
    return int(SEQ.unpack_from(data)[0])


def echo_payload(seq: int) -> bytes:
    return SEQ.pack(seq) + ECHO_TAG


# -- clients ---------------------------------------------------------------------------------


class Client(threading.Thread):
    """One endpoint's client, in a thread, reconnecting whenever the endpoint comes back.

    ``echo``: send sequence-numbered records (at most ``window`` unanswered in
    the current connection) and expect them back.  ``request``: a record to
    send when a connection opens (every connection, or only the first).
    ``received[k]`` holds the sequence numbers read on connection ``k``.
    """

    def __init__(
        self,
        path: Path,
        *,
        echo: bool = False,
        window: int = 16,
        request: bytes | None = None,
        request_every_connection: bool = True,
    ):
        super().__init__(daemon=True, name=f"client-{path.name}")
        self.path = path
        self.echo = echo
        self.window = window
        self.request = request
        self.request_every_connection = request_every_connection
        self.received: list[list[int]] = []
        self.sent: list[int] = []  # echo: every sequence number written (the kernel took the record)
        self.sending = threading.Event()
        if echo:
            self.sending.set()
        self.connected = threading.Event()
        self.error: BaseException | None = None
        self._quit = threading.Event()
        self._next = 0

    @property
    def connections(self) -> int:
        return len(self.received)

    def current(self) -> list[int]:
        return self.received[-1] if self.received else []

    def all_received(self) -> list[int]:
        return [s for conn in self.received for s in conn]

    def stop(self) -> None:
        self._quit.set()
        self.join(10)

    def run(self) -> None:
        try:
            while not self._quit.is_set():
                sock = self._connect()
                if sock is None:
                    return
                with sock:
                    self._serve(sock)
        except BaseException as e:  # noqa: BLE001 (reported to the test through .error)
            self.error = e

    def _connect(self) -> socket.socket | None:
        while not self._quit.is_set():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                s.connect(str(self.path))
            except OSError as e:
                s.close()
                if e.errno not in (errno.ENOENT, errno.ECONNREFUSED):
                    raise
                time.sleep(0.005)
                continue
            s.setblocking(False)
            return s
        return None

    def _serve(self, s: socket.socket) -> None:
        got: list[int] = []
        first = not self.received
        self.received.append(got)
        self.connected.set()
        if self.request is not None and (first or self.request_every_connection):
            s.send(self.request)  # a fresh connection has room for one record
        outstanding = 0
        poller = select.poll()
        mask = 0
        while not self._quit.is_set():
            want_write = self.echo and self.sending.is_set() and outstanding < self.window
            new_mask = select.POLLIN | (select.POLLOUT if want_write else 0)
            if new_mask != mask:
                if mask:
                    poller.modify(s, new_mask)
                else:
                    poller.register(s, new_mask)
                mask = new_mask
            for _fd, ev in poller.poll(50):
                if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    n = self._drain(s, got)
                    if n < 0:
                        return  # the endpoint went away
                    outstanding = max(0, outstanding - n)
                if ev & select.POLLOUT and want_write:
                    while outstanding < self.window:
                        try:
                            s.send(echo_payload(self._next))
                        except BlockingIOError:
                            break
                        except (ConnectionResetError, BrokenPipeError):
                            # the daemon died: what it had already handed over is still ours to read
                            while self._drain(s, got) >= 0:
                                pass
                            return
                        self.sent.append(self._next)
                        self._next += 1
                        outstanding += 1

    def _drain(self, s: socket.socket, got: list[int]) -> int:
        """Read every queued record; how many, or -1 at end-of-file (after reading the rest)."""
        n = 0
        while True:
            try:
                data = s.recv(1024)
            except BlockingIOError:
                return n
            except ConnectionResetError:
                # Linux reports a dead peer that left records of ours unread with one ECONNRESET,
                # *before* the records it had sent us: read on until end-of-file
                continue
            if not data:  # no record of ours is empty: this is the end of the connection
                self.connected.clear()
                return -1
            got.append(seq_of(data))
            n += 1


# -- the remote's record ---------------------------------------------------------------------


@dataclass(frozen=True)
class RecMsg:
    ept: str
    data: bytes
    idx: int  # index of the used entry that published it (16 bits)
    line: int  # 0-based line of the record file

    @property
    def seq(self) -> int:
        return seq_of(self.data)


@dataclass
class RecSession:
    rx: list[RecMsg] = field(default_factory=list)
    tx: list[RecMsg] = field(default_factory=list)
    end: str | None = None

    def rx_seqs(self, ept: str) -> list[int]:
        return [m.seq for m in self.rx if m.ept == ept]

    def tx_seqs(self, ept: str) -> list[int]:
        return [m.seq for m in self.tx if m.ept == ept]


@dataclass
class RecProcess:
    pid: int
    sessions: list[RecSession] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)


def read_record(path: Path) -> list[RecProcess]:
    """The record file, one :class:`RecProcess` per ``boot`` line."""
    procs: list[RecProcess] = []
    text = path.read_text()
    lines = text.split("\n")[:-1]  # the last piece is "" or a line the remote is still writing: not read yet
    for n, line in enumerate(lines):
        word, _, rest = line.partition(" ")
        if word == "boot":
            procs.append(RecProcess(int(rest)))
        elif word == "session":
            procs[-1].sessions.append(RecSession())
        elif word == "end":
            procs[-1].sessions[-1].end = rest
        elif word == "fault":
            procs[-1].faults.append(rest)
        elif word in ("rx", "tx"):
            ept, data, idx = rest.split(" ")
            sess = procs[-1].sessions[-1]
            msg = RecMsg(ept, b"" if data == "-" else bytes.fromhex(data), int(idx), n)
            (sess.rx if word == "rx" else sess.tx).append(msg)
        else:
            raise AssertionError(f"unexpected record line {line!r}")
    return procs


def count_lines(path: Path, prefix: str = "") -> int:
    """Lines of the record (starting with ``prefix``), cheaply."""
    data = path.read_bytes()
    if not prefix:
        return data.count(b"\n")
    return data.count(b"\n" + prefix.encode()) + data.startswith(prefix.encode())


# -- the daemon and the board ------------------------------------------------------------------


def stats(runtime: Path) -> dict[str, Any]:
    """The daemon's ``stats`` for remote ``main`` (control socket)."""
    with Control(runtime, timeout=5) as c:
        (remote,) = c.request("stats", remote="main")["remotes"]
    return dict(remote)


def endpoint_stats(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    for e in snapshot.get("endpoints", []):
        if e["name"] == name:
            return dict(e)
    raise KeyError(name)


def host_progress(board: Path) -> tuple[int, int]:
    """vring0's ``used.idx`` (what the remote published) and ``avail.used_event`` (what the host accepted)."""
    pa = TCC807X.vrings[0].pa
    avail, used, _size = vring_offsets(pa, VRING_NUM, VRING_ALIGN)
    base = pa - TCC807X.window.pa
    with open(board / "memory", "rb") as f:
        f.seek(base)
        ring = f.read(used + 4)
    used_idx = struct.unpack_from("<H", ring, used + 2)[0]
    used_event = struct.unpack_from("<H", ring, avail + 4 + 2 * VRING_NUM)[0]
    return used_idx, used_event


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks (``/proc/<pid>/stat``)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])
