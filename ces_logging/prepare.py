"""The app thread's half of the mapping: what ``emit`` keeps of a record (as the stdlib's
``QueueHandler.prepare`` does), on the thread that logs.

Why it runs there, at ``emit``: a formatter may read anything the app put on the record (structlog's event dict
in ``msg`` with ``_logger``/``_name``, extras, ``args``), and the arguments may change after the logging call
returns. Rendering at emit, on the record as logged, is the one rule under which the event's content is exactly
what the same formatter prints on a ``StreamHandler``. And what is kept is the content text (capped near the
4,096-character limit, docs/api.md, 'Content length'), the few fields the event needs and the ``ces``
overrides: never the record, its arguments or its traceback's frames, so a queued record costs its text and a
few hundred bytes (``ITEM_OVERHEAD``), whatever the app held when it logged.

The worker's half, the event itself, is ``mapping.EventBuilder``: nothing here sanitises a field or assigns a
time, which costs the app's thread nothing it need not pay. ``CESHandler.handle`` keeps the commonest record (a
plain message, no formatter) without calling ``prepare``, exactly as ``prepare`` would keep it
(tests/test_hot_path.py holds the two equal).

Per record, ``extra={"ces": {...}}`` (or the flat ``ces_<field>`` keys, in ``extra``, in loguru's ``bind`` or
in a structlog event dict) override name, level, state, resource, user, group and dimensions
(``read_overrides``); the builder checks them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, Final

from . import otel
from .context import ContextKeeper
from .events import MAX_CONTENT, content_cost, fit_content, safe_text
from .storm import storm_key

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
ITEM_TEXT: Final = 3  # the content text's place in an ``Item``: the buffer's byte bound counts its length


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


class Preparer:
    """What ``emit`` keeps of a record, for one handler's settings. Runs on the app's thread, inside ``emit``
    (see the module's docstring for why there): it renders the content and reads the overrides, and nothing
    more. Holds no lock and no state that changes: any number of threads may call it at once."""

    def __init__(self, *, json_content: bool, storm_keys: bool = False, context: ContextKeeper | None = None) -> None:
        self.json_content = json_content
        self.storm_keys = storm_keys  # storm control is on: each item carries its group's key (storm.py)
        self.context = context  # context_records: kept records go into the next event's content (context.py)

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
