"""Unit tests for the parts of delivery (``ces_logging/_delivery``) and the buffer's append, with a fake client:
no HTTP, no emulator. The end-to-end tests (test_reliability*, test_spool*, test_storm*, test_throttle.py) prove
the same rules over real HTTP; these say which part broke when one does.

Every test ends with the stats invariant where counts move: each item taken is sent, dropped with a reason, or
on disk, once (``sent + dropped + spooled == taken``, nothing left in flight)."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ces_logging._delivery import spool_state
from ces_logging._delivery.backoff import backoff_delay
from ces_logging._delivery.batching import Batching
from ces_logging._delivery.hurry import Hurry
from ces_logging._delivery.outcome import Accounting, Outcome, classify
from ces_logging._delivery.pool import SenderPool
from ces_logging._delivery.sender import Delivery
from ces_logging._delivery.spool_state import SpoolState
from ces_logging.buffer import FULL, QUEUED, WAKE, WAKE_EVERY, RecordBuffer
from ces_logging.errors import (
    CESAuthError,
    CESEndpointError,
    CESNoCredentialsError,
    CESServerError,
    CESThrottledError,
    CESValidationError,
)
from ces_logging.events import now_ms
from ces_logging.spool import Spool, SpoolFile
from ces_logging.throttle import Throttle
from ces_logging.worker import Ledger, WorkerStats

Answer = BaseException | None


class FakeClient:
    """What ``Delivery`` needs of ``CESClient``: each POST's body is kept; ``answer(events)`` says how it ends
    (None: accepted; an exception: raised)."""

    timeout = 1.0

    def __init__(self, answer: Any = None) -> None:
        self.answer = answer
        self.posts: list[list[dict[str, Any]]] = []

    def send_events_body(self, body: bytes, timeout: float | None = None) -> None:
        events = json.loads(body)
        self.posts.append(events)
        err = self.answer(events) if callable(self.answer) else self.answer
        if err is not None:
            raise err

    def reset_connections(self) -> None:
        pass


def events(n: int, bad: frozenset[int] = frozenset()) -> list[Any]:
    t = now_ms()
    return [
        {"event_name": "ev", "event_source": "app.unit", "time": t, "detail": {"content": "bad" if i in bad else "ok"}}
        for i in range(n)
    ]


class Rig:
    """A ``Delivery`` with its stats, throttle, spool state and the lines it said."""

    def __init__(self, client: FakeClient, spool: Spool | None = None) -> None:
        self.lines: list[tuple[str, str]] = []
        self.stats = WorkerStats()
        self.throttle = Throttle(4)
        self.state = SpoolState(spool, self.stats, self.say)
        self.hurry = Hurry()
        self.hurry.set(time.monotonic() + 10.0, final=True)  # every wait has a deadline: a stuck slot fails the test
        self.woken = 0
        self.delivery = Delivery(
            client,  # type: ignore[arg-type]
            self.throttle,
            self.state,
            Accounting(self.stats, self.say),
            self.hurry,
            self.wake,
        )

    def say(self, reason: str, text: str) -> bool:
        self.lines.append((reason, text))
        return True

    def wake(self) -> None:
        self.woken += 1

    def send(self, batch: list[Any]) -> None:
        self.stats.taken(len(batch))
        self.delivery.send(batch, Ledger(self.stats, "memory", self.state.owner))

    def check(self, n: int) -> None:
        s = self.stats
        assert s.in_flight == 0, vars(s)
        assert s.sent + sum(s.dropped.values()) + s.spooled == n, vars(s)
        assert self.throttle.in_use == 0, "a throttle slot was not given back"


# --- the buffer's append and its wake-up rule -------------------------------------------------------------------


def test_offer_wakes_the_worker_on_the_first_record_a_full_batch_and_every_1024th() -> None:
    buf = RecordBuffer(max_items=5000, max_bytes=10**9, batch_size=10)
    answers = [buf.offer(i, 1) for i in range(1, 2049)]
    wakes = [n for n, a in enumerate(answers, 1) if a == WAKE]
    assert wakes == [1, 10, WAKE_EVERY, 2 * WAKE_EVERY]
    assert all(a in (QUEUED, WAKE) for a in answers)
    assert len(buf.items) == 2048 and buf.bytes_in == 2048
    assert buf.counts() == (0, 2048)


def test_offer_refuses_a_record_over_either_bound_and_changes_nothing() -> None:
    buf = RecordBuffer(max_items=3, max_bytes=100, batch_size=2)
    assert [buf.offer("a", 10) for _ in range(3)] == [WAKE, WAKE, QUEUED]
    assert buf.offer("x", 10) == FULL  # the count bound
    assert len(buf.items) == 3 and buf.bytes_in == 30
    buf.take(3, lambda items: 10 * len(items))
    assert buf.offer("big", 101) == FULL  # the byte bound
    assert buf.offer("fits", 100) == WAKE  # the first record again
    assert buf.room(1, factor=2) and not buf.room(1)
    assert buf.put("over", 1) == WAKE  # the caller made room (a spool's headroom): the bound is not checked
    assert list(buf.items) == ["fits", "over"] and buf.bytes_in - buf.bytes_out == 101


# --- batching ----------------------------------------------------------------------------------------------------


class FakeBuilder:
    """Builds an event per item; the item "bad" cannot be built (dropped as ``error``)."""

    def __call__(self, item: Any, now: int) -> Any:
        return "error" if item == "bad" else {"time": now, "content": item}

    def build_batch(self, items: list[Any], now: int) -> tuple[list[Any], dict[str, int]]:
        built = [self(i, now) for i in items]
        out = [e for e in built if not isinstance(e, str)]
        return out, ({"error": len(built) - len(out)} if len(out) < len(built) else {})


def batching(buf: RecordBuffer, stats: WorkerStats, batch_size: int = 3) -> Batching:
    return Batching(
        buf, FakeBuilder(), stats, batch_size=batch_size, sizes=len, fold=None, owner=lambda: None,
        say=lambda r, t: True,
    )  # fmt: skip


def test_a_batch_takes_at_most_batch_size_counts_them_taken_and_drops_what_cannot_be_built() -> None:
    buf = RecordBuffer(100, 10**6, batch_size=3)
    for item in ["a", "bad", "c", "d", "e"]:
        buf.offer(item, 1)
    stats = WorkerStats()
    b = batching(buf, stats)
    batch, ledger = b.next_batch()
    assert [e["content"] for e in batch] == ["a", "c"]  # type: ignore[index]
    assert stats.dropped == {"error": 1} and stats.in_flight == 2  # taken 3: one dropped, two in hand
    assert len(buf.items) == 2 and buf.counts() == (3, 2)
    ledger.sent(batch)
    batch, ledger = b.next_batch()
    ledger.sent(batch)
    assert b.next_batch()[0] == []
    assert stats.sent + sum(stats.dropped.values()) == 5 and stats.in_flight == 0


def test_a_batch_is_due_when_full_late_urgent_or_the_buffer_half_full() -> None:
    buf = RecordBuffer(10, 10**6, batch_size=4)
    b = batching(buf, WorkerStats(), batch_size=4)
    assert not b.due(1, 0.0, 1.0, False)
    assert b.due(4, 0.0, 1.0, False)  # a full batch
    assert b.due(1, 1.0, 1.0, False)  # flush_interval after the first record
    assert b.due(1, 0.0, 1.0, True)  # a flush, a deadline
    for i in range(6):
        buf.offer(i, 1)
    assert b.due(1, 0.0, 1.0, False)  # over half the buffer's bound


# --- the sender pool ---------------------------------------------------------------------------------------------


@pytest.fixture
def pool_threads() -> Iterator[set[int]]:
    threads: set[int] = set()
    yield threads


def test_the_pool_runs_each_job_once_with_at_most_limit_busy(pool_threads: set[int]) -> None:
    ran: list[int] = []
    busy = [0, 0]  # now, most
    lock = threading.Lock()

    def run(job: int) -> None:
        with lock:
            busy[0] += 1
            busy[1] = max(busy)
        assert threading.get_ident() in pool_threads
        time.sleep(0.02)
        with lock:
            busy[0] -= 1
            ran.append(job)

    idle = threading.Event()
    pool: SenderPool[int] = SenderPool(run, lambda j, e: None, idle.set, pool_threads, "test")
    deadline = time.monotonic() + 10
    with pool.cond:
        for job in range(12):
            while not pool.hand(job, 2):
                assert time.monotonic() < deadline
                pool.cond.wait(0.05)
    while len(ran) < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.end_all()
    assert sorted(ran) == list(range(12))
    assert busy[1] == 2  # the limit was reached, never passed
    assert len(pool.all_threads()) <= 2


def test_the_pool_hands_a_job_to_the_sender_that_became_idle_last(pool_threads: set[int]) -> None:
    who: dict[int, int] = {}
    done = threading.Semaphore(0)

    def run(job: int) -> None:
        time.sleep(0.05 * job)  # job 1 ends before job 2
        who[job] = threading.get_ident()
        done.release()

    pool: SenderPool[int] = SenderPool(run, lambda j, e: None, lambda: None, pool_threads, "test")
    with pool.cond:
        assert pool.hand(1, 2) and pool.hand(2, 2)
        assert not pool.hand(9, 2)  # both busy
    for _ in range(2):
        assert done.acquire(timeout=10)
    deadline = time.monotonic() + 10
    while pool.busy() and time.monotonic() < deadline:
        time.sleep(0.01)
    with pool.cond:
        assert pool.hand(3, 2)
    assert done.acquire(timeout=10)
    pool.end_all()
    assert who[1] != who[2]
    assert who[3] == who[2]  # the warm thread


def test_a_job_that_raises_is_handed_to_on_error_and_the_sender_goes_on(pool_threads: set[int]) -> None:
    failed: list[tuple[int, str]] = []
    ran: list[int] = []
    done = threading.Semaphore(0)

    def run(job: int) -> None:
        if job == 1:
            raise KeyboardInterrupt("a library's BaseException")
        ran.append(job)

    def on_error(job: int, e: BaseException) -> None:
        failed.append((job, type(e).__name__))

    pool: SenderPool[int] = SenderPool(run, on_error, done.release, pool_threads, "test")
    for job in (1, 2):
        with pool.cond:
            assert pool.hand(job, 1)
        assert done.acquire(timeout=10)
    pool.end_all()
    assert failed == [(1, "KeyboardInterrupt")] and ran == [2]
    assert len({t.ident for t in pool.all_threads()}) <= 1


# --- an attempt's outcome into counts ----------------------------------------------------------------------------


def test_classify_names_each_outcome() -> None:
    assert classify(None) is Outcome.SENT
    assert classify(CESValidationError("bad", status=400)) is Outcome.REJECTED
    assert classify(CESEndpointError("redirect", status=301)) is Outcome.CONFIG
    assert classify(CESAuthError("no", status=401)) is Outcome.AUTH
    assert classify(CESNoCredentialsError("nothing to sign with")) is Outcome.NO_CREDENTIALS  # an auth error's kind
    assert classify(CESThrottledError("slow down", status=429)) is Outcome.RETRY
    assert classify(CESServerError("down", status=503)) is Outcome.RETRY
    assert classify(RuntimeError("ours")) is Outcome.BUG


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (Outcome.REJECTED, "rejected"),
        (Outcome.CONFIG, "config"),
        (Outcome.NO_CREDENTIALS, "no_credentials"),
        (Outcome.AUTH, "auth"),
        (Outcome.BUG, "error"),
    ],
)
def test_each_final_failure_drops_the_batch_under_its_reason_and_says_it(outcome: Outcome, reason: str) -> None:
    stats = WorkerStats()
    lines: list[str] = []
    stats.taken(4)
    def say(r: str, t: str) -> bool:
        lines.append(r)
        return True

    Accounting(stats, say).settle(
        outcome, events(4), Ledger(stats, "memory", None), RuntimeError("x")
    )
    assert stats.dropped == {reason: 4} and stats.sent == 0 and stats.in_flight == 0
    assert len(lines) == 1


def test_sent_counts_the_batch_and_a_retry_leaves_it_in_flight() -> None:
    stats = WorkerStats()
    stats.taken(3)
    acc = Accounting(stats, lambda r, t: True)
    batch = events(3)
    acc.settle(Outcome.RETRY, batch, Ledger(stats, "memory", None), CESServerError("down", status=503))
    assert stats.retries == 1 and stats.in_flight == 3 and stats.sent == 0
    acc.settle(Outcome.SENT, batch, Ledger(stats, "memory", None), None)
    assert stats.sent == 3 and stats.in_flight == 0 and stats.batches == 1


# --- one batch's delivery: the slot is given back whatever happens ----------------------------------------------


def test_a_delivered_batch_is_counted_and_its_slot_given_back() -> None:
    client = FakeClient()
    rig = Rig(client)
    rig.send(events(5))
    assert rig.stats.sent == 5 and len(client.posts) == 1
    rig.check(5)


def test_a_400_is_split_until_the_bad_event_is_alone() -> None:
    def answer(evs: list[dict[str, Any]]) -> Answer:
        return CESValidationError("bad", status=400) if any(e["detail"]["content"] == "bad" for e in evs) else None

    client = FakeClient(answer)
    rig = Rig(client)
    rig.send(events(8, bad=frozenset({5})))
    assert rig.stats.dropped == {"rejected": 1} and rig.stats.sent == 7
    rig.check(8)


@pytest.mark.parametrize(
    ("answer", "reason", "posts"),
    [
        (CESAuthError("expired", status=401), "auth", 3),  # retried, then dropped
        (CESAuthError("forbidden", status=403), "auth", 1),  # never retried
        (CESEndpointError("redirect", status=301), "config", 1),
        (RuntimeError("a bug"), "error", 1),  # never retried
    ],
)
def test_a_final_failure_drops_the_batch_and_gives_the_slot_back(answer: Answer, reason: str, posts: int) -> None:
    client = FakeClient(answer)
    rig = Rig(client)
    rig.hurry.interrupt.set()  # the auth back-off's waits end at once
    rig.send(events(3))
    assert rig.stats.dropped == {reason: 3} and len(client.posts) == posts
    assert rig.stats.retries == posts - 1
    rig.check(3)


def test_a_service_down_without_a_spool_retries_until_the_deadline_then_drops_as_shutdown() -> None:
    client = FakeClient(CESServerError("down", status=503))
    rig = Rig(client)
    rig.hurry.deadline = time.monotonic() + 0.3  # shorter than the first back-off step
    rig.send(events(3))
    assert rig.stats.dropped == {"shutdown": 3} and rig.stats.retries == 1
    assert rig.throttle.limit == 1 and rig.throttle.not_before > 0  # the overload was told to the throttle
    rig.check(3)


def test_a_service_down_with_a_spool_puts_the_batch_on_disk_and_starts_the_outage(tmp_path: Path) -> None:
    client = FakeClient(CESServerError("down", status=503))
    spool = Spool(tmp_path / "spool", 10**6)
    rig = Rig(client, spool)
    rig.send(events(4))
    assert rig.stats.spooled == 4 and spool.pending() == 4
    assert rig.state.outage and rig.state.probe_attempt == 1 and rig.state.backlog
    assert ("outage" in {r for r, _ in rig.lines})
    rig.check(4)
    # the probe: the oldest file goes out when the service is back; the outage ends, the batcher is woken
    client.answer = None
    claimed = rig.state.claim(senders_idle=True)
    assert claimed is not None
    items, ledger, leased = claimed
    assert items is not None
    assert rig.state.probing  # one file in flight while the service is down
    rig.delivery.send(items, ledger, leased)
    assert not rig.state.outage and not rig.state.probing and rig.woken == 1
    assert rig.stats.sent == 4 and rig.stats.spooled == 0 and spool.pending() == 0
    rig.check(4)


def test_the_back_off_doubles_to_its_cap_and_stays_finite_however_long_the_outage() -> None:
    rng = random.Random(1)
    assert [round(backoff_delay(n, rng=FixedJitter())) for n in (1, 2, 3, 6, 7)] == [1, 2, 4, 30, 30]
    assert 24.0 <= backoff_delay(5000, rng=rng) <= 36.0  # an outage of days: still the cap, no OverflowError
    assert backoff_delay(1, retry_after=120.0) == 120.0  # the service's Retry-After wins when longer
    assert backoff_delay(1, retry_after=10**6) == 300.0  # within reason


class FixedJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return 1.0


# --- the spool and outage state ----------------------------------------------------------------------------------


def test_concurrent_failures_each_take_their_own_step_of_the_shared_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Senders that fail at once each take one step of the back-off: the steps handed out are 1..N, each once
    (a step read apart from its increment hands two senders the same one and skips another)."""
    steps: list[int] = []

    def record(attempt: int, retry_after: float | None = None) -> float:
        steps.append(attempt)
        return 0.0

    monkeypatch.setattr(spool_state, "backoff_delay", record)
    state = SpoolState(None, WorkerStats(), lambda r, t: True)
    threads, per_thread = 8, 2000
    start = threading.Barrier(threads)

    def fail() -> None:
        start.wait(10)
        for _ in range(per_thread):
            state.failed(None)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a lost or shared step shows
    try:
        ts = [threading.Thread(target=fail) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
    finally:
        sys.setswitchinterval(old)
    assert state.probe_attempt == threads * per_thread
    assert sorted(steps) == list(range(1, threads * per_thread + 1))


def test_an_outage_ends_once_however_many_senders_deliver_at_once() -> None:
    state = SpoolState(None, WorkerStats(), lambda r, t: True)
    state.failed(None)
    state.went_down(30.0)
    assert state.outage and state.next_probe > time.monotonic()
    ended: list[bool] = []
    start = threading.Barrier(6)

    def deliver() -> None:
        start.wait(10)
        ended.append(state.recovered())

    ts = [threading.Thread(target=deliver) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert ended.count(True) == 1 and len(ended) == 6
    assert not state.outage and state.next_probe == 0.0 and state.probe_attempt == 0


def test_the_spool_is_due_after_the_back_off_and_never_while_a_probe_is_out(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 10**6)
    stats = WorkerStats()
    state = SpoolState(spool, stats, lambda r, t: True)
    assert not state.due(stopping=False)  # nothing on disk
    stats.taken(2)
    assert state.write(events(2), Ledger(stats, "memory", spool.owner))
    assert state.backlog and state.due(stopping=False)
    state.went_down(30.0)
    assert not state.due(stopping=False)  # the back-off
    state.try_now()
    assert state.due(stopping=False)
    assert not state.due(stopping=True)  # stopping while the service is down: the files wait for the next process
    claimed = state.claim(senders_idle=True)
    assert claimed is not None and state.probing
    assert not state.due(stopping=False)  # one probe at a time
    state.probe_ended()
    assert state.due(stopping=False)  # the probe ended: the next may go (here the leased file is still out)


def test_a_batch_a_sender_spools_while_the_batcher_finds_the_spool_empty_is_still_sent(tmp_path: Path) -> None:
    """The batcher's claim finds no file, then lists the directory again while a sender puts a failed batch
    on disk: the batcher must not clear ``backlog`` over the sender's write, or that file waits unseen until
    the next outage (a flush in between times out with the batch still spooled)."""
    stats = WorkerStats()
    races = [True]

    class RacingSpool(Spool):
        def has_files(self) -> bool:
            seen = super().has_files()  # the listing: nothing yet
            if races and races.pop():
                stats.taken(2)
                assert state.write(events(2), Ledger(stats, "memory", self.owner))  # a sender, meanwhile
            return seen

    spool = RacingSpool(tmp_path / "spool", 10**6)
    state = SpoolState(spool, stats, lambda r, t: True)
    assert state.claim(senders_idle=False) is None and spool.pending() == 2
    assert state.backlog  # the batcher looks again (in a second: ``next_probe``)
    state.try_now()
    assert state.due(stopping=False)
    claimed = state.claim(senders_idle=True)
    assert claimed is not None and claimed[0] is not None and len(claimed[0]) == 2
    # and with nothing written meanwhile, an empty spool clears it
    state.done(claimed[2])
    assert state.claim(senders_idle=True) is None and not state.backlog and not state.due(stopping=False)


def test_a_leased_batch_that_could_not_be_given_back_is_given_back_later(tmp_path: Path) -> None:
    """A send failed and giving its file back to the spool failed too (a disk error): the file stays leased
    under this process's own pid and token, which no one takes as stale while the process lives. The next
    claim gives it back and sends it; meanwhile the spool is not taken for empty."""
    stats = WorkerStats()
    fails = [PermissionError(13, "Permission denied")]

    class FlakySpool(Spool):
        def release(self, f: SpoolFile) -> list[SpoolFile]:
            if fails:
                raise fails.pop()
            return super().release(f)

    spool = FlakySpool(tmp_path / "spool", 10**6)
    state = SpoolState(spool, stats, lambda r, t: True)
    stats.taken(3)
    assert state.write(events(3), Ledger(stats, "memory", spool.owner))
    claimed = state.claim(senders_idle=True)
    assert claimed is not None
    items, ledger, leased = claimed
    assert items is not None
    assert state.park(items, ledger, leased, None)  # its send failed; the release fails
    assert not fails and spool.pending() == 3 and not spool.has_files()  # still leased: invisible to claims
    assert state.claim(senders_idle=True) is None  # the disk is not tried again yet (broken for a while)
    assert state.backlog
    state.broken_until = 0.0  # the retry time has come
    again = state.claim(senders_idle=True)
    assert again is not None and again[0] is not None and len(again[0]) == 3
    state.done(again[2])
    assert state.claim(senders_idle=True) is None and not state.backlog and spool.pending() == 0
