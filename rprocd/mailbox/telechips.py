"""The Telechips mailbox (tcc803x/805x/807x "mailbox-controller-v2"), host side.

Register facts and sequences follow Telechips' public Linux drivers:
``drivers/mailbox/mailbox-tcc.c`` ("telechips,mailbox-controller-v2", the
tcc807x BSP kernel ``topst-development/kernel-5.10``) and
``drivers/mailbox/mailbox-tcc-sc.c`` ("telechips,tcc805x-mailbox-sc", the same
register block driven towards the storage core; BSP kernel 5.4), which agree:

* command TX FIFO at 0x00 (8 words, written slot by slot), command RX FIFO at
  0x20 (the peer's TX FIFO, read slot by slot; reading takes the word);
* CTRL 0x40; CTRL_SET 0x74 sets the bits written; CTRL_CLR 0x78 is written
  with the *inverted* mask (``writel(~mask, CTRL_CLR)``);
* CMD_FIFO_STS 0x44: TX empty bit 0, TX full bit 1, TX count bits 4-7, RX
  empty bit 16, RX full bit 17, RX count bits 20-23;
* DAT_FIFO_TX_STS 0x50 / DAT_FIFO_RX_STS 0x54: count bits 0-15, full 30,
  empty 31; DAT TXD 0x60, RXD 0x70;
* OPPOSITE_STS 0x7C: own "terminal ready" bit 0 (we write it), the peer's at
  bit 16;
* CTRL bits: ILEVEL 0-1 (``MBOX_CTRL_ILEVEL`` 0U, values ``MBOX_ILEVEL_NEMP``
  0 .. ``MBOX_ILEVEL_FULL`` 3: a two-bit field), IEN_READ 4, OEN 5, CF_FLUSH 6,
  DF_FLUSH 7, IEN_WRITE 20, ICLR_WRITE 21.

Start differs from ``tcc_mbox_startup`` in one point: Linux ORs
``MBOX_ILEVEL_NEMP << MBOX_CTRL_ILEVEL`` (that is, 0) into CTRL_SET, which
leaves ILEVEL as the previous owner (boot loader, an earlier kernel driver)
set it.  With ILEVEL "more than 2" a 1-word ring would never raise the
interrupt, so rprocd clears the field first (CTRL_CLR), then sets IEN_READ.

Send: command words, then ICLR_WRITE, IEN_WRITE, then OEN (output enable
makes the words visible to the peer).  The Linux driver's TX-done interrupt
then clears OEN; UIO gives us one interrupt (the RX one), so the TX-done work
is done lazily at the next send, exactly as the v1 ``last_tx_done`` poll does:
TX FIFO empty -> clear OEN -> refill.

Receive (on the RX interrupt): clear IEN_READ, read the count and the words
(and drain the data FIFO, which rpmsg does not use), set IEN_READ again.
"""

from __future__ import annotations

from .base import Registers

CMD_TX_FIFO = 0x00
CMD_RX_FIFO = 0x20
CTRL = 0x40
CMD_FIFO_STS = 0x44
DAT_FIFO_TX_STS = 0x50
DAT_FIFO_RX_STS = 0x54
DAT_FIFO_TXD = 0x60
DAT_FIFO_RXD = 0x70
CTRL_SET = 0x74
CTRL_CLR = 0x78
OPPOSITE_STS = 0x7C

# CMD_FIFO_STS
TX_EMPTY = 1 << 0
TX_FULL = 1 << 1
TX_COUNT_SHIFT = 4
RX_EMPTY = 1 << 16
RX_FULL = 1 << 17
RX_COUNT_SHIFT = 20
COUNT_MASK = 0xF
# DAT_FIFO_*_STS
DAT_COUNT_MASK = 0xFFFF
DAT_FULL = 1 << 30
DAT_EMPTY = 1 << 31
# CTRL
ILEVEL_SHIFT = 0
ILEVEL_NEMP, ILEVEL_GT2, ILEVEL_GT4, ILEVEL_FULL = 0, 1, 2, 3
ILEVEL_MASK = 0x3 << ILEVEL_SHIFT
IEN_READ = 1 << 4
OEN = 1 << 5
CF_FLUSH = 1 << 6
DF_FLUSH = 1 << 7
IEN_WRITE = 1 << 20
ICLR_WRITE = 1 << 21
# OPPOSITE_STS
OWN_READY = 1 << 0
PEER_READY = 1 << 16

