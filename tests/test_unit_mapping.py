"""Unit tests of the mapping's parts, without a handler, a worker or a service: the preparer (``prepare.py``,
the app's thread) keeps only what can be sent; the builder (``mapping.py``, the worker) writes each event in
the layout (``layout.py``), which is exactly the compact JSON of the API's fields in the API's order; and the
batch path writes the same text as the one-item path, for any record.

The expected events are written here from docs/api.md, 'Reporting', independently of ``layout.py``: a change
to the layout that the API does not ask for fails here. Each test gets time tables of its own (the process's
are shared by every handler)."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import sys
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ces_logging import identity, layout, mapping
from ces_logging.events import EVENT_TYPE_CUSTOM, MAX_CONTENT, SUB_EVENT_CUSTOM, content_cost, now_ms, safe_text
from ces_logging.mapping import Event, EventBuilder, TimeAssigner
from ces_logging.prepare import Preparer

from .test_transport import builder as transport_builder

COMPACT: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":")}
SOURCE = "app.orders"
GROUP = "rg" + "0" * 22  # a resource group's id is exactly 24 characters


@pytest.fixture(autouse=True)
def fresh_times(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mapping, "TIMES", TimeAssigner(on_full=identity.renew))
    monkeypatch.setattr(mapping, "TIMES_PLAIN", TimeAssigner())


def builder(**kw: Any) -> EventBuilder:
    return transport_builder(**{"event_source": SOURCE, **kw})


def record(
    msg: Any, *args: Any, level: int = logging.WARNING, name: str = "app.orders", **extra: Any
) -> logging.LogRecord:
    r = logging.LogRecord(name, level, __file__, 1, msg, args or None, None)
    r.__dict__.update(extra)
    return r


def api_event(
    name: str,
    t: int,
    content: str,
    *,
    level: str = "Minor",
    state: str = "warning",
    resource_id: str | None = None,
    resource_name: str | None = None,
    event_user: str | None = None,
    group_id: str | None = None,
    dimensions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An event as docs/api.md's 'Reporting' table has it, the optional fields only when they have a value."""
    detail: dict[str, Any] = {
        "event_type": EVENT_TYPE_CUSTOM,
        "sub_event_type": SUB_EVENT_CUSTOM,
        "event_level": level,
        "event_state": state,
        "content": content,
    }
    optional = {"resource_id": resource_id, "resource_name": resource_name, "event_user": event_user}
    detail.update({k: v for k, v in optional.items() if v})
    if group_id:
        detail["group_id"] = group_id
    if dimensions:
        detail["dimensions"] = [{"name": k, "value": v} for k, v in dimensions.items()]
    return {"event_name": name, "event_source": SOURCE, "time": t, "detail": detail}


def build_one(b: EventBuilder, r: logging.LogRecord, prep: Preparer | None = None) -> Event:
    ev = b((prep or Preparer(json_content=False)).prepare(r, None), now_ms())
    assert isinstance(ev, Event), ev
    return ev


def ident(rname: str = "") -> str:
    return identity.with_identity(rname, identity.current())


# --- the preparer: only what can be sent ----------------------------------------------------------------------


class Counted:
    """An argument that counts how often it is formatted, and can be watched for being freed."""

    def __init__(self) -> None:
        self.calls = 0
        self.value = "first"

    def __str__(self) -> str:
        self.calls += 1
        return self.value


def test_prepare_formats_the_arguments_once_and_keeps_no_record_or_argument() -> None:
    prep = Preparer(json_content=False)
    arg = Counted()
    r = record("user %s failed", arg)
    item = prep.prepare(r, None)
    assert arg.calls == 1
    arg.value = "changed later"  # the app changes its object after the call: the event says what was logged
    assert item[3] == "user first failed"
    assert [type(x) for x in item] == [float, int, str, str, type(None), bool, type(None)]
    assert item[:3] == (r.created, logging.WARNING, "app.orders")
    gone = weakref.ref(arg)
    del r, arg
    gc.collect()
    assert gone() is None, "the item keeps the argument alive"
    (ev,), _ = builder().build_batch([item], now_ms())
    assert ev.as_dict()["detail"]["content"] == "user first failed"  # built from the item alone


def test_prepare_keeps_a_traceback_as_text_never_its_frames() -> None:
    prep = Preparer(json_content=False)

    class Big:
        pass

    def fail() -> None:
        local = Big()  # noqa: F841 - held by the traceback's frame
        raise ValueError("boom")

    try:
        fail()
    except ValueError:
        r = record("failed", exc_info=sys.exc_info())
    tb = r.exc_info[2]  # type: ignore[index]
    assert tb is not None
    frame_local = weakref.ref(tb.tb_next.tb_frame.f_locals["local"])  # type: ignore[union-attr]
    item = prep.prepare(r, None)
    assert item[3].startswith("failed\nTraceback") and item[3].rstrip().endswith("ValueError: boom")
    assert r.exc_text is None  # nothing written into the record: other handlers share it
    del r, tb
    gc.collect()
    assert frame_local() is None, "the item keeps the traceback's frames alive"


