"""Mailbox drivers against register-level models of the hardware.

:class:`TccMailboxPair` models one Telechips mailbox as both cores see it:
each side has its own register bank (CTRL, a command TX FIFO of 8 words that
is the other side's RX FIFO, a data FIFO, OPPOSITE_STS); reading an RX slot
takes the word (so any stray read loses data, as on hardware); CTRL_SET sets
the bits written, CTRL_CLR keeps only the bits written (the driver writes the
inverted mask); the flush and ICLR bits act once and read back as 0; words in
a TX FIFO are visible to the peer only while the sender's OEN is set; the RX
interrupt is IEN_READ and the ILEVEL condition on the visible count; the TX
interrupt latches when the peer drains our FIFO and is cleared by ICLR_WRITE.
"""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from rprocd.config import RegStep
from rprocd.mailbox import telechips as T
from rprocd.mailbox.base import MailboxDoorbell, MemoryRegisters
from rprocd.mailbox.registers import RegisterProgramMailbox
from rprocd.mailbox.telechips import TelechipsMailbox

U32 = 0xFFFFFFFF
ACTION_BITS = T.CF_FLUSH | T.DF_FLUSH | T.ICLR_WRITE


class TccSide:
    """One core's register bank of a Telechips mailbox (implements rprocd's Registers)."""

    def __init__(self, name: str):
        self.name = name
        self.peer: TccSide
        self.ctrl = 0
        self.tx: deque[int] = deque()
        self.dat_tx: deque[int] = deque()
        self.ready = 0
        self.tx_irq_latched = False
        self.log: list[tuple[str, int, int]] = []
        self.overflow = 0  # words written into a full FIFO (lost)
        self.underflow = 0  # RX reads with nothing to read
        self.writes_while_output_enabled = 0

    # -- what the peer sees ---------------------------------------------------------------------
    def visible_tx(self) -> deque[int]:
        return self.tx if self.ctrl & T.OEN else deque()

    def visible_dat(self) -> deque[int]:
        return self.dat_tx if self.ctrl & T.OEN else deque()

    def _pop_from_peer(self, fifo: deque[int]) -> int:
        if not fifo:
            self.underflow += 1
            return 0
        v = fifo.popleft()
        p = self.peer
        if not p.tx and not p.dat_tx and p.ctrl & T.IEN_WRITE:
            p.tx_irq_latched = True  # the peer's message has been taken: TX-done
        return v

    # -- interrupt lines ------------------------------------------------------------------------
    @property
    def rx_irq(self) -> bool:
        n = len(self.peer.visible_tx())
        level = self.ctrl & 3
        cond = {T.ILEVEL_NEMP: n > 0, T.ILEVEL_GT2: n > 2, T.ILEVEL_GT4: n > 4, T.ILEVEL_FULL: n == 8}[level]
        return bool(self.ctrl & T.IEN_READ) and cond

    @property
    def tx_irq(self) -> bool:
        return self.tx_irq_latched and bool(self.ctrl & T.IEN_WRITE)

    # -- the Registers interface ----------------------------------------------------------------
    def read(self, offset: int, width: int = 32) -> int:
        assert width == 32 and offset % 4 == 0, f"{self.name}: {width}-bit read at {offset:#x}"
        self.log.append(("r", offset, 0))
        if T.CMD_RX_FIFO <= offset < T.CMD_RX_FIFO + 32:
            return self._pop_from_peer(self.peer.visible_tx())
        if offset == T.CTRL:
            return self.ctrl
        if offset == T.CMD_FIFO_STS:
            n_tx, n_rx = len(self.tx), len(self.peer.visible_tx())
            v = (n_tx & 0xF) << T.TX_COUNT_SHIFT | (n_rx & 0xF) << T.RX_COUNT_SHIFT
            v |= T.TX_EMPTY if n_tx == 0 else 0
            v |= T.TX_FULL if n_tx == 8 else 0
            v |= T.RX_EMPTY if n_rx == 0 else 0
            v |= T.RX_FULL if n_rx == 8 else 0
            return v
        if offset in (T.DAT_FIFO_TX_STS, T.DAT_FIFO_RX_STS):
            fifo = self.dat_tx if offset == T.DAT_FIFO_TX_STS else self.peer.visible_dat()
            n = len(fifo)
            return n | (T.DAT_EMPTY if n == 0 else 0) | (T.DAT_FULL if n == 128 else 0)
        if offset == T.DAT_FIFO_RXD:
            return self._pop_from_peer(self.peer.visible_dat())
        if offset == T.OPPOSITE_STS:
            return self.ready | self.peer.ready << 16
        if T.CMD_TX_FIFO <= offset < T.CMD_TX_FIFO + 32 or offset in (T.DAT_FIFO_TXD, T.CTRL_SET, T.CTRL_CLR):
            return 0  # write-only registers read as 0 (the log shows the read happened)
        raise AssertionError(f"{self.name}: read of unknown register {offset:#x}")

    def write(self, offset: int, value: int, width: int = 32) -> None:
        assert width == 32 and offset % 4 == 0 and 0 <= value <= U32
        self.log.append(("w", offset, value))
        if T.CMD_TX_FIFO <= offset < T.CMD_TX_FIFO + 32 or offset == T.DAT_FIFO_TXD:
            fifo, cap = (self.tx, 8) if offset < 0x20 else (self.dat_tx, 128)
            if self.ctrl & T.OEN:
                self.writes_while_output_enabled += 1
            if len(fifo) >= cap:
                self.overflow += 1
            else:
                fifo.append(value)
        elif offset == T.CTRL:
            self._ctrl(value)
        elif offset == T.CTRL_SET:
            self._ctrl(self.ctrl | value)
        elif offset == T.CTRL_CLR:
            self._ctrl(self.ctrl & value)
        elif offset == T.OPPOSITE_STS:
            self.ready = value & 1
        else:
            raise AssertionError(f"{self.name}: write of {value:#x} to read-only/unknown register {offset:#x}")

    def _ctrl(self, value: int) -> None:
        if value & T.CF_FLUSH:
            self.tx.clear()
        if value & T.DF_FLUSH:
            self.dat_tx.clear()
        if value & T.ICLR_WRITE:
            self.tx_irq_latched = False
        self.ctrl = value & ~ACTION_BITS & U32