CMD_FIFO_WORDS = 8
DAT_FIFO_WORDS = 128
_U32 = 0xFFFFFFFF


class TelechipsMailbox:
    """:class:`~rprocd.mailbox.base.MailboxDriver` for one Telechips mailbox (our side's register bank)."""

    def __init__(self, regs: Registers, *, words: int = 1):
        if not 1 <= words <= CMD_FIFO_WORDS:
            raise ValueError(f"a Telechips mailbox message is 1 to {CMD_FIFO_WORDS} command words")
        self.regs = regs
        self.words = words  # how many command words one ring sends (the word, then zeros)
        self.counts = {"busy": 0, "peer_not_ready": 0, "rx_words": 0, "rx_data_dropped": 0, "spurious": 0}

    # CTRL_SET / CTRL_CLR, as tcc_mbox_set_ctrl / tcc_mbox_clr_ctrl (v2)
    def _set(self, mask: int) -> None:
        self.regs.write(CTRL_SET, mask)

    def _clr(self, mask: int) -> None:
        self.regs.write(CTRL_CLR, ~mask & _U32)

    def start(self) -> None:
        """As ``tcc_mbox_startup``: output off, flush both FIFOs, RX interrupt on "not empty", say we are here.

        ILEVEL is cleared explicitly (Linux only ORs in 0, see the module docstring).
        """
        self._clr(OEN)
        self._set(CF_FLUSH | DF_FLUSH)
        self._clr(ILEVEL_MASK)
        self._set(IEN_READ | (ILEVEL_NEMP << ILEVEL_SHIFT))
        self.regs.write(OPPOSITE_STS, OWN_READY)

    def ring(self, word: int) -> bool:
        """Send ``word``; False (and nothing written) while the remote has not taken the last one."""
        if not self.regs.read(CMD_FIFO_STS) & TX_EMPTY:
            self.counts["busy"] += 1
            return False
        if not self.regs.read(DAT_FIFO_TX_STS) & DAT_EMPTY:
            self.counts["busy"] += 1
            return False
        if not self.regs.read(OPPOSITE_STS) & PEER_READY:
            self.counts["peer_not_ready"] += 1  # sent anyway: it waits in the FIFO for the remote's start
        self._clr(OEN)  # the last message is out (TX empty): close output before refilling
        self.regs.write(CMD_TX_FIFO, word & _U32)
        for i in range(1, self.words):
            self.regs.write(CMD_TX_FIFO + 4 * i, 0)
        self._set(ICLR_WRITE)
        self._set(IEN_WRITE)
        self._set(OEN)
        return True

    def on_interrupt(self) -> list[int]:
        """As the RX hard + threaded handlers: mask RX, take the words, drain data, unmask RX."""
        self._clr(IEN_READ)
        sts = self.regs.read(CMD_FIFO_STS)
        words: list[int] = []
        if not sts & RX_EMPTY:
            count = min((sts >> RX_COUNT_SHIFT) & COUNT_MASK, CMD_FIFO_WORDS)
            words = [self.regs.read(CMD_RX_FIFO + 4 * i) for i in range(count)]
            dsts = self.regs.read(DAT_FIFO_RX_STS)
            if not dsts & DAT_EMPTY:
                n = min(dsts & DAT_COUNT_MASK, DAT_FIFO_WORDS)
                for _ in range(n):
                    self.regs.read(DAT_FIFO_RXD)
                self.counts["rx_data_dropped"] += n
            self.counts["rx_words"] += len(words)
        else:
            self.counts["spurious"] += 1
        self._set(IEN_READ)
        return words

    def stop(self) -> None:
        """As ``tcc_mbox_shutdown``: output off, flush, RX interrupt off, clear our ready bit."""
        self._clr(OEN)
        self._set(CF_FLUSH | DF_FLUSH)
        self._clr(IEN_READ)
        self.regs.write(OPPOSITE_STS, 0)

    def stats(self) -> dict[str, int]:
        return dict(self.counts)