def test_prepare_cuts_long_content_to_what_can_be_sent() -> None:
    prep = Preparer(json_content=False)
    text = "head " + "x\n" * 5000 + " tail"
    item = prep.prepare(record(text.replace("%", "%%")), None)
    assert content_cost(item[3]) <= MAX_CONTENT < content_cost(text)
    assert item[3].startswith("head ") and item[3].endswith(" tail") and "[truncated " in item[3]


def test_prepare_says_what_failed_and_marks_the_item() -> None:
    prep = Preparer(json_content=False)
    item = prep.prepare(record("one too few: %s %s", 1), None)
    assert item[5] is True and "could not format the log message" in item[3]

    class Broken(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            raise RuntimeError("bad formatter")

    item = prep.prepare(record("hello %s", "you"), Broken())
    assert item[5] is True and item[3] == "hello you [ces_logging: formatter failed: RuntimeError]"


def test_prepare_reads_overrides_and_nothing_else_of_the_record() -> None:
    prep = Preparer(json_content=False)
    assert prep.prepare(record("plain"), None)[4] is None
    item = prep.prepare(record("x", ces={"event_name": "Custom"}, ces_event_user="ops", order=7), None)
    assert item[4] == {"event_name": "Custom", "event_user": "ops"}


# --- the builder: the layout, for edge cases ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "café ünïcode 中文 🚀",
        'quote " back\\slash / slash',
        "controls \x00\x01\x1f\x7f\t\r\n and \u2028\u2029",
        "",
        " ",
    ],
)
def test_the_event_is_the_api_layout_as_compact_json(text: str) -> None:
    b = builder()
    ev = build_one(b, record(text.replace("%", "%%")))
    want = api_event("app_orders", ev.time, text, resource_name=ident())
    assert ev.raw == json.dumps(want, **COMPACT)
    assert ev.as_dict() == want
    assert layout.encode_batch([ev]) == json.dumps([want], **COMPACT).encode("utf-8")


def test_a_lone_surrogate_never_reaches_the_body() -> None:
    b = builder()
    ev = build_one(b, record("lone \udcff surrogate"))
    assert ev.as_dict()["detail"]["content"] == safe_text("lone \udcff surrogate") != "lone \udcff surrogate"
    ev.raw.encode("utf-8")  # valid UTF-8: would raise on a lone surrogate
    (fast,), _ = b.build_batch([Preparer(json_content=False).prepare(record("lone \udcff surrogate"), None)])
    fast.raw.encode("utf-8")
    assert fast.as_dict()["detail"]["content"] == ev.as_dict()["detail"]["content"]


def test_long_content_is_sent_cut_as_the_content_rule_says() -> None:
    text = "start " + "é" * 3000 + "\n" * 800 + " end"
    ev = build_one(builder(), record(text))
    content = ev.as_dict()["detail"]["content"]
    assert content_cost(content) <= MAX_CONTENT  # a newline counts twice (docs/api.md, 'Content length')
    assert content.startswith("start ") and content.endswith(" end") and "[truncated " in content
    assert ev.raw == json.dumps(api_event("app_orders", ev.time, content, resource_name=ident()), **COMPACT)


def test_every_field_with_its_value_in_the_api_order() -> None:
    dims = {"env": "prod", "zone": "az1"}
    b = builder(
        event_name="OrdersFailed",
        resource_id="i-123",
        resource_name="web-1",
        group_id=GROUP,
        event_user="ops team",
        dimensions=dims,
    )
    ev = build_one(b, record("boom", level=logging.CRITICAL))
    want = api_event(
        "OrdersFailed",
        ev.time,
        "boom",
        level="Critical",
        state="incident",
        resource_id="i-123",
        resource_name=ident("web-1"),
        event_user="ops team",
        group_id=GROUP,
        dimensions=dims,
    )
    assert ev.raw == json.dumps(want, **COMPACT)


def test_overrides_are_checked_and_merged_into_the_layout() -> None:
    b = builder(dimensions={"env": "prod"}, process_identity=False, resource_name="web-1")
    over = {
        "event_level": "Loud",  # not a level: the record's own, counted
        "event_state": "incident",
        "event_user": "ann",
        "resource_id": "",  # empty: left out
        "dimensions": {"zone": "az1", "rack": "r7", "row": "3", "pod": "p9"},  # five with env: cut to four
    }
    ev = build_one(b, record("x", level=logging.ERROR, ces=over))
    want = api_event(
        "app_orders",
        ev.time,
        "x",
        level="Major",
        state="incident",
        resource_name="web-1",
        event_user="ann",
        dimensions={"env": "prod", "zone": "az1", "rack": "r7", "row": "3"},
    )
    assert ev.raw == json.dumps(want, **COMPACT)
    assert b.sanitised == 2  # the level, the fifth dimension