class TccMailboxPair:
    def __init__(self) -> None:
        self.host, self.remote = TccSide("host"), TccSide("remote")
        self.host.peer, self.remote.peer = self.remote, self.host


@pytest.fixture
def pair() -> TccMailboxPair:
    return TccMailboxPair()


def started(p: TccMailboxPair) -> tuple[TelechipsMailbox, TelechipsMailbox]:
    host, remote = TelechipsMailbox(p.host), TelechipsMailbox(p.remote)
    host.start()
    remote.start()
    p.host.log.clear()
    p.remote.log.clear()
    return host, remote


# -- Telechips ------------------------------------------------------------------------------------


def test_start_is_the_linux_startup_sequence(pair: TccMailboxPair) -> None:
    pair.host.tx.extend([7, 7])  # stale words from an earlier run
    TelechipsMailbox(pair.host).start()
    assert pair.host.log == [
        ("w", T.CTRL_CLR, ~T.OEN & U32),  # output off (inverted mask into CTRL_CLR)
        ("w", T.CTRL_SET, T.CF_FLUSH | T.DF_FLUSH),  # flush both FIFOs
        ("w", T.CTRL_CLR, ~T.ILEVEL_MASK & U32),  # ILEVEL field to 0 (Linux leaves it as found)
        ("w", T.CTRL_SET, T.IEN_READ | T.ILEVEL_NEMP),  # rx interrupt, level "not empty"
        ("w", T.OPPOSITE_STS, 1),  # we are here
    ]
    assert not pair.host.tx and pair.host.ctrl == T.IEN_READ
    assert pair.remote.read(T.OPPOSITE_STS) & T.PEER_READY


def test_ilevel_from_a_previous_owner_is_cleared(pair: TccMailboxPair) -> None:
    """mailbox-tcc.c: MBOX_CTRL_ILEVEL is bits 0-1 (NEMP 0 .. FULL 3); startup only ORs in NEMP (0)."""
    assert T.ILEVEL_MASK == 0b11
    for level in (T.ILEVEL_GT2, T.ILEVEL_GT4, T.ILEVEL_FULL):
        p = TccMailboxPair()
        p.host.ctrl = p.remote.ctrl = level  # left by a boot loader or an earlier driver
        host, remote = TelechipsMailbox(p.host), TelechipsMailbox(p.remote)
        host.start()
        remote.start()
        assert p.host.ctrl & T.ILEVEL_MASK == T.ILEVEL_NEMP
        assert host.ring(1)  # a 1-word message ...
        assert p.remote.rx_irq  # ... raises the remote's interrupt
        assert remote.on_interrupt() == [1]
        assert remote.ring(0) and p.host.rx_irq


