"""``CESHandler``: a log record becomes a Cloud Eye custom event, delivered in the background.

The app's thread does the least possible (``emit``: take the message, append to a deque, maybe wake the
worker); everything else, formatting, sanitising, batching and HTTP, happens on the worker thread. ``emit``
never blocks, never does I/O and never raises: a full queue drops the record and counts it.

Record to event (``EventBuilder``, run on the worker thread):
- level: >= CRITICAL Critical, >= ERROR Major, >= WARNING Minor, else Info; state: Critical/Major incident,
  Minor warning, Info normal (both overridable);
- every field sanitised by ``events.py``'s rules, so the service never refuses what the handler sends;
- distinct records stay distinct events: the same-event rule merges items whose key fields and millisecond
  time are equal, so equal keys get strictly increasing times (assigned once: a retry sends the same items).
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pythonjsonlogger.core import BaseJsonFormatter
from pythonjsonlogger.json import JsonFormatter

from .auth import TokenProvider
from .client import CESClient
from .config import ENV_EVENT_SOURCE, env_first
from .errors import ConfigError
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
    STATES,
    SUB_EVENT_CUSTOM,
    TextRule,
    check_event_source,
    content_cost,
    derive_event_name,
    event_key,
    fit_content,
    safe_text,
)
from .spool import Spool
from .worker import WORKER_THREADS, Drop, Worker

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
_RECORD_OVERRIDES: Final = (
    "event_name",
    "resource_id",
    "resource_name",
    "event_user",
    "dimensions",
    "group_id",
)
# TEMP (issue 16): the same overrides as flat keys, in extra=, structlog's event dict or loguru's record.extra
_FLAT_OVERRIDES: Final = tuple((f"ces_{k}", k) for k in (*_RECORD_OVERRIDES, "event_level", "event_state"))
_TIME_KEYS_MAX: Final = 50_000  # distinct event keys remembered for time assignment
MAX_TIME_DRIFT_MS: Final = 300_000  # well inside the future side of the window (10 min - margins)


@dataclass(frozen=True)
class HandlerStats:
    """A snapshot. ``sent + dropped + queued == received`` always holds; ``dropped_by_reason`` says why."""

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


def _parse_level(level: int | str) -> int:
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str):
        if level.strip().lstrip("-").isdigit():
            return int(level)
        value = logging.getLevelName(level.strip().upper())
        if isinstance(value, int):
            return value
    raise ConfigError(f"unknown logging level {level!r}")


def _check_optional(rule: TextRule, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if why := rule.check(value):
        raise ConfigError(f"{rule.field} {value!r} is not valid: {why}")
    return value


def _check_dimensions(dims: Mapping[str, Any] | None) -> dict[str, str]:
    if not dims:
        return {}
    if not isinstance(dims, Mapping):
        raise ConfigError(f"dimensions must be a mapping of name to value, got {type(dims).__name__}")
    if len(dims) > MAX_DIMENSIONS:
        raise ConfigError(f"at most {MAX_DIMENSIONS} dimensions are allowed, got {len(dims)}")
    out = {}
    for name, value in dims.items():
        if why := DIMENSION_NAME.check(name):
            raise ConfigError(f"dimension name {name!r} is not valid: {why}")
        if why := DIMENSION_VALUE.check(str(value)):
            raise ConfigError(f"dimension {name!r} value is not valid: {why}")
        out[name] = str(value)
    return out


class TimeAssigner:
    """Gives events with equal key fields strictly increasing millisecond times, so that the service's
    same-event rule (equal keys and time: one event) never merges two records.

    One per process, shared by every handler's worker: two handlers with the same settings (dictConfig
    applied again, or two loggers) must not give two records the same key and time either. Processes cannot
    see each other's times: give each process something of its own in a key field (``resource_name``, say)
    when several processes log the same event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[tuple[str, ...], int] = {}

    def assign(self, key: tuple[str, ...], created_ms: int) -> int:
        """The time for a record; raises ``Drop("key_rate")`` when the key's times have run more than
        ``MAX_TIME_DRIFT_MS`` ahead of the records' own (over 1,000 records a second with the same key
        fields, for minutes: the service cannot tell them apart, and times further ahead would leave its
        window)."""
        with self._lock:
            last = self._last.get(key)
            t = created_ms if last is None or created_ms > last else last + 1
            if t - created_ms > MAX_TIME_DRIFT_MS:
                raise Drop("key_rate")
            if len(self._last) >= _TIME_KEYS_MAX:
                # Forget keys last used over an hour ago: the service refuses such times anyway.
                horizon = t - 3_600_000
                self._last = {k: v for k, v in self._last.items() if v > horizon}
                if len(self._last) >= _TIME_KEYS_MAX:
                    self._last.clear()
            self._last[key] = t
            return t

    def reset_lock(self) -> None:
        self._lock = threading.Lock()


