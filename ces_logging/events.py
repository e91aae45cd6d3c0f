"""The Cloud Eye custom-event model and the API's field rules.

Every rule of the API lives here once. The emulator *validates* with these rules (and so refuses what the
service refuses); the handler *sanitises* with the same rules (and so never sends what the service would
refuse). A rule that changes here changes both sides at once.

The rules as this project reads the API: docs/api.md ('Reporting', 'Querying', 'Time window', 'Content
length', 'The same-event rule'). Where Huawei's pages disagree the safe (narrower) reading is taken, and the place
says so.

The typed model (``CustomEvent``, ``Dimension``, ``EventRecord``) is in ``model.py``: dataclasses, which load
``inspect``; the handler's path never needs them. They are still found here by their old names.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

# --- enums -------------------------------------------------------------------------------------------------

LEVELS: Final = ("Critical", "Major", "Minor", "Info")
STATES: Final = ("normal", "warning", "incident")
EVENT_TYPE_CUSTOM: Final = "EVENT.CUSTOM"
EVENT_TYPE_SYS: Final = "EVENT.SYS"
EVENT_TYPES: Final = (EVENT_TYPE_SYS, EVENT_TYPE_CUSTOM)
SUB_EVENT_CUSTOM: Final = "SUB_EVENT.CUSTOM"
SUB_EVENT_TYPES: Final = ("SUB_EVENT.OPS", "SUB_EVENT.PLAN", SUB_EVENT_CUSTOM)

# --- sizes -------------------------------------------------------------------------------------------------

MAX_EVENTS_PER_REQUEST: Final = 100  # "Array length: [1,100]"
MAX_DIMENSIONS: Final = 4
MAX_CONTENT: Final = 4096
MAX_BODY_BYTES: Final = 12 * 1024 * 1024  # the API gateway's limit (413 APIGW.0201)
QUERY_MAX_LIMIT: Final = 100

# --- the time window ---------------------------------------------------------------------------------------
# docs/api.md, 'Time window': the current page says [now - 1h + 10s, now + 10min - 10s], older pages 20 s
# margins. The emulator enforces the current page; a sender keeps to the narrower window and adds its own
# allowance for the time a request spends in flight (``SEND_ALLOWANCE_MS``).
WINDOW_PAST_MS: Final = 3_600_000 - 10_000
WINDOW_FUTURE_MS: Final = 600_000 - 10_000
SAFE_WINDOW_PAST_MS: Final = 3_600_000 - 20_000
SAFE_WINDOW_FUTURE_MS: Final = 600_000 - 20_000
SEND_ALLOWANCE_MS: Final = 30_000


def now_ms() -> int:
    """Wall-clock milliseconds (the API's time unit). Goes through ``time.time`` so freezegun applies."""
    return int(time.time() * 1000)


def in_window(t_ms: int, now: int | None = None) -> bool:
    """True when the service (current page) would accept an event at ``t_ms``."""
    n = now_ms() if now is None else now
    return n - WINDOW_PAST_MS <= t_ms <= n + WINDOW_FUTURE_MS


def sendable(t_ms: int, now: int | None = None) -> bool:
    """True when a sender may still send an event at ``t_ms`` and expect it to land in the narrower window
    even after ``SEND_ALLOWANCE_MS`` in flight."""
    n = now_ms() if now is None else now
    return n - SAFE_WINDOW_PAST_MS + SEND_ALLOWANCE_MS <= t_ms <= n + SAFE_WINDOW_FUTURE_MS - SEND_ALLOWANCE_MS


# --- text rules ----------------------------------------------------------------------------------------------


_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str, a surrogate is always a lone one


class TextRule:
    """A string field's rule: length bounds, allowed characters, and optionally what the first one must be.

    ``check`` says what is wrong (or None); ``sanitise`` turns any string into one that passes, or None when
    nothing sensible is left (an optional field is then left out).
    """

    def __init__(
        self,
        field: str,
        min_len: int,
        max_len: int,
        allowed: str | None = None,  # a regex character-class body; None = any character
        first: str | None = None,  # a regex character-class body for the first character
        describe: str = "",
    ) -> None:
        self.field = field
        self.min_len = min_len
        self.max_len = max_len
        self.describe = describe
        self._allowed = allowed
        self._first_allowed = first
        # Compiled on first use: a dozen rules' patterns are a few milliseconds that ``import ces_logging``
        # would pay in every process, and most rules are never used in most processes.
        self._patterns: tuple[re.Pattern[str], re.Pattern[str] | None, re.Pattern[str] | None] | None = None

    def _compiled(self) -> tuple[re.Pattern[str], re.Pattern[str] | None, re.Pattern[str] | None]:
        """(the whole value, a character outside the set, the first character), compiled once."""
        patterns = self._patterns
        if patterns is None:
            allowed, first = self._allowed, self._first_allowed
            head = f"[{first}]" if first is not None else ""
            body = f"[{allowed}]*" if allowed is not None else ".*"
            patterns = self._patterns = (
                re.compile(f"{head}{body}", re.DOTALL),
                re.compile(f"[^{allowed}]") if allowed is not None else None,
                re.compile(f"[{first}]") if first is not None else None,
            )
        return patterns

    def __repr__(self) -> str:
        return f"TextRule({self.field!r})"

    def check(self, value: object) -> str | None:
        if not isinstance(value, str):
            return f"must be a string, got {type(value).__name__}"
        if _SURROGATE.search(value):
            # JSON can write "\ud800" but UTF-8 cannot carry it: the safe reading is a 400, not a stored event.
            return "is not valid Unicode text (it holds a lone surrogate)"
        n = len(value)
        if n < self.min_len or n > self.max_len:
            if self.min_len == self.max_len:
                return f"must be {self.max_len} characters, got {n}"
            return f"must be {self.min_len} to {self.max_len} characters, got {n}"
        if n and not self._compiled()[0].fullmatch(value):
            return f"has characters outside the allowed set ({self.describe})"
        return None

    def sanitise(self, value: str, replacement: str = "_") -> str | None:
        value = _SURROGATE.sub("?", value)  # as safe_text does
        _, bad, first = self._compiled()
        if bad is not None:
            value = bad.sub(replacement, value)
        if first is not None and value and not first.match(value):
            value = "L" + value  # a letter in front keeps the rest readable
        value = value[: self.max_len]
        if len(value) < self.min_len or self.check(value) is not None:
            return None
        return value


EVENT_NAME = TextRule("event_name", 1, 64, "A-Za-z0-9_", "A-Za-z", "starts with a letter; letters, digits and _")
# event_source is "service.item": each part starts with a letter, then letters, digits, _; 3..32 in all.
EVENT_SOURCE_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*\.[A-Za-z][A-Za-z0-9_]*")
GROUP_ID = TextRule("group_id", 24, 24, "A-Za-z0-9", None, "letters and digits")
RESOURCE_ID = TextRule("resource_id", 0, 128, r"A-Za-z0-9_\-:", None, "letters, digits, _, - and :")
RESOURCE_NAME = TextRule("resource_name", 0, 128, r"A-Za-z0-9@_\-.", None, "letters, digits, @, _, - and .")
# event_user: the report page lists letters, digits, _, - and spaces; the SDK model adds '/'; the query
# page's regex also allows '@' and '.'. The safe reading for reporting is the first two together.
EVENT_USER = TextRule("event_user", 0, 64, r"A-Za-z0-9_\-/ ", None, "letters, digits, _, -, / and space")
QUERY_EVENT_USER = TextRule("event_user", 0, 64, r"A-Za-z0-9_\-/ @.", None, "letters, digits, _-/ @.")
CONTENT = TextRule("content", 0, MAX_CONTENT, None, None, "any")
DIMENSION_NAME = TextRule("name", 1, 32, r"A-Za-z0-9_\-", "A-Za-z", "starts with a letter; letters, digits, _ and -")
DIMENSION_VALUE = TextRule("value", 1, 256, None, None, "any")
PROJECT_ID = TextRule("project_id", 1, 64, r"A-Za-z0-9_\-", None, "letters, digits, _ and -")


def check_event_source(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not 3 <= len(value) <= 32:
        return f"must be 3 to 32 characters, got {len(value)}"
    if not EVENT_SOURCE_RE.fullmatch(value):
        return "must be service.item, each part starting with a letter and holding letters, digits and _"
    return None


def derive_event_name(logger_name: str) -> str:
    """An event name for a logger: ``myapp.db`` becomes ``myapp_db``; always valid."""
    return EVENT_NAME.sanitise(logger_name.replace(".", "_") or "root") or "log"


# --- content ------------------------------------------------------------------------------------------------


def content_cost(text: str) -> int:
    """Length as the service may count it: it may turn ``\\n`` into ``\\\\n`` (docs/api.md, 'Content length'),
    so the safe reading counts a newline as two characters."""
    return len(text) + text.count("\n")


def fit_content(text: str, limit: int = MAX_CONTENT, *, marker: bool = True) -> str:
    """``text`` cut (on character boundaries) so that ``content_cost`` is at most ``limit``, with a visible
    marker saying how much was cut. The cut is in the middle: the head (where the message is) and the last
    quarter (where a traceback names its exception, and where trace ids go) are both kept."""
    if content_cost(text) <= limit:
        return text
    if not marker:
        return _head(text, limit)
    probe = f" … [truncated {len(text)} chars] … "
    room = max(0, limit - len(probe))
    tail_room = room // 4
    tail = _tail(text, tail_room)
    head = _head(text[: len(text) - len(tail)], room - content_cost(tail))
    cut = len(text) - len(head) - len(tail)
    return f"{head} … [truncated {cut} chars] … {tail}"


def _head(text: str, room: int) -> str:
    head = text[:room]
    while content_cost(head) > room:  # each cut char lowers the cost by 1 or 2: one pass is enough
        head = head[: len(head) - (content_cost(head) - room)]
    return head


def _tail(text: str, room: int) -> str:
    if room <= 0:
        return ""
    tail = text[-room:]
    while content_cost(tail) > room:
        tail = tail[content_cost(tail) - room :]
    return tail


def safe_text(value: object) -> str:
    """``str(value)`` that never raises and never holds a lone surrogate (which UTF-8 cannot carry)."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception as e:
        try:
            text = f"<unprintable {type(value).__name__}: {type(e).__name__}>"
        except Exception:
            text = "<unprintable>"
    if text.isascii():
        return text  # the common case, without encoding it
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


# --- validation of a whole report ---------------------------------------------------------------------------

_TOP_FIELDS: Final = frozenset({"event_name", "event_source", "time", "detail"})
_DETAIL_FIELDS: Final = frozenset(
    {
        "content",
        "group_id",
        "resource_id",
        "resource_name",
        "event_state",
        "event_level",
        "event_user",
        "event_type",
        "sub_event_type",
        "dimensions",
    }
)
_DETAIL_TEXT_RULES: Final = (CONTENT, GROUP_ID, RESOURCE_ID, RESOURCE_NAME, EVENT_USER)


def _enum(value: object, allowed: Iterable[str]) -> str | None:
    allowed = tuple(allowed)
    if value not in allowed:
        return f"must be one of {', '.join(allowed)}, got {value!r}"
    return None


def validate_event(item: object, now: int | None = None) -> list[str]:
    """Every problem with one reported item, as ``"field: why"``; empty when the service would take it.

    Unknown fields are refused: the service's behaviour with them is not documented, and an emulator that
    refuses them keeps a client honest (the official SDK never sends any).
    """
    if not isinstance(item, dict):
        return [f"item: must be an object, got {type(item).__name__}"]
    problems: list[str] = []
    for extra in sorted(set(item) - _TOP_FIELDS):
        problems.append(f"{extra}: unknown field")
    for required in ("event_name", "event_source", "time", "detail"):
        if required not in item:
            problems.append(f"{required}: is required")
    if "event_name" in item and (why := EVENT_NAME.check(item["event_name"])):
        problems.append(f"event_name: {why}")
    if "event_source" in item and (why := check_event_source(item["event_source"])):
        problems.append(f"event_source: {why}")
    if "time" in item:
        t = item["time"]
        if not isinstance(t, int) or isinstance(t, bool):
            problems.append(f"time: must be an integer of milliseconds, got {type(t).__name__}")
        elif not in_window(t, now):
            n = now_ms() if now is None else now
            problems.append(
                f"time: {t} is outside the window [now-1h+10s, now+10min-10s] = "
                f"[{n - WINDOW_PAST_MS}, {n + WINDOW_FUTURE_MS}]"
            )
    detail = item.get("detail")
    if "detail" in item:
        if not isinstance(detail, dict):
            problems.append("detail: must be an object")
        else:
            problems.extend(f"detail.{p}" for p in _validate_detail(detail))
    return problems


def _validate_detail(detail: dict[str, Any]) -> list[str]:
    problems = [f"{extra}: unknown field" for extra in sorted(set(detail) - _DETAIL_FIELDS)]
    for rule in _DETAIL_TEXT_RULES:
        if rule.field in detail:
            value = detail[rule.field]
            # group_id: the query example shows "" for events without a group; take "" as "none".
            if rule is GROUP_ID and value == "":
                continue
            if why := rule.check(value):
                problems.append(f"{rule.field}: {why}")
    if "event_state" in detail and (why := _enum(detail["event_state"], STATES)):
        problems.append(f"event_state: {why}")
    if "event_level" in detail and (why := _enum(detail["event_level"], LEVELS)):
        problems.append(f"event_level: {why}")
    if "event_type" in detail:
        if detail["event_type"] == EVENT_TYPE_SYS:
            problems.append("event_type: EVENT.SYS is for system events and cannot be reported")
        elif why := _enum(detail["event_type"], (EVENT_TYPE_CUSTOM,)):
            problems.append(f"event_type: {why}")
    if "sub_event_type" in detail and (why := _enum(detail["sub_event_type"], SUB_EVENT_TYPES)):
        problems.append(f"sub_event_type: {why}")
    if "dimensions" in detail:
        problems.extend(_validate_dimensions(detail["dimensions"]))
    return problems


def _validate_dimensions(dims: object) -> list[str]:
    if not isinstance(dims, list):
        return ["dimensions: must be an array"]
    if len(dims) > MAX_DIMENSIONS:
        return [f"dimensions: at most {MAX_DIMENSIONS} are allowed, got {len(dims)}"]
    problems = []
    for i, d in enumerate(dims):
        if not isinstance(d, dict):
            problems.append(f"dimensions[{i}]: must be an object")
            continue
        for extra in sorted(set(d) - {"name", "value"}):
            problems.append(f"dimensions[{i}].{extra}: unknown field")
        for rule in (DIMENSION_NAME, DIMENSION_VALUE):
            if rule.field not in d:
                problems.append(f"dimensions[{i}].{rule.field}: is required")
            elif why := rule.check(d[rule.field]):
                problems.append(f"dimensions[{i}].{rule.field}: {why}")
    return problems


def validate_report(body: object, now: int | None = None) -> list[str]:
    """Every problem with a whole report body, each naming its item: ``"item 3: event_name: ..."``."""
    if not isinstance(body, list):
        return ["body: must be a JSON array of events"]
    if not 1 <= len(body) <= MAX_EVENTS_PER_REQUEST:
        return [f"body: must hold 1 to {MAX_EVENTS_PER_REQUEST} events, got {len(body)}"]
    n = now_ms() if now is None else now
    return [f"item {i}: {p}" for i, item in enumerate(body) for p in validate_event(item, n)]


# --- the same-event rule -------------------------------------------------------------------------------------
# docs/api.md, 'The same-event rule': events with equal time, project_id, event_source, event_name, event_type,
# sub_event_type, event_state, event_level, event_user, resource_id and resource_name are the same event.
# Content is not in it.

DETAIL_KEY_FIELDS: Final = (
    "event_type",
    "sub_event_type",
    "event_state",
    "event_level",
    "event_user",
    "resource_id",
    "resource_name",
)


def default_sub_event_type(event_type: str) -> str:
    """The sub-type an event or a query has when none is given. The query page: SUB_EVENT.OPS by default, and
    SUB_EVENT.CUSTOM for custom events (a reading: an absent sub-type of a custom event is taken as CUSTOM)."""
    return SUB_EVENT_CUSTOM if event_type == EVENT_TYPE_CUSTOM else "SUB_EVENT.OPS"


def key_of(
    source: str, name: str, event_type: str, sub_type: str, state: str, level: str, user: str, rid: str, rname: str
) -> tuple[str, ...]:
    """The same-event key from its values, in ``DETAIL_KEY_FIELDS``' order after source and name (the
    handler's fast path builds it from the values it has at hand, without a dict)."""
    return (source, name, event_type, sub_type, state, level, user, rid, rname)


def event_key(item: Mapping[str, Any]) -> tuple[str, ...]:
    """The fields (but project and time) that make two items the same event; absent counts as ""."""
    detail = item.get("detail") or {}
    return key_of(
        str(item.get("event_source", "")),
        str(item.get("event_name", "")),
        *(str(detail.get(f) or "") for f in DETAIL_KEY_FIELDS),
    )


# --- query parameters ----------------------------------------------------------------------------------------
# The query page's table is shifted by one row from event_level down; this follows the intended reading
# (docs/api.md, 'Querying').

_DIGITS = re.compile(r"0|[1-9][0-9]{0,18}")  # at most 19 digits: int() of a huge one raises, SQLite overflows
QUERY_INT_MAX: Final = 2**63 - 1  # from/to/start are 64-bit integers to the service (a Java long)


def validate_query(params: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Parse and check the query parameters of ``GET /V1.0/{project_id}/event/{event_name}``.

    Returns the parsed values (ints for from/to/start/limit) and the problems found.
    """
    out: dict[str, Any] = {}
    problems: list[str] = []
    known = {
        "event_type",
        "sub_event_type",
        "event_source",
        "event_level",
        "event_user",
        "event_state",
        "from",
        "to",
        "start",
        "limit",
    }
    for extra in sorted(set(params) - known):
        problems.append(f"{extra}: unknown query parameter")
    if "event_type" not in params:
        problems.append("event_type: is required")
    enums = {
        "event_type": EVENT_TYPES,
        "sub_event_type": SUB_EVENT_TYPES,
        "event_level": LEVELS,
        "event_state": STATES,
    }
    for name, allowed in enums.items():
        if name in params:
            if why := _enum(params[name], allowed):
                problems.append(f"{name}: {why}")
            else:
                out[name] = params[name]
    if "event_source" in params:
        v = params["event_source"]
        if v and (why := check_event_source(v)):
            problems.append(f"event_source: {why}")
        else:
            out["event_source"] = v
    if "event_user" in params:
        if why := QUERY_EVENT_USER.check(params["event_user"]):
            problems.append(f"event_user: {why}")
        else:
            out["event_user"] = params["event_user"]
    for name in ("from", "to", "start", "limit"):
        if name in params:
            if not _DIGITS.fullmatch(params[name]) or int(params[name]) > QUERY_INT_MAX:
                shown = params[name] if len(params[name]) <= 40 else params[name][:40] + "..."
                problems.append(f"{name}: must be an integer from 0 to {QUERY_INT_MAX}, got {shown!r}")
            else:
                out[name] = int(params[name])
    if "limit" in out and not 1 <= out["limit"] <= QUERY_MAX_LIMIT:
        problems.append(f"limit: must be 1 to {QUERY_MAX_LIMIT}, got {out['limit']}")
    if "from" in out and "to" in out and out["from"] >= out["to"]:
        problems.append("from: must be earlier than to")
    return out, problems


EVENT_ID_RE: Final = re.compile(r"ev[0-9]{13}[A-Za-z0-9]{9}")


if TYPE_CHECKING:
    from .model import CustomEvent as CustomEvent
    from .model import Dimension as Dimension
    from .model import EventRecord as EventRecord

_MODEL: Final = ("CustomEvent", "Dimension", "EventRecord")


def __getattr__(name: str) -> Any:
    """The typed model by its old address (``ces_logging.events.EventRecord``), loaded on first use."""
    if name in _MODEL:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
