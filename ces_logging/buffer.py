"""The buffer between ``emit`` and the worker, bounded by count and by bytes, with counts that hold whatever
interrupts ``emit``.

A signal handler can run between any two bytecodes of ``emit`` on the main thread, and log itself (re-entry), or
raise (``KeyboardInterrupt``, the ``signal.alarm`` timeout pattern). So the records are never counted by a
read-modify-write (``n += 1`` can lose a count to re-entry, or be left done without its append by an exception):
every count changes in one C-level step. The buffer's own ``deque.append`` is the count of accepted records;
``Tally`` (an ``itertools.count``) counts the records refused at emit. ``received`` is derived from those:
``taken + len(items) + refused``, read together under the worker's lock.

The append is the buffer's (``offer``), and so is the wake-up rule: ``offer`` says when ``emit`` must wake the
worker, which otherwise sleeps until its ``flush_interval`` runs out. The worker keeps records in the buffer,
not in a half-built batch, until a batch is due (``_delivery/batching.py``), so it needs waking only when
something changes what is due: the first record (its clock starts), the record that fills a batch (due now),
and every ``WAKE_EVERY``-th while a burst runs (the worker re-reads the bounds and spills to the spool when the
buffer is half full, and the handler notices a worker that died). Anything more costs the app's thread a
wake-up per record; anything less leaves a full batch waiting for the timer.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections import deque
from typing import Any, Final

WAKE_EVERY: Final = 1024  # a power of two: the test is one ``&``
WAKE_MASK: Final = WAKE_EVERY - 1


def wakes(n: int, batch_size: int) -> bool:
    """The wake-up rule (see the module's docstring): does the append that made the buffer ``n`` long wake the
    worker? ``offer``, ``put`` and ``CESHandler.handle``'s fast path write this same test out, to spare the app's
    thread a call on every record; tests/test_hot_path.py holds them to it."""
    return n == 1 or n == batch_size or not n & WAKE_MASK


#: What ``offer`` answers: the record is in, and the worker needs no wake-up (the usual case: falsy, one test);
#: it is in and the worker must be woken; it is not in, the buffer is full.
QUEUED: Final = 0
WAKE: Final = 1
FULL: Final = -1


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
    """Prepared records waiting for the worker. ``emit`` offers (``offer``, ``put``); only the worker takes
    (under ``lock``). ``batch_size``: the worker's, for the wake-up rule."""

    def __init__(self, max_items: int, max_bytes: int, batch_size: int = 0) -> None:
        self.items: deque[Any] = deque()
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.batch_size = batch_size
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

    def offer(self, item: Any, size: int) -> int:
        """Append ``item`` (``size`` bytes, as ``sizes`` will count it when taken) unless the buffer is full.
        ``QUEUED`` or ``WAKE`` (wake the worker: the module's rule) when it is in, ``FULL`` when not (nothing
        changed: the caller decides, ``room`` and ``put``). On ``emit``'s hot path: no call, no lock; the
        append is the record's count (one C step), so whatever interrupts this, the counts hold."""
        items = self.items
        if self.bytes_in + size > self.bytes_cap or len(items) >= self.max_items:
            return FULL
        self.bytes_in += size
        items.append(item)
        n = len(items)
        return WAKE if n == 1 or n == self.batch_size or not n & WAKE_MASK else QUEUED  # wakes(), written out

    def put(self, item: Any, size: int) -> int:
        """Append ``item`` whatever the bound (the caller made room: ``room``); ``WAKE`` or ``QUEUED``."""
        items = self.items
        self.bytes_in += size
        items.append(item)
        n = len(items)
        return WAKE if n == 1 or n == self.batch_size or not n & WAKE_MASK else QUEUED  # wakes(), written out

    def room(self, size: int, factor: int = 1) -> bool:
        """Room for ``size`` more bytes and one more item within ``factor`` times the bounds."""
        return len(self.items) < factor * self.max_items and (
            self.bytes_in - self.bytes_out + size <= factor * self.max_bytes
        )

    def wait_for_room(self, size: int, factor: int, timeout: float) -> bool:
        """Wait (at most ``timeout``) until ``room(size, factor)``; the worker's takes notify ``space``."""
        deadline = time.monotonic() + timeout
        with self.space:
            while not self.room(size, factor):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.space.wait(min(left, 0.05))
        return True

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