TIMES = TimeAssigner()


class EventBuilder:
    """Turns ``(record, message)`` into the API's event dict. Runs on the worker thread only."""

    def __init__(
        self,
        handler: CESHandler,
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
    ) -> None:
        self.handler = handler
        self.event_source = event_source
        self.event_name = event_name
        self.defaults = {
            "resource_id": resource_id,
            "resource_name": resource_name,
            "group_id": group_id,
            "event_user": event_user,
        }
        self.dimensions = dimensions
        self.thresholds = sorted(level_map.items(), reverse=True)
        self.state_map = dict(state_map)
        self.json_content = json_content
        self.sanitised = 0
        self._names: dict[str, str] = {}
        self._levels: dict[int, str] = {}
        self._default_formatter = logging.Formatter("%(message)s")
        self._json_formatter: logging.Formatter | None = None

    # --- fields ----------------------------------------------------------------------------------------------

    def level_for(self, levelno: int) -> str:
        level = self._levels.get(levelno)
        if level is None:
            level = next((lv for threshold, lv in self.thresholds if levelno >= threshold), "Info")
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

    # --- content ---------------------------------------------------------------------------------------------

    def content(self, record: logging.LogRecord, message: str | None) -> str:
        """TEMP (issue 16): the content was rendered at emit (``render``); the worker only takes it."""
        return message if message is not None else self.render(record)

    def _message(self, record: logging.LogRecord) -> str:
        try:
            return record.getMessage()
        except Exception:
            self.sanitised += 1
            return (
                f"[ces_logging: could not format the log message] msg={safe_text(record.msg)} "
                f"args={safe_text(record.args)}"
            )

    def render(self, record: logging.LogRecord) -> str:
        """TEMP (issue 16): at emit, on the caller's thread, the record exactly as logged: the handler's
        formatter (what the same formatter prints on a StreamHandler), else the message plus the traceback as
        ``Formatter("%(message)s")`` prints it."""
        fmt = self.handler.formatter
        if fmt is None and not self.json_content:
            if not (record.exc_info or record.exc_text or record.stack_info):
                return fit_content(safe_text(self._message(record)))
            fmt = self._default_formatter
        if self.json_content:
            return self._json(record)
        assert fmt is not None
        try:
            text = fmt.format(record)
        except Exception as e:
            self.sanitised += 1
            text = f"{self._message(record)} [ces_logging: formatter failed: {type(e).__name__}]"
        return fit_content(safe_text(text))

    def _json(self, record: logging.LogRecord) -> str:
        """The record as JSON (the handler's JSON formatter, else python-json-logger's with level, logger and
        message). Too long, it is the message and then the traceback that get shorter, never the JSON text, so
        what is sent stays valid JSON."""
        fmt = self.handler.formatter
        if not isinstance(fmt, BaseJsonFormatter):
            if self._json_formatter is None:
                self._json_formatter = JsonFormatter("%(levelname)s %(name)s %(message)s")
            fmt = self._json_formatter
        r = record
        try:
            text = safe_text(fmt.format(record))  # the record as logged
            if content_cost(text) <= MAX_CONTENT:
                return text
            r = copy.copy(record)  # too long: cut a copy's message and traceback, never the record
            r.msg, r.args = self._message(record), None
            for _ in range(4):
                text = safe_text(fmt.format(r))
                excess = content_cost(text) - MAX_CONTENT
                if excess <= 0:
                    return text
                excess += 64  # room for the marker and for escapes that the cut text still needs
                if r.exc_text and len(r.exc_text) > excess:
                    r.exc_text = fit_content(r.exc_text, limit=len(r.exc_text) - excess)
                elif r.exc_info or r.exc_text:
                    r.exc_info, r.exc_text = None, None
                else:
                    msg = str(r.msg)
                    r.msg = fit_content(msg, limit=max(0, len(msg) - excess))
        except Exception as e:  # a formatter that fails: the message alone, said so
            self.sanitised += 1
            return json.dumps({"message": fit_content(str(r.msg), limit=3000), "formatter_error": type(e).__name__})
        return json.dumps({"message": fit_content(str(r.msg), limit=3000), "truncated": True}, ensure_ascii=False)

    # --- the event -------------------------------------------------------------------------------------------

    def __call__(self, item: tuple[logging.LogRecord, str | None]) -> dict[str, Any]:
        record, message = item
        over = self._overrides(record)
        values = self.defaults
        name = self.event_name or self._name_for(record.name)
        dims = self.dimensions
        if over:
            values = dict(values)
            if "event_name" in over:
                name = self._clean(EVENT_NAME, over["event_name"]) or name
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
        level = self.level_for(record.levelno)
        state = None
        if over:
            if "event_level" in over:
                lv = over["event_level"]
                lv = lv.capitalize() if isinstance(lv, str) else lv
                if lv in LEVELS:
                    level = lv
                else:
                    self.sanitised += 1
            if "event_state" in over:
                st = over["event_state"]
                st = st.lower() if isinstance(st, str) else st
                if st in STATES:
                    state = st
                else:
                    self.sanitised += 1
        if state is None:
            state = self.state_map.get(level, "normal")
        detail: dict[str, Any] = {
            "event_type": EVENT_TYPE_CUSTOM,
            "sub_event_type": SUB_EVENT_CUSTOM,
            "event_level": level,
            "event_state": state,
            "content": self.content(record, message),
        }
        for key, value in values.items():
            if value:
                detail[key] = value
        if dims:
            detail["dimensions"] = [{"name": k, "value": v} for k, v in dims.items()]
        event = {"event_name": name, "event_source": self.event_source, "time": 0, "detail": detail}
        event["time"] = TIMES.assign(event_key(event), int(record.created * 1000))
        return event

    def _overrides(self, record: logging.LogRecord) -> dict[str, Any]:
        """TEMP (issue 16): ``ces`` (a mapping) or flat ``ces_...`` keys, from structlog's event dict in
        ``record.msg``, loguru's bound values in ``record.extra``, and the record's own attributes (``extra=``),
        later sources winning."""
        over: dict[str, Any] = {}
        sources: list[Mapping[str, Any]] = []
        if isinstance(record.msg, Mapping):
            sources.append(record.msg)
        loguru_extra = record.__dict__.get("extra")
        if isinstance(loguru_extra, Mapping):
            sources.append(loguru_extra)
        sources.append(record.__dict__)
        for src in sources:
            ces = src.get("ces")
            if ces is not None:
                if isinstance(ces, Mapping):
                    over.update(ces)
                else:
                    self.sanitised += 1
            for flat, key in _FLAT_OVERRIDES:
                if flat in src:
                    over[key] = src[flat]
        return over

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


