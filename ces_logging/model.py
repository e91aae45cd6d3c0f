"""The package's public value types: the custom-event model (``CustomEvent``, ``Dimension``, ``EventRecord``),
the client's answers (``ReportedEvent``, ``EventDetailPage``) and ``HandlerStats``.

Dataclasses, in a module of their own because ``dataclasses`` imports ``inspect`` (with ``ast``, ``dis`` and
``tokenize``): a few milliseconds that every process would pay at ``import ces_logging`` (or at building a
handler that sends) although logging a record never needs these types. They load when first used
(``handler.stats``, a report or a query, the CLI); the field rules they describe are ``events.py``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .events import EVENT_TYPE_CUSTOM, SUB_EVENT_CUSTOM

__all__ = ["CustomEvent", "Dimension", "EventDetailPage", "EventRecord", "HandlerStats", "ReportedEvent"]


@dataclass(frozen=True)
class Dimension:
    """One of an event's dimensions (at most 4): a name of 1-32 characters starting with a letter (letters,
    digits, ``_``, ``-``) and a value of 1-256 characters. Cloud Eye's alarm rules can select events by them."""

    name: str
    value: str


@dataclass(frozen=True)
class CustomEvent:
    """One custom event as the report API takes it. ``to_api()`` gives the JSON-ready dict."""

    event_name: str
    event_source: str
    time: int
    content: str | None = None
    event_level: str | None = None
    event_state: str | None = None
    event_user: str | None = None
    resource_id: str | None = None
    resource_name: str | None = None
    group_id: str | None = None
    event_type: str = EVENT_TYPE_CUSTOM
    sub_event_type: str | None = SUB_EVENT_CUSTOM
    dimensions: tuple[Dimension, ...] = field(default_factory=tuple)

    def to_api(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"event_type": self.event_type}
        for name in (
            "content",
            "event_level",
            "event_state",
            "event_user",
            "resource_id",
            "resource_name",
            "group_id",
            "sub_event_type",
        ):
            v = getattr(self, name)
            if v is not None:
                detail[name] = v
        if self.dimensions:
            detail["dimensions"] = [{"name": d.name, "value": d.value} for d in self.dimensions]
        return {
            "event_name": self.event_name,
            "event_source": self.event_source,
            "time": self.time,
            "detail": detail,
        }


@dataclass(frozen=True)
class EventRecord:
    """One stored event as the query API returns it: its id, name, source, time (ms) and ``detail`` (content,
    level, state, user, resource, group, dimensions, type and sub-type, as the service stored them)."""

    event_id: str
    event_name: str
    event_source: str
    time: int
    detail: dict[str, Any]

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> EventRecord:
        return cls(
            event_id=str(d.get("event_id", "")),
            event_name=str(d.get("event_name", "")),
            event_source=str(d.get("event_source", "")),
            time=int(d.get("time", 0)),
            detail=dict(d.get("detail") or {}),
        )

    @property
    def level(self) -> str:
        return str(self.detail.get("event_level", ""))

    @property
    def state(self) -> str:
        return str(self.detail.get("event_state", ""))

    @property
    def content(self) -> str:
        return str(self.detail.get("content", ""))


@dataclass(frozen=True)
class ReportedEvent:
    """What the service answered for one reported event: its new ``event_id`` and its name."""

    event_id: str
    event_name: str


@dataclass(frozen=True)
class EventDetailPage:
    """One page of ``GET /V1.0/{project_id}/event/{event_name}``; ``total`` counts all matches."""

    event_name: str
    event_type: str
    sub_event_type: str | None
    event_users: list[str]
    event_sources: list[str]
    event_info: list[EventRecord]
    total: int
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class HandlerStats:
    """A snapshot of a handler's counts (``handler.stats``).

    ``sent + dropped + queued + folded == received`` always holds, at every moment, against threads and signal
    handlers; ``dropped_by_reason`` says why each dropped record was dropped. Records kept as context and
    records another process left in a spool are counted apart, outside ``received``.
    """

    received: int
    """Records that reached ``emit`` as candidates for an event (at or above ``event_level`` when it is set)."""
    sent: int
    """Records delivered: the service answered 201 for the request that carried them."""
    dropped: int
    """Records given up on, each with a reason in ``dropped_by_reason``."""
    queued: int
    """Records not yet settled: in memory, in a request in flight, waiting to be retried or on disk."""
    retries: int
    """Requests sent again (after a 408, 429, 5xx, connection error or 401), not records."""
    batches: int
    """Requests that delivered events."""
    sanitised: int
    """Records whose fields broke an API rule and were mended (a name, a source, a level, a dimension, ...)."""
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    """``dropped`` by reason: ``queue_full``, ``too_old``, ``rejected``, ``auth``, ``no_credentials``,
    ``config``, ``key_rate``, ``closed``, ``shutdown``, ``inactive``, ``spool_full``, ``error``."""
    spooled: int = 0
    """Of ``queued``: the records waiting on disk in the spool."""
    recovered_sent: int = 0
    """Events delivered from spool files that another process (or handler) left; not in ``received``."""
    recovered_dropped: dict[str, int] = field(default_factory=dict)
    """Events of such files given up on, by reason; not in ``dropped``."""
    folded: int = 0
    """Records that a delivered storm-control summary stands for (``storm_control``)."""
    context_kept: int = 0
    """Records below ``event_level`` kept as context for a later event (``context_records``); not in
    ``received``."""
    spool_skipped: int = 0
    """Files in ``spool_dir`` skipped and never read because they cannot be batches this user wrote (another
    user's, a symlink, a hard link, a FIFO, larger than any batch): files, not records."""
