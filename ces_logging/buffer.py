"""The buffer between ``emit`` and the worker, bounded by count and by bytes, with counts that hold whatever
interrupts ``emit``.

A signal handler can run between any two bytecodes of ``emit`` on the main thread, and log itself (re-entry), or
raise (``KeyboardInterrupt``, the ``signal.alarm`` timeout pattern). So the records are never counted by a
read-modify-write (``n += 1`` can lose a count to re-entry, or be left done without its append by an exception):
every count changes in one C-level step. The buffer's own ``deque.append`` is the count of accepted records;
``Tally`` (an ``itertools.count``) counts the records refused at emit. ``received`` is derived from those:
``taken + len(items) + refused``, read together under the worker's lock.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections import deque
from typing import Any


class Tally:
    """A counter whose ``add`` is one C call (``next`` on ``itertools.count``): safe against threads,
    re-entry and an exception at any bytecode."""

    __slots__ = ("_c",)

    def __init__(self) -> None:
        self._c = itertools.count()

    def add(self) -> None:
        next(self._c)

    @property
    def value(self) -> int:
        return int(repr(self._c)[6:-1])  # "count(N)"


class Wakeup:
    """An ``Event``-like wake-up for the worker whose ``set`` is safe in a signal handler: ``Event.set`` takes
    a lock, so a signal handler that logs while the main thread is inside it would deadlock; a
    ``SimpleQueue.put`` is reentrant by design."""

    __slots__ = ("_q",)

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[None] = queue.SimpleQueue()

    def set(self) -> None:
        self._q.put(None)

    def clear(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()

    def wait(self, timeout: float) -> bool:
        """True when woken before ``timeout``; the wake-ups that piled up meanwhile are taken with it."""
        try:
            self._q.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False
        self.clear()
        return True


class RecordBuffer:
    """Prepared records waiting for the worker. ``emit`` appends; only the worker takes (under ``lock``)."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.items: deque[Any] = deque()
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.lock = threading.Lock()  # the worker's taking (only a worker thread ever holds it)
        # A take in progress makes this odd: ``counts`` reads without the lock and reads again when a take ran
        # meanwhile (a seqlock). The app's thread must never hold ``lock``: a SIGTERM landing while it does
        # runs the drain on that same thread, which reads the counts: it would wait for ever on its own lock.
        self._takes = 0
        # notified when the worker takes (overflow="block"); re-entrant: a signal handler may log while the
        # main thread waits on it
        self.space = threading.Condition(threading.RLock())
        self.taken = 0
        self.bytes_in = 0  # emit side; an estimate (re-entry may lose an update: it bounds memory, not counts)
        self.bytes_out = 0  # worker side
        self.bytes_cap = max_bytes  # bytes_out + max_bytes, kept by take: emit's bound check is one comparison
        self.refused: dict[str, Tally] = {}

    def renew_locks(self) -> None:
        """New locks made with ``threading`` as it is now (the worker's first start; see green.py)."""
        self.lock = threading.Lock()
        self.space = threading.Condition(threading.RLock())

    def refuse(self, reason: str) -> None:
        t = self.refused.get(reason)
        if t is None:
            t = self.refused.setdefault(reason, Tally())
        t.add()

    def refused_counts(self) -> dict[str, int]:
        return {k: v for k, t in list(self.refused.items()) if (v := t.value)}

    def full(self, size: int) -> bool:
        return len(self.items) >= self.max_items or self.bytes_in - self.bytes_out + size > self.max_bytes

    def over(self, fraction: float = 1.0) -> bool:
        """Above ``fraction`` of a bound (the worker spills to the spool when it is)."""
        return (
            len(self.items) > self.max_items * fraction or self.bytes_in - self.bytes_out > self.max_bytes * fraction
        )

    def take(self, n: int, sizes: Any) -> list[Any]:
        """Up to ``n`` items, oldest first, counted as taken in the same step. ``sizes(items)``: their bytes."""
        with self.lock:
            self._takes += 1
            try:
                popleft = self.items.popleft
                out = [popleft() for _ in range(min(n, len(self.items)))]
                self.taken += len(out)
            finally:
                self._takes += 1
        self.bytes_out += sizes(out)
        self.bytes_cap = self.bytes_out + self.max_bytes
        with self.space:
            self.space.notify_all()
        return out

    def counts(self) -> tuple[int, int]:
        """(taken, waiting), read together, without a lock (any thread, a signal handler included): read again
        while a take runs or ran in between. A take holds the GIL for a few microseconds, so this ends at once;
        the bound is for safety only."""
        for _ in range(10_000):
            before = self._takes
            if not before & 1:
                taken, waiting = self.taken, len(self.items)
                if self._takes == before:
                    return taken, waiting
            time.sleep(0.0001)  # let the worker finish its take
        with self.lock:  # never reached in practice (a take that does not end in a second)
            return self.taken, len(self.items)
