"""Record to event, the worker's half: a prepared item (``prepare.py``, on the app's thread) becomes the API's
event, as JSON text in the layout ``layout.py`` defines. The handler's life cycle is elsewhere (``handler.py``);
this module is the mapping alone, so a reader finds it without the threads.

``EventBuilder`` runs on the worker's batcher thread, never on the app's: it sanitises every field by
``events.py``'s rules, checks the record's overrides, and gives each event its time from ``TimeAssigner``.
That time is assigned once, when the event is built: a retry and a spooled batch send the very same text, so
the service's same-event rule keeps them idempotent (docs/api.md, 'The same-event rule').

Level: >= CRITICAL Critical, >= ERROR Major, >= WARNING Minor, else Info (``level_map`` overrides); state:
Critical/Major incident, Minor warning, Info normal (``state_map``). Per record, the overrides that
``prepare.read_overrides`` found (``extra={"ces": {...}}`` or the flat ``ces_<field>`` keys) replace name,
level, state, resource, user, group and dimensions; one that breaks its rule is replaced or left out, and
counted in ``sanitised``.

``Event``, ``encode_batch`` and ``event_time`` (``layout.py``) and ``Item``, ``ITEM_OVERHEAD`` and
``PLAIN_RECORD_KEYS`` (``prepare.py``) are also importable from here.
"""

from __future__ import annotations

import bisect
import logging
import threading
from array import array
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, NamedTuple

from . import forks, identity
from .events import (
    DIMENSION_NAME,
    DIMENSION_VALUE,
    EVENT_NAME,
    EVENT_TYPE_CUSTOM,
    EVENT_USER,
    GROUP_ID,
    LEVELS,
    MAX_DIMENSIONS,
    RESOURCE_ID,
    RESOURCE_NAME,
    SAFE_WINDOW_FUTURE_MS,
    SEND_ALLOWANCE_MS,
    STATES,
    SUB_EVENT_CUSTOM,
    TextRule,
    derive_event_name,
    key_of,
    now_ms,
    safe_text,
)
from .layout import Event, Template, encode_batch, event_time, fill, template
from .prepare import ITEM_OVERHEAD, PLAIN_RECORD_KEYS, Item

__all__ = [
    "DEFAULT_LEVEL_MAP",
    "DEFAULT_STATE_MAP",
    "ITEM_OVERHEAD",
    "PLAIN_RECORD_KEYS",
    "TIMES",
    "TIMES_PLAIN",
    "Event",
    "EventBuilder",
    "Item",
    "TimeAssigner",
    "encode_batch",
    "event_time",
]

DEFAULT_LEVEL_MAP: Final[Mapping[int, str]] = {
    logging.CRITICAL: "Critical",
    logging.ERROR: "Major",
    logging.WARNING: "Minor",
    logging.NOTSET: "Info",
}
DEFAULT_STATE_MAP: Final[Mapping[str, str]] = {
    "Critical": "incident",
    "Major": "incident",
    "Minor": "warning",
    "Info": "normal",
}


