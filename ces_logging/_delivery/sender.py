"""One batch's delivery: the attempts, their throttle slots and the waits between them.

``Delivery.send`` delivers a batch or accounts for every item of it (through ``outcome.Accounting`` and the
spool state); it never raises for the service's answers. Rules:

- each attempt holds one throttle slot, taken before it and given back exactly once when it ends (``Slot``, a
  context manager), as its outcome says: answered, with its round trip (the throttle learns the link from it),
  or overloaded, with the pause every sender then keeps;
- the event times were assigned once, when the events were built: a retry sends the very same items, and the
  service's same-event rule (docs/api.md) makes a batch that did land the first time harmless the second time;
- with a usable spool, a retryable failure does not hold the batch in memory: it goes to disk (or back to its
  file) and the shared back-off (``SpoolState.failed``) says when the spool is tried again; without one, the
  batch retries here, with its own back-off;
- a 400 names the request, not always the item: the batch is split in halves until the bad items are alone;
- nothing waits past the worker's deadline (``Hurry``): what cannot go by then is parked or dropped as
  ``shutdown``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..events import sendable
from ..mapping import encode_batch, event_time
from ..spool import SpoolFile
from ..throttle import Throttle
from .backoff import backoff_delay
from .hurry import Hurry
from .outcome import Accounting, Event, Ledger, Outcome, auth_final, classify
from .spool_state import SpoolState

if TYPE_CHECKING:
    from .._service.client import CESClient

RETRYING_SAID_AFTER = 3  # without a spool, the line "retrying" comes with this attempt (one failure is common)


class Slot:
    """A throttle slot held for one attempt, given back once, when the ``with`` block ends."""

    __slots__ = ("in_flight", "ok", "pause", "rtt", "throttle")

    def __init__(self, throttle: Throttle, in_flight: int) -> None:
        self.throttle = throttle
        self.in_flight = in_flight
        self.ok = True  # False: a sign of overload (429, 5xx, no connection)
        self.pause = 0.0
        self.rtt: float | None = None

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.throttle.release(self.ok, self.pause, rtt=self.rtt, in_flight=self.in_flight)


class _Tries:
    __slots__ = ("attempt", "auth_failures", "spooling")

    def __init__(self) -> None:
        self.attempt = 0  # retryable failures of this batch kept in memory
        self.auth_failures = 0
        self.spooling = False  # this failure's batch goes to the spool (decided while the slot is held)


class Delivery:
    def __init__(
        self,
        client: CESClient,
        throttle: Throttle,
        spool: SpoolState,
        accounting: Accounting,
        hurry: Hurry,
        wake: Callable[[], None],
    ) -> None:
        self.client = client
        self.throttle = throttle
        self.spool = spool
        self.accounting = accounting
        self.say = accounting.say
        self.hurry = hurry
        self.wake = wake  # the batcher: the outage ended, the spool drains now

    def send(self, batch: list[Event], ledger: Ledger, leased: SpoolFile | None = None) -> None:
        """Deliver one batch, or account for every item in it. ``leased``: the spool file it came from."""
        try:
            self._deliver(batch, ledger, leased)
        finally:
            if leased is not None:
                self.spool.probe_ended()

    def _deliver(self, batch: list[Event], ledger: Ledger, leased: SpoolFile | None) -> None:
        tries = _Tries()
        while True:
            in_flight = self._slot_for(batch, ledger, leased, retried=tries.attempt > 0)
            if not in_flight:
                return
            with Slot(self.throttle, in_flight) as slot:
                batch = self._drop_too_old(batch, ledger)  # after the wait for a slot: time has passed
                if not batch:
                    self.spool.done(leased)
                    return
                remaining = self.hurry.remaining()
                if remaining is not None and remaining <= 0:
                    self.spool.park(batch, ledger, leased, "shutdown")
                    return
                timeout = None if remaining is None else max(0.05, min(self.client.timeout, remaining))
                err = self._post(batch, timeout, slot)
                outcome = classify(err)
                delay = self._retry_delay(outcome, err, tries, slot)
            if delay is None:  # final: delivered, or dropped with a reason
                self._settle(outcome, batch, ledger, leased, err)
                return
            if not self._before_retry(outcome, err, batch, ledger, leased, tries, delay):
                return

    def _post(self, batch: list[Event], timeout: float | None, slot: Slot) -> Exception | None:
        """One attempt: the exception it raised, or None when the service took the batch. ``timeout``: None
        is the client's own; a deadline cuts it."""
        body = encode_batch(batch)
        started = time.monotonic()
        try:
            self.client.send_events_body(body, timeout=timeout)
        except Exception as e:
            return e
        slot.rtt = time.monotonic() - started
        return None

    def _retry_delay(self, outcome: Outcome, err: Exception | None, tries: _Tries, slot: Slot) -> float | None:
        """While the slot is held: the seconds before the next attempt, or None when the outcome is final.
        An overload's pause goes into the slot's release, for every sender of the service."""
        if outcome is Outcome.AUTH:
            assert err is not None
            tries.auth_failures += 1
            return None if auth_final(err, tries.auth_failures) else backoff_delay(tries.auth_failures)
        if outcome is not Outcome.RETRY:
            return None
        retry_after = getattr(err, "retry_after", None)
        tries.spooling = self.spool.usable()
        if tries.spooling:  # the spool's back-off spans batches: it is the service that is down
            delay = self.spool.failed(retry_after)
        else:
            tries.attempt += 1
            delay = backoff_delay(tries.attempt, retry_after)
        slot.ok = False
        slot.pause = delay
        return delay

    def _settle(
        self, outcome: Outcome, batch: list[Event], ledger: Ledger, leased: SpoolFile | None, err: Exception | None
    ) -> None:
        if outcome is Outcome.REJECTED:
            self._isolate_rejected(batch, err, ledger)
            self.spool.done(leased)
            return
        # The file goes before the count: a flush that sees the batch counted finds its file gone.
        self.spool.done(leased)
        self.accounting.settle(outcome, batch, ledger, err)
        if outcome is Outcome.SENT and self.spool.recovered():
            self.wake()

    def _before_retry(
        self,
        outcome: Outcome,
        err: Exception | None,
        batch: list[Event],
        ledger: Ledger,
        leased: SpoolFile | None,
        tries: _Tries,
        delay: float,
    ) -> bool:
        """After a failure that may pass: count the retry, put the batch on disk or wait. True: try again."""
        self.accounting.settle(Outcome.RETRY, batch, ledger, err)
        if outcome is Outcome.RETRY:
            if tries.spooling and self.spool.park(batch, ledger, leased, None):
                self.spool.went_down(delay)
                self.say("outage", f"service unavailable ({err}); events wait in the spool")
                return False
            if not tries.spooling and tries.attempt == RETRYING_SAID_AFTER:
                self.say("retrying", f"service unavailable ({err}); retrying")
        remaining = self.hurry.remaining()
        if remaining is not None and delay >= remaining:
            self.spool.park(batch, ledger, leased, "shutdown")
            return False
        if outcome is Outcome.AUTH:  # an overload's wait is the throttle's shared pause, in the next acquire
            self.hurry.interrupt.wait(delay)
        return True

    def _isolate_rejected(self, batch: list[Event], err: Exception | None, ledger: Ledger) -> None:
        """A 400 names the request, not always the item: split the batch in halves until the bad items are
        alone, drop those as ``rejected`` and deliver the rest. A 404 (no such project) refuses every item."""
        if len(batch) == 1 or getattr(err, "status", None) == 404:
            self.accounting.settle(Outcome.REJECTED, batch, ledger, err)
            return
        mid = len(batch) // 2
        for half in (batch[:mid], batch[mid:]):
            self._deliver(half, ledger, None)

    def _slot_for(self, batch: list[Event], ledger: Ledger, leased: SpoolFile | None, *, retried: bool) -> int:
        """A slot for this batch: how many requests are in flight with it (>= 1); 0 when the batch went
        elsewhere meanwhile (the service went down: to disk, behind the rest) or the final deadline passed."""
        spool = self.spool

        def give_way() -> bool:
            return (
                leased is None
                and ledger.spoolable
                and (spool.outage or retried)
                and spool.spool is not None
                and spool.usable()
            )

        while True:
            got = self._acquire(give_way)
            if got is None:
                if spool.park(batch, ledger, None, None):
                    return 0
                continue
            if not got:
                spool.park(batch, ledger, leased, "shutdown")
                return 0
            return got

    def _acquire(self, give_way: Callable[[], bool]) -> int | None:
        """A throttle slot: how many requests are in flight with it (>= 1); 0 when the process's final
        deadline has passed; None as soon as ``give_way()`` says the batch has somewhere better to go."""
        while True:
            step = time.monotonic() + 0.25
            d = self.hurry.deadline
            in_flight = self.throttle.acquire(step if d is None else min(d, step))
            if in_flight:
                return in_flight
            left = self.hurry.remaining()  # a passed hurry that was not final is cleared here
            if left is not None and left <= 0:
                return 0
            if give_way():
                return None

    def _drop_too_old(self, batch: list[Event], ledger: Ledger) -> list[Event]:
        """The events the service still accepts (docs/api.md: at most an hour old); the others dropped as
        ``too_old``."""
        times = [event_time(e) for e in batch]
        if not times or (sendable(min(times)) and sendable(max(times))):  # the window is an interval
            return batch
        fresh = [e for e, t in zip(batch, times, strict=True) if sendable(t)]
        if len(fresh) < len(batch):
            ledger.lost("too_old", [e for e, t in zip(batch, times, strict=True) if not sendable(t)])
            self.say("too_old", f"{len(batch) - len(fresh)} event(s) dropped: older than the service accepts (1 h)")
        return fresh
