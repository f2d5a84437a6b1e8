"""The simulated remote core: a Zephyr/OpenAMP rpmsg remote on the virtual board.

* :mod:`rprocd.sim.core` -- the protocol engine (sans-I/O): table, handshake,
  name service, the four sample endpoints;
* :mod:`rprocd.sim.device_vring` -- the device side of a split vring;
* :mod:`rprocd.sim.console` -- Zephyr's RAM console in the trace buffer;
* :mod:`rprocd.sim.remote` -- :class:`~rprocd.sim.remote.SimRemote` on a board
  folder, and the ``rprocctl sim`` command line.

The submodules are not imported here, so ``python -m rprocd.sim.remote``
runs without importing itself twice.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RemoteCore", "SimRemote"]


def __getattr__(name: str) -> Any:
    """Import on first use (see above)."""
    if name == "SimRemote":
        from .remote import SimRemote

        return SimRemote
    if name == "RemoteCore":
        from .core import RemoteCore

        return RemoteCore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
