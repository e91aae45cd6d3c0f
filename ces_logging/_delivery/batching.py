"""Batching: records taken from the buffer and built into events, with storm summaries riding along.

Records wait in the buffer, not in a half-built batch, until a batch is due (``due``): full, or
``flush_interval`` after the first of them was seen, or urgent (a flush, a deadline, a stop), or the buffer half
full. ``next_batch`` then takes up to ``batch_size`` items, counts them as taken (``in_flight``) in the same
step, and builds them; what cannot be built is dropped and counted with its reason, so every item taken is in
the batch or counted. Storm summaries (storm.py) built when their window closed wait here and go first in the
next batch: with the other events, they cost no request of their own. Only the batcher thread calls this.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from ..buffer import RecordBuffer
from ..events import now_ms
from ..storm import StormControl
from .outcome import Event, Ledger, SummaryBuild
from .stats import WorkerStats


class Builder(Protocol):
    """What the worker needs of ``mapping.EventBuilder``: an item's event (or a drop reason), and a batch's."""

    def __call__(self, item: Any, now: int) -> Event | str: ...

    def build_batch(self, items: list[Any], now: int) -> tuple[list[Any], dict[str, int]]: ...


class Batching:
    def __init__(
        self,
        buffer: RecordBuffer,
        build: Builder,
        stats: WorkerStats,
        *,
        batch_size: int,
        sizes: Any,
        fold: StormControl | None,
        owner: Callable[[], str | None],
        say: Callable[[str, str], bool],
    ) -> None:
        self.buffer = buffer
        self.build = build
        self.stats = stats
        self.batch_size = batch_size
        self.sizes = sizes  # the bytes of taken items, as emit counted them (the buffer's byte bound)
        self.fold = fold
        self.owner = owner  # the spool's name for this process's batches (a fork renews it)
        self.say = say
        self.summaries: list[tuple[Event, int]] = []  # built, waiting to ride in the next batch

    def due(self, waiting: int, waited: float, flush_interval: float, urgent: bool) -> bool:
        """A batch of ``waiting`` records, the first seen ``waited`` seconds ago, should go now."""
        return waiting >= self.batch_size or waited >= flush_interval or urgent or self.buffer.over(0.5)

    def close_windows(self, now: float, urgent: bool) -> None:
        """Storm windows that closed (all of them when ``urgent``): their summaries, built, wait for a batch."""
        if self.fold is not None:
            self.summaries += self.summaries_for(self.fold.due(now, urgent, bool(self.buffer.items)))

    def next_batch(self) -> tuple[list[Event], Ledger]:
        """One batch: the storm summaries waiting (oldest first), then records from the buffer. With storm
        control, records the batch folds leave room that more records fill, so folding never makes more
        requests than sending every record would."""
        pairs, self.summaries = self.summaries[: self.batch_size], self.summaries[self.batch_size :]
        ledger = self.summary_ledger(pairs)
        batch = [e for e, _ in pairs]
        for _ in range(self.batch_size):  # bounded: each round takes records, or ends
            room = self.batch_size - len(batch)
            items = self.buffer.take(room, self.sizes) if room > 0 else []
            if not items:
                break
            self.stats.taken(len(items))
            if self.fold is not None:  # storm control: the folded ones stay in flight until their summary's outcome
                items = self.fold.admit(items)
            batch += self.build_all(items, ledger)
            if self.fold is None:
                break  # nothing folded: the one take filled the batch or emptied the buffer
        return batch, ledger

    def drain(self, park: Callable[[list[Event], Ledger, None, str], bool]) -> None:
        """Stopping: every record left in the buffer and every storm summary, built and handed to ``park`` (the
        spool, or dropped as ``shutdown``): counted either way."""
        while True:
            items = self.buffer.take(self.batch_size, self.sizes)
            if not items:
                break
            self.stats.taken(len(items))
            batch = self.build_all(items, Ledger(self.stats, "memory", None))
            park(batch, Ledger(self.stats, "memory", self.owner()), None, "shutdown")
        if self.fold is not None:
            self.summaries += self.summaries_for(self.fold.due(time.time(), urgent=True))
        while self.summaries:
            pairs, self.summaries = self.summaries[: self.batch_size], self.summaries[self.batch_size :]
            park([e for e, _ in pairs], self.summary_ledger(pairs), None, "shutdown")

    def summaries_for(self, due: list[tuple[Any, int]]) -> list[tuple[Event, int]]:
        """Storm summaries built, with the records each stands for (if one cannot be built, they all go)."""
        out: list[tuple[Event, int]] = []
        for item, weight in due:
            out.extend((e, weight) for e in self.build_all([item], SummaryBuild(self.stats, weight)))
        return out

    def summary_ledger(self, pairs: list[tuple[Event, int]]) -> Ledger:
        return Ledger(self.stats, "memory", self.owner(), {id(e): w for e, w in pairs} or None)

    def build_all(self, items: list[Any], ledger: Ledger) -> list[Event]:
        try:
            batch, reasons = self.build.build_batch(items, now_ms())
        except Exception as e:  # a bug: the builder is meant never to raise
            self.say("build-bug", f"could not build events: {type(e).__name__}: {e}")
            batch, reasons = self._build_one_by_one(items)
        for reason, n in reasons.items():
            ledger.dropped(reason, n)
            if reason == "key_rate":
                self.say("key_rate", f"{n} event(s) dropped: over 1,000 a second with the same fields for minutes")
        return batch

    def _build_one_by_one(self, items: list[Any]) -> tuple[list[Event], dict[str, int]]:
        """After a bug in the batch path: each item alone, so that one bad item costs itself, not the batch."""
        batch: list[Event] = []
        reasons: Counter[str] = Counter()
        now = now_ms()
        for item in items:
            try:
                ev = self.build(item, now)
            except Exception:
                ev = "error"
            if isinstance(ev, str):
                reasons[ev] += 1
            else:
                batch.append(ev)
        return batch, reasons
