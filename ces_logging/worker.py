"""The background worker: takes queued items, builds events, batches them and delivers them, with retries.

Life cycle (after google-cloud-logging's background transport): ``start`` (lazily, by the handler's first
emit), ``wake`` (a batch is full, or the queue just stopped being empty), ``flush`` (deliver what is queued
now), ``stop`` (deliver what is left within a grace period, account for the rest, end the thread).

One thread, one request at a time. Every item taken from the queue ends up counted exactly once: as sent,
or as dropped with a reason. That is what makes ``sent + dropped + queued == received`` hold.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Final

from .client import CESClient
from .errors import CESAuthError, CESError, CESValidationError
from .events import sendable
from .spool import Spool, SpoolFile

_log = logging.getLogger("ces_logging")

#: Thread idents of every live worker: records logged on these threads (our own diagnostics, urllib3's
#: connection logs) never go back into a CESHandler, which would feed the worker its own output.
WORKER_THREADS: set[int] = set()

BACKOFF_BASE_S: Final = 1.0
BACKOFF_CAP_S: Final = 30.0
AUTH_ATTEMPTS: Final = 3  # a 401 after the client's own refresh-and-retry: try a couple more times, then drop

Event = dict[str, Any]
Builder = Callable[[Any], Event]


class Drop(Exception):
    """Raised by a builder for an item that must not be sent; ``reason`` goes into the drop counters."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
        self.cond = threading.Condition(threading.Lock())
        self.sent = 0
        self.retries = 0
        self.batches = 0
        self.spooled = 0
        self.dropped: Counter[str] = Counter()
        self.recovered_sent = 0
        self.recovered_dropped: Counter[str] = Counter()

    def add_sent(self, n: int, from_spool: bool = False) -> None:
        with self.cond:
            self.sent += n
            self.batches += 1
            if from_spool:
                self.spooled -= n
            self.cond.notify_all()

    def add_dropped(self, reason: str, n: int, from_spool: bool = False) -> None:
        if n <= 0:
            return
        with self.cond:
            self.dropped[reason] += n
            if from_spool:
                self.spooled -= n
            self.cond.notify_all()

    def add_spooled(self, n: int) -> None:
        with self.cond:
            self.spooled += n

    def add_retry(self) -> None:
        with self.cond:
            self.retries += 1

    def add_recovered(self, sent: int = 0, dropped: tuple[str, int] | None = None) -> None:
        with self.cond:
            self.recovered_sent += sent
            if dropped is not None and dropped[1] > 0:
                self.recovered_dropped[dropped[0]] += dropped[1]


class Ledger:
    """Where a batch's items came from, and so how their outcome is counted: from this handler's queue
    (in flight), from its own spool files, or recovered from someone else's."""

    def __init__(self, worker: Worker, kind: str, owner: str | None) -> None:
        self.worker = worker
        self.kind = kind  # "memory", "own", "recovered"
        self.owner = owner  # the spool owner its files carry

    def sent(self, n: int) -> None:
        w = self.worker
        if self.kind == "memory":
            w._in_flight -= n
            w.stats.add_sent(n)
        elif self.kind == "own":
            w.stats.add_sent(n, from_spool=True)
        else:
            w.stats.add_recovered(sent=n)

    def dropped(self, reason: str, n: int) -> None:
        w = self.worker
        if self.kind == "memory":
            w._in_flight -= n
            w.stats.add_dropped(reason, n)
        elif self.kind == "own":
            w.stats.add_dropped(reason, n, from_spool=True)
        else:
            w.stats.add_recovered(dropped=(reason, n))

    def spooled(self, n: int) -> None:
        if self.kind == "memory":
            self.worker._in_flight -= n
            self.worker.stats.add_spooled(n)


