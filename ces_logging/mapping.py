"""Record to event: what a ``logging.LogRecord`` becomes in Cloud Eye. The handler's life cycle is elsewhere
(``handler.py``); this module is the mapping alone, so a reader finds it without the threads.

Two halves, on two threads:

``EventBuilder.prepare`` runs in ``emit``, on the app's thread. It keeps only what can be sent (as the stdlib's
``QueueHandler.prepare`` does): the content text rendered *now* (the handler's formatter on the record exactly as
logged, or the message and the traceback text), capped near the 4,096-character limit, the fields the event
needs, and the ``ces`` overrides. Never the record, its arguments or its traceback's frames: a queued record
costs its text and a few hundred bytes, whatever the app held when it logged.

``EventBuilder.__call__`` runs on the worker thread: the prepared item becomes the API's event dict, every field
sanitised by ``events.py``'s rules, with a time from ``TimeAssigner`` (assigned once: a retry and a spooled batch
send the very same items, so the same-event rule keeps them idempotent).

The rule for formatters (why it is rendered at emit): a formatter may read anything the app put on the record
(structlog's event dict in ``msg`` with ``_logger``/``_name``, extras, ``args``), and the arguments may change
after the logging call returns. Rendering at emit, on the record as logged, is the one rule under which the
event's content is exactly what the same formatter prints on a ``StreamHandler``.

Level: >= CRITICAL Critical, >= ERROR Major, >= WARNING Minor, else Info (``level_map`` overrides); state:
Critical/Major incident, Minor warning, Info normal (``state_map``). Per record, ``extra={"ces": {...}}`` (or the
flat ``ces_<field>`` keys, in ``extra`` or in a structlog event dict) override name, level, state, resource,
user, group and dimensions.
"""

from __future__ import annotations

import bisect
import json
import logging
import sys
import threading
from array import array
from collections.abc import Callable, Iterable, Mapping
from json.encoder import encode_basestring
from typing import Any, Final, NamedTuple

from . import identity, otel
from .context import ContextKeeper
from .events import (
    DIMENSION_NAME,
    DIMENSION_VALUE,
    EVENT_NAME,
    EVENT_TYPE_CUSTOM,
    EVENT_USER,
    GROUP_ID,
    LEVELS,
    MAX_CONTENT,
    MAX_DIMENSIONS,
    RESOURCE_ID,
    RESOURCE_NAME,
    SAFE_WINDOW_FUTURE_MS,
    SEND_ALLOWANCE_MS,
    STATES,
    SUB_EVENT_CUSTOM,
    TextRule,
    content_cost,
    derive_event_name,
    fit_content,
    key_of,
    now_ms,
    safe_text,
)
from .storm import storm_key

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
OVERRIDE_FIELDS: Final = (
    "event_name",
    "event_level",
    "event_state",
    "resource_id",
    "resource_name",
    "event_user",
    "group_id",
    "dimensions",
)
_FLAT_KEYS: Final = tuple(f"ces_{f}" for f in OVERRIDE_FIELDS)
ITEM_OVERHEAD: Final = 240  # bytes a prepared item costs besides its text (tuple, float, refs), measured

# A prepared item: (created, levelno, logger name, content text, overrides or None, sanitised at emit, storm
# key or None). The storm key (``storm.py``) is computed only when storm control is on.
Item = tuple[float, int, str, str, Any, bool, Any]



class Event:
    """A built event as the request body carries it: its compact JSON text (``raw``, exactly what
    ``json.dumps(event, ensure_ascii=False, separators=(",", ":"))`` gives for its dict) and its time (what the
    worker checks against the service's window before each attempt). The batch path makes no dict per event,
    and a request body (or a spool file) is the texts joined. Never changed after it is built: a retry and the
    spool send the very same event. ``as_dict`` gives the fields, for whoever needs them (tests)."""

    __slots__ = ("raw", "time")

    def __init__(self, raw: str, time: int) -> None:
        self.raw = raw
        self.time = time

    def __repr__(self) -> str:
        return f"Event({self.raw})"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.raw)
        return out


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def encode_batch(batch: Iterable[Event | Mapping[str, Any]]) -> bytes:
    """The request body for a batch (and a spool file's text): a JSON array, compact, UTF-8; an ``Event``'s own
    text, a mapping (read back from the spool) dumped."""
    parts = []
    for e in batch:  # a loop, not a generator: the benchmark's CPU split tells encoding by this function's name
        parts.append(e.raw if type(e) is Event else _dumps(e))
    return ("[" + ",".join(parts) + "]").encode("utf-8")