def test_ring_is_the_linux_send_sequence_and_never_reads_a_fifo(pair: TccMailboxPair) -> None:
    host, remote = started(pair)
    assert host.ring(1)
    writes = [e for e in pair.host.log if e[0] == "w"]
    assert writes == [
        ("w", T.CTRL_CLR, ~T.OEN & U32),
        ("w", T.CMD_TX_FIFO, 1),
        ("w", T.CTRL_SET, T.ICLR_WRITE),
        ("w", T.CTRL_SET, T.IEN_WRITE),
        ("w", T.CTRL_SET, T.OEN),
    ]
    reads = {off for op, off, _ in pair.host.log if op == "r"}
    assert reads <= {T.CMD_FIFO_STS, T.DAT_FIFO_TX_STS, T.OPPOSITE_STS}  # status only: no read-before-write
    assert pair.host.writes_while_output_enabled == 0
    assert pair.remote.rx_irq


def test_round_trip_both_ways(pair: TccMailboxPair) -> None:
    host, remote = started(pair)
    assert not pair.host.rx_irq and not pair.remote.rx_irq
    host.ring(1)
    assert pair.remote.rx_irq
    assert remote.on_interrupt() == [1]
    assert not pair.remote.rx_irq and pair.remote.ctrl & T.IEN_READ
    assert pair.host.tx_irq  # TX-done raised at the host: its word was taken
    remote.ring(0)
    assert pair.host.rx_irq
    assert host.on_interrupt() == [0]
    assert not pair.host.rx_irq
    host.ring(1)  # the lazy TX-done: OEN closed before the refill, then the word goes
    assert remote.on_interrupt() == [1]
    assert pair.host.underflow == pair.remote.underflow == 0
    assert host.stats()["rx_words"] == 1 and remote.stats()["rx_words"] == 2


def test_receive_masks_and_unmasks_rx_like_linux(pair: TccMailboxPair) -> None:
    host, remote = started(pair)
    remote.ring(5)
    pair.host.log.clear()
    assert host.on_interrupt() == [5]
    log = pair.host.log
    assert log[0] == ("w", T.CTRL_CLR, ~T.IEN_READ & U32)
    assert ("r", T.CMD_RX_FIFO, 0) in log
    assert log[-1] == ("w", T.CTRL_SET, T.IEN_READ)


def test_fifo_busy_coalesces_and_never_overflows(pair: TccMailboxPair) -> None:
    host, remote = started(pair)
    results = [host.ring(i) for i in range(20)]
    assert results[0] and not any(results[1:])
    assert host.stats()["busy"] == 19
    assert list(pair.host.tx) == [0] and pair.host.overflow == 0
    assert remote.on_interrupt() == [0]
    assert host.ring(99) and remote.on_interrupt() == [99]


def test_full_fifo_of_eight_words(pair: TccMailboxPair) -> None:
    host8 = TelechipsMailbox(pair.host, words=8)
    remote = TelechipsMailbox(pair.remote)
    host8.start()
    remote.start()
    assert host8.ring(0xABC)
    assert pair.host.read(T.CMD_FIFO_STS) & T.TX_FULL
    assert pair.remote.read(T.CMD_FIFO_STS) & T.RX_FULL
    assert not host8.ring(1)  # full: busy, nothing written
    assert pair.host.overflow == 0
    pair.host.write(T.CMD_TX_FIFO, 1)  # the model itself refuses a ninth word
    assert pair.host.overflow == 1
    assert remote.on_interrupt() == [0xABC, 0, 0, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError):
        TelechipsMailbox(pair.host, words=9)


def test_spurious_interrupt_reads_no_fifo_and_rearms(pair: TccMailboxPair) -> None:
    host, _ = started(pair)
    assert host.on_interrupt() == []
    assert host.stats()["spurious"] == 1
    assert pair.host.underflow == 0  # never read an empty RX FIFO
    assert not any(op == "r" and 0x20 <= off < 0x40 for op, off, _ in pair.host.log)
    assert pair.host.ctrl & T.IEN_READ


def test_data_fifo_is_drained(pair: TccMailboxPair) -> None:
    host, _ = started(pair)
    side = pair.remote  # a remote that also sends data words: rpmsg does not, rprocd drops them
    side.write(T.CMD_TX_FIFO, 3)
    for i in range(5):
        side.write(T.DAT_FIFO_TXD, i)
    side.write(T.CTRL_SET, T.OEN)
    assert host.on_interrupt() == [3]
    assert host.stats()["rx_data_dropped"] == 5
    assert not side.dat_tx


