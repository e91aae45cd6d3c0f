"""How an attempt's outcome becomes counts: the one place that decides what a send's answer means.

``classify`` names the outcome of one POST from the exception it raised (or none): ``SENT``; ``REJECTED`` (a 400
or 404: the request, maybe one item, is refused for good); ``CONFIG`` (the endpoint is misconfigured: a
redirect, a certificate that does not verify); ``NO_CREDENTIALS`` (the credential chain found nothing to sign
with: nothing was sent); ``AUTH`` (credentials refused: a 401 is retried a few times,
a 403 never); ``RETRY`` (429, 5xx, no connection: the service may take it later); ``BUG`` (any other exception,
ours or a library's: never retried, so that it cannot loop). ``Accounting.settle`` turns a final outcome into
counts, through the batch's ``Ledger``, and says the line a person sees (notice.py) before the count moves, so
that a ``flush`` that sees a drop finds its line already written.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final

from ..errors import CESAuthError, CESEndpointError, CESError, CESNoCredentialsError, CESValidationError
from ..mapping import Event as BuiltEvent
from .stats import WorkerStats

AUTH_ATTEMPTS: Final = 3  # a 401 after the client's own refresh-and-retry: try a couple more times, then drop

Event = BuiltEvent | dict[str, Any]  # built (its JSON text and time), or a dict (the one-item path, the spool)


class Outcome(enum.Enum):
    SENT = "sent"
    REJECTED = "rejected"
    CONFIG = "config"
    NO_CREDENTIALS = "no_credentials"
    AUTH = "auth"
    RETRY = "retry"
    BUG = "error"


def classify(err: BaseException | None) -> Outcome:
    """The outcome of one attempt that raised ``err`` (None: the service took the batch)."""
    if err is None:
        return Outcome.SENT
    if isinstance(err, CESValidationError):
        return Outcome.REJECTED
    if isinstance(err, CESEndpointError):  # before CESError: a certificate error is a transport error too
        return Outcome.CONFIG
    if isinstance(err, CESNoCredentialsError):  # before CESAuthError, its base: nothing was sent
        return Outcome.NO_CREDENTIALS
    if isinstance(err, CESAuthError):
        return Outcome.AUTH
    if isinstance(err, CESError):
        return Outcome.RETRY
    return Outcome.BUG


def auth_final(err: BaseException, failures: int) -> bool:
    """An auth failure that ends the batch: a 403 (the credentials lack the right: waiting changes nothing),
    or the ``AUTH_ATTEMPTS``-th 401 in a row."""
    return failures >= AUTH_ATTEMPTS or getattr(err, "status", None) == 403


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


class Accounting:
    """Final outcomes into counts and lines. ``say(reason, text)`` writes a line at most once a minute per
    reason (the worker's ``notice.say``)."""

    __slots__ = ("say", "stats")

    def __init__(self, stats: WorkerStats, say: Callable[[str, str], bool]) -> None:
        self.stats = stats
        self.say = say

    def settle(self, outcome: Outcome, batch: list[Event], ledger: Ledger, err: BaseException | None) -> None:
        """``batch`` ended as ``outcome``: count every item of it once. ``RETRY`` is not final: it counts a retry
        and leaves the batch in flight (its next attempt, or the spool, settles it)."""
        n = len(batch)
        if outcome is Outcome.SENT:
            ledger.sent(batch)
        elif outcome is Outcome.RETRY:
            self.stats.add_retry()
        elif outcome is Outcome.REJECTED:
            self.say("rejected", f"service refused {n} event(s): {err}")
            ledger.lost("rejected", batch)
        elif outcome is Outcome.CONFIG:
            self.say("config", f"{n} event(s) dropped, the endpoint is misconfigured: {err}")
            ledger.lost("config", batch)
        elif outcome is Outcome.NO_CREDENTIALS:
            self.say("no_credentials", f"{n} event(s) dropped: {err}")
            ledger.lost("no_credentials", batch)
        elif outcome is Outcome.AUTH:
            self.say("auth", f"credentials refused, {n} event(s) dropped: {err}")
            ledger.lost("auth", batch)
        else:
            self.say("send-bug", f"unexpected error while sending: {type(err).__name__}: {err}")
            ledger.lost("error", batch)