def event_time(e: Event | Mapping[str, Any]) -> int:
    """A built event's time (ms), whichever form it has."""
    return e.time if type(e) is Event else int(e["time"])  # type: ignore[index]


class _Plain(NamedTuple):
    """What every plain event of one (logger, level) shares, for the batch path: the same-event key without
    the time, and the JSON text around the time and the content."""

    key: tuple[str, ...]
    before_time: str
    before_content: str
    after_content: str


_json_fallback: logging.Formatter | None = None
_PLAIN = logging.Formatter("%(message)s")


def _json_formatter(formatter: logging.Formatter | None) -> logging.Formatter:
    """The handler's formatter when it is python-json-logger's (any of its classes), else python-json-logger's
    with level, logger and message. Asked without importing the package (a formatter of its classes exists only
    once the app has imported it), and the fallback is made on the first JSON record: python-json-logger loads
    with a handler that has ``json_content=True``, never with ``import ces_logging``."""
    global _json_fallback
    core = sys.modules.get("pythonjsonlogger.core")
    if formatter is not None and core is not None and isinstance(formatter, core.BaseJsonFormatter):
        return formatter
    if _json_fallback is None:
        from pythonjsonlogger.json import JsonFormatter

        _json_fallback = JsonFormatter("%(levelname)s %(name)s %(message)s")
    return _json_fallback


def read_overrides(record: logging.LogRecord) -> Any:
    """The record's per-event overrides: ``record.ces`` (``extra={"ces": {...}}``), flat ``ces_<field>``
    attributes (``extra={"ces_dimensions": ...}``), the same keys in loguru's ``record.extra`` (``bind``), or
    in a mapping ``msg`` (structlog's event dict under ``ProcessorFormatter.wrap_for_formatter``). None when
    there are none; the common case (a plain record) costs a length check and two dict look-ups."""
    d = record.__dict__
    over = d.get("ces")
    if len(d) <= PLAIN_RECORD_KEYS and over is None and type(d.get("msg")) is str:
        return None  # nothing but the standard attributes: no extras, no structlog event dict
    msg = d.get("msg")
    flat: dict[str, Any] | None = None
    if type(msg) is not str and isinstance(msg, Mapping):
        inner = msg.get("ces")
        if isinstance(inner, Mapping):
            flat = dict(inner)
        for k in _FLAT_KEYS:
            if k in msg:
                (flat := flat if flat is not None else {})[k[4:]] = msg[k]
    bound = d.get("extra")  # loguru's bind(): its values arrive as one mapping, ``record.extra``
    if bound is not None and isinstance(bound, Mapping):
        inner = bound.get("ces")
        if isinstance(inner, Mapping):
            (flat := flat if flat is not None else {}).update(inner)
        for k in _FLAT_KEYS:
            if k in bound:
                (flat := flat if flat is not None else {})[k[4:]] = bound[k]
    for k in _FLAT_KEYS:
        if k in d:
            (flat := flat if flat is not None else {})[k[4:]] = d[k]
    if flat is None:
        return over  # may be anything: the builder counts a ces that is not a mapping as sanitised
    if isinstance(over, Mapping):
        flat.update(over)
    return flat


#: How many attributes a record has when nothing was added to it (extras, structlog's, loguru's).
PLAIN_RECORD_KEYS: Final = len(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None).__dict__)


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


