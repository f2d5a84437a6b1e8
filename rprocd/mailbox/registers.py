"""A mailbox described in the config: register programs for start, ring, ack and stop.

Enough for the simple doorbells that have no built-in driver, e.g. the Xilinx
ZynqMP IPI that OpenAMP's Linux user-space demo drives through UIO::

    start = [ { op = "write", offset = 0x18, value = 0x01000000 } ]   # IER
    ring  = [ { op = "write", offset = 0x00, value = 0x01000000 } ]   # TRIG
    ack   = [ { op = "read",  offset = 0x10 },                        # ISR ...
              { op = "write", offset = 0x10, value = "{last}" } ]    # ... write-1-to-clear
    stop  = [ { op = "write", offset = 0x1c, value = 0x01000000 } ]   # IDR

Steps (:class:`~rprocd.config.RegStep`):

``write``  one store of ``value`` (no read: safe for FIFOs and W1C registers);
           with ``mask``, a read-modify-write of the masked bits instead.
``set`` / ``clear``  read-modify-write ``|= value`` / ``&= ~value``: only for
           plain control registers.
``read``   one load; ``{last}`` is the loaded value ``& mask``.  In ``ack`` the
           first read decides: 0 means the interrupt was not ours (spurious).
``wait``   poll until ``(reg & mask) == value``, at most ``timeout_ms``; in
           ``ring`` a timeout means "still busy" and the ring is coalesced.

Values may be ``{notifyid}`` / ``{word}`` (the word rung) or ``{last}``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from ..config import RegStep
from .base import Registers


class RegisterProgramMailbox:
    """:class:`~rprocd.mailbox.base.MailboxDriver` that runs register programs."""

    def __init__(
        self,
        regs: Mapping[int, Registers],
        *,
        start: Sequence[RegStep] = (),
        ring: Sequence[RegStep] = (),
        ack: Sequence[RegStep] = (),
        stop: Sequence[RegStep] = (),
    ):
        for prog in (start, ring, ack, stop):
            for s in prog:
                if s.map not in regs:
                    raise ValueError(f"register step uses map {s.map}, which is not mapped")
        self.regs = regs
        self.programs = {"start": tuple(start), "ring": tuple(ring), "ack": tuple(ack), "stop": tuple(stop)}
        self.counts = {"busy": 0, "spurious": 0, "timeouts": 0}

    def run(self, name: str, word: int = 0) -> tuple[bool, int | None]:
        """Run one program; returns (completed, the first value read)."""
        last = 0
        first: int | None = None
        for s in self.programs[name]:
            r = self.regs[s.map]
            full = (1 << s.width) - 1
            value = (last if s.value == "{last}" else word) if isinstance(s.value, str) else s.value
            value &= full
            if s.op == "write":
                if s.mask is None:
                    r.write(s.offset, value, s.width)
                else:
                    old = r.read(s.offset, s.width)
                    r.write(s.offset, (old & ~s.mask & full) | (value & s.mask), s.width)
            elif s.op == "set":
                r.write(s.offset, r.read(s.offset, s.width) | value, s.width)
            elif s.op == "clear":
                r.write(s.offset, r.read(s.offset, s.width) & ~value & full, s.width)
            elif s.op == "read":
                last = r.read(s.offset, s.width) & (full if s.mask is None else s.mask)
                if first is None:
                    first = last
            elif s.op == "wait":
                mask = full if s.mask is None else s.mask
                deadline = time.monotonic() + s.timeout_ms / 1000
                while (r.read(s.offset, s.width) & mask) != value:
                    if time.monotonic() >= deadline:
                        self.counts["timeouts"] += 1
                        return False, first
            else:  # pragma: no cover - config validates ops
                raise ValueError(f"unknown register op {s.op!r}")
        return True, first

    def start(self) -> None:
        self.run("start")

    def ring(self, word: int) -> bool:
        ok, _ = self.run("ring", word)
        if not ok:
            self.counts["busy"] += 1
        return ok

    def on_interrupt(self) -> list[int]:
        _, first = self.run("ack")
        if first is None:
            return [0]  # nothing to read: every interrupt is a ring
        if first == 0:
            self.counts["spurious"] += 1
            return []
        return [first]

    def stop(self) -> None:
        self.run("stop")

    def stats(self) -> dict[str, int]:
        return dict(self.counts)
