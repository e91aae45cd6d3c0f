"""The event's JSON layout, written once: which fields an event has, in what order, how each value is written,
and which are left out when empty (docs/api.md, 'Reporting'). Every event's text comes from this one table.

The worker builds events in two ways (``mapping.EventBuilder``): one at a time (a record with overrides, or
one that was sanitised), and a batch of plain records, whose fields but the time and the content are the same
for every record of one (logger, level). Both go through ``template`` and ``fill``: ``template`` writes the
layout with the values that are shared and leaves a hole for each field in ``PER_EVENT``; ``fill`` writes an
event's time and content into the holes. The batch path keeps a template per (logger, level); the one-item
path makes one for its event. So a change to the table changes both paths at once, and ``fill``'s code is
generated from the table when this module is imported, in the table's order.

An event's text is exactly ``json.dumps(event, ensure_ascii=False, separators=(",", ":"))`` of the same
fields in the same order: a request body (and a spool file) is the texts joined, with no dict made per event.
The string values reach this module sanitised (``events.py``'s rules); the content is made valid Unicode by
the builder (a lone surrogate cannot be carried in UTF-8).

A leaf module: it imports nothing of the package but ``events``' constants.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from json.encoder import encode_basestring
from typing import Any, Final, NamedTuple

from .events import EVENT_TYPE_CUSTOM, SUB_EVENT_CUSTOM


def _string(value: Any) -> str:
    return encode_basestring(value)


def _integer(value: Any) -> str:
    return int.__repr__(value)  # as json writes an int (not a bool's "True")


def _dimensions(dims: Any) -> str:
    """``{"name": value}`` as the API's list of ``{"name", "value"}`` objects, in the mapping's order."""
    return "[" + ",".join(f'{{"name":{_string(k)},"value":{_string(v)}}}' for k, v in dims.items()) + "]"


class Field(NamedTuple):
    """One field of the layout: its key, how its value is written (a function of the value, or ``fields``
    for an object), and whether it is left out when its value is empty (None, "" or no dimensions)."""

    key: str
    encode: Callable[[Any], str] | None = _string
    optional: bool = False
    fields: tuple[Field, ...] = ()


#: The layout, in the order every event is written. Keys are unique across the levels, so an event's values
#: are one flat mapping (``detail``'s fields beside the top level's).
EVENT: Final = (
    Field("event_name"),
    Field("event_source"),
    Field("time", _integer),
    Field(
        "detail",
        None,
        fields=(
            Field("event_type"),
            Field("sub_event_type"),
            Field("event_level"),
            Field("event_state"),
            Field("content"),
            Field("resource_id", optional=True),
            Field("resource_name", optional=True),
            Field("event_user", optional=True),
            Field("group_id", optional=True),
            Field("dimensions", _dimensions, optional=True),
        ),
    ),
)
#: The fields that differ between events of one (logger, level) on the batch path: holes in a template.
#: Never optional (a hole is always written).
PER_EVENT: Final = ("time", "content")
#: What every event built here carries (the handler reports custom events only).
CONSTANT: Final[Mapping[str, str]] = {"event_type": EVENT_TYPE_CUSTOM, "sub_event_type": SUB_EVENT_CUSTOM}


class _Hole(NamedTuple):
    field: Field


def _walk(fields: Iterable[Field], values: Mapping[str, Any], out: list[str | _Hole]) -> None:
    out.append("{")
    sep = ""
    for f in fields:
        if f.fields:
            out.append(f"{sep}{_string(f.key)}:")
            _walk(f.fields, values, out)
        elif f.key in PER_EVENT:
            out.append(f"{sep}{_string(f.key)}:")
            out.append(_Hole(f))
        else:
            value = values.get(f.key)
            if f.optional and not value:
                continue
            assert f.encode is not None
            out.append(f"{sep}{_string(f.key)}:{f.encode(value)}")
        sep = ","
    out.append("}")


def _pieces(values: Mapping[str, Any]) -> list[str | _Hole]:
    out: list[str | _Hole] = []
    _walk(EVENT, values, out)
    return out


def _iter_fields(fields: Iterable[Field]) -> Iterable[Field]:
    for f in fields:
        yield f
        yield from _iter_fields(f.fields)


#: The holes in the order the layout writes them (its fields depth first): ``fill``'s parameters.
HOLES: Final = tuple(f.key for f in _iter_fields(EVENT) if f.key in PER_EVENT)
if sorted(HOLES) != sorted(PER_EVENT) or any(f.optional for f in _iter_fields(EVENT) if f.key in PER_EVENT):
    raise AssertionError("every per-event field is in the layout once, and never left out")

Template = tuple[str, ...]
"""The layout's text around the holes: ``len(HOLES) + 1`` parts."""


