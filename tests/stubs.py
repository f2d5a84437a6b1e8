"""A socket export's transport that takes every message: for tests of the export itself, not of flow control."""

from __future__ import annotations

from rprocd.rpmsg import Channel, TxResult


class AcceptingTransport:
    """Sends everything at once and always has credit; every other hook does nothing."""

    max_payload = 496

    def send(self, ch: Channel, payload: memoryview) -> TxResult:
        return TxResult.SENT

    def tx_available(self) -> bool:
        return True

    def tx_credits(self) -> int:
        return 8

    def request_flush(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def wait_for_tx(self) -> None:
        pass

    def rx_unblocked(self) -> None:
        pass
