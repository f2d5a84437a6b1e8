"""The simulated remote core on a virtual board (``rprocctl sim``, ``python -m rprocd.sim.remote``).

:class:`SimRemote` puts :class:`~rprocd.sim.core.RemoteCore` on the board
folder of ``shared/sim-board.md``: it maps ``D/memory``, writes the table,
binds ``D/remote.sock`` and then sleeps in ``poll()`` until a doorbell (or a
short safety timeout, because doorbells may be lost) and services the rings.
It never spins: idle, it wakes a few times a second to look at the status
byte.  ``step()`` does one round without blocking, for tests that want to
drive the remote by hand.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from ..board import VirtualBoard
from ..layout import TCC807X, Layout
from .core import RemoteCore, SimStats
from .faults import KINDS, FaultInjector, FaultPlan, parse_kinds
from .record import Recorder

log = logging.getLogger("rprocd.sim")


class SimRemote:
    """A Zephyr/OpenAMP remote playing on the board in ``board_dir``.

    Construction is the remote's boot: the table is written (status 0) and
    ``remote.sock`` bound before it returns, so a host may attach at once.
    """

    def __init__(
        self,
        board_dir: str | os.PathLike[str],
        layout: Layout = TCC807X,
        delay_us: int = 0,
        any_da: bool = False,
        *,
        faults: FaultPlan | None = None,
        record: str | os.PathLike[str] | None = None,
    ):
        if delay_us < 0:
            raise ValueError("delay_us must be >= 0")
        self.dir = Path(board_dir)
        self.layout = layout
        self.delay_us = delay_us
        self.board = VirtualBoard(board_dir, layout.window.pa, layout.window.size, role="remote")
        self._stop_requested = False
        self.ring_errors = 0
        self._view: memoryview | None = memoryview(self.board.map_memory())
        pace: Callable[[], None] | None = None
        if delay_us:
            delay, sleep = delay_us / 1e6, time.sleep

            def pace() -> None:
                sleep(delay)

        self.recorder = Recorder(record) if record is not None else None
        self.core = RemoteCore(self._view, layout, any_da=any_da, ring=self._ring, pace=pace, recorder=self.recorder)
        self.faults = FaultInjector(faults, self.core) if faults is not None else None
        self.core.boot()
        self.board.bind()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        log.info(
            "remote on board %s: table at %#x, vrings %s, waiting for the host",
            self.dir,
            layout.table_pa,
            "FW_RSC_ADDR_ANY" if any_da else f"{layout.vrings[0].pa:#x}/{layout.vrings[1].pa:#x}",
        )

    def _ring(self, word: int) -> None:
        """Ring the host; a doorbell that cannot be sent is a lost doorbell, never a crash."""
        try:
            self.board.ring(word)  # counts lost (no host) and dropped (queue full) rings itself
        except OSError as e:
            self.ring_errors += 1
            if self.ring_errors <= 3:
                log.warning("doorbell to %s failed: %s", self.board.peer_path, e)

    # -- figures -----------------------------------------------------------------------

    @property
    def stats(self) -> SimStats:
        return self.core.stats

    @property
    def state(self) -> str:
        return self.core.state

    def snapshot(self) -> dict:
        snap = self.core.snapshot()
        snap["doorbell"] = dict(vars(self.board.stats), errors=self.ring_errors)
        return snap

    # -- running ---------------------------------------------------------------------

    def step(self) -> bool:
        """Read the doorbells and do everything that is ready; never blocks.  True if work is left."""
        self.board.drain()
        return self.core.service()

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until :meth:`request_stop` (or ``stop`` is set)."""
        sock = self.board.sock
        assert sock is not None
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        faults = self.faults
        while not self._stop_requested and not (stop is not None and stop.is_set()):
            if faults is not None:
                due = faults.poll(time.monotonic())
                if faults.stopped:
                    self._play_dead(poller, stop)
                    break
            more = self.step()
            timeout = 0.0 if more else self.core.idle_timeout()
            if faults is not None and due is not None:
                timeout = min(timeout, due)
            if stop is not None:
                timeout = min(timeout, 0.1)  # an Event cannot wake poll(); look at it now and then
            if poller.poll(int(timeout * 1000)):
                self._drain_wake()

    def _play_dead(self, poller: select.poll, stop: threading.Event | None) -> None:
        """``stop-answering``: no ring service, no doorbells read, until stopped (no spinning either)."""
        assert self.board.sock is not None
        poller.unregister(self.board.sock.fileno())
        while not self._stop_requested and not (stop is not None and stop.is_set()):
            if poller.poll(100 if stop is not None else -1):
                self._drain_wake()

    def request_stop(self) -> None:
        """Make :meth:`run` return soon; safe from a signal handler or another thread."""
        self._stop_requested = True
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending anyway) or closed

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 64):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        """Close the socket and the pipe; the memory file stays (the table in it too)."""
        self.core.release()
        if self._view is not None:
            self._view.release()
            self._view = None
        self.board.close()
        if self.recorder is not None:
            self.recorder.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> SimRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``rprocctl sim`` / ``python -m rprocd.sim.remote``."""
    parser.add_argument("--board", required=True, metavar="DIR", help="virtual board folder (shared/sim-board.md)")
    parser.add_argument(
        "--delay-us", type=int, default=0, metavar="N", help="sleep N microseconds per message (a slow remote)"
    )
    parser.add_argument(
        "--any-da",
        action="store_true",
        help="put FW_RSC_ADDR_ANY in the vring addresses: the host picks them and writes them back",
    )
    parser.add_argument(
        "--fault",
        metavar="KIND[,KIND...]",
        help=f"test support: misbehave ({', '.join(KINDS)}; see rprocd.sim.faults)",
    )
    parser.add_argument(
        "--fault-seed", type=int, default=None, metavar="N", help="seed for the fault draws (default: random, logged)"
    )
    parser.add_argument(
        "--fault-after",
        type=int,
        default=0,
        metavar="N",
        help="no fault before N messages were received and sent in all (default 0)",
    )
    parser.add_argument(
        "--record",
        metavar="FILE",
        help="test support: append a line to FILE for every message received and sent (see rprocd.sim.record)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (default: info)",
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run the remote until SIGTERM or SIGINT; returns the exit code."""
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "info")).upper(), logging.INFO),
        format="rprocd-sim: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if args.delay_us < 0:
        log.error("--delay-us must be >= 0")
        return 2
    plan = None
    if getattr(args, "fault", None):
        try:
            kinds = parse_kinds(args.fault)
        except ValueError as e:
            log.error("--fault: %s", e)
            return 2
        if args.fault_after < 0:
            log.error("--fault-after must be >= 0")
            return 2
        seed = args.fault_seed if args.fault_seed is not None else random.randrange(1 << 32)
        plan = FaultPlan(kinds, seed, args.fault_after)
        log.warning("faults %s after %d messages, seed %d", ",".join(kinds), plan.after, seed)
    try:
        remote = SimRemote(
            args.board,
            delay_us=args.delay_us,
            any_da=args.any_da,
            faults=plan,
            record=getattr(args, "record", None),
        )
    except (OSError, ValueError) as e:
        log.error("cannot start on board %s: %s", args.board, e)
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        remote.request_stop()

    old: dict[signal.Signals, object] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, on_signal)
    try:
        remote.run()
        # What the host did just before we were told to stop (it detached: status 0, one
        # last doorbell) still counts: serve it, so the final figures include that session's end.
        remote.step()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        remote.close()  # ends a session still open ("shutting down"); counted below
    log.info("stopped: %s", asdict(remote.stats))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rprocd.sim.remote",
        description="Play the Zephyr/OpenAMP remote core on a virtual board (shared/sim-board.md).",
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