class Worker:
    def __init__(
        self,
        pending: deque[Any],
        build: Builder,
        client: CESClient,
        *,
        batch_size: int,
        flush_interval: float,
        spool: Spool | None = None,
        name: str = "ces-logging-worker",
    ) -> None:
        self.pending = pending
        self.build = build
        self.client = client
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.spool = spool
        self.name = name
        self.stats = WorkerStats()
        self.wakeup = threading.Event()
        self._interrupt = threading.Event()  # cuts a back-off short when stopping
        self._flush_requested = False
        self._stop_deadline: float | None = None  # monotonic; set by stop()
        self._thread: threading.Thread | None = None
        self._in_flight = 0  # taken from the queue, not yet accounted for
        # The spool's state: files may be waiting (ours, or a crashed process's); the service is down (new
        # batches go to disk, behind the older ones); when to try the oldest file again.
        self._spool_backlog = spool is not None and spool.pending() > 0
        self._outage = False
        self._probe_attempt = 0
        self._next_probe = 0.0

    # --- life cycle ------------------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        t = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread = t
        t.start()

    def request_flush(self) -> None:
        self._flush_requested = True
        self._next_probe = 0.0  # a flush tries the spool now, not at the next back-off step
        self.wakeup.set()

    def stop(self, grace: float) -> None:
        """Ask the worker to deliver what is left within ``grace`` seconds and end. Does not wait."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + max(0.0, grace)
        self._interrupt.set()
        self.wakeup.set()

    def join(self, timeout: float | None) -> bool:
        t = self._thread
        if t is None or t is threading.current_thread():
            return True
        t.join(timeout)
        return not t.is_alive()

    # --- the loop --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        me = threading.get_ident()
        WORKER_THREADS.add(me)
        try:
            if self.spool is not None:
                self._spool_call(self.spool.reclaim_stale_leases)
            self._loop()
        except BaseException as e:  # a bug here must not kill the app; account for what was held
            _log.error("ces_logging worker stopped by an unexpected error: %s: %s", type(e).__name__, e)
            self.stats.add_dropped("error", self._in_flight)
            self._in_flight = 0
        finally:
            if self._stop_deadline is not None:  # stopping: what is still queued will never be sent
                n = len(self.pending)
                self.pending.clear()
                self.stats.add_dropped("shutdown", n)
                with contextlib.suppress(Exception):
                    self.client.reset_connections()  # no idle keep-alive connection left behind
            WORKER_THREADS.discard(me)

    def _loop(self) -> None:
        """Records wait in the queue, not in a half-built batch, until a batch is due: full, or
        ``flush_interval`` after the first of them arrived, or a flush or stop. So ``emit`` needs to wake
        the worker only twice a batch (the first record, and the one that fills it), not once a record."""
        first_seen: float | None = None  # when the oldest queued record was noticed
        while True:
            self.wakeup.clear()
            stopping = self._stop_deadline is not None
            waiting = len(self.pending)
            if waiting:
                now = time.monotonic()
                if first_seen is None:
                    first_seen = now
                due = now - first_seen >= self.flush_interval
                if waiting >= self.batch_size or due or stopping or self._flush_requested:
                    self._deliver(self._take(min(waiting, self.batch_size)))
                    first_seen = time.monotonic() if self.pending else None
                    continue
            else:
                first_seen = None
            spool_due = self._spool_backlog and time.monotonic() >= self._next_probe
            if spool_due and not (stopping and self._outage) and self._send_one_spooled():
                continue
            if first_seen is not None:
                self.wakeup.wait(max(0.0, self.flush_interval - (time.monotonic() - first_seen)))
                continue
            # nothing queued
            self._flush_requested = False
            if stopping:
                return
            wait = 1.0
            if self._spool_backlog:
                wait = min(wait, max(0.0, self._next_probe - time.monotonic()))
            self.wakeup.wait(wait)

    def _take(self, n: int) -> list[Event]:
        batch = []
        for _ in range(n):
            item = self.pending.popleft()
            self._in_flight += 1
            batch.append(self._build_safely(item))
        return batch

    def _build_safely(self, item: Any) -> Event:
        try:
            return self.build(item)
        except Drop as d:
            return {"_drop": d.reason}
        except Exception as e:  # a bug: the builder is meant never to raise
            return {"_drop": "error", "_why": f"{type(e).__name__}: {e}"}

    # --- delivery --------------------------------------------------------------------------------------------

    def _deliver(self, batch: list[Event]) -> None:
        ledger = Ledger(self, "memory", self.spool.owner if self.spool else None)
        unsendable = [e for e in batch if "_drop" in e]
        if unsendable:
            reasons = Counter(e["_drop"] for e in unsendable)
            for reason, n in reasons.items():
                ledger.dropped(reason, n)
            if "error" in reasons:
                why = next(e["_why"] for e in unsendable if e["_drop"] == "error")
                _log.error("ces_logging could not build %d event(s): %s", reasons["error"], why)
            batch = [e for e in batch if "_drop" not in e]
        if not batch:
            return
        # While the service is down, or older batches wait on disk, new ones queue behind them on disk.
        if (self._outage or self._spool_backlog) and self._to_spool(batch, ledger):
            return
        self._send_with_retries(batch, ledger)

    def _drop_too_old(self, batch: list[Event], ledger: Ledger) -> list[Event]:
        fresh = [e for e in batch if sendable(e["time"])]
        if len(fresh) < len(batch):
            ledger.dropped("too_old", len(batch) - len(fresh))
        return fresh

    def _remaining(self) -> float | None:
        if self._stop_deadline is None:
            return None
        return self._stop_deadline - time.monotonic()

    def _send_with_retries(self, batch: list[Event], ledger: Ledger, leased: SpoolFile | None = None) -> None:
        """Deliver one batch, or account for every item in it. With a spool, a retryable failure does not
        hold the batch in memory: it goes to disk (or, when it came from disk, back to it) and the spool is
        tried again after the back-off."""
        attempt = 0
        auth_failures = 0
        while True:
            batch = self._drop_too_old(batch, ledger)
            if not batch:
                self._spool_done(leased)
                return
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                self._park(batch, ledger, leased, "shutdown")
                return
            timeout = None if remaining is None else max(0.1, min(self.client.timeout, remaining))
            # Times were assigned once, when the events were built: a retry sends the very same items, and
            # the same-event rule makes a batch that did land the first time harmless the second time.
            body = json.dumps(batch, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            try:
                self.client.post_events_body(body, timeout=timeout)
            except CESValidationError as e:
                self._isolate_rejected(batch, e, ledger)
                self._spool_done(leased)
                return
            except CESAuthError as e:
                auth_failures += 1
                if auth_failures >= AUTH_ATTEMPTS or e.status == 403:
                    _log.warning("ces_logging: credentials refused, %d event(s) dropped: %s", len(batch), e)
                    ledger.dropped("auth", len(batch))
                    self._spool_done(leased)
                    return
                self.stats.add_retry()
                delay = backoff_delay(auth_failures)
            except CESError as e:
                self.stats.add_retry()
                if self.spool is None:
                    attempt += 1
                    delay = backoff_delay(attempt, e.retry_after)
                else:  # the spool's back-off spans batches: it is the service that is down
                    self._probe_attempt += 1
                    delay = backoff_delay(self._probe_attempt, e.retry_after)
                    if self._park(batch, ledger, leased, None):
                        self._outage = True
                        self._next_probe = time.monotonic() + delay
                        return
            except Exception as e:  # a bug (ours or a library's): never loop on it
                _log.error("ces_logging: unexpected error while sending: %s: %s", type(e).__name__, e)
                ledger.dropped("error", len(batch))
                self._spool_done(leased)
                return
            else:
                ledger.sent(len(batch))
                self._spool_done(leased)
                self._outage = False
                self._probe_attempt = 0
                return
            remaining = self._remaining()
            if remaining is not None and delay >= remaining:
                self._park(batch, ledger, leased, "shutdown")
                return
            self._interrupt.wait(delay)

    def _isolate_rejected(self, batch: list[Event], err: CESError, ledger: Ledger) -> None:
        """A 400 names the request, not always the item: split the batch in halves until the bad items are
        alone, drop those as ``rejected`` and deliver the rest."""
        if len(batch) == 1 or err.status in (404,):
            _log.warning("ces_logging: service refused %d event(s): %s", len(batch), err)
            ledger.dropped("rejected", len(batch))
            return
        mid = len(batch) // 2
        for half in (batch[:mid], batch[mid:]):
            self._send_with_retries(half, ledger)

    # --- the spool ---------------------------------------------------------------------------------------------

    def _spool_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A spool operation; a disk problem turns the spool off (memory only) with one warning."""
        try:
            return fn(*args)
        except OSError as e:
            _log.warning(
                "ces_logging: spool at %s unusable (%s: %s); keeping events in memory only",
                getattr(self.spool, "dir", "?"), type(e).__name__, e,
            )  # fmt: skip
            self.spool = None
            self._spool_backlog = False
            self._outage = False
            return None

    def _to_spool(self, batch: list[Event], ledger: Ledger) -> bool:
        """Write a batch to disk; True when it is there. The size cap may push out the oldest files: their
        items are counted as dropped (``spool_full``)."""
        spool = self.spool
        if spool is None:
            return False
        evicted = self._spool_call(spool.write, batch, ledger.owner)
        if evicted is None:
            return False
        for f in evicted:
            Ledger(self, "own" if f.owner == spool.owner else "recovered", f.owner).dropped("spool_full", f.count)
        ledger.spooled(len(batch))
        self._spool_backlog = True
        return True

    def _park(self, batch: list[Event], ledger: Ledger, leased: SpoolFile | None, reason: str | None) -> bool:
        """Put a batch that cannot be sent now somewhere safe: back to its spool file, or into the spool.
        Failing both, drop it as ``reason`` (when given) and say so with False."""
        if leased is not None and self.spool is not None:
            if len(batch) == leased.count:
                self._spool_call(self.spool.release, leased)
                self._spool_backlog = True
                return True
            self._spool_done(leased)  # part of it went (too old): write what is left as a new file
        if self._to_spool(batch, ledger):
            return True
        if reason is not None:
            ledger.dropped(reason, len(batch))
        return False

    def _spool_done(self, leased: SpoolFile | None) -> None:
        if leased is not None and self.spool is not None:
            self._spool_call(self.spool.done, leased)

    def _send_one_spooled(self) -> bool:
        """Send the oldest spooled batch; True when the spool moved (sent, dropped), False when it is empty
        or the service is still down."""
        spool = self.spool
        if spool is None:
            return False
        claimed = self._spool_call(spool.claim)
        if not claimed:
            self._spool_backlog = False
            self._outage = False
            return False
        leased, items = claimed
        ledger = Ledger(self, "own" if leased.owner == spool.owner else "recovered", leased.owner)
        if not items:  # unreadable: it can never be sent
            ledger.dropped("error", leased.count)
            return True
        self._send_with_retries(items, ledger, leased)
        return not self._outage

    # --- flush -------------------------------------------------------------------------------------------------

    def wait_accounted(self, target: int, accounted: Callable[[], int], timeout: float | None) -> bool:
        """Wait until ``accounted() >= target`` (the handler knows what counts), at most ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.stats.cond:
            while accounted() < target:
                if not self.alive:
                    return accounted() >= target
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.stats.cond.wait(0.05 if left is None else min(0.05, left))
        return True
