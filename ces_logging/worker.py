"""The background worker: takes prepared records, builds events, batches them and delivers them, with retries.

Life cycle (after google-cloud-logging's background transport): ``start`` (lazily, by the handler's first
emit), ``wakeup`` (a batch is full, or the buffer just stopped being empty), ``request_flush`` (deliver what is
queued now), ``hurry`` (deliver everything by a deadline: exit, SIGTERM), ``stop`` (deliver what is left within a
grace period, account for the rest, end the threads).

Two kinds of thread. The *batcher* (one per handler) takes records when a batch is due, builds the events and
hands each batch to a *sender*; senders (up to the service's throttle limit, see ``throttle.py``) POST with
retries, so several requests are in flight to a far region. Every item taken from the buffer ends up counted
exactly once: sent, or dropped with a reason, or on disk in the spool (still queued). That is what makes
``sent + dropped + queued (+ folded, with storm control) == received`` hold.

Under gevent or eventlet these "threads" are greenlets, and everything they wait on is made when the worker
first starts, after the server patched (``green.py`` says why they are not real OS threads there).

A bug must not end delivery: the batcher survives an exception in one step (the items in hand are dropped as
``error``, said once), and the handler starts a new batcher if the thread still dies (a few times at most).
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from . import forks, notice
from .buffer import RecordBuffer, Wakeup
from .errors import CESAuthError, CESEndpointError, CESError, CESNoCredentialsError, CESValidationError
from .events import now_ms, sendable
from .mapping import Event as BuiltEvent
from .mapping import encode_batch, event_time
from .spool import Spool, SpoolFile
from .storm import StormControl
from .throttle import Throttle

if TYPE_CHECKING:
    from .client import CESClient

#: Thread idents of every live worker thread: records logged on these threads (urllib3's connection logs,
#: anything a formatter logs) never go back into a CESHandler, which would feed the worker its own output.
WORKER_THREADS: set[int] = set()
forks.on_new_process(WORKER_THREADS.clear)  # a new process has none of its parent's threads

BACKOFF_BASE_S: Final = 1.0
BACKOFF_CAP_S: Final = 30.0
AUTH_ATTEMPTS: Final = 3  # a 401 after the client's own refresh-and-retry: try a couple more times, then drop
IDLE_SENDER_S: Final = 30.0  # a sender with nothing to do for this long ends (a new one starts when needed)
SPOOL_RETRY_S: Final = 5.0  # after a disk error (full, read-only), the spool is written again this much later

_WORKER_IDS = itertools.count(1)

Event = BuiltEvent | dict[str, Any]  # built (its JSON text and time), or a dict (the one-item path, the spool)


class Builder(Protocol):
    """What the worker needs of ``mapping.EventBuilder``: an item's event (or a drop reason), and a batch's."""

    def __call__(self, item: Any, now: int) -> Event | str: ...

    def build_batch(self, items: list[Any], now: int) -> tuple[list[Any], dict[str, int]]: ...


def backoff_delay(attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``attempt`` (1-based): 1, 2, 4 ... capped at 30, with +-20% jitter;
    ``Retry-After`` from the service wins when it says longer."""
    base = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** (attempt - 1))
    jitter: float = (rng or random).uniform(0.8, 1.2)
    delay = base * jitter
    if retry_after is not None:
        delay = max(delay, min(float(retry_after), 300.0))
    return delay


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


class Ledger:
    """Where a batch's items came from, and so how their outcome is counted: from this handler's buffer
    (``memory``), from its own spool files (``own``), or recovered from someone else's (``recovered``).

    A batch from memory may carry storm summaries (storm.py) among its events: ``weights`` maps each summary
    (by ``id``, the very object in the batch, in its halves too) to the records it stands for. Delivered, those
    records count as ``folded``; dropped, as dropped with the batch's reason. So the count a summary carries is
    exact whatever happens to its request. A batch with summaries is never spooled (a spool file counts events,
    not the records each stands for): it retries in memory."""

    __slots__ = ("kind", "owner", "stats", "weights")

    def __init__(self, stats: WorkerStats, kind: str, owner: str | None, weights: dict[int, int] | None = None) -> None:
        self.stats = stats
        self.kind = kind
        self.owner = owner
        self.weights = weights

    @property
    def spoolable(self) -> bool:
        return not self.weights

    def _split(self, events: list[Event]) -> tuple[int, int]:
        """(plain events, records the summaries among ``events`` stand for)."""
        weights = self.weights
        if not weights:
            return len(events), 0
        plain = folded = 0
        for e in events:
            w = weights.get(id(e))
            if w is None:
                plain += 1
            else:
                folded += w
        return plain, folded

    def sent(self, events: list[Event]) -> None:
        plain, folded = self._split(events)
        self.stats.add_sent(plain, self.kind, folded)

    def lost(self, reason: str, events: list[Event]) -> None:
        """``events`` of this batch dropped as ``reason`` (a summary: every record it stands for)."""
        plain, folded = self._split(events)
        self.stats.add_dropped(reason, plain + folded, self.kind)

    def dropped(self, reason: str, n: int) -> None:
        """``n`` items that are no summary (build failures, spool files) dropped as ``reason``."""
        self.stats.add_dropped(reason, n, self.kind)

    def spooled(self, n: int) -> None:
        if self.kind == "memory":
            self.stats.add_spooled(n)


