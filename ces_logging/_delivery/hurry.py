"""The worker's deadline: deliver everything by a time (exit, SIGTERM, ``stop``), and whether it is the end.

A deadline that is not final (a SIGTERM handed on to a server) clears itself once it has passed: delivery goes
back to normal. A final one stays: requests started after it never begin. ``interrupt`` cuts a back-off short
when stopping. Written by the handler's thread, read by the batcher and the senders: each field is one
reference, read once per decision.
"""

from __future__ import annotations

import threading
import time


class Hurry:
    __slots__ = ("deadline", "final", "interrupt", "stopping")

    def __init__(self) -> None:
        self.deadline: float | None = None  # monotonic: deliver by then
        self.final = False  # the deadline is the process's end: it does not go away
        self.stopping = False  # end the threads once everything is accounted for (or the deadline passed)
        self.interrupt = threading.Event()

    def renew_locks(self) -> None:
        self.interrupt = threading.Event()

    def set(self, deadline: float, final: bool) -> None:
        """The earlier deadline wins, except that a final one replaces one that was not."""
        if self.deadline is None or deadline < self.deadline or not self.final:
            self.deadline = deadline
        self.final = self.final or final

    def stop(self) -> None:
        self.stopping = True
        self.interrupt.set()

    def remaining(self) -> float | None:
        """Seconds left (None: no deadline); a passed deadline that was not final is cleared here."""
        d = self.deadline
        if d is None:
            return None
        left = d - time.monotonic()
        if left <= 0 and not self.final:
            self.deadline = None
            return None
        return left