# --- the handler ---------------------------------------------------------------------------------------------

_log = logging.getLogger("ces_logging")
_HANDLERS: weakref.WeakSet[CESHandler] = weakref.WeakSet()
_DRAINING: set[Worker] = set()  # workers of closed handlers still delivering in the background
_registry_lock = threading.Lock()


def _holding_logging_lock() -> bool:
    """True when this thread holds ``logging._lock`` (dictConfig, logging.shutdown under reconfiguration):
    waiting for the worker then could deadlock with anything on it that needs the lock."""
    lock = getattr(logging, "_lock", None)
    is_owned = getattr(lock, "_is_owned", None)
    try:
        return bool(is_owned()) if is_owned is not None else False
    except Exception:
        return False


class CESHandler(logging.Handler):
    """Sends log records to Cloud Eye as custom events. All arguments are plain values, so that
    ``logging.config.dictConfig`` can build it with ``"class": "ces_logging.CESHandler"``."""

    def __init__(
        self,
        project_id: str | None = None,
        region: str | None = None,
        endpoint: str | None = None,
        ak: str | None = None,
        sk: str | None = None,
        security_token: str | None = None,
        token: str | None = None,
        *,
        token_provider: TokenProvider | None = None,
        event_source: str | None = None,
        event_name: str | None = None,
        resource_id: str | None = None,
        resource_name: str | None = None,
        group_id: str | None = None,
        event_user: str | None = None,
        dimensions: Mapping[str, Any] | None = None,
        level_map: Mapping[int | str, str] | None = None,
        state_map: Mapping[str, str] | None = None,
        batch_size: int = 100,
        flush_interval: float = 2.0,
        queue_size: int = 10_000,
        timeout: float = 10.0,
        grace_period: float = 5.0,
        json_content: bool = False,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 50 * 2**20,
        level: int | str = logging.NOTSET,
        verify: bool | str = True,
        allow_insecure: bool = False,
        client: CESClient | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(_parse_level(level))
        env = os.environ if env is None else env
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 100:
            raise ConfigError(f"batch_size must be an integer from 1 to 100 (the API's limit), got {batch_size!r}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigError(f"queue_size must be a positive integer, got {queue_size!r}")
        for opt, val in (("flush_interval", flush_interval), ("grace_period", grace_period)):
            if isinstance(val, bool) or not isinstance(val, int | float) or val < 0:
                raise ConfigError(f"{opt} must be a number of seconds >= 0, got {val!r}")
        source = event_source or env_first(env, ENV_EVENT_SOURCE) or "app.log"
        if why := check_event_source(source):
            raise ConfigError(f"event_source {source!r} is not valid: {why}")
        if event_name is not None and (why := EVENT_NAME.check(event_name)):
            raise ConfigError(f"event_name {event_name!r} is not valid: {why}")
        thresholds = dict(DEFAULT_LEVEL_MAP)
        for k, v in (level_map or {}).items():
            if v not in LEVELS:
                raise ConfigError(f"level_map: {v!r} is not a Cloud Eye level ({', '.join(LEVELS)})")
            thresholds[_parse_level(k)] = v
        states = dict(DEFAULT_STATE_MAP)
        for k, v in (state_map or {}).items():
            if k not in LEVELS or v not in STATES:
                raise ConfigError(
                    f"state_map: {k!r} -> {v!r} must map a level ({', '.join(LEVELS)}) to a state ({', '.join(STATES)})"
                )
            states[k] = v
        self.client = client or CESClient(
            project_id,
            region=region,
            endpoint=endpoint,
            ak=ak,
            sk=sk,
            security_token=security_token,
            token=token,
            token_provider=token_provider,
            timeout=timeout,
            verify=verify,
            allow_insecure=allow_insecure,
            env=env,
        )
        self.event_source = source
        self.event_name = event_name
        self.batch_size = batch_size
        self.flush_interval = float(flush_interval)
        self.queue_size = queue_size
        self.grace_period = float(grace_period)
        self.builder = EventBuilder(
            self,
            event_source=source,
            event_name=event_name,
            resource_id=_check_optional(RESOURCE_ID, resource_id),
            resource_name=_check_optional(RESOURCE_NAME, resource_name),
            group_id=_check_optional(GROUP_ID, group_id),
            event_user=_check_optional(EVENT_USER, event_user),
            dimensions=_check_dimensions(dimensions),
            level_map=thresholds,
            state_map=states,
            json_content=json_content,
        )
        if isinstance(spool_max_bytes, bool) or not isinstance(spool_max_bytes, int) or spool_max_bytes < 1:
            raise ConfigError(f"spool_max_bytes must be a positive integer, got {spool_max_bytes!r}")
        self.spool: Spool | None = None
        if spool_dir is not None:
            try:
                self.spool = Spool(spool_dir, spool_max_bytes)
            except OSError as e:  # a read-only or full disk: work from memory, say so, never fail the app
                _log.warning("ces_logging: spool at %s unusable (%s); events kept in memory only", spool_dir, e)
        self._closed = False
        self._reset_queue()
        with _registry_lock:
            _HANDLERS.add(self)
        if self.spool is not None and self.spool.pending():
            self._start()  # a previous process left batches: deliver them without waiting for a record

    def _reset_queue(self) -> None:
        self._pending: deque[tuple[logging.LogRecord, str | None]] = deque()
        self._received = 0
        self._emit_drops: dict[str, int] = {}
        self._worker = Worker(
            self._pending,
            self.builder,
            self.client,
            batch_size=self.batch_size,
            flush_interval=self.flush_interval,
            spool=self.spool,
        )
        self._started = False

    def __repr__(self) -> str:
        return (
            f"<CESHandler {logging.getLevelName(self.level)} source={self.event_source!r} "
            f"endpoint={self.client.endpoint!r} project_id={self.client.project_id!r}>"
        )

    # --- the hot path ----------------------------------------------------------------------------------------

    def handle(self, record: logging.LogRecord) -> Any:
        # Records logged on a worker thread (our diagnostics, urllib3's) must not loop back into a handler.
        if threading.get_ident() in WORKER_THREADS:
            return False
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._received += 1
            if self._closed:
                self._count_emit_drop("closed")
                return
            pending = self._pending
            if len(pending) >= self.queue_size:
                self._count_emit_drop("queue_full")
                return
            # TEMP (issue 16): rendered now, on the caller's thread, from the record as logged
            pending.append((record, self.builder.render(record)))
            n = len(pending)
            if n == 1 or n == self.batch_size:  # the first record of a batch, and the one that fills it
                self._worker.wakeup.set()
            if not self._started:
                self._start()
        except Exception:
            self.handleError(record)

    def _count_emit_drop(self, reason: str) -> None:
        self._emit_drops[reason] = self._emit_drops.get(reason, 0) + 1

    def _start(self) -> None:
        self._started = True
        try:
            self._worker.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown"
            n = len(self._pending)
            self._pending.clear()
            self._emit_drops["shutdown"] = self._emit_drops.get("shutdown", 0) + n
            sys.stderr.write(f"ces_logging: {n} event(s) not sent: logged during interpreter shutdown\n")

    # --- stats, flush, close ---------------------------------------------------------------------------------

    def _accounted(self) -> int:
        ws = self._worker.stats
        return ws.sent + sum(ws.dropped.values()) + sum(self._emit_drops.values())

    @property
    def stats(self) -> HandlerStats:
        ws = self._worker.stats
        with ws.cond:
            sent, retries, batches, spooled = ws.sent, ws.retries, ws.batches, ws.spooled
            recovered_sent, recovered_dropped = ws.recovered_sent, dict(ws.recovered_dropped)
            reasons = dict(ws.dropped)
        for k, v in list(self._emit_drops.items()):
            reasons[k] = reasons.get(k, 0) + v
        dropped = sum(reasons.values())
        received = self._received  # read last: it only grows, so queued is never negative
        return HandlerStats(
            received=received,
            sent=sent,
            dropped=dropped,
            queued=received - sent - dropped,
            retries=retries,
            batches=batches,
            sanitised=self.builder.sanitised,
            dropped_by_reason=reasons,
            spooled=spooled,
            recovered_sent=recovered_sent,
            recovered_dropped=recovered_dropped,
        )

    def flush(self, timeout: float | None = None) -> bool:  # type: ignore[override]
        """Deliver (or account for) everything emitted before this call; True when nothing is left.

        Never waits while this thread holds ``logging._lock``, nor on the worker thread itself: it then only
        asks the worker to send now and says whether everything was already accounted for."""
        target = self._received
        if self._accounted() >= target:
            return True
        self._worker.request_flush()
        if _holding_logging_lock() or threading.get_ident() in WORKER_THREADS or not self._worker.alive:
            return self._accounted() >= target
        return self._worker.wait_accounted(target, self._accounted, timeout)

    def close(self, grace_period: float | None = None) -> None:
        """Deliver what is queued within the grace period (default ``grace_period``), then stop the worker.

        Under ``logging._lock`` (dictConfig replacing handlers) it does not wait: the worker finishes in the
        background within the grace period, and interpreter exit waits for it."""
        grace = self.grace_period if grace_period is None else grace_period
        if not self._closed:
            self._closed = True
            worker = self._worker
            if self._started:
                worker.stop(grace)
                if _holding_logging_lock() or threading.get_ident() in WORKER_THREADS:
                    with _registry_lock:
                        _DRAINING.add(worker)
                else:
                    worker.join(grace + 0.5)
            with _registry_lock:
                _HANDLERS.discard(self)
        super().close()

    # --- fork ------------------------------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """The child gets an empty queue, fresh counters, a new worker (started by its first emit) and new
        connections: what the parent had queued is the parent's to send."""
        self.client.reset_connections()
        if self.spool is not None:
            self.spool.renew_owner()
        self._reset_queue()


def _after_fork() -> None:
    WORKER_THREADS.clear()
    _DRAINING.clear()
    TIMES.reset_lock()
    global _registry_lock
    _registry_lock = threading.Lock()
    for h in list(_HANDLERS):
        if not h._closed:
            h._after_fork_in_child()


def _drain_at_exit() -> None:
    """Interpreter exit: every open handler and every draining worker gets to deliver what is queued, all
    within one grace period (the longest configured), so a script that just ends loses nothing."""
    handlers = [h for h in list(_HANDLERS) if not h._closed]
    workers = [h._worker for h in handlers if h._started] + list(_DRAINING)
    if not workers:
        return
    grace = max([h.grace_period for h in handlers] + [5.0 if _DRAINING else 0.0])
    for h in handlers:
        h._closed = True
        if h._started:
            h._worker.stop(h.grace_period)
    deadline = time.monotonic() + grace + 0.5
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()))
    for h in handlers:
        s = h.stats
        lost = s.queued - s.spooled + s.dropped_by_reason.get("shutdown", 0)
        if lost:
            sys.stderr.write(
                f"ces_logging: {lost} event(s) not delivered at exit: the service did not take them "
                f"within the grace period ({h.grace_period:g} s)\n"
            )
        if s.spooled and h.spool is not None:
            sys.stderr.write(
                f"ces_logging: {s.spooled} event(s) wait in the spool at {h.spool.dir}; the next process "
                "with the same spool_dir sends them\n"
            )


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
atexit.register(_drain_at_exit)
