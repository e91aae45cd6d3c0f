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
import urllib.request
from collections.abc import Iterator

from ces_logging import CESHandler
from ces_logging.emulator import Emulator
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


def test_a_near_service_gets_one_request_at_a_time(isolated_logger: logging.Logger) -> None:
    """On loopback the emulator answers one request after the other: a second request in flight only waits
    behind the first. After the first few answers say so, requests go one at a time (a probe of one more now
    and then)."""
    n = 20_000
    with emulator_process() as url:
        h = burst(url, isolated_logger, n)
        assert h._worker is not None
        throttle = h._worker.throttle
        assert throttle.requests >= n // 100
        # The start (limit 2) and a probe of two in flight every PROBE_AFTER (64) requests, a few answers each.
        assert throttle.concurrent <= throttle.requests // 4, (throttle.concurrent, throttle.requests)
        assert throttle.limit <= 2
        with urllib.request.urlopen(f"{url}/_emulator/stats", timeout=10) as r:
            assert json.load(r)["events_in_store"] == n
        check(h, n)
        isolated_logger.removeHandler(h)
        h.close()


def test_a_far_service_gets_several_requests_in_flight(isolated_logger: logging.Logger) -> None:
    """Each answer held 100 ms, for all requests at once: a round trip that is the link's. Requests in
    flight grow to the limit (4) and stay there; every record is stored once."""
    n = 3_000
    with Emulator() as emu:
        emu.add_fault(delay=0.1, store=True, seconds=300)
        h = burst(emu.url, isolated_logger, n)
        assert h._worker is not None
        throttle = h._worker.throttle
        assert throttle.limit == throttle.max == 4
        assert throttle.concurrent >= throttle.requests // 2, (throttle.concurrent, throttle.requests)
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
