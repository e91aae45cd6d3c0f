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
    """Counters the worker changes, under one condition variable that ``flush`` waits on."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.sent = 0
        self.retries = 0
        self.batches = 0
        self.dropped: Counter[str] = Counter()

    def add_sent(self, n: int) -> None:
        with self.cond:
            self.sent += n
            self.batches += 1
            self.cond.notify_all()

    def add_dropped(self, reason: str, n: int) -> None:
        if n <= 0:
            return
        with self.cond:
            self.dropped[reason] += n
            self.cond.notify_all()

    def add_retry(self) -> None:
        with self.cond:
            self.retries += 1


class Worker:
    def __init__(
        self,
        pending: deque[Any],
        build: Builder,
        client: CESClient,
        *,
        batch_size: int,
        flush_interval: float,
        name: str = "ces-logging-worker",
    ) -> None:
        self.pending = pending
        self.build = build
        self.client = client
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.name = name
        self.stats = WorkerStats()
        self.wakeup = threading.Event()
        self._interrupt = threading.Event()  # cuts a back-off short when stopping
        self._flush_requested = False
        self._stop_deadline: float | None = None  # monotonic; set by stop()
        self._thread: threading.Thread | None = None
        self._in_flight = 0  # taken from the queue, not yet accounted for

    # --- life cycle ------------------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ident(self) -> int | None:
        return self._thread.ident if self._thread is not None else None

    def start(self) -> None:
        t = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread = t
        t.start()

    def wake(self) -> None:
        self.wakeup.set()

    def request_flush(self) -> None:
        self._flush_requested = True
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
        batch: list[Event] = []
        batch_started = 0.0
        while True:
            self.wakeup.clear()
            while len(batch) < self.batch_size and self.pending:
                item = self.pending.popleft()
                self._in_flight += 1
                if not batch:
                    batch_started = time.monotonic()
                batch.append(self._build_safely(item))
            stopping = self._stop_deadline is not None
            if batch:
                full = len(batch) >= self.batch_size
                due = time.monotonic() - batch_started >= self.flush_interval
                if full or due or stopping or self._flush_requested:
                    self._deliver(batch)
                    batch = []
                    continue
                self.wakeup.wait(max(0.0, self.flush_interval - (time.monotonic() - batch_started)))
                continue
            # nothing held, nothing queued
            self._flush_requested = False
            if stopping:
                return
            self.wakeup.wait(1.0)

    def _build_safely(self, item: Any) -> Event:
        try:
            return self.build(item)
        except Drop as d:
            return {"_drop": d.reason}
        except Exception as e:  # a bug: the builder is meant never to raise
            return {"_drop": "error", "_why": f"{type(e).__name__}: {e}"}

    # --- delivery --------------------------------------------------------------------------------------------

    def _account_sent(self, n: int) -> None:
        self._in_flight -= n
        self.stats.add_sent(n)

    def _account_dropped(self, reason: str, n: int) -> None:
        self._in_flight -= n
        self.stats.add_dropped(reason, n)

    def _deliver(self, batch: list[Event]) -> None:
        unsendable = [e for e in batch if "_drop" in e]
        if unsendable:
            reasons = Counter(e["_drop"] for e in unsendable)
            for reason, n in reasons.items():
                self._account_dropped(reason, n)
            if "error" in reasons:
                why = next(e["_why"] for e in unsendable if e["_drop"] == "error")
                _log.error("ces_logging could not build %d event(s): %s", reasons["error"], why)
            batch = [e for e in batch if "_drop" not in e]
        if batch:
            self._send_with_retries(batch)

    def _drop_too_old(self, batch: list[Event]) -> list[Event]:
        fresh = [e for e in batch if sendable(e["time"])]
        self._account_dropped("too_old", len(batch) - len(fresh))
        return fresh

    def _remaining(self) -> float | None:
        if self._stop_deadline is None:
            return None
        return self._stop_deadline - time.monotonic()

    def _send_with_retries(self, batch: list[Event]) -> None:
        attempt = 0
        auth_failures = 0
        while True:
            batch = self._drop_too_old(batch)
            if not batch:
                return
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                self._account_dropped("shutdown", len(batch))
                return
            timeout = None if remaining is None else max(0.1, min(self.client.timeout, remaining))
            # Times were assigned once, when the events were built: a retry sends the very same items, and
            # the same-event rule makes a batch that did land the first time harmless the second time.
            body = json.dumps(batch, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            try:
                self.client.post_events_body(body, timeout=timeout)
            except CESValidationError as e:
                self._isolate_rejected(batch, e)
                return
            except CESAuthError as e:
                auth_failures += 1
                if auth_failures >= AUTH_ATTEMPTS or e.status == 403:
                    _log.warning("ces_logging: credentials refused, %d event(s) dropped: %s", len(batch), e)
                    self._account_dropped("auth", len(batch))
                    return
                delay = backoff_delay(auth_failures)
            except CESError as e:
                attempt += 1
                delay = backoff_delay(attempt, e.retry_after)
            except Exception as e:  # a bug (ours or a library's): never loop on it
                _log.error("ces_logging: unexpected error while sending: %s: %s", type(e).__name__, e)
                self._account_dropped("error", len(batch))
                return
            else:
                self._account_sent(len(batch))
                return
            self.stats.add_retry()
            remaining = self._remaining()
            if remaining is not None and delay >= remaining:
                self._account_dropped("shutdown", len(batch))
                return
            self._interrupt.wait(delay)

    def _isolate_rejected(self, batch: list[Event], err: CESError) -> None:
        """A 400 names the request, not always the item: split the batch in halves until the bad items are
        alone, drop those as ``rejected`` and deliver the rest."""
        if len(batch) == 1 or err.status in (404,):
            _log.warning("ces_logging: service refused %d event(s): %s", len(batch), err)
            self._account_dropped("rejected", len(batch))
            return
        mid = len(batch) // 2
        for half in (batch[:mid], batch[mid:]):
            self._send_with_retries(half)

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
