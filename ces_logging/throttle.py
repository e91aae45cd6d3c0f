"""One throttle per service: how many requests may be in flight to an endpoint and project, shared by every
worker of the process.

An app often has several handlers (one per logger, dictConfig applied again); each has its own worker, but
they all talk to one service. When Cloud Eye says 429 or 5xx (or cannot be reached), they slow down together,
honouring ``Retry-After``, and speed up together as it recovers: additive increase (one more request in flight
after ``limit`` successes in a row), multiplicative decrease (half as many after a failure), and a shared pause
(``not_before``) that every worker waits for. Several requests in flight is what keeps a far region (30-200 ms
away) fast: one POST of 100 events per round trip caps a 50 ms link near 2,000 events/s.

More requests in flight pay only while the round trip is the network's: when the service itself is the
bottleneck, a second request waits behind the first, delivers nothing sooner, and costs the app's process CPU
(threads handing the GIL and the cores back and forth: with the service close by, a second request in flight
adds CPU per event and no throughput; ``benchmarks/`` measures it). So, as TCP Vegas does with its window, the
throttle compares each round trip with the floor seen lately (the least round trip of the last two windows of
``RTT_WINDOW`` answers; it starts with one request in flight, so the first answers come alone). What a request
that started with ``c`` in flight took beyond the floor, per request beyond the first, in floors, is averaged
(an EWMA of 1/4): where the service serves one request after the other it is near 1 (each waits for the others),
over a far link near 0 (the wait is the link's, the same for all). Once ``MIN_SAMPLES`` answers made the
average and it is over ``QUEUE_SLACK``, the limit comes down to ``c - 1``, and it does not grow again for
``PROBE_AFTER`` requests; then one more in flight is tried again (the service may have been busy only for a
while). A far region passes easily: its round trip is mostly the link's, and ``c``
requests cost little more than one.
"""

from __future__ import annotations

import threading
import time
from typing import Final

from . import forks

START_LIMIT: Final = 1  # the first answers come alone: they give the round trip's floor
DEFAULT_MAX_IN_FLIGHT: Final = 4
RTT_WINDOW: Final = 32  # successes a window of the round-trip floor spans (the floor is the least of two)
QUEUE_SLACK: Final = 0.25  # of the floor, per request beyond the first, that round trips may grow by on average
MIN_SAMPLES: Final = 4  # answers with others in flight before their average may take one request away
PROBE_AFTER: Final = 64  # requests before one more in flight is tried again, after that


_INF: Final = float("inf")


class Throttle:
    def __init__(self, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self.max = max(1, max_in_flight)
        self.limit = min(START_LIMIT, self.max)
        self.in_use = 0
        self.not_before = 0.0  # monotonic: nobody sends before this (a shared back-off, Retry-After)
        self.requests = 0  # requests started, for tests and benchmarks
        self.concurrent = 0  # of those, started while another was in flight
        self.raised = 0  # times the limit grew (the service answered well)
        self._ok = 0
        self._cond = threading.Condition(threading.Lock())
        self.made_with = threading.Lock  # patched by gevent or eventlet since: a new throttle (see green.py)
        self._window_min = _INF  # the least round trip of this window, and of the one before it
        self._previous_min = _INF
        self._window_n = 0
        self._excess = 0.0  # the average (EWMA, 1/4) of what each request beyond the first added, in floors
        self._samples = 0  # answers in that average since the limit last came down
        self._hold_until = 0  # ``requests`` before which the limit does not grow (more in flight did not pay)

    def __repr__(self) -> str:
        return f"<Throttle limit={self.limit}/{self.max} in_use={self.in_use}>"

    def acquire(self, deadline: float | None = None) -> int:
        """Wait for a slot (and for the shared pause to end): how many requests are in flight with this one
        (give it back to ``release``), or 0 when ``deadline`` (monotonic) comes first. Waits in steps of at most
        0.25 s, so a deadline set later by ``stop`` is seen soon."""
        with self._cond:
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return 0
                if now >= self.not_before and self.in_use < self.limit:
                    self.in_use += 1
                    self.requests += 1
                    if self.in_use > 1:
                        self.concurrent += 1
                    return self.in_use
                wait = 0.25
                if self.not_before > now:
                    wait = min(wait, self.not_before - now)
                if deadline is not None:
                    wait = min(wait, deadline - now)
                self._cond.wait(max(0.001, wait))

    def release(self, ok: bool, pause: float = 0.0, rtt: float | None = None, in_flight: int = 1) -> None:
        """A request ended: ``ok`` (the service answered, even with a 400), or a sign of overload (429, 5xx,
        no connection) with the pause every sender should now keep. ``rtt``: the seconds an answered request
        took, ``in_flight`` what ``acquire`` gave it (the module's docstring says what they are for)."""
        with self._cond:
            self.in_use = max(0, self.in_use - 1)
            if ok:
                if rtt is not None:
                    self._round_trip(rtt, in_flight)
                self._ok += 1
                if self._ok >= self.limit and self.limit < self.max and self.requests >= self._hold_until:
                    self.limit += 1
                    self.raised += 1
                    self._ok = 0
            else:
                self._ok = 0
                self.limit = max(1, self.limit // 2)
                self._hold_until = self._samples = 0  # overload, not latency: grow again as it recovers
                if pause > 0:
                    self.not_before = max(self.not_before, time.monotonic() + pause)
            self._cond.notify_all()

    def _round_trip(self, rtt: float, in_flight: int) -> None:
        """Under the lock: one answer's round trip against the floor (the module's docstring)."""
        self._window_min = min(self._window_min, rtt)
        self._window_n += 1
        if self._window_n >= RTT_WINDOW:
            self._previous_min, self._window_min, self._window_n = self._window_min, _INF, 0
        if in_flight < 2:
            return  # alone, it only tells the floor
        floor = min(self._window_min, self._previous_min)
        excess = (rtt / floor - 1) / (in_flight - 1) if floor > 0 else 0.0
        self._excess = excess if self._samples == 0 else self._excess + (excess - self._excess) / 4
        self._samples += 1
        if self._samples >= MIN_SAMPLES and self._excess > QUEUE_SLACK:
            self.limit = max(1, min(self.limit, in_flight - 1))
            self._samples = self._ok = 0
            self._hold_until = self.requests + PROBE_AFTER


_registry: dict[tuple[str, str], Throttle] = {}
_registry_lock = threading.Lock()


def throttle_for(endpoint: str, project_id: str, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> Throttle:
    """The process's throttle for a service; the largest ``max_in_flight`` asked for wins."""
    key = (endpoint, project_id)
    with _registry_lock:
        t = _registry.get(key)
        if t is None or t.made_with is not threading.Lock:
            t = _registry[key] = Throttle(max(max_in_flight, t.max if t is not None else 1))
        elif max_in_flight > t.max:
            t.max = max_in_flight
        return t


def reset_after_fork() -> None:
    """The child starts with fresh throttles (the parent's locks may have been held by a thread that is gone)."""
    global _registry_lock
    _registry_lock = threading.Lock()
    _registry.clear()


forks.on_new_process(reset_after_fork)
