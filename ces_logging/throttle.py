"""One throttle per service: how many requests may be in flight to an endpoint and project, shared by every
worker of the process.

An app often has several handlers (one per logger, dictConfig applied again); each has its own worker, but
they all talk to one service. When Cloud Eye says 429 or 5xx (or cannot be reached), they slow down together,
honouring ``Retry-After``, and speed up together as it recovers: additive increase (one more request in flight
after ``limit`` successes in a row), multiplicative decrease (half as many after a failure), and a shared pause
(``not_before``) that every worker waits for. Several requests in flight is what keeps a far region (30-200 ms
away) fast: one POST of 100 events per round trip caps a 50 ms link near 2,000 events/s.
"""

from __future__ import annotations

import threading
import time
from typing import Final

START_LIMIT: Final = 2
DEFAULT_MAX_IN_FLIGHT: Final = 4


class Throttle:
    def __init__(self, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self.max = max(1, max_in_flight)
        self.limit = min(START_LIMIT, self.max)
        self.in_use = 0
        self.not_before = 0.0  # monotonic: nobody sends before this (a shared back-off, Retry-After)
        self.requests = 0  # requests started, for tests and benchmarks
        self._ok = 0
        self._cond = threading.Condition(threading.Lock())

    def __repr__(self) -> str:
        return f"<Throttle limit={self.limit}/{self.max} in_use={self.in_use}>"

    def acquire(self, deadline: float | None = None) -> bool:
        """Wait for a slot (and for the shared pause to end); False when ``deadline`` (monotonic) comes first.
        Waits in steps of at most 0.25 s, so a deadline set later by ``stop`` is seen soon."""
        with self._cond:
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return False
                if now >= self.not_before and self.in_use < self.limit:
                    self.in_use += 1
                    self.requests += 1
                    return True
                wait = 0.25
                if self.not_before > now:
                    wait = min(wait, self.not_before - now)
                if deadline is not None:
                    wait = min(wait, deadline - now)
                self._cond.wait(max(0.001, wait))

    def release(self, ok: bool, pause: float = 0.0) -> None:
        """A request ended: ``ok`` (the service answered, even with a 400), or a sign of overload (429, 5xx,
        no connection) with the pause every sender should now keep."""
        with self._cond:
            self.in_use = max(0, self.in_use - 1)
            if ok:
                self._ok += 1
                if self._ok >= self.limit and self.limit < self.max:
                    self.limit += 1
                    self._ok = 0
            else:
                self._ok = 0
                self.limit = max(1, self.limit // 2)
                if pause > 0:
                    self.not_before = max(self.not_before, time.monotonic() + pause)
            self._cond.notify_all()


_registry: dict[tuple[str, str], Throttle] = {}
_registry_lock = threading.Lock()


def throttle_for(endpoint: str, project_id: str, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> Throttle:
    """The process's throttle for a service; the largest ``max_in_flight`` asked for wins."""
    key = (endpoint, project_id)
    with _registry_lock:
        t = _registry.get(key)
        if t is None:
            t = _registry[key] = Throttle(max_in_flight)
        elif max_in_flight > t.max:
            t.max = max_in_flight
        return t


def reset_after_fork() -> None:
    """The child starts with fresh throttles (the parent's locks may have been held by a thread that is gone)."""
    global _registry_lock
    _registry_lock = threading.Lock()
    _registry.clear()