def test_ring_before_the_remote_is_ready(pair: TccMailboxPair) -> None:
    host = TelechipsMailbox(pair.host)
    host.start()
    assert host.ring(1)  # sent: it waits in the FIFO
    assert host.stats()["peer_not_ready"] == 1
    remote = TelechipsMailbox(pair.remote)
    remote.start()  # flushes the remote's own TX FIFO, not ours
    assert pair.remote.rx_irq
    assert remote.on_interrupt() == [1]


def test_stop_is_the_linux_shutdown_sequence(pair: TccMailboxPair) -> None:
    host, _ = started(pair)
    host.stop()
    assert pair.host.log == [
        ("w", T.CTRL_CLR, ~T.OEN & U32),
        ("w", T.CTRL_SET, T.CF_FLUSH | T.DF_FLUSH),
        ("w", T.CTRL_CLR, ~T.IEN_READ & U32),
        ("w", T.OPPOSITE_STS, 0),
    ]
    assert not pair.remote.read(T.OPPOSITE_STS) & T.PEER_READY


def test_doorbell_polls_without_an_interrupt(pair: TccMailboxPair) -> None:
    async def main() -> None:
        host, remote = TelechipsMailbox(pair.host), TelechipsMailbox(pair.remote)
        remote.start()
        rung = asyncio.Event()
        db = MailboxDoorbell(host, None, poll_s=0.001)
        db.start(asyncio.get_running_loop(), rung.set)
        remote.ring(0)
        await asyncio.wait_for(rung.wait(), 5)
        db.ring(1)
        assert remote.on_interrupt() == [1]
        stats = db.stats()
        assert stats["sent"] == 1 and stats["received"] == 1 and stats["driver_rx_words"] == 1
        db.stop()
        assert pair.host.ready == 0

    asyncio.run(main())


def test_doorbell_word_override(pair: TccMailboxPair) -> None:
    host, remote = started(pair)
    db = MailboxDoorbell(host, None, word=0x1234, poll_s=1)
    db.ring(1)
    assert remote.on_interrupt() == [0x1234]


# -- register programs: the Xilinx ZynqMP IPI -----------------------------------------------------


class IpiAgent:
    """One ZynqMP IPI agent's registers: TRIG 0x00 (wo), OBS 0x04, ISR 0x10 (w1c), IMR 0x14, IER 0x18, IDR 0x1C."""

    def __init__(self, bit: int):
        self.bit = bit
        self.isr = 0
        self.imr = U32  # all masked at reset
        self.peers: dict[int, IpiAgent] = {}
        self.log: list[tuple[str, int, int]] = []

    @property
    def irq(self) -> bool:
        return bool(self.isr & ~self.imr)

    def read(self, offset: int, width: int = 32) -> int:
        self.log.append(("r", offset, 0))
        if offset == 0x04:
            return sum(b for b, p in self.peers.items() if p.isr & self.bit)
        return {0x10: self.isr, 0x14: self.imr}.get(offset, 0)

    def write(self, offset: int, value: int, width: int = 32) -> None:
        self.log.append(("w", offset, value))
        if offset == 0x00:
            for b, p in self.peers.items():
                if value & b:
                    p.isr |= self.bit
        elif offset == 0x10:
            self.isr &= ~value
        elif offset == 0x18:
            self.imr &= ~value
        elif offset == 0x1C:
            self.imr |= value
        else:
            raise AssertionError(f"write to {offset:#x}")


APU, RPU0 = 0x1, 0x100


def ipi_driver(agent: IpiAgent, dest: int) -> RegisterProgramMailbox:
    return RegisterProgramMailbox(
        {0: agent},
        start=[RegStep("write", 0x18, value=dest)],
        ring=[RegStep("write", 0x00, value=dest)],
        ack=[RegStep("read", 0x10, mask=dest), RegStep("write", 0x10, value="{last}")],
        stop=[RegStep("write", 0x1C, value=dest)],
    )