class SummaryBuild(Ledger):
    """Building one storm summary standing for ``weight`` records: if it cannot be built, they all go."""

    __slots__ = ("weight",)

    def __init__(self, stats: WorkerStats, weight: int) -> None:
        super().__init__(stats, "memory", None)
        self.weight = weight

    def dropped(self, reason: str, n: int) -> None:
        self.stats.add_dropped(reason, n * self.weight, "memory")


class Job:
    __slots__ = ("batch", "leased", "ledger")

    def __init__(self, batch: list[Event], ledger: Ledger, leased: SpoolFile | None) -> None:
        self.batch = batch
        self.ledger = ledger
        self.leased = leased


Inbox = queue.SimpleQueue[Job | None]  # a sender's: one job at a time, None to end


class Worker:
    def __init__(
        self,
        buffer: RecordBuffer,
        build: Builder,
        client: CESClient,
        throttle: Throttle,
        *,
        batch_size: int,
        flush_interval: float,
        spool: Spool | None = None,
        sizes: Callable[[list[Any]], int] = lambda _: 0,
        name: str = "ces-logging-worker",
        fold: StormControl | None = None,
    ) -> None:
        self.buffer = buffer
        self.build = build
        self.client = client
        self.throttle = throttle
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.spool = spool
        self.sizes = sizes  # the bytes of taken items, as emit counted them (the buffer's byte bound)
        self.name = name
        self.fold = fold  # storm control (storm.py), only ever touched by the batcher thread
        self.stats = WorkerStats()
        self.wakeup = Wakeup()
        self._interrupt = threading.Event()  # cuts a back-off short when stopping
        self._flush_requested = False
        self._deadline: float | None = None  # monotonic: deliver by then (exit, SIGTERM, stop)
        self._stopping = False  # end the threads once everything is accounted for (or the deadline passed)
        self._final = False  # the deadline is the process's end: it does not go away
        self._thread: threading.Thread | None = None
        self._ran = False
        # Each sender has an inbox of its own; the idle ones wait in a stack, and a batch goes to the one that
        # became idle last. So while one sender keeps up (the service is near), one thread does all the sending
        # and the others time out: on loopback, batches taken in turn by three idle threads from one shared
        # queue cost the worker about a third more CPU per event than one thread sending them all.
        self._senders: list[tuple[threading.Thread, Inbox]] = []
        self._idle_inboxes: list[Inbox] = []
        self._jobs_out = 0  # jobs handed to senders and not yet finished (under ``_sender_cond``)
        # the senders and the idle ones; re-entrant: a SIGTERM's drain may interrupt ``join`` on its own thread
        self._lock = threading.RLock()
        self._sender_cond = threading.Condition(self._lock)  # a sender became idle
        self._uid = next(_WORKER_IDS)  # not id(self): a new worker may reuse a dead one's address
        self._refused_seen: dict[str, int] = {}
        # The spool's state: files may be waiting (ours, or a crashed process's); the service is down (new
        # batches go to disk, behind the older ones); when to try the oldest file again.
        self._spool_backlog = spool is not None and spool.pending() > 0
        self._spool_broken_until = 0.0  # a disk error: memory only until then, then the spool is tried again
        self._outage = False
        self._probing = False  # one spooled file in flight while the service is down
        self._probe_attempt = 0
        self._next_probe = 0.0
        # Storm summaries built and waiting to ride in the next batch (batcher thread only), with the records
        # each stands for: with the other events, they cost no request of their own.
        self._summaries: list[tuple[Event, int]] = []

    # --- life cycle ------------------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def ran(self) -> bool:
        """The batcher ran in this process (a forked child without at-fork hooks inherits a worker that never
        did: that is why its records were not sent, not the service)."""
        return self._ran

    def start(self) -> None:
        if self._thread is None:
            self._renew_waits()
        t = threading.Thread(target=self._run, name=self.name, daemon=True)
        previous, self._thread = self._thread, t
        try:
            notice.start_thread(t)
        except BaseException:  # an app's signal handler raised in there (the signal.alarm pattern)
            if t.ident is None:  # before the thread started: as if this start had not been tried
                self._thread = previous
            raise

    def _renew_waits(self) -> None:
        """Everything the worker's threads wait on, made now, with ``threading`` and ``queue`` as they are now:
        a handler built before gevent or eventlet patched them (``gunicorn --preload``, a worker process forked
        before its server patched) would otherwise have its greenlets wait on a real queue or lock and freeze
        the hub (see green.py). Only at the first start, when none of this worker's threads exists yet."""
        self.wakeup = Wakeup()
        self._interrupt = threading.Event()
        self._lock = threading.RLock()
        self._sender_cond = threading.Condition(self._lock)
        self.stats.cond = threading.Condition(threading.RLock())
        self.buffer.renew_locks()

    def request_flush(self) -> None:
        self._flush_requested = True
        self._next_probe = 0.0  # a flush tries the spool now, not at the next back-off step
        self.wakeup.set()

    def hurry(self, deadline: float, final: bool = False) -> None:
        """Deliver everything now, retries included, by ``deadline`` (monotonic); requests started from now on
        never outlive it. The worker goes on afterwards: records logged later are still sent, by the same
        deadline when ``final`` (the process is ending), as usual otherwise (the hurry ends with the deadline)."""
        if self._deadline is None or deadline < self._deadline or not self._final:
            self._deadline = deadline
        self._final = self._final or final
        self._next_probe = 0.0
        self.wakeup.set()

    def stop(self, grace: float) -> None:
        """Deliver what is left within ``grace`` seconds, then end. Does not wait."""
        self.hurry(time.monotonic() + max(0.0, grace), final=True)
        self._stopping = True
        self._interrupt.set()
        self.wakeup.set()

    def join(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) for the batcher and the senders; True when all have ended."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            threads = [t for t in [self._thread, *(t for t, _ in self._senders)] if t is not None]
        for t in threads:
            if t is threading.current_thread() or t.ident is None:
                continue  # never started (an interrupted start): nothing to wait for
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def _remaining(self) -> float | None:
        d = self._deadline
        if d is None:
            return None
        left = d - time.monotonic()
        if left <= 0 and not self._final:
            self._deadline = None  # a hurry that was not the end (SIGTERM handed on to a server): back to normal
            return None
        return left

    # --- the batcher ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        self._ran = True
        notice.keep_signals_off_this_thread()
        me = threading.get_ident()
        WORKER_THREADS.add(me)
        try:
            if self.spool is not None:
                self._spool_call(self.spool.reclaim_stale_leases)
            self._loop()
        finally:
            if self._stopping:  # what is still queued will never be sent
                self._finish()
            WORKER_THREADS.discard(me)

    def _finish(self) -> None:
        """Stopping: account for what is left in the buffer, end the senders, close idle connections."""
        while True:
            items = self.buffer.take(self.batch_size, self.sizes)
            if not items:
                break
            self.stats.taken(len(items))
            batch = self._build_all(items, Ledger(self.stats, "memory", None))
            self._park(batch, Ledger(self.stats, "memory", self._owner()), None, "shutdown")
        if self.fold is not None:
            self._summaries += self._build_summaries(self.fold.due(time.time(), urgent=True))
        while self._summaries:
            pairs, self._summaries = self._summaries[: self.batch_size], self._summaries[self.batch_size :]
            self._park([e for e, _ in pairs], self._summary_ledger(pairs), None, "shutdown")
        with self._lock:
            inboxes = [inbox for _, inbox in self._senders]
        for inbox in inboxes:
            inbox.put(None)
        with contextlib.suppress(Exception):
            self.client.reset_connections()  # no idle keep-alive connection left behind

    def _loop(self) -> None:
        """Records wait in the buffer, not in a half-built batch, until a batch is due: full, or
        ``flush_interval`` after the first of them arrived, or a flush, a deadline or a stop. So ``emit`` needs
        to wake the worker only twice a batch (the first record, and the one that fills it)."""
        first_seen: float | None = None  # when the oldest queued record was noticed
        errors = 0
        next_report = 0.0
        while True:
            try:
                if time.monotonic() >= next_report:
                    self._report_refused()
                    next_report = time.monotonic() + 1.0
                self.wakeup.clear()
                urgent = self._remaining() is not None or self._flush_requested
                if self.fold is not None:
                    closed = self.fold.due(time.time(), urgent, bool(self.buffer.items))
                    self._summaries += self._build_summaries(closed)
                waiting = len(self.buffer.items)
                if waiting:
                    now = time.monotonic()
                    if first_seen is None:
                        first_seen = now
                    due = now - first_seen >= self.flush_interval
                    if waiting >= self.batch_size or due or urgent or self.buffer.over(0.5):
                        self._take_and_dispatch()
                        first_seen = time.monotonic() if self.buffer.items else None
                        errors = 0
                        continue
                else:
                    first_seen = None
                    if self._summaries:  # no record to ride with: they go on their own
                        self._take_and_dispatch()
                        continue
                if self._spool_due() and self._send_one_spooled():
                    continue
                if first_seen is not None:
                    self.wakeup.wait(max(0.0, self.flush_interval - (time.monotonic() - first_seen)))
                    continue
                # nothing queued in memory
                if self._stopping and (self._idle() or (self._remaining() or 0) <= 0):
                    return
                if self.stats.in_flight == 0:
                    self._flush_requested = False
                wait = 0.25 if (self._stopping or self._deadline is not None) else 1.0
                if self._spool_backlog:
                    wait = min(wait, max(0.0, self._next_probe - time.monotonic()))
                self.wakeup.wait(wait)
            except BaseException as e:  # a bug here must not end delivery: say it once, go on
                errors += 1
                self._say("worker-bug", f"worker error (recovering): {type(e).__name__}: {e}")
                if errors > 100:
                    raise
                time.sleep(min(1.0, 0.01 * errors))

    def _say(self, reason: str, text: str) -> bool:
        """One line per reason and minute, per worker (two handlers' troubles are two stories)."""
        return notice.say(f"{self._uid}:{reason}", text)

    _WORDS: Final = {
        "queue_full": "the buffer was full (the service is slower than the app logs; see queue_size, "
        "queue_max_bytes, overflow)",
        "closed": "logged after the handler was closed",
    }

    def _report_refused(self) -> None:
        """Records refused at emit are said here, off the app's thread (emit never does I/O)."""
        seen = self._refused_seen
        for reason, n in self.buffer.refused_counts().items():
            if n > seen.get(reason, 0):
                new = n - seen.get(reason, 0)
                if self._say(f"refused-{reason}", f"{new} event(s) dropped: {self._WORDS.get(reason, reason)}"):
                    seen[reason] = n

    def _idle(self) -> bool:
        """Nothing in memory, nothing in flight, and nothing of ours on disk that could go now."""
        if self.buffer.items or self.stats.in_flight or self._summaries:
            return False
        return not (self._spool_backlog and not self._outage and self.spool is not None)

    def _take_and_dispatch(self) -> None:
        """One batch: the storm summaries waiting (oldest first), then records from the buffer. With storm
        control, records the batch folds leave room that more records fill, so folding never makes more
        requests than sending every record would."""
        pairs, self._summaries = self._summaries[: self.batch_size], self._summaries[self.batch_size :]
        ledger = self._summary_ledger(pairs)
        batch = [e for e, _ in pairs]
        for _ in range(self.batch_size):  # bounded: each round takes records, or ends
            room = self.batch_size - len(batch)
            items = self.buffer.take(room, self.sizes) if room > 0 else []
            if not items:
                break
            self.stats.taken(len(items))
            if self.fold is not None:  # storm control: the folded ones stay in flight until their summary's outcome
                items = self.fold.admit(items)
            batch += self._build_all(items, ledger)
            if self.fold is None:
                break  # nothing folded: the one take filled the batch or emptied the buffer
        if batch:
            self._dispatch(batch, ledger)

    def _build_summaries(self, due: list[tuple[Any, int]]) -> list[tuple[Event, int]]:
        """Storm summaries whose window closed (all pending ones on a flush, a deadline, a stop), built, with
        the records each stands for; they ride in the next batch (``_take_and_dispatch``)."""
        out: list[tuple[Event, int]] = []
        for item, weight in due:
            out.extend((e, weight) for e in self._build_all([item], SummaryBuild(self.stats, weight)))
        return out

    def _summary_ledger(self, pairs: list[tuple[Event, int]]) -> Ledger:
        return Ledger(self.stats, "memory", self._owner(), {id(e): w for e, w in pairs} or None)

    def _owner(self) -> str | None:
        return self.spool.owner if self.spool is not None else None

    def _build_all(self, items: list[Any], ledger: Ledger) -> list[Event]:
        try:
            batch, reasons = self.build.build_batch(items, now_ms())
        except Exception as e:  # a bug: the builder is meant never to raise
            self._say("build-bug", f"could not build events: {type(e).__name__}: {e}")
            batch, reasons = self._build_one_by_one(items)
        for reason, n in reasons.items():
            ledger.dropped(reason, n)
            if reason == "key_rate":
                self._say("key_rate", f"{n} event(s) dropped: over 1,000 a second with the same fields for minutes")
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

    def _dispatch(self, batch: list[Event], ledger: Ledger, leased: SpoolFile | None = None) -> None:
        """A batch to disk (the service is down, older batches wait there, or the buffer overflows), or to a
        sender. A batch is handed over only when a sender may send it now: fewer senders busy than the
        throttle's limit (which the service's answers move, ``throttle.py``), so at most ``limit`` batches are
        out of the buffer at once and no batch waits in a second sender for the first one's slot. Each sender
        still asks the throttle for a slot before every attempt (several handlers share it)."""
        spill = self.buffer.over(1.0)
        if leased is None and (self._outage or self._spool_backlog or spill):
            weights = ledger.weights
            if not weights:
                if self._to_spool(batch, ledger):
                    return
            else:  # the events to disk; the summaries stay out of it (storm.py) and go to a sender
                plain = [e for e in batch if id(e) not in weights]
                if plain and self._to_spool(plain, Ledger(self.stats, "memory", ledger.owner)):
                    batch = [e for e in batch if id(e) in weights]
        job = Job(batch, ledger, leased)
        with self._sender_cond:
            while True:
                self._senders = [s for s in self._senders if s[0].is_alive()]
                alive = [inbox for _, inbox in self._senders]
                # never hand a job to the inbox of a sender that is gone (it would wait there for ever)
                self._idle_inboxes = [q for q in self._idle_inboxes if any(q is a for a in alive)]
                if len(self._senders) - len(self._idle_inboxes) < self.throttle.limit:
                    self._jobs_out += 1
                    if self._idle_inboxes:
                        self._idle_inboxes.pop().put(job)  # the sender that became idle last: its thread is warm
                        return
                    inbox: Inbox = queue.SimpleQueue()
                    inbox.put(job)
                    t = threading.Thread(target=self._sender, args=(inbox,), name=f"{self.name}-send", daemon=True)
                    self._senders.append((t, inbox))
                    notice.start_thread(t)
                    return
                # Every sender busy (a slow service) and the buffer filling behind this batch: with a spool, it
                # waits on disk rather than here, so that the buffer drains before it overflows (``queue_full``).
                # A write takes a few ms under this lock: a sender that ends its send waits that long to say so.
                if ledger.spoolable and self.buffer.over(0.5):
                    if leased is None and self._to_spool(batch, ledger):
                        return
                    if leased is not None and self._park(batch, ledger, leased, None):  # back to its file, for later
                        self._probing = False
                        return
                left = self._remaining()
                if left is not None and left <= 0:
                    break
                step = 0.25 if self.spool is None else 0.05  # with a spool, the buffer's growth is watched too
                self._sender_cond.wait(step if left is None else min(step, left))
                self._report_refused()  # every sender busy (an outage without a spool): drops are still said
        self._park(batch, ledger, leased, "shutdown")

    def _slot(self, give_way: Callable[[], bool] | None = None) -> int | None:
        """A throttle slot: how many requests are in flight with it (>= 1); 0 when the process's final
        deadline has passed; None as soon as ``give_way()`` says the batch has somewhere better to go (the
        spool, once the service is down)."""
        while True:
            step = time.monotonic() + 0.25
            d = self._deadline
            in_flight = self.throttle.acquire(step if d is None else min(d, step))
            if in_flight:
                return in_flight
            left = self._remaining()  # a passed hurry that was not final is cleared here
            if left is not None and left <= 0:
                return 0
            if give_way is not None and give_way():
                return None

    # --- senders --------------------------------------------------------------------------------------------

    def _sender(self, inbox: Inbox) -> None:
        """Takes one job at a time from its inbox (a batch is handed to it only when it is idle), sends it, and
        ends after ``IDLE_SENDER_S`` without work, or at a stop."""
        notice.keep_signals_off_this_thread()
        me = threading.get_ident()
        WORKER_THREADS.add(me)
        try:
            while True:
                try:
                    job = inbox.get(timeout=IDLE_SENDER_S)
                except queue.Empty:
                    with self._sender_cond:
                        if any(q is inbox for q in self._idle_inboxes):  # still idle: nobody handed it a job
                            self._leave(inbox)
                            return
                    continue  # a job was handed over just now: take it
                if job is None:
                    with self._sender_cond:
                        self._leave(inbox)
                    return
                try:
                    self._send_with_retries(job.batch, job.ledger, job.leased)
                except BaseException as e:  # a bug (or a library's BaseException): count the batch, go on
                    self._say("send-bug", f"unexpected error while sending: {type(e).__name__}: {e}")
                    job.ledger.lost("error", job.batch)
                finally:
                    with self._sender_cond:
                        self._jobs_out -= 1
                        self._idle_inboxes.append(inbox)
                        self._sender_cond.notify_all()
                    self.wakeup.set()
        finally:
            WORKER_THREADS.discard(me)

    def _leave(self, inbox: Inbox) -> None:
        """Under ``_sender_cond``: a sender that ends is no longer a sender, idle or not."""
        self._idle_inboxes = [q for q in self._idle_inboxes if q is not inbox]
        self._senders = [s for s in self._senders if s[1] is not inbox]

    def _drop_too_old(self, batch: list[Event], ledger: Ledger) -> list[Event]:
        times = [event_time(e) for e in batch]
        if not times or (sendable(min(times)) and sendable(max(times))):  # the window is an interval
            return batch
        fresh = [e for e, t in zip(batch, times, strict=True) if sendable(t)]
        if len(fresh) < len(batch):
            ledger.lost("too_old", [e for e, t in zip(batch, times, strict=True) if not sendable(t)])
            self._say("too_old", f"{len(batch) - len(fresh)} event(s) dropped: older than the service accepts (1 h)")
        return fresh

    def _send_with_retries(
        self, batch: list[Event], ledger: Ledger, leased: SpoolFile | None = None, *, slot: bool = False
    ) -> None:
        """Deliver one batch, or account for every item in it. ``slot``: a throttle slot is held on entry; it
        is always given back. With a spool, a retryable failure does not hold the batch in memory: it goes to
        disk (or, when it came from disk, back to it) and the spool is tried again after the back-off."""
        attempt = 0
        auth_failures = 0
        in_flight = 1
        try:
            while True:
                while not slot:
                    retried = attempt > 0
                    got = self._slot(
                        lambda retried=retried: (
                            leased is None  # type: ignore[misc]
                            and ledger.spoolable
                            and (self._outage or retried)
                            and self.spool is not None
                            and self._spool_usable()
                        )
                    )
                    if got is None:  # the service went down while this batch waited: to disk, behind the rest
                        if self._park(batch, ledger, None, None):
                            return
                        continue
                    if not got:
                        self._park(batch, ledger, leased, "shutdown")
                        return
                    slot, in_flight = True, got
                batch = self._drop_too_old(batch, ledger)  # after the wait for a slot: time has passed
                if not batch:
                    self._spool_done(leased)
                    return
                remaining = self._remaining()
                if remaining is not None and remaining <= 0:
                    self._park(batch, ledger, leased, "shutdown")
                    return
                timeout = None if remaining is None else max(0.05, min(self.client.timeout, remaining))
                # Times were assigned once, when the events were built: a retry sends the very same items, and
                # the same-event rule makes a batch that did land the first time harmless the second time.
                body = encode_batch(batch)
                started = time.monotonic()
                try:
                    self.client.send_events_body(body, timeout=timeout)
                except CESValidationError as e:
                    self.throttle.release(True)
                    slot = False
                    self._isolate_rejected(batch, e, ledger)
                    self._spool_done(leased)
                    return
                except CESEndpointError as e:  # a redirect, a certificate that does not verify: configuration
                    self.throttle.release(True)
                    slot = False
                    self._spool_done(leased)
                    # said before counted: a flush that sees the drop finds the line already written
                    self._say("config", f"{len(batch)} event(s) dropped, the endpoint is misconfigured: {e}")
                    ledger.lost("config", batch)
                    return
                except CESNoCredentialsError as e:  # nothing to sign with (yet): nothing was sent
                    self.throttle.release(True)
                    slot = False
                    self._spool_done(leased)
                    self._say("no_credentials", f"{len(batch)} event(s) dropped: {e}")
                    ledger.lost("no_credentials", batch)
                    return
                except CESAuthError as e:
                    self.throttle.release(True)
                    slot = False
                    auth_failures += 1
                    if auth_failures >= AUTH_ATTEMPTS or e.status == 403:
                        self._spool_done(leased)
                        ledger.lost("auth", batch)
                        self._say("auth", f"credentials refused, {len(batch)} event(s) dropped: {e}")
                        return
                    self.stats.add_retry()
                    delay = backoff_delay(auth_failures)
                except CESError as e:
                    self.stats.add_retry()
                    if self.spool is not None and self._spool_usable():
                        # the spool's back-off spans batches: it is the service that is down
                        self._probe_attempt += 1
                        delay = backoff_delay(self._probe_attempt, e.retry_after)
                        self.throttle.release(False, delay)
                        slot = False
                        if self._park(batch, ledger, leased, None):
                            self._outage = True
                            self._next_probe = time.monotonic() + delay
                            self._say("outage", f"service unavailable ({e}); events wait in the spool")
                            return
                    else:
                        attempt += 1
                        delay = backoff_delay(attempt, e.retry_after)
                        self.throttle.release(False, delay)
                        slot = False
                        if attempt == 3:
                            self._say("retrying", f"service unavailable ({e}); retrying")
                    remaining = self._remaining()
                    if remaining is not None and delay >= remaining:
                        self._park(batch, ledger, leased, "shutdown")
                        return
                    continue  # the throttle's shared pause is the wait
                except Exception as e:  # a bug (ours or a library's): never loop on it
                    self.throttle.release(True)
                    slot = False
                    ledger.lost("error", batch)
                    self._say("send-bug", f"unexpected error while sending: {type(e).__name__}: {e}")
                    self._spool_done(leased)
                    return
                else:
                    self.throttle.release(True, rtt=time.monotonic() - started, in_flight=in_flight)
                    slot = False
                    # The file goes before the count: a flush that sees the batch sent finds its file gone.
                    self._spool_done(leased)
                    ledger.sent(batch)
                    if self._outage:
                        self._outage = False
                        self._next_probe = 0.0
                        self.wakeup.set()
                    self._probe_attempt = 0
                    return
                remaining = self._remaining()
                if remaining is not None and delay >= remaining:
                    self._park(batch, ledger, leased, "shutdown")
                    return
                self._interrupt.wait(delay)
        finally:
            if slot:
                self.throttle.release(True)
            if leased is not None:
                self._probing = False

    def _isolate_rejected(self, batch: list[Event], err: CESError, ledger: Ledger) -> None:
        """A 400 names the request, not always the item: split the batch in halves until the bad items are
        alone, drop those as ``rejected`` and deliver the rest."""
        if len(batch) == 1 or err.status in (404,):
            ledger.lost("rejected", batch)
            self._say("rejected", f"service refused {len(batch)} event(s): {err}")
            return
        mid = len(batch) // 2
        for half in (batch[:mid], batch[mid:]):
            self._send_with_retries(half, ledger)

    # --- the spool ---------------------------------------------------------------------------------------------

    def _spool_usable(self) -> bool:
        return self.spool is not None and time.monotonic() >= self._spool_broken_until

    def _spool_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A spool operation; a disk problem (full, read-only) means memory only for a while, with one line;
        the spool is tried again later, and what it already holds is still read and delivered."""
        try:
            out = fn(*args)
            self._note_skipped()
            return out
        except OSError as e:
            self._say(
                "spool-error",
                f"spool at {getattr(self.spool, 'dir', '?')} failed ({type(e).__name__}: {e.strerror or e}); "
                f"keeping events in memory and trying the disk again in {SPOOL_RETRY_S:g} s",
            )
            self._spool_broken_until = time.monotonic() + SPOOL_RETRY_S
            return None

    def _note_skipped(self) -> None:
        """Files the spool skipped (a symlink, a FIFO, another user's, too large): counted, said once."""
        spool = self.spool
        skipped = spool.take_skipped() if spool is not None else []
        if not skipped:
            return
        with self.stats.cond:
            self.stats.spool_skipped += len(skipped)
        name, why = skipped[0]
        more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        self._say(
            "spool-skipped",
            f"spool at {getattr(spool, 'dir', '?')}: {name} ({why}){more} skipped, not read: not a batch this "
            "user wrote",
        )

    def _to_spool(self, batch: list[Event], ledger: Ledger) -> bool:
        """Write a batch to disk; True when it is there. The size cap may push out the oldest files: their
        items are counted as dropped (``spool_full``)."""
        spool = self.spool
        if spool is None or not ledger.spoolable or not self._spool_usable():
            return False
        evicted = self._spool_call(spool.write, encode_batch(batch), len(batch), ledger.owner)
        if evicted is None:
            return False
        self._count_evicted(evicted)
        ledger.spooled(len(batch))
        self._spool_backlog = True
        return True

    def _count_evicted(self, evicted: list[SpoolFile]) -> None:
        """Spool files the size cap pushed out: their items are dropped as ``spool_full``, said once a minute."""
        spool = self.spool
        for f in evicted:
            kind = "own" if spool is not None and f.owner == spool.owner else "recovered"
            Ledger(self.stats, kind, f.owner).dropped("spool_full", f.count)
            self._say("spool_full", f"spool over its size cap: {f.count} event(s) of the oldest batch dropped")

    def _park(self, batch: list[Event], ledger: Ledger, leased: SpoolFile | None, reason: str | None) -> bool:
        """Put a batch that cannot be sent now somewhere safe: back to its spool file, or into the spool.
        Failing both, drop it as ``reason`` (when given) and say so with False."""
        if not batch:
            self._spool_done(leased)
            return True
        if leased is not None and self.spool is not None:
            if len(batch) == leased.count:
                # The cap may take it, or older files, on its way back. A disk error leaves it leased: the
                # lease is taken back as stale later (as before).
                self._count_evicted(self._spool_call(self.spool.release, leased) or [])
                self._spool_backlog = True
                return True
            self._spool_done(leased)  # part of it went (too old): write what is left as a new file
        if self._to_spool(batch, ledger):
            return True
        if reason is not None:
            ledger.lost(reason, batch)  # "shutdown": the handler says it, in one line (_report_left)
        return False

    def _spool_done(self, leased: SpoolFile | None) -> None:
        if leased is not None and self.spool is not None:
            self._spool_call(self.spool.done, leased)

    def _spool_due(self) -> bool:
        if not self._spool_backlog or self.spool is None or self._probing:
            return False
        if self._outage and self._deadline is not None and self._stopping:
            return False  # stopping while the service is down: the files wait for the next process
        return time.monotonic() >= self._next_probe

    def _send_one_spooled(self) -> bool:
        """Send the oldest spooled batch; True when something moved, False when the spool is empty (or it
        cannot be read now)."""
        spool = self.spool
        if spool is None:
            return False
        claimed = self._spool_call(spool.claim)
        if claimed is None:
            self._spool_backlog = spool.has_files() if self._spool_usable() else self._spool_backlog
            self._refresh_own_spooled()
            if not self._spool_backlog:
                self._outage = False
            else:
                self._next_probe = time.monotonic() + 1.0
            return False
        leased, items, problem = claimed
        kind = "own" if leased.owner == spool.owner else "recovered"
        ledger = Ledger(self.stats, kind, leased.owner)
        if problem is not None:  # unreadable or invalid: it can never be sent
            ledger.dropped("error", leased.count)
            self._say("spool-bad-file", f"spool file {leased.path.name} dropped ({problem}): {leased.count} event(s)")
            return True
        if self._outage:
            self._probing = True
        self._dispatch(items, ledger, leased)
        return True

    def _refresh_own_spooled(self) -> None:
        """When the files this handler wrote are gone (another process delivered them), stop counting them as
        queued here: ``flush`` must not wait for what someone else already sent.

        Only while no sender has a job: a sender removes a file of ours before it counts the file's outcome (so
        that a flush which sees the batch counted finds the file gone), and a refresh in between would count it
        as gone and the sender count it again (``spooled`` below 0, ``queued=-1``). Jobs are handed out by the
        batcher alone, which is the thread running this, so none can start during the check."""
        spool = self.spool
        if spool is None or self.stats.spooled <= 0:
            return
        with self._sender_cond:
            if self._jobs_out:
                return  # the next time the spool is found empty (the batcher looks again within a second)
        on_disk = self._spool_call(spool.count_of_owner, spool.owner)
        if on_disk is not None and on_disk < self.stats.spooled:
            self.stats.forget_spooled(self.stats.spooled - on_disk)

    # --- flush -------------------------------------------------------------------------------------------------

    def wait_accounted(
        self, target: int, accounted: Callable[[], int], deadline: float | None, *, with_spooled: bool = False
    ) -> bool:
        """Wait until ``accounted()`` (the handler knows what counts) reaches ``target``, until ``deadline``;
        ``with_spooled``: what is safe on disk counts as done too (an exit's drain)."""
        stats = self.stats

        def done() -> int:
            return accounted() + (stats.spooled if with_spooled else 0)

        with stats.cond:
            while (gap := target - done()) > 0:
                if not self.alive:
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                # woken when the worker has settled the gap; the short timeout re-reads what only the app's
                # thread changes (records refused at emit count as accounted too)
                stats.wait(gap, with_spooled, 0.05 if left is None else min(0.05, left))
                if stats.spooled and not self._outage:
                    self.wakeup.set()
        return True
