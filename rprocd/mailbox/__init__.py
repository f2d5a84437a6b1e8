"""Mailbox doorbells: small register-level drivers behind one interface.

A driver (:class:`~rprocd.mailbox.base.MailboxDriver`) only touches registers
through a :class:`~rprocd.mailbox.base.Registers` object and never blocks or
opens anything, so it is tested against a register-level model of the
hardware.  :class:`~rprocd.mailbox.base.MailboxDoorbell` joins a driver to an
interrupt source (a UIO device, or polling) and is the daemon's
:class:`~rprocd.backends.Doorbell`.
"""

from .base import MailboxDoorbell, MailboxDriver, MemoryRegisters, Registers
from .registers import RegisterProgramMailbox
from .telechips import TelechipsMailbox

__all__ = [
    "MailboxDoorbell",
    "MailboxDriver",
    "MemoryRegisters",
    "RegisterProgramMailbox",
    "Registers",
    "TelechipsMailbox",
]