def template(values: Mapping[str, Any]) -> Template:
    """The layout written with ``values`` (every field but the per-event ones; ``CONSTANT`` is added), as the
    texts before, between and after the holes."""
    parts: list[str] = [""]
    for p in _pieces({**CONSTANT, **values}):
        if isinstance(p, _Hole):
            parts.append("")
        else:
            parts[-1] += p
    return tuple(parts)


def _compile_fill() -> Callable[..., str]:
    """``fill(parts, time, content)``: the event's text, one f-string in the table's order (an int hole is
    written by the f-string itself, which for an int is what json writes)."""
    holes = {f.key: f for f in _iter_fields(EVENT) if f.key in PER_EVENT}
    env: dict[str, Any] = {}
    expr = "{p[0]}"
    for i, key in enumerate(HOLES, start=1):
        enc = holes[key].encode
        if enc is _integer:
            expr += "{" + key + "}"
        else:
            env[f"_e_{key}"] = enc
            expr += "{_e_" + key + "(" + key + ")}"
        expr += "{p[" + str(i) + "]}"
    src = f"def fill(p, {', '.join(HOLES)}):\n    return f{expr!r}\n"
    # Compiled as this file's code: a profile charges its time to this module (benchmarks/run.py's split).
    exec(compile(src, __file__, "exec"), env)  # our own text, made from the table above
    fill: Callable[..., str] = env["fill"]
    return fill


fill: Final = _compile_fill()
"""``fill(parts, time, content) -> str``: an event's JSON text from a ``template`` and its per-event values
(``content`` valid Unicode)."""


class Event:
    """A built event as the request body carries it: its compact JSON text (``raw``, what the layout writes,
    which is exactly what ``json.dumps(event, ensure_ascii=False, separators=(",", ":"))`` gives for its dict)
    and its time (what the worker checks against the service's window before each attempt). A request body (or
    a spool file) is the texts joined. Never changed after it is built: a retry and the spool send the very
    same event. ``as_dict`` gives the fields, for whoever needs them (tests)."""

    __slots__ = ("raw", "time")

    def __init__(self, raw: str, time: int) -> None:
        self.raw = raw
        self.time = time

    def __repr__(self) -> str:
        return f"Event({self.raw})"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.raw)
        return out


def dumps(obj: object) -> str:
    """Compact JSON, as the layout writes it (for a mapping read back from the spool)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def encode_batch(batch: Iterable[Event | Mapping[str, Any]]) -> bytes:
    """The request body for a batch (and a spool file's text): a JSON array, compact, UTF-8; an ``Event``'s own
    text, a mapping (read back from the spool) dumped."""
    parts = []
    for e in batch:  # a loop, not a generator: the benchmark's CPU split tells encoding by this function's name
        parts.append(e.raw if type(e) is Event else dumps(e))
    return ("[" + ",".join(parts) + "]").encode("utf-8")


def event_time(e: Event | Mapping[str, Any]) -> int:
    """A built event's time (ms), whichever form it has."""
    return e.time if type(e) is Event else int(e["time"])  # type: ignore[index]