def test_time_is_written_as_json_writes_an_integer_and_never_repeats_for_a_key() -> None:
    b = builder()
    created = time.time()
    records = [record(f"m{i}") for i in range(5)]
    for r in records:
        r.created = created
    events, reasons = b.build_batch([Preparer(json_content=False).prepare(r, None) for r in records])
    assert reasons == {}
    times = [e.time for e in events]
    assert times == sorted(set(times)) and times[0] == int(created * 1000)
    assert all(f'"time":{e.time},' in e.raw for e in events)


# --- the layout itself ---------------------------------------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)  # valid Unicode, as the rules leave it


@settings(max_examples=150, deadline=None)
@given(
    name=TEXT,
    content=TEXT,
    t=st.integers(min_value=0, max_value=2**53),
    optional=st.fixed_dictionaries(
        {},
        optional={k: TEXT for k in ("resource_id", "resource_name", "event_user", "group_id")},
    ),
    dims=st.dictionaries(TEXT, TEXT, max_size=4),
)
def test_template_and_fill_write_the_api_fields_as_json_does(
    name: str, content: str, t: int, optional: dict[str, str], dims: dict[str, str]
) -> None:
    values: dict[str, Any] = {"event_name": name, "event_source": SOURCE, "event_level": "Info"}
    values.update(event_state="normal", dimensions=dims, **optional)
    raw = layout.fill(layout.template(values), t, content)
    want = api_event(name, t, content, level="Info", state="normal", dimensions=dims, **optional)
    assert raw == json.dumps(want, **COMPACT)


# --- the batch path writes what the one-item path writes ------------------------------------------------------------

SETTINGS = [
    {},
    {"resource_name": "web-1", "resource_id": "i-123", "event_user": "ops", "group_id": GROUP},
    {"dimensions": {"env": "prod", "zone": "az1"}, "event_name": "fixedName"},
    {"process_identity": False, "resource_name": "web-2", "dimensions": {"env": "dev"}},
    {"level_map": {logging.NOTSET: "Info", 25: "Minor", logging.ERROR: "Critical"}, "state_map": {"Info": "warning"}},
]
OVERRIDES = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "event_name": st.sampled_from(["Custom", "bad name!", ""]),
            "event_level": st.sampled_from(["Critical", "Info", "Loud"]),
            "event_state": st.sampled_from(["normal", "weird"]),
            "resource_name": st.sampled_from(["db-1", "x" * 200]),
            "dimensions": st.dictionaries(st.sampled_from(["a", "b", "1bad"]), st.sampled_from(["v", ""]), max_size=3),
        },
    ),
)
RECORDS = st.lists(
    st.tuples(
        st.sampled_from(["app.orders", "app.db", "root", "a" * 80]),
        st.sampled_from([logging.DEBUG, logging.INFO, 25, logging.WARNING, logging.ERROR, logging.CRITICAL, 99]),
        st.text(max_size=120),
        OVERRIDES,
    ),
    min_size=1,
    max_size=30,
)


@contextlib.contextmanager
def fresh_tables() -> Iterator[None]:
    """Time tables of their own: each path starts from the same state, so that equal items get equal times."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mapping, "TIMES", TimeAssigner(on_full=identity.renew))
        mp.setattr(mapping, "TIMES_PLAIN", TimeAssigner())
        yield


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kw=st.sampled_from(SETTINGS), rows=RECORDS)
def test_the_batch_path_writes_what_the_one_item_path_writes(kw: dict[str, Any], rows: list[Any]) -> None:
    prep = Preparer(json_content=False)
    items = []
    for name, level, text, over in rows:
        r = record(text.replace("%", "%%"), level=level, name=name)
        if over is not None:
            r.ces = over
        items.append(prep.prepare(r, None))
    now = now_ms()
    batch, one = builder(**kw), builder(**kw)
    with fresh_tables():
        events, reasons = batch.build_batch(items, now)
    with fresh_tables():
        singles = [one(item, now) for item in items]
    assert reasons == {}
    assert [e.raw for e in events] == [e.raw for e in singles if isinstance(e, Event)]
    assert [e.time for e in events] == [e.time for e in singles if isinstance(e, Event)]
    assert batch.sanitised == one.sanitised
    for e in events:
        assert e.raw == json.dumps(e.as_dict(), **COMPACT)
