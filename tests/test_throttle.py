"""How many requests are in flight (issue 12): several while the round trip is the link's, one while more
would only queue at the service (``throttle.py``); and a flush's wait is woken by its goal, not by every batch.
Over real HTTP to the emulator on 127.0.0.1; the far service is the emulator holding each answer 100 ms (a
fault), which it does for several requests at once, as a far region's link does."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

from ces_logging import CESHandler
from ces_logging.emulator import Emulator
from ces_logging.throttle import Throttle
from ces_logging.worker import WorkerStats

from .conftest import PROJECT, wait_for


def burst(url: str, isolated_logger: logging.Logger, n: int) -> CESHandler:
    h = CESHandler(project_id=PROJECT, endpoint=url, event_name="inflight", queue_size=n, flush_interval=0.05)
    isolated_logger.addHandler(h)
    for i in range(n):
        isolated_logger.warning("record %d", i)
    assert h.flush(timeout=120)
    return h


def check(h: CESHandler, n: int) -> None:
    s = h.stats
    assert s.sent + s.dropped + s.queued == s.received == n
    assert s.sent == n and s.queued == 0


@contextlib.contextmanager
def emulator_process() -> Iterator[str]:
    """The emulator in a process of its own, as a service is: in this process it would share the GIL with the
    handler, and its answers' timing would say nothing about the service."""
    p = subprocess.Popen(
        [sys.executable, "-m", "ces_logging", "emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = p.stdout.readline()  # type: ignore[union-attr]
        m = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert m, line
        yield m.group(0)
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def drive(throttle: Throttle, rounds: int, rtt_of: Callable[[int], float]) -> None:
    """Rounds of as many requests as the throttle lets in flight at once, each answered ok after
    ``rtt_of(in flight with it)`` seconds: the throttle's decisions without a clock or a network."""
    for _ in range(rounds):
        started = [throttle.acquire(deadline=time.monotonic() + 5) for _ in range(throttle.limit)]
        assert all(started), "a slot was refused with nothing in flight"
        for c in started:
            throttle.release(True, rtt=rtt_of(c), in_flight=c)


def test_a_service_that_serves_one_request_after_the_other_gets_one_at_a_time() -> None:
    """The near service's rule, on given round trips (the end-to-end numbers are benchmarks: under load a
    loopback round trip says more about the scheduler than about the throttle): where each request beyond the
    first waits a whole floor behind the others, more in flight delivers nothing sooner, so the limit comes back
    to one and stays there but for a probe of one more every PROBE_AFTER requests."""
    t = Throttle(max_in_flight=4)
    drive(t, 400, lambda c: 0.001 * c)  # c in flight: the last answer comes c floors later
    assert t.limit <= 2, t  # 1, or 2 while a probe is on
    assert t.concurrent <= t.requests // 4, (t.concurrent, t.requests)
    # the same round trips, but each request takes only 10 % of a floor more per other one in flight: the link's
    u = Throttle(max_in_flight=4)
    drive(u, 400, lambda c: 0.001 * (1 + 0.1 * (c - 1)))
    assert u.limit == u.max == 4, u
    assert u.concurrent >= u.requests // 2, (u.concurrent, u.requests)


def test_overload_halves_the_limit_and_the_pause_holds_everyone() -> None:
    """A 429 with Retry-After: the limit halves and nobody gets a slot before the pause ends (the deadline
    given to acquire comes first); answers that are well again raise it one at a time."""
    t = Throttle(max_in_flight=4)
    drive(t, 50, lambda c: 0.001)
    assert t.limit == 4
    c = t.acquire()
    t.release(False, pause=30.0, in_flight=c)
    assert t.limit == 2
    assert t.acquire(deadline=time.monotonic() + 0.05) == 0  # held by the pause, not by the limit
    t.not_before = 0.0  # the pause is over
    raised = t.raised
    drive(t, 10, lambda c: 0.001)
    assert t.limit == 4 and t.raised == raised + 2


def test_a_near_service_delivers_a_burst_once_each(isolated_logger: logging.Logger) -> None:
    """End to end against an emulator in a process of its own: every record of a burst stored once, whatever
    the throttle chose (its choices are the benchmark's to measure and the tests above to decide)."""
    n = 20_000
    with emulator_process() as url:
        h = burst(url, isolated_logger, n)
        assert h._worker is not None
        assert 1 <= h._worker.throttle.limit <= h._worker.throttle.max
        with urllib.request.urlopen(f"{url}/_emulator/stats", timeout=10) as r:
            assert json.load(r)["events_in_store"] == n
        check(h, n)
        isolated_logger.removeHandler(h)
        h.close()


def test_a_far_service_delivers_a_burst_once_each(isolated_logger: logging.Logger) -> None:
    """Each answer held 100 ms, for all requests at once: a round trip that is the link's. Every record is
    stored once, none twice, whatever number in flight the throttle chose (the rule is decided above on given
    round trips; on a loaded machine the emulator, in this process, shares its GIL with the handler, and the
    round trips it gives say more about the scheduler than about a far link)."""
    n = 3_000
    with Emulator() as emu:
        emu.add_fault(delay=0.1, store=True, seconds=300)
        h = burst(emu.url, isolated_logger, n)
        assert h._worker is not None
        assert 1 <= h._worker.throttle.limit <= h._worker.throttle.max
        assert emu.count(PROJECT) == n
        assert emu.stats().get("events_duplicate", 0) == 0
        check(h, n)
        isolated_logger.removeHandler(h)
        h.close()


def test_a_flush_waiter_is_woken_by_its_goal_not_by_each_batch() -> None:
    """300 records to wait for, settled 100 at a time: the waiter stays asleep through the first two
    batches (a waiter woken per batch costs the app's thread a wake-up and a recount each time), and is woken
    by the third."""
    stats = WorkerStats()
    stats.taken(300)
    woken = threading.Event()

    def waiter() -> None:
        with stats.cond:
            stats.wait(300, False, 30.0)
        woken.set()

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert wait_for(lambda: bool(stats._goals), timeout=5)  # it is waiting, its goal set
    for _ in range(2):
        stats.add_sent(100, "memory")
    assert not woken.wait(0.3)  # bounded: woken early would have set it at once
    stats.add_dropped("error", 100)  # a drop settles records too
    assert woken.wait(5)
    t.join(5)
    assert stats.settled == 300 and stats.in_flight == 0
