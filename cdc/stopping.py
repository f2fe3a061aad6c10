"""A connector's stop request, which may say "abandon": stop without committing or
confirming anything further.

The one job: carry, with the ``threading.Event`` every stop check already waits on, the
one bit a fleet needs. A clean stop (SIGTERM, a revoked fleet assignment) makes what was
published durable and confirms it; an abandon (the fleet's session expired, so another
instance may already own the connector) leaves at once and writes nothing more: the
new owner resumes from what Kafka durably holds. No I/O.
"""

from __future__ import annotations

import threading

__all__ = ["StopRequest", "abandoned"]


class StopRequest(threading.Event):
    """Set to stop one connector; ``abandon()`` to stop it without a final commit."""

    def __init__(self) -> None:
        super().__init__()
        self._abandoned = False

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def abandon(self) -> None:
        """Stop, committing and confirming nothing more (the flag before the event, so
        whoever sees the event set sees the flag)."""
        self._abandoned = True
        self.set()


def abandoned(stop: threading.Event) -> bool:
    """Whether ``stop`` asks to abandon (a plain Event never does)."""
    return isinstance(stop, StopRequest) and stop.abandoned
