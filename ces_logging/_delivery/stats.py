"""The counters of one worker, and the wait that ``flush`` does on them.

Invariant: every item taken from the buffer is in ``in_flight`` until its outcome moves it, exactly once, to
``sent``, ``dropped[reason]``, ``folded`` or ``spooled`` (still queued, on disk). So
``sent + dropped + queued (+ folded) == received`` holds at every moment a reader takes ``cond``. A batch's
outcome reaches ``add_sent``, ``add_dropped`` and ``add_spooled`` only through ``outcome.Ledger``, which knows
where the batch came from and so which count it moves.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable


class WorkerStats:
    """Counters the worker changes, under one condition variable that ``flush`` waits on.

    ``spooled`` counts this handler's items waiting on disk (part of ``queued``); ``recovered_*`` count items
    that another process (or an earlier handler) left in the spool and this one delivered or dropped: they are
    not this handler's records, so they stay out of ``sent + dropped + queued == received``."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.RLock())  # re-entrant: flush's predicate reads under it
        self.sent = 0
        self.retries = 0
        self.batches = 0
        self.spooled = 0
        self.in_flight = 0  # taken from the buffer, not yet accounted for
        self.dropped: Counter[str] = Counter()
        self.recovered_sent = 0
        self.recovered_dropped: Counter[str] = Counter()
        self.abandoned = False  # the process's grace period ended: what was in flight is counted as lost
        self.folded = 0  # records that a delivered storm summary stands for (storm.py)
        self.spool_skipped = 0  # files in the spool that are not batches this user wrote (spool.foreign)
        # What the flush waiters wait for: (settled [+ spooled] to reach, whether spooled counts). A change
        # wakes them only when one is reached, not on each of a burst's hundreds of batches: a waiter woken per
        # batch costs the app's thread a wake-up, a GIL hand-over and a recount each time.
        self._goals: list[tuple[int, bool]] = []

    @property
    def settled(self) -> int:
        """Under ``cond``: this handler's records sent, dropped or folded (never the recovered ones)."""
        return self.sent + sum(self.dropped.values()) + self.folded

    def _changed(self) -> None:
        """Under ``cond``: wake the waiters when one's goal is reached (nothing to add up while none waits)."""
        if not self._goals:
            return
        settled = self.settled
        for goal, with_spooled in self._goals:
            if settled + (self.spooled if with_spooled else 0) >= goal:
                self.cond.notify_all()
                return

    def wait(self, gap: int, with_spooled: bool, timeout: float) -> None:
        """Under ``cond``: wait at most ``timeout`` for ``gap`` more records to be settled (or, with
        ``with_spooled``, settled or on disk)."""
        goal = (self.settled + (self.spooled if with_spooled else 0) + gap, with_spooled)
        self._goals.append(goal)
        try:
            self.cond.wait(timeout)
        finally:
            self._goals.remove(goal)

    def wait_accounted(
        self,
        target: int,
        accounted: Callable[[], int],
        deadline: float | None,
        *,
        with_spooled: bool,
        alive: Callable[[], bool],
        nudge: Callable[[], None],
    ) -> bool:
        """Wait until ``accounted()`` (+ ``spooled`` when ``with_spooled``) reaches ``target``, until
        ``deadline``; False as soon as ``alive()`` says the worker died. ``nudge()`` while files of ours wait on
        disk (the batcher sends them now rather than at its next round)."""

        def done() -> int:
            return accounted() + (self.spooled if with_spooled else 0)

        with self.cond:
            while (gap := target - done()) > 0:
                if not alive():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                # woken when the worker has settled the gap; the short timeout re-reads what only the app's
                # thread changes (records refused at emit count as accounted too)
                self.wait(gap, with_spooled, 0.05 if left is None else min(0.05, left))
                if self.spooled:
                    nudge()
        return True

    def abandon(self) -> int:
        """Count what is in flight as dropped (``shutdown``) once and for all; outcomes that arrive later
        (a request that was still running) change nothing. Returns how many."""
        with self.cond:
            n = self.in_flight
            if n > 0:
                self.dropped["shutdown"] += n
            self.in_flight = 0
            self.abandoned = True
            self.cond.notify_all()
            return n

    def taken(self, n: int) -> None:
        with self.cond:
            if self.abandoned:
                self.dropped["shutdown"] += n
                self._changed()
                return
            self.in_flight += n

    def add_sent(self, n: int, kind: str, folded: int = 0) -> None:
        """A batch delivered: ``n`` events, and storm summaries standing for ``folded`` records (storm.py)."""
        with self.cond:
            if kind == "memory" and self.abandoned:
                return
            if kind == "recovered":
                self.recovered_sent += n
            else:
                self.sent += n
                self.folded += folded
                if kind == "own":
                    self.spooled -= n
                else:
                    self.in_flight -= n + folded
            self.batches += 1
            self._changed()

    def add_dropped(self, reason: str, n: int, kind: str = "memory") -> None:
        if n <= 0:
            return
        with self.cond:
            if kind == "memory" and self.abandoned:
                return
            if kind == "recovered":
                self.recovered_dropped[reason] += n
            else:
                self.dropped[reason] += n
                if kind == "own":
                    self.spooled -= n
                else:
                    self.in_flight -= n
            self._changed()

    def add_spooled(self, n: int) -> None:
        with self.cond:
            if self.abandoned:
                return
            self.in_flight -= n
            self.spooled += n
            self._changed()

    def forget_spooled(self, n: int) -> None:
        """Files of ours that another process delivered (or that vanished): no longer queued here. They were
        delivered by someone, so they count as sent."""
        with self.cond:
            n = min(n, self.spooled)
            self.spooled -= n
            self.sent += n
            self._changed()

    def add_retry(self) -> None:
        with self.cond:
            self.retries += 1