def _detail_parts(
    level: str, state: str, rid: str, rname: str, user: str, group: str | None, dims: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An event's ``detail`` fields before ``content`` and after it, in the order every event is written (one
    place for the layout: the one-item path and the batch path's shared parts both use it)."""
    head: dict[str, Any] = {
        "event_type": EVENT_TYPE_CUSTOM,
        "sub_event_type": SUB_EVENT_CUSTOM,
        "event_level": level,
        "event_state": state,
    }
    tail: dict[str, Any] = {}
    if rid:
        tail["resource_id"] = rid
    if rname:
        tail["resource_name"] = rname
    if user:
        tail["event_user"] = user
    if group:
        tail["group_id"] = group
    if dims:
        tail["dimensions"] = [{"name": k, "value": v} for k, v in dims.items()]
    return head, tail


def _level_bisect(level_map: Mapping[int, str]) -> tuple[list[int], list[str]]:
    items = sorted(level_map.items())
    return [k for k, _ in items], [v for _, v in items]


class EventBuilder:
    """Both halves of the mapping for one handler's settings (see the module's docstring)."""

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
        json_content: bool,
        process_identity: bool = True,
        storm_keys: bool = False,
        context: ContextKeeper | None = None,
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
        self.json_content = json_content
        self.process_identity = process_identity
        self.storm_keys = storm_keys  # storm control is on: each item carries its group's key (storm.py)
        self.context = context  # context_records: kept records go into the next event's content (context.py)
        self.sanitised = 0  # worker side; the emit side counts in the handler
        self._names: dict[str, str] = {}
        self._levels: dict[int, str] = {}
        self._ident_cache: tuple[str, str, str] = ("\0", "", "")
        self._plain: dict[tuple[str, int], _Plain] = {}  # the batch path's per (logger, level) parts
        self._plain_ident = "\0"  # the resource name those parts were made with

    # --- the app's thread: keep what can be sent -------------------------------------------------------------

    def prepare(self, record: logging.LogRecord, formatter: logging.Formatter | None) -> Item:
        """What is kept of a record, taken now (see the module docstring). Never raises: a message or a
        formatter that fails gives a text that says so, and the item is marked sanitised."""
        bad = False
        try:
            if formatter is None and not self.json_content:
                text = record.getMessage()
                if record.exc_info or record.exc_text or record.stack_info:
                    text = self._with_traceback(record, text)
            elif self.json_content:
                text = self._json(record, formatter)
            else:
                text = formatter.format(record)  # type: ignore[union-attr]
        except Exception as e:
            bad = True
            text = self._fallback(record, e)
        if not isinstance(text, str):
            text, bad = safe_text(text), True
        if "opentelemetry.trace" in sys.modules:  # only an app that traces has imported it: else no cost
            text = self._with_trace_ids(text)
        # --- hooks: context and storm control (off: two attribute reads) ---
        if self.context is not None:
            text = self.context.attach(text, self.json_content)
        if len(text) > MAX_CONTENT // 2 and content_cost(text) > MAX_CONTENT:
            text = fit_content(text)  # cut once, here: a queued record never holds more than can be sent
        key = storm_key(record, text) if self.storm_keys else None
        return (record.created, record.levelno, record.name, text, read_overrides(record), bad, key)

    def _with_trace_ids(self, text: str) -> str:
        """The recording span's ids (as google-cloud-logging attaches them), so an event can be matched with
        its trace: a short suffix on text content, two fields in JSON content. Cut to fit at build time, the
        ids go last in text, so a long message loses its middle, never the ids."""
        ids = otel.current_trace_ids()
        if ids is None:
            return text
        trace_id, span_id = ids
        if self.json_content and text.endswith("}") and text.startswith("{"):
            sep = "" if text.rstrip("} \n") == "{" else ", "
            out = f'{text[:-1]}{sep}"trace_id": "{trace_id}", "span_id": "{span_id}"}}'
            return out if content_cost(out) <= MAX_CONTENT else text  # valid JSON first
        return f"{text} [trace_id={trace_id} span_id={span_id}]"

    @staticmethod
    def _with_traceback(record: logging.LogRecord, message: str) -> str:
        """What ``Formatter("%(message)s")`` prints, without touching the record (other handlers share it)."""
        text = message
        exc_text = record.exc_text
        if record.exc_info and not exc_text:
            exc_text = _PLAIN.formatException(record.exc_info)
        if exc_text:
            text = f"{text}\n{exc_text}" if text[-1:] != "\n" else text + exc_text
        if record.stack_info:
            text = f"{text}\n{_PLAIN.formatStack(record.stack_info)}" if text[-1:] != "\n" else text + record.stack_info
        return text

    def _json(self, record: logging.LogRecord, formatter: logging.Formatter | None) -> str:
        """The record as JSON (the handler's JSON formatter, else python-json-logger's with level, logger and
        message). Too long, it is the message and then the traceback that get shorter, never the JSON text, so
        what is sent stays valid JSON. Works on a copy when it has to cut: the record is the app's."""
        fmt = _json_formatter(formatter)
        text = safe_text(fmt.format(record))
        if content_cost(text) <= MAX_CONTENT:
            return text
        r = logging.makeLogRecord(record.__dict__)
        r.msg, r.args = record.getMessage(), None
        if r.exc_info and not r.exc_text:
            r.exc_text = _PLAIN.formatException(r.exc_info)
        r.exc_info = None
        for _ in range(4):
            excess = content_cost(text) - MAX_CONTENT
            if excess <= 0:
                return text
            excess += 64  # room for the marker and for escapes that the cut text still needs
            if r.exc_text and len(r.exc_text) > excess:
                r.exc_text = fit_content(r.exc_text, limit=len(r.exc_text) - excess)
            elif r.exc_text or r.stack_info:
                r.exc_text, r.stack_info = None, None
            else:
                msg = str(r.msg)
                r.msg = fit_content(msg, limit=max(0, len(msg) - excess))
            text = safe_text(fmt.format(r))
        if content_cost(text) <= MAX_CONTENT:
            return text
        return json.dumps({"message": fit_content(str(r.msg), limit=3000), "truncated": True}, ensure_ascii=False)

    def _fallback(self, record: logging.LogRecord, err: Exception) -> str:
        try:
            message = record.getMessage()
        except Exception:
            msg = fit_content(safe_text(record.msg), 1500)
            args = fit_content(safe_text(record.args), 1500)
            return f"[ces_logging: could not format the log message] msg={msg} args={args}"
        text = f"{safe_text(message)} [ces_logging: formatter failed: {type(err).__name__}]"
        if self.json_content:
            return json.dumps({"message": fit_content(text, 3000), "formatter_error": type(err).__name__})
        return text

    # --- the worker thread: the event ------------------------------------------------------------------------

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

    def __call__(self, item: Item, now: int | None = None) -> dict[str, Any] | str:
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
        head, tail = _detail_parts(level, state, rid, ident, user, values["group_id"], dims)
        detail = {**head, "content": text, **tail}
        return {"event_name": name, "event_source": self.event_source, "time": t, "detail": detail}

    def build_batch(self, items: Iterable[Item], now: int | None = None) -> tuple[list[Event], dict[str, int]]:
        """The events for a batch of items and the drop reasons with their counts: for each item what
        ``self(item, now)`` gives (the tests hold the two equal), made faster for the common item (no
        overrides, nothing sanitised at emit: its name, level, state and key fields depend on its logger and
        level alone) by building those parts once per (logger, level) and each event's JSON text from them."""
        n = now_ms() if now is None else now
        future = n + SAFE_WINDOW_FUTURE_MS - SEND_ALLOWANCE_MS
        events: list[Event] = []
        reasons: dict[str, int] = {}
        times = TIMES if self.process_identity else TIMES_PLAIN
        plain = self._plain
        gen = -1
        last: tuple[str, int, _Plain] | None = None  # the previous item's parts: a batch is mostly one logger
        lock = times.lock
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
                        p = plain.get((logger_name, levelno)) or self._plain_parts(logger_name, levelno, ident)
                        last = (logger_name, levelno, p)
                    created_ms = int(created * 1000)
                    # A renewal inside assign (the table was full) leaves this time good for p.key, the key
                    # it was assigned to; the next item sees the new generation and makes new parts.
                    t = times.assign_locked(p.key, created_ms) if created_ms <= future else None
                    if t is not None:
                        if not text.isascii():
                            text = safe_text(text)
                        raw = f"{p.before_time}{t}{p.before_content}{encode_basestring(text)}{p.after_content}"
                        events.append(Event(raw, t))
                        continue
                lock.release()  # the one-item path takes it itself
                try:
                    built = self(item, n)
                finally:
                    lock.acquire()
                if isinstance(built, str):
                    reasons[built] = reasons.get(built, 0) + 1
                else:
                    events.append(Event(_dumps(built), built["time"]))
        return events, reasons

    def _resource_name(self) -> str:
        rname = self.defaults["resource_name"] or ""
        return self._identified(rname) if self.process_identity else rname

    def _plain_parts(self, logger_name: str, levelno: int, ident: str) -> _Plain:
        """The parts shared by the plain events of a (logger, level), in the order ``__call__`` writes them."""
        values = self.defaults
        name = self.event_name or self._name_for(logger_name)
        level = self.level_for(levelno)
        state = self.state_map.get(level, "normal")
        user = values["event_user"] or ""
        rid = values["resource_id"] or ""
        head, tail = _detail_parts(level, state, rid, ident, user, values["group_id"], self.dimensions)
        key = key_of(self.event_source, name, EVENT_TYPE_CUSTOM, SUB_EVENT_CUSTOM, state, level, user, rid, ident)
        head_json = _dumps(head)[:-1]  # without its closing brace
        tail_json = _dumps(tail)[1:-1]
        p = _Plain(
            key=key,
            before_time=f'{{"event_name":{_dumps(name)},"event_source":{_dumps(self.event_source)},"time":',
            before_content=f',"detail":{head_json},"content":',
            after_content=("," + tail_json if tail_json else "") + "}}",
        )
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
