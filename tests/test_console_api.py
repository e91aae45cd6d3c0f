"""The console's read-only JSON API past its first page: paging to the oldest event, search by words of the content
(FTS5, and the LIKE fallback where SQLite has no FTS5), the timeline's counts, one event by id, and an existing
database file that predates the search index."""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ces_logging import CESClient
from ces_logging.emulator import Emulator
from ces_logging.emulator import store as store_module
from ces_logging.emulator.store import EventStore, bucket_ms

from .conftest import PROJECT, item, now_ms


def call(emu: Emulator, route: str, method: str = "GET") -> tuple[int, Any]:
    data = b"{}" if method == "POST" else None
    req = urllib.request.Request(f"{emu.url}/_console/api/{route}", method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def api(emu: Emulator, route: str) -> Any:
    status, body = call(emu, route)
    assert status == 200, body
    return body


def report(emu: Emulator, items: list[dict[str, object]], project: str = PROJECT) -> None:
    with CESClient(project, endpoint=emu.url) as c:
        for k in range(0, len(items), 100):
            c.report_events(items[k : k + 100])


def test_pages_reach_the_oldest_event_and_stay_put_while_new_events_arrive(emu: Emulator) -> None:
    t = now_ms() - 60_000
    # 25 events, two pairs sharing a millisecond (the cursor must not skip or repeat one of a pair)
    times = [t + i for i in range(23)] + [t + 5, t + 10]
    # (a pair differs by name: the same-event rule makes one event of equal time, name and key fields)
    report(emu, [item("e" if i < 23 else "f", ti, content=f"n{i}") for i, ti in enumerate(times)])
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        page = api(emu, f"events?project={PROJECT}&limit=7" + (f"&before={cursor}" if cursor else ""))
        pages += 1
        assert page["total"] == (25 if pages == 1 else 26)  # the count is of now; the pages stay put
        seen += [e["detail"]["content"] for e in page["events"]]
        if pages == 1:  # an event arriving after the first page does not shift the next ones
            report(emu, [item("e", now_ms(), content="late")])
        if page["next"] is None:
            break
        cursor = page["next"]
        assert pages < 10
    assert pages == 4 and len(seen) == 25 and len(set(seen)) == 25
    assert seen[-1] == "n0" and "late" not in seen  # the oldest last
    got = [int(s[1:]) for s in seen]
    assert [times[i] for i in got] == sorted((times[i] for i in got), reverse=True)


def test_search_finds_words_of_the_content(emu: Emulator) -> None:
    assert emu.state.store.fts  # this machine's SQLite has FTS5; the fallback is tested below
    t = now_ms() - 10_000
    report(emu, [item("pay", t, content="payment failed for order A-1002", event_level="Major"),
                 item("pay", t + 1, content="payment ok for order A-1003"),
                 item("cart", t + 2, content="Basket total: ZeroDivisionError"),
                 item("cart", t + 3, content='quote " and 50% off_sale')])  # fmt: skip

    def found(q: str, extra: str = "") -> list[str]:
        got = api(emu, f"events?project={PROJECT}&q={urllib.request.quote(q)}{extra}")
        assert got["total"] == len(got["events"]) and got["search"] == "words"
        return [e["detail"]["content"] for e in got["events"]]

    assert found("payment failed") == ["payment failed for order A-1002"]
    assert found("A-1002") == ["payment failed for order A-1002"]  # punctuation inside a word: a phrase
    assert found("PAYMENT") == ["payment ok for order A-1003", "payment failed for order A-1002"]  # case folds
    assert found("zerodiv") == ["Basket total: ZeroDivisionError"]  # a word's start
    assert found('quote "') == ['quote " and 50% off_sale']  # a quote is text, never FTS5 syntax
    assert found("order", "&level=Major") == ["payment failed for order A-1002"]  # with the other filters
    assert found("order NOT ok") == []  # operators are words too: no "NOT" in any content
    assert found("absent") == []
    line = api(emu, f"timeline?project={PROJECT}&q=payment")
    assert sum(sum(c.values()) for _, c in line["buckets"]) == 2


@pytest.mark.parametrize("q", ["x" * 201, "+".join("w" * 9), "%22%20!!", "--"])
def test_search_refuses_what_is_not_a_few_words(emu: Emulator, q: str) -> None:
    status, body = call(emu, f"events?project={PROJECT}&q={q}")
    assert status == 400 and body["error_msg"].startswith("q:")


def test_without_fts5_search_is_a_like_per_word(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A SQLite built without FTS5 answers "no such module" to the index's CREATE: the same here.
    monkeypatch.setattr(store_module, "_TEXT_SCHEMA", "CREATE VIRTUAL TABLE events_text USING no_such_module(x)")
    with Emulator(db=str(tmp_path / "ev.db")) as emu:
        assert not emu.state.store.fts
        t = now_ms() - 10_000
        report(emu, [item("a", t, content="payment failed 50% of A_1"),
                     item("a", t + 1, content="payment ok"),
                     item("a", t + 2, content="A-1 other")])  # fmt: skip
        got = api(emu, f"events?project={PROJECT}&q=payment%20FAILED")
        assert [e["detail"]["content"] for e in got["events"]] == ["payment failed 50% of A_1"]
        assert got["search"] == "substrings"
        # LIKE's wildcards are literal: "%" and "_" match themselves only
        assert api(emu, f"events?project={PROJECT}&q=50%25")["total"] == 1
        assert api(emu, f"events?project={PROJECT}&q=A_1")["total"] == 1  # not "A-1 other"
        assert api(emu, f"events?project={PROJECT}&q=A-1")["total"] == 1
    # the same file opened where FTS5 exists: the index is filled from the events written without it
    monkeypatch.undo()
    store = EventStore(str(tmp_path / "ev.db"))
    try:
        assert store.fts
        events, total, _ = store.recent(PROJECT, words=["payment"])
        assert total == 2 and {e["detail"]["content"] for e in events} == {"payment failed 50% of A_1", "payment ok"}
    finally:
        store.close()


def test_a_database_from_before_the_search_index_is_indexed_at_open(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    old = EventStore(path)
    old.add(PROJECT, [item("a", now_ms(), content="written before the index existed")])
    old.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE events_text")  # the schema as an earlier version wrote it
    db.commit()
    db.close()
    store = EventStore(path)
    try:
        events, total, _ = store.recent(PROJECT, words=["before", "index"])
        assert total == 1 and events[0]["detail"]["content"] == "written before the index existed"
        store.add(PROJECT, [item("a", now_ms() + 1, content="written after")])
        assert store.recent(PROJECT, words=["after"])[1] == 1
        store.clear()
        assert store.recent(PROJECT, words=["written"])[1] == 0
    finally:
        store.close()


def test_timeline_counts_events_per_minute_by_level(emu: Emulator) -> None:
    m0 = now_ms() // 60_000 * 60_000 - 10 * 60_000
    report(emu, [*(item("a", m0 + 1000 + i, event_level="Critical") for i in range(3)),
                 *(item("a", m0 + 59_000 + i, event_level="Info") for i in range(2)),
                 *(item("b", m0 + 120_000 + i, event_level="Minor") for i in range(4))])  # fmt: skip
    line = api(emu, f"timeline?project={PROJECT}")
    assert line["bucket_ms"] == 60_000 and line["from"] == m0 and line["to"] == m0 + 120_003
    assert line["buckets"] == [[m0, {"Critical": 3, "Info": 2}], [m0 + 120_000, {"Minor": 4}]]
    assert api(emu, f"timeline?project={PROJECT}&name=b")["buckets"] == [[m0 + 120_000, {"Minor": 4}]]
    assert api(emu, f"timeline?project={PROJECT}&level=Info")["buckets"] == [[m0, {"Info": 2}]]
    day = api(emu, f"timeline?project={PROJECT}&from={m0 - 86_400_000}&to={m0 + 60_000}")
    assert day["bucket_ms"] == 15 * 60_000 and sum(sum(c.values()) for _, c in day["buckets"]) == 5
    assert api(emu, "timeline?project=nothingHere")["buckets"] == []
    # bars stay few over any range: per minute up to two hours, and never more than 120 bars
    assert bucket_ms(2 * 3600_000) == 60_000 and bucket_ms(2 * 3600_000 + 1) == 120_000
    for span in (1, 59_999, 3600_000, 86_400_000, 7 * 86_400_000, 60 * 365 * 86_400_000):
        assert -(-span // bucket_ms(span)) <= 120


def test_one_event_by_id_and_the_new_routes_are_read_only(emu: Emulator) -> None:
    report(emu, [item("a", now_ms(), content="the one")])
    event_id = api(emu, f"events?project={PROJECT}")["events"][0]["event_id"]
    assert api(emu, f"event?project={PROJECT}&id={event_id}")["event"]["detail"]["content"] == "the one"
    assert call(emu, f"event?project=other&id={event_id}")[0] == 404  # ids are looked up within the project
    assert call(emu, f"event?project={PROJECT}")[0] == 400
    assert call(emu, f"events?project={PROJECT}&before=yesterday")[0] == 400
    for route in (f"event?project={PROJECT}&id={event_id}", f"timeline?project={PROJECT}"):
        assert call(emu, route, "POST")[0] == 405
    assert emu.count(PROJECT) == 1