class TimeAssigner:
    """Gives events with equal key fields strictly increasing millisecond times, so that the service's
    same-event rule (equal keys and time: one event) never merges two records of this process.

    One per process (two: with and without the process identity), shared by every handler's worker:
    dictConfig applied again must not make two handlers collide. Other processes are kept apart by the
    per-process identity in ``resource_name``.

    Never reuses a time for a key, even after forgetting keys (the table is bounded). Keys last used before the
    service's window are forgotten first (their times can never be sent again). Past that: where every key
    carries the process identity (``on_full``), the identity is renewed, which makes every later key a new
    one, and the table starts empty; otherwise the oldest half is forgotten into ``BUCKETS`` hashed buckets
    that keep the latest time of the keys that fell into each, and a key the table does not know starts above
    its bucket's time (a neighbour's forgotten key may push it a little ahead; none can make it repeat)."""

    MAX_KEYS: Final = 50_000
    BUCKETS: Final = 1 << 16  # 512 KiB of int64
    MAX_DRIFT_MS: Final = 300_000  # well inside the future side of the window (10 min - margins)

    def __init__(self, on_full: Callable[[], object] | None = None) -> None:
        self.lock = threading.Lock()
        self._last: dict[tuple[str, ...], int] = {}
        self._on_full = on_full
        self._buckets: array[int] | None = None  # made when first needed

    def assign(self, key: tuple[str, ...], created_ms: int) -> int | None:
        """The time for a record, or None when the key's times have run more than ``MAX_DRIFT_MS`` ahead of
        the record's own (over 1,000 records a second of one key for minutes, or the clock stepped back: the
        caller renews the identity, which makes it a new key, or drops the record)."""
        with self.lock:
            return self.assign_locked(key, created_ms)

    def assign_locked(self, key: tuple[str, ...], created_ms: int) -> int | None:
        """``assign`` for a caller that holds ``lock`` (a batch takes it once, not once per event)."""
        last = self._last.get(key)
        if last is None:
            buckets = self._buckets
            base = buckets[hash(key) & (self.BUCKETS - 1)] if buckets is not None else 0
            if len(self._last) >= self.MAX_KEYS:
                self._forget(created_ms)
        else:
            base = last
        t = created_ms if created_ms > base else base + 1
        if t - created_ms > self.MAX_DRIFT_MS:
            return None
        self._last[key] = t
        return t

    def _forget(self, now: int) -> None:
        horizon = now - 3_600_000  # older than the service's window: those times can never be sent again
        kept = {k: v for k, v in self._last.items() if v > horizon}
        if len(kept) > self.MAX_KEYS // 2:
            if self._on_full is not None:
                self._on_full()  # every key this table knows is dead from now on
                kept = {}
            else:
                if self._buckets is None:
                    self._buckets = array("q", bytes(8 * self.BUCKETS))
                buckets, mask = self._buckets, self.BUCKETS - 1
                cut = sorted(kept.values())[len(kept) // 2]
                for k, v in kept.items():
                    if v <= cut:
                        b = hash(k) & mask
                        if v > buckets[b]:
                            buckets[b] = v
                kept = {k: v for k, v in kept.items() if v > cut}
        self._last = kept

    def reset_lock(self) -> None:
        self.lock = threading.Lock()


#: For handlers with the process identity (the default): a full table renews the identity.
TIMES = TimeAssigner(on_full=identity.renew)
#: For handlers with ``process_identity=False``.
TIMES_PLAIN = TimeAssigner()


def _after_fork() -> None:
    """New locks for the tables (the parent's worker may have held one at the fork). The times they keep stay:
    they are still the latest this process's keys were given."""
    TIMES.reset_lock()
    TIMES_PLAIN.reset_lock()


forks.on_new_process(_after_fork)


def _level_bisect(level_map: Mapping[int, str]) -> tuple[list[int], list[str]]:
    items = sorted(level_map.items())
    return [k for k, _ in items], [v for _, v in items]


class _Shared(NamedTuple):
    """What every plain event of one (logger, level) shares, for the batch path: the same-event key without
    the time, and the layout written around the time and the content."""

    key: tuple[str, ...]
    parts: Template


class EventBuilder:
    """The worker's half of the mapping for one handler's settings: a prepared item becomes an ``Event`` (or
    a drop reason). Runs on the worker's batcher thread (see the module's docstring for why there, and
    ``prepare.Preparer`` for the app thread's half); ``sanitised`` counts what it had to change."""

    def __init__(
        self,
        *,
        event_source: str,
        event_name: str | None,
        resource_id: str | None,
        resource_name: str | None,
        group_id: str | None,
        event_user: str | None,
        dimensions: dict[str, str],
        level_map: Mapping[int, str],
        state_map: Mapping[str, str],
        process_identity: bool = True,
    ) -> None:
        self.event_source = event_source
        self.event_name = event_name
        self.defaults = {
            "resource_id": resource_id,
            "resource_name": resource_name,
            "group_id": group_id,
            "event_user": event_user,
        }
        self.dimensions = dimensions
        self._thresholds, self._threshold_levels = _level_bisect(level_map)
        self.state_map = dict(state_map)
        self.process_identity = process_identity
        self.sanitised = 0  # worker side; the emit side counts in the handler
        self._names: dict[str, str] = {}
        self._levels: dict[int, str] = {}
        self._ident_cache: tuple[str, str, str] = ("\0", "", "")
        self._plain: dict[tuple[str, int], _Shared] = {}  # the batch path's per (logger, level) parts
        self._plain_ident = "\0"  # the resource name those parts were made with

    def level_for(self, levelno: int) -> str:
        level = self._levels.get(levelno)
        if level is None:
            i = bisect.bisect_right(self._thresholds, levelno) - 1
            level = self._threshold_levels[i] if i >= 0 else "Info"
            if len(self._levels) < 1000:
                self._levels[levelno] = level
        return level

    def _name_for(self, logger_name: str) -> str:
        name = self._names.get(logger_name)
        if name is None:
            name = derive_event_name(logger_name)
            if len(self._names) < 10_000:
                self._names[logger_name] = name
        return name

    def _clean(self, rule: TextRule, value: object) -> str | None:
        """A per-record value through its rule; counted when it had to change or go."""
        if value is None:
            return None
        text = value if isinstance(value, str) else safe_text(value)
        clean = rule.sanitise(text)
        if clean != text:
            self.sanitised += 1
        return clean or None

    def __call__(self, item: Item, now: int | None = None) -> Event | str:
        """The event for a prepared item, or a drop reason (a str) when it must not be sent."""
        created, levelno, logger_name, text, over, bad, _ = item
        if bad:
            self.sanitised += 1
        values = self.defaults
        name = self.event_name or self._name_for(logger_name)
        dims = self.dimensions
        level = self.level_for(levelno)
        state: str | None = None
        if over is not None:
            if not isinstance(over, Mapping):
                self.sanitised += 1
            else:
                values = dict(values)
                if "event_name" in over:
                    name = self._clean(EVENT_NAME, over["event_name"]) or name
                if "event_level" in over:
                    if over["event_level"] in LEVELS:
                        level = over["event_level"]
                    else:
                        self.sanitised += 1
                if "event_state" in over:
                    if over["event_state"] in STATES:
                        state = over["event_state"]
                    else:
                        self.sanitised += 1
                for key, rule in (
                    ("resource_id", RESOURCE_ID),
                    ("resource_name", RESOURCE_NAME),
                    ("event_user", EVENT_USER),
                    ("group_id", GROUP_ID),
                ):
                    if key in over:
                        values[key] = self._clean(rule, over[key])
                if "dimensions" in over:
                    dims = self._merge_dimensions(over["dimensions"])
        if state is None:
            state = self.state_map.get(level, "normal")
        # Here, off the app's thread: no lone surrogate reaches the JSON body (prepare already cut the text to
        # the limit; a replaced surrogate keeps the length).
        text = safe_text(text)
        user = values["event_user"] or ""
        rid = values["resource_id"] or ""
        rname = values["resource_name"] or ""
        created_ms = int(created * 1000)
        n = now_ms() if now is None else now
        if created_ms > n + SAFE_WINDOW_FUTURE_MS - SEND_ALLOWANCE_MS:
            # A record stamped ahead of the service's window (a wrong clock, a made-up record): dealt with
            # alone, at the time it is built, so that one outlier never pushes its key's times ahead.
            self.sanitised += 1
            created_ms = n
        t = None
        for _ in range(2):
            ident = self._identified(rname) if self.process_identity else rname
            same = key_of(self.event_source, name, EVENT_TYPE_CUSTOM, SUB_EVENT_CUSTOM, state, level, user, rid, ident)
            t = (TIMES if self.process_identity else TIMES_PLAIN).assign(same, created_ms)
            if t is not None or not self.process_identity:
                break
            identity.renew()  # the clock stepped back, or one key ran minutes ahead: a new key, a fresh start
        if t is None:
            return "key_rate"
        parts = template(self._values(name, level, state, rid, ident, user, values["group_id"], dims))
        return Event(fill(parts, t, text), t)

    def _values(
        self, name: str, level: str, state: str, rid: str, rname: str, user: str, group: str | None, dims: Any
    ) -> dict[str, Any]:
        """An event's values but its time and content, by the layout's keys (``layout.EVENT``)."""
        return {
            "event_name": name,
            "event_source": self.event_source,
            "event_level": level,
            "event_state": state,
            "resource_id": rid,
            "resource_name": rname,
            "event_user": user,
            "group_id": group,
            "dimensions": dims,
        }

    def build_batch(self, items: Iterable[Item], now: int | None = None) -> tuple[list[Event], dict[str, int]]:
        """The events for a batch of items and the drop reasons with their counts: for each item what
        ``self(item, now)`` gives, made faster for the common item (no overrides, nothing sanitised at emit: its
        name, level, state and key fields depend on its logger and level alone) by writing the layout once per
        (logger, level) and filling in each event's time and content (``layout.template`` and ``fill``, which
        the one-item path uses too)."""
        n = now_ms() if now is None else now
        future = n + SAFE_WINDOW_FUTURE_MS - SEND_ALLOWANCE_MS
        events: list[Event] = []
        reasons: dict[str, int] = {}
        times = TIMES if self.process_identity else TIMES_PLAIN
        plain = self._plain
        gen = -1
        last: tuple[str, int, _Shared] | None = None  # the previous item's parts: a batch is mostly one logger
        lock = times.lock
        write, made = fill, Event  # locals: looked up once per batch, not per event
        with lock:  # one lock for the batch's times; an item off the fast path lets go of it meanwhile
            for item in items:
                created, levelno, logger_name, text, over, bad, _ = item
                if over is None and not bad:
                    if gen != identity.generation:  # the first item, or the identity changed (fork, renewal)
                        gen = identity.generation
                        ident = self._resource_name()
                        if ident != self._plain_ident:
                            plain.clear()
                            self._plain_ident = ident
                        last = None
                    if last is not None and last[0] == logger_name and last[1] == levelno:
                        p = last[2]
                    else:
                        p = plain.get((logger_name, levelno)) or self._shared(logger_name, levelno, ident)
                        last = (logger_name, levelno, p)
                    created_ms = int(created * 1000)
                    # A renewal inside assign (the table was full) leaves this time good for p.key, the key
                    # it was assigned to; the next item sees the new generation and makes new parts.
                    t = times.assign_locked(p.key, created_ms) if created_ms <= future else None
                    if t is not None:
                        if not text.isascii():
                            text = safe_text(text)  # no lone surrogate reaches the body (see __call__)
                        events.append(made(write(p.parts, t, text), t))
                        continue
                lock.release()  # the one-item path takes it itself
                try:
                    built = self(item, n)
                finally:
                    lock.acquire()
                if isinstance(built, str):
                    reasons[built] = reasons.get(built, 0) + 1
                else:
                    events.append(built)
        return events, reasons

    def _resource_name(self) -> str:
        rname = self.defaults["resource_name"] or ""
        return self._identified(rname) if self.process_identity else rname

    def _shared(self, logger_name: str, levelno: int, ident: str) -> _Shared:
        """The parts shared by the plain events of a (logger, level), with the values ``__call__`` gives an
        item without overrides."""
        values = self.defaults
        name = self.event_name or self._name_for(logger_name)
        level = self.level_for(levelno)
        state = self.state_map.get(level, "normal")
        user = values["event_user"] or ""
        rid = values["resource_id"] or ""
        key = key_of(self.event_source, name, EVENT_TYPE_CUSTOM, SUB_EVENT_CUSTOM, state, level, user, rid, ident)
        parts = template(self._values(name, level, state, rid, ident, user, values["group_id"], self.dimensions))
        p = _Shared(key, parts)
        if len(self._plain) < 10_000:
            self._plain[(logger_name, levelno)] = p
        return p

    def _identified(self, rname: str) -> str:
        """``identity.with_identity`` for the last resource name seen (one string per batch, not per event)."""
        current = identity.current()
        cached = self._ident_cache
        if cached[0] == rname and cached[1] == current:
            return cached[2]
        value = identity.with_identity(rname, current)
        self._ident_cache = (rname, current, value)
        return value

    def _merge_dimensions(self, extra: object) -> dict[str, str]:
        dims = dict(self.dimensions)
        if not isinstance(extra, Mapping):
            self.sanitised += 1
            return dims
        for k, v in extra.items():
            name = self._clean(DIMENSION_NAME, k)
            value = self._clean(DIMENSION_VALUE, v)
            if name and value:
                dims[name] = value
        if len(dims) > MAX_DIMENSIONS:
            self.sanitised += 1
            dims = dict(list(dims.items())[:MAX_DIMENSIONS])
        return dims
