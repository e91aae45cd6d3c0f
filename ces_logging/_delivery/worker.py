"""The background worker: takes prepared records, builds events, batches them and delivers them, with retries.

Life cycle (after google-cloud-logging's background transport): ``start`` (lazily, by the handler's first
emit), ``wakeup`` (the buffer says when: ``RecordBuffer.offer``), ``request_flush`` (deliver what is queued now),
``hurry`` (deliver everything by a deadline: exit, SIGTERM), ``stop`` (deliver what is left within a grace
period, account for the rest, end the threads).

Two kinds of thread. The *batcher* (one per handler, ``_loop``) takes records when a batch is due
(``batching.py``) and hands each batch to a *sender* (``pool.py``), which delivers it (``sender.py``) under the
service's throttle (``throttle.py``), so several requests are in flight to a far region. The spool and the
outage state are ``spool_state.py``'s. Every item taken from the buffer ends up counted exactly once: sent, or
dropped with a reason, or on disk in the spool (still queued) (``outcome.py``, ``stats.py``). That is what makes
``sent + dropped + queued (+ folded, with storm control) == received`` hold.

Under gevent or eventlet these "threads" are greenlets, and everything they wait on is made when the worker
first starts, after the server patched (``green.py`` says why they are not real OS threads there).

A bug must not end delivery: the batcher survives an exception in one step (the items in hand are dropped as
``error``, said once), and the handler starts a new batcher if the thread still dies (a few times at most).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .. import forks, notice
from ..buffer import RecordBuffer, Wakeup
from ..spool import Spool, SpoolFile
from ..storm import StormControl
from ..throttle import Throttle
from .batching import Batching, Builder
from .hurry import Hurry
from .outcome import Accounting, Event, Ledger
from .pool import SenderPool
from .sender import Delivery
from .spool_state import SpoolState
from .stats import WorkerStats

if TYPE_CHECKING:
    from .._service.client import CESClient

#: Thread idents of every live worker thread: records logged on these threads (urllib3's connection logs,
#: anything a formatter logs) never go back into a CESHandler, which would feed the worker its own output.
WORKER_THREADS: set[int] = set()
forks.on_new_process(WORKER_THREADS.clear)  # a new process has none of its parent's threads

_WORKER_IDS = itertools.count(1)

_WORDS: Final = {
    "queue_full": "the buffer was full (the service is slower than the app logs; see queue_size, "
    "queue_max_bytes, overflow)",
    "closed": "logged after the handler was closed",
}


class Job:
    __slots__ = ("batch", "leased", "ledger")

    def __init__(self, batch: list[Event], ledger: Ledger, leased: SpoolFile | None) -> None:
        self.batch = batch
        self.ledger = ledger
        self.leased = leased


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
        import random  # noqa: F401 - the retries' jitter, on the app's thread: ours never import (forks.py)

        self.buffer = buffer
        self.client = client
        self.throttle = throttle
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.spool = spool
        self.name = name
        self.fold = fold  # storm control (storm.py), only ever touched by the batcher thread
        self.stats = WorkerStats()
        self.wakeup = Wakeup()
        self.hurry_state = Hurry()
        self._flush_requested = False
        self._thread: threading.Thread | None = None
        self._ran = False
        self._uid = next(_WORKER_IDS)  # not id(self): a new worker may reuse a dead one's address
        self._refused_seen: dict[str, int] = {}
        self._first_seen: float | None = None  # when the oldest queued record was noticed (batcher only)
        self.spool_state = SpoolState(spool, self.stats, self._say)
        self.batching = Batching(
            buffer,
            build,
            self.stats,
            batch_size=batch_size,
            sizes=sizes,
            fold=fold,
            owner=lambda: self.spool_state.owner,
            say=self._say,
        )
        self.delivery = Delivery(
            client, throttle, self.spool_state, Accounting(self.stats, self._say), self.hurry_state, self._wake
        )
        self.pool: SenderPool[Job] = SenderPool(self._run_job, self._job_failed, self._wake, WORKER_THREADS, name)

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
        self.hurry_state.renew_locks()
        self.pool.renew_locks()
        self.spool_state.renew_locks()
        self.stats.cond = threading.Condition(threading.RLock())
        self.buffer.renew_locks()

    def _wake(self) -> None:
        self.wakeup.set()

    def request_flush(self) -> None:
        self._flush_requested = True
        self.spool_state.try_now()
        self.wakeup.set()

    def hurry(self, deadline: float, final: bool = False) -> None:
        """Deliver everything now, retries included, by ``deadline`` (monotonic); requests started from now on
        never outlive it. The worker goes on afterwards: records logged later are still sent, by the same
        deadline when ``final`` (the process is ending), as usual otherwise (the hurry ends with the deadline)."""
        self.hurry_state.set(deadline, final)
        self.spool_state.try_now()
        self.wakeup.set()

    def stop(self, grace: float) -> None:
        """Deliver what is left within ``grace`` seconds, then end. Does not wait."""
        self.hurry(time.monotonic() + max(0.0, grace), final=True)
        self.hurry_state.stop()
        self.wakeup.set()

    def join(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) for the batcher and the senders; True when all have ended."""
        deadline = time.monotonic() + max(0.0, timeout)
        threads = [t for t in [self._thread, *self.pool.all_threads()] if t is not None]
        for t in threads:
            if t is threading.current_thread() or t.ident is None:
                continue  # never started (an interrupted start): nothing to wait for
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    # --- the batcher ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        self._ran = True
        notice.keep_signals_off_this_thread()
        me = threading.get_ident()
        WORKER_THREADS.add(me)
        try:
            if self.spool is not None:
                self.spool_state.call(self.spool.reclaim_stale_leases)
            self._loop()
        finally:
            if self.hurry_state.stopping:  # what is still queued will never be sent
                self._finish()
            WORKER_THREADS.discard(me)

    def _finish(self) -> None:
        """Stopping: account for what is left in the buffer, end the senders, close idle connections."""
        self.batching.drain(self.spool_state.park)
        self.pool.end_all()
        with contextlib.suppress(Exception):
            self.client.reset_connections()  # no idle keep-alive connection left behind

    def _loop(self) -> None:
        """Until stopped: a batch when one is due, the oldest spooled file when the spool is due, else a wait
        for ``wakeup`` (the buffer's rule: the first record, and the one that fills a batch) or for the time
        the next thing falls due. One step's bug is said and survived (``_step``)."""
        self._first_seen = None
        errors = 0
        next_report = 0.0
        while True:
            try:
                if time.monotonic() >= next_report:
                    self._report_refused()
                    next_report = time.monotonic() + 1.0
                if self._step():
                    return
                errors = 0
            except BaseException as e:  # a bug here must not end delivery: say it once, go on
                errors += 1
                self._say("worker-bug", f"worker error (recovering): {type(e).__name__}: {e}")
                if errors > 100:
                    raise
                time.sleep(min(1.0, 0.01 * errors))

    def _step(self) -> bool:
        """One round of the batcher; True when it should end (stopping, and nothing left it could send)."""
        self.wakeup.clear()
        hurry, spool = self.hurry_state, self.spool_state
        urgent = hurry.remaining() is not None or self._flush_requested
        self.batching.close_windows(time.time(), urgent)
        waiting = len(self.buffer.items)
        if waiting:
            now = time.monotonic()
            if self._first_seen is None:
                self._first_seen = now
            if self.batching.due(waiting, now - self._first_seen, self.flush_interval, urgent):
                self._dispatch_next()
                self._first_seen = time.monotonic() if self.buffer.items else None
                return False
        else:
            self._first_seen = None
            if self.batching.summaries:  # no record to ride with: they go on their own
                self._dispatch_next()
                return False
        if spool.due(hurry.stopping and hurry.deadline is not None) and self._send_one_spooled():
            return False
        if self._first_seen is not None:
            self.wakeup.wait(max(0.0, self.flush_interval - (time.monotonic() - self._first_seen)))
            return False
        # nothing queued in memory
        if hurry.stopping and (self._idle() or (hurry.remaining() or 0) <= 0):
            return True
        if self.stats.in_flight == 0:
            self._flush_requested = False
        wait = 0.25 if (hurry.stopping or hurry.deadline is not None) else 1.0
        if spool.backlog:
            wait = min(wait, max(0.0, spool.next_probe - time.monotonic()))
        self.wakeup.wait(wait)
        return False

    def _say(self, reason: str, text: str) -> bool:
        """One line per reason and minute, per worker (two handlers' troubles are two stories)."""
        return notice.say(f"{self._uid}:{reason}", text)

    def _report_refused(self) -> None:
        """Records refused at emit are said here, off the app's thread (emit never does I/O)."""
        seen = self._refused_seen
        for reason, n in self.buffer.refused_counts().items():
            if n > seen.get(reason, 0):
                new = n - seen.get(reason, 0)
                if self._say(f"refused-{reason}", f"{new} event(s) dropped: {_WORDS.get(reason, reason)}"):
                    seen[reason] = n

    def _idle(self) -> bool:
        """Nothing in memory, nothing in flight, and nothing of ours on disk that could go now."""
        if self.buffer.items or self.stats.in_flight or self.batching.summaries:
            return False
        return not self.spool_state.waiting_to_send()

    def _send_one_spooled(self) -> bool:
        """Send the oldest spooled batch; True when something moved, False when the spool is empty (or it
        cannot be read now)."""
        claimed = self.spool_state.claim(senders_idle=self.pool.jobs_out() == 0)
        if claimed is None:
            return False
        items, ledger, leased = claimed
        if items is not None:
            self._dispatch(items, ledger, leased)
        return True

    # --- handing batches to the senders ------------------------------------------------------------------------

    def _dispatch_next(self) -> None:
        batch, ledger = self.batching.next_batch()
        if batch:
            self._dispatch(batch, ledger)

    def _dispatch(self, batch: list[Event], ledger: Ledger, leased: SpoolFile | None = None) -> None:
        """A batch to disk (the service is down, older batches wait there, or the buffer overflows), or to a
        sender. A batch is handed over only when a sender may send it now: fewer senders busy than the
        throttle's limit (which the service's answers move, ``throttle.py``), so at most ``limit`` batches are
        out of the buffer at once and no batch waits in a second sender for the first one's slot. Each sender
        still asks the throttle for a slot before every attempt (several handlers share it)."""
        spool = self.spool_state
        if leased is None and (spool.outage or spool.backlog or self.buffer.over(1.0)):
            batch = self._spill(batch, ledger)
            if not batch:
                return
        if not self._hand(Job(batch, ledger, leased)):
            spool.park(batch, ledger, leased, "shutdown")

    def _hand(self, job: Job) -> bool:
        """Wait for a sender that may send ``job`` now; True when it has it (or the job went to disk meanwhile),
        False when the deadline passed first."""
        pool, spool, ledger = self.pool, self.spool_state, job.ledger
        with pool.cond:
            while not pool.hand(job, self.throttle.limit):
                # Every sender busy (a slow service) and the buffer filling behind this batch: with a spool, it
                # waits on disk rather than here, so that the buffer drains before it overflows (``queue_full``).
                # A write takes a few ms under this lock: a sender that ends its send waits that long to say so.
                if ledger.spoolable and self.buffer.over(0.5):
                    if job.leased is None and spool.write(job.batch, ledger):
                        return True
                    if job.leased is not None and spool.park(job.batch, ledger, job.leased, None):  # to its file
                        spool.probe_ended()
                        return True
                left = self.hurry_state.remaining()
                if left is not None and left <= 0:
                    return False
                step = 0.25 if self.spool is None else 0.05  # with a spool, the buffer's growth is watched too
                pool.cond.wait(step if left is None else min(step, left))
                self._report_refused()  # every sender busy (an outage without a spool): drops are still said
        return True

    def _spill(self, batch: list[Event], ledger: Ledger) -> list[Event]:
        """To disk, behind the older batches: what is left to hand to a sender (the storm summaries stay out of
        the spool, storm.py: they go to a sender)."""
        weights = ledger.weights
        if not weights:
            return [] if self.spool_state.write(batch, ledger) else batch
        plain = [e for e in batch if id(e) not in weights]
        if plain and self.spool_state.write(plain, Ledger(self.stats, "memory", ledger.owner)):
            return [e for e in batch if id(e) in weights]
        return batch

    def _run_job(self, job: Job) -> None:
        self.delivery.send(job.batch, job.ledger, job.leased)

    def _job_failed(self, job: Job, e: BaseException) -> None:
        """A bug (or a library's BaseException) while sending: the batch is counted, the sender goes on."""
        self._say("send-bug", f"unexpected error while sending: {type(e).__name__}: {e}")
        job.ledger.lost("error", job.batch)

    # --- flush -------------------------------------------------------------------------------------------------

    def wait_accounted(
        self, target: int, accounted: Callable[[], int], deadline: float | None, *, with_spooled: bool = False
    ) -> bool:
        """Wait until ``accounted()`` (the handler knows what counts) reaches ``target``, until ``deadline``;
        ``with_spooled``: what is safe on disk counts as done too (an exit's drain). False when the worker
        died or the deadline came first."""

        def nudge() -> None:  # what waits on disk goes now, unless the service is down
            if not self.spool_state.outage:
                self.wakeup.set()

        return self.stats.wait_accounted(
            target, accounted, deadline, with_spooled=with_spooled, alive=lambda: self.alive, nudge=nudge
        )