def test_register_program_ipi_round_trip() -> None:
    apu, rpu = IpiAgent(APU), IpiAgent(RPU0)
    apu.peers, rpu.peers = {RPU0: rpu}, {APU: apu}
    host, remote = ipi_driver(apu, RPU0), ipi_driver(rpu, APU)
    host.start()
    remote.start()
    assert not apu.irq
    assert host.ring(1)
    assert rpu.irq and rpu.isr == APU
    assert remote.on_interrupt() == [APU]
    assert not rpu.irq and rpu.isr == 0  # write-1-to-clear with what was read
    remote.ring(0)
    assert host.on_interrupt() == [RPU0] and not apu.irq
    assert host.on_interrupt() == [] and host.stats()["spurious"] == 1
    host.stop()
    assert apu.imr & RPU0


def test_register_program_placeholders_set_clear_wait() -> None:
    buf = bytearray(0x40)
    regs = MemoryRegisters(memoryview(buf))
    prog = RegisterProgramMailbox(
        {0: regs},
        start=[RegStep("set", 0x08, value=0x5), RegStep("clear", 0x08, value=0x1)],
        ring=[
            RegStep("write", 0x0C, width=16, value="{notifyid}"),
            RegStep("write", 0x10, value=0xFF00, mask=0x0F00),
            RegStep("wait", 0x14, value=0, mask=0x1, timeout_ms=1),
        ],
    )
    prog.start()
    assert regs.read(0x08) == 0x4
    regs.write(0x10, 0x12345678)
    assert prog.ring(0xBEEF)
    assert regs.read(0x0C, 16) == 0xBEEF
    assert regs.read(0x10) == 0x12345F78
    regs.write(0x14, 1)  # busy bit stuck: the wait step times out, the ring is coalesced
    assert not prog.ring(1)
    assert prog.stats() == {"busy": 1, "spurious": 0, "timeouts": 1}
    with pytest.raises(ValueError, match="map 3"):
        RegisterProgramMailbox({0: regs}, ring=[RegStep("write", 0, map=3)])


def test_memory_registers_are_single_aligned_accesses() -> None:
    buf = bytearray(16)
    regs = MemoryRegisters(memoryview(buf), base=4)
    regs.write(0, 0xA1B2C3D4)
    assert regs.read(0) == 0xA1B2C3D4 and bytes(buf[4:8]) == (0xA1B2C3D4).to_bytes(4, "little")
    regs.write(6, 0xBEEF, 16)
    regs.write(9, 0x7F, 8)
    assert regs.read(6, 16) == 0xBEEF and regs.read(9, 8) == 0x7F
    with pytest.raises(ValueError):
        regs.read(2)  # unaligned
    with pytest.raises(ValueError):
        regs.write(12, 0)  # outside the block


# -- lifecycle (opt-in start/stop of the remote) --------------------------------------------------


class FakeGpio:
    def __init__(self, chip: str, line: int, direction: str):
        self.chip, self.line, self.direction = chip, line, direction
        self.level = direction == "high"
        self.writes: list[bool] = []
        self.closed = False

    def write(self, value: bool) -> None:
        self.level = value
        self.writes.append(value)

    def close(self) -> None:
        self.closed = True


def test_gpio_lifecycle_never_resets_on_open_and_pulses_on_restart() -> None:
    from rprocd.config import LifecycleConfig
    from rprocd.lifecycle import GpioLifecycle

    for active_low, run_level in ((False, False), (True, True)):
        cfg = LifecycleConfig(enabled=True, chip="/dev/gpiochip3", line=17, active_low=active_low, pulse_ms=1)
        lc = GpioLifecycle(cfg, gpio_factory=FakeGpio)
        g = lc.gpio
        assert isinstance(g, FakeGpio) and g.level == run_level and not g.writes  # opened at "run"
        lc.stop()
        assert g.level == (not run_level)
        asyncio.run(lc.restart())
        assert g.writes == [not run_level, not run_level, run_level]
        lc.close()
        assert g.closed


def test_register_lifecycle_programs() -> None:
    from rprocd.config import LifecycleConfig
    from rprocd.lifecycle import RegisterLifecycle

    buf = bytearray(0x20)
    regs = MemoryRegisters(memoryview(buf))
    cfg = LifecycleConfig(
        enabled=True,
        method="registers",
        pa=0x10000000,  # any register block: the model is a bytearray
        pulse_ms=1,
        start=(RegStep("clear", 0x10, value=0x1),),
        stop=(RegStep("set", 0x10, value=0x1),),
    )
    lc = RegisterLifecycle(cfg, regs)
    regs.write(0x10, 0xF0)
    lc.stop()
    assert regs.read(0x10) == 0xF1
    asyncio.run(lc.restart())
    assert regs.read(0x10) == 0xF0
