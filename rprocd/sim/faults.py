"""``--fault KIND[,KIND...]``: a hostile or unreliable remote, for testing the host (test support).

Kinds (``KINDS``):

``corrupt-desc``
    publish a used entry on vring0 whose descriptor id is past the table, or
    whose length is longer than a buffer or shorter than an rpmsg header;
``jump-index``
    move ``used.idx`` of vring0 or vring1 by more than the ring holds;
``hostile-names``
    announce extra echo endpoints (:data:`HOSTILE_NAMES`) whose names hold
    ``/``, ``..``, control characters, bytes that are not UTF-8, MQTT
    wildcards, 32 bytes without a NUL, nothing at all, or a name already taken;
``name-flood``
    announce :data:`FLOOD_COUNT` more echo endpoints, ``flood-0000`` to
    ``flood-4999``, one after the other as fast as vring0 buffers come back
    (what a firmware creating endpoints in a loop does);
``rewrite-table``
    write the boot-time table again under a live session, keeping the status
    byte, and wait for the host to reset us;
``stop-answering``
    stop servicing the rings and reading doorbells, for good (the process
    stays alive until it is stopped);
``restart-random``
    restart (fresh table, status 0), as a crashing firmware would.

Nothing happens before the remote has received and sent ``--fault-after``
messages in all (name service not counted).  From then on ``hostile-names``
and ``name-flood`` are announced in every session, and the other kinds fire at random moments:
each session, and each fault that left the session alive, draws a delay in
:data:`GAP` seconds, after which one of the listed kinds (drawn too) is
injected.  ``--fault-seed`` makes the draws repeatable.

:class:`FaultInjector` is called from the remote's loop between two rounds of
ring work, never from inside one; without ``--fault`` it does not exist.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from .core import ATTACHED, RemoteCore

log = logging.getLogger("rprocd.sim")

KINDS = (
    "corrupt-desc", "jump-index", "hostile-names", "name-flood", "rewrite-table", "stop-answering", "restart-random",
)  # fmt: skip
NAMES_KINDS = ("hostile-names", "name-flood")  # announced once the fault mode is on, not drawn at random
FLOOD_COUNT = 5000
GAP = (0.1, 0.6)  # seconds from a session's start (or a survived fault) to the next fault

HOSTILE_NAMES: tuple[bytes, ...] = (
    b"a/b",
    b"../../escape",
    b"..",
    b".",
    b".hidden",
    b"ctl\x01\x1b[2J\x7fx",
    b"new\nline",
    b"\xff\xfe-not-utf8",
    b"x\xff",
    b"x\\xff",  # decodes (with backslashreplace) to the same text as the one above
    b"#",
    b"+",
    b"sensors/+/#",
    b" spaced out ",
    b"%2F",
    b"N" * 32,  # no NUL within the 32 bytes of the name field
    b"",  # an empty name
    b"rpmsg-tty",  # taken: announced again at another address
)


def parse_kinds(text: str) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")``; ValueError naming an unknown kind."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if not kinds:
        raise ValueError("no fault kind given")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown fault kind {k!r} (kinds: {', '.join(KINDS)})")
    return tuple(dict.fromkeys(kinds))


@dataclass(frozen=True)
class FaultPlan:
    kinds: tuple[str, ...]
    seed: int = 0
    after: int = 0  # messages received + sent before the first fault


class FaultInjector:
    """Decides when to break what, and does it through :class:`RemoteCore`'s fault methods."""

    def __init__(self, plan: FaultPlan, core: RemoteCore):
        self.plan = plan
        self.core = core
        self.rng = random.Random(plan.seed)
        self.timed = tuple(k for k in plan.kinds if k not in NAMES_KINDS)
        self.active = False
        self.stopped = False  # stop-answering fired: the caller stops servicing
        self.injected: dict[str, int] = {}
        self._sessions = -1
        self._due = 0.0

    def _traffic(self) -> int:
        return sum(e.rx_msgs + e.tx_msgs for e in self.core.endpoints)

    def _gap(self, now: float) -> float:
        return now + self.rng.uniform(*GAP)

    def poll(self, now: float) -> float | None:
        """Inject what is due; seconds until something may be due again (None: only after traffic)."""
        core = self.core
        if not self.active:
            if self._traffic() < self.plan.after:
                return None
            self.active = True
            log.warning("fault mode on: %s (seed %d)", ",".join(self.plan.kinds), self.plan.seed)
            if "hostile-names" in self.plan.kinds:
                added = core.add_endpoints(list(HOSTILE_NAMES))
                self._note("hostile-names", f"{len(added)} endpoints from address {added[0].addr}")
            if "name-flood" in self.plan.kinds:
                added = core.add_endpoints([b"flood-%04d" % i for i in range(FLOOD_COUNT)])
                self._note("name-flood", f"{len(added)} endpoints from address {added[0].addr}")
        if not self.timed or self.stopped:
            return None
        if core.stats.sessions != self._sessions:
            self._sessions = core.stats.sessions
            self._due = self._gap(now)
        if now < self._due:
            return self._due - now
        if core.state != ATTACHED:
            return GAP[0]
        if not self._inject(self.rng.choice(self.timed)):
            return 0.01  # not possible right now (no free vring0 buffer): try again soon
        self._due = self._gap(now)
        return None if self.stopped else self._due - now

    def _inject(self, kind: str) -> bool:
        core = self.core
        detail: str | None
        if kind == "corrupt-desc":
            detail = core.corrupt_used(self.rng.choice(("id", "long", "short")))
        elif kind == "jump-index":
            detail = core.jump_used_index(self.rng.randrange(2))
        elif kind == "rewrite-table":
            detail = core.rewrite_table()
        elif kind == "stop-answering":
            self.stopped = True
            detail = "no more ring service until restarted"
        else:
            core.restart("fault: restart-random")
            detail = "fresh table, status 0"
        if detail is None:
            return False
        if kind in ("corrupt-desc", "jump-index"):
            core.kick_host()
        self._note(kind, detail)
        return True

    def _note(self, kind: str, detail: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1
        log.warning("fault: %s: %s", kind, detail)
        if self.core.recorder is not None:
            self.core.recorder.note(f"fault {kind} {detail}")
        self.core.trace_line(f"fault: {kind}: {detail}")
