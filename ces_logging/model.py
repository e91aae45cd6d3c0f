"""The package's public value types: the custom-event model (``CustomEvent``, ``Dimension``, ``EventRecord``)
and ``HandlerStats``.

Dataclasses, in a module of their own because ``dataclasses`` imports ``inspect`` (with ``ast``, ``dis`` and
``tokenize``): a few milliseconds that every process would pay at ``import ces_logging`` although logging a
record never needs these types. They load when first used (``handler.stats``, the client, the CLI); the field
rules they describe are ``events.py``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .events import EVENT_TYPE_CUSTOM, SUB_EVENT_CUSTOM

__all__ = ["CustomEvent", "Dimension", "EventRecord", "HandlerStats"]


@dataclass(frozen=True)
class Dimension:
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
    """One stored event as the query API returns it."""

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
class HandlerStats:
    """A snapshot. ``sent + dropped + queued + folded == received`` always holds; ``dropped_by_reason`` says
    why. ``folded``: records that a delivered storm summary stands for (``storm_control``); ``context_kept``:
    records below ``event_level`` kept as context (``context_records``), not part of ``received``."""

    received: int
    sent: int
    dropped: int
    queued: int
    retries: int
    batches: int
    sanitised: int
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    spooled: int = 0  # of ``queued``: waiting on disk
    recovered_sent: int = 0  # from a spool another process (or handler) left: not in ``received``
    recovered_dropped: dict[str, int] = field(default_factory=dict)
    folded: int = 0
    context_kept: int = 0
    spool_skipped: int = 0  # files in spool_dir skipped, never read: not batches this user wrote
