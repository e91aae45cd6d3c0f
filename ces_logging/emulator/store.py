"""The emulator's event store: SQLite, so events survive a restart when a file is given.

It applies the same-event rule with a unique index over the key fields, so a second report of an event
(a retry, or a different message in the same millisecond) gives back the first one's id and stores nothing.

The console searches the words of events' content: a SQLite FTS5 index (``events_text``, keyed by event id
so a VACUUM that renumbers rows cannot mix it up) where SQLite has FTS5. A database written before the index
existed, or by a SQLite without FTS5, gets it filled at open; without FTS5 the search is a LIKE per word
over the content, bounded by the number and length of words the console accepts.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import string
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ..events import DETAIL_KEY_FIELDS, EVENT_TYPE_CUSTOM, default_sub_event_type, event_key, now_ms

_ALNUM = string.ascii_letters + string.digits

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    project_id   TEXT NOT NULL,
    event_id     TEXT NOT NULL PRIMARY KEY,
    event_name   TEXT NOT NULL,
    event_source TEXT NOT NULL,
    time         INTEGER NOT NULL,
    {", ".join(f"{f} TEXT NOT NULL" for f in DETAIL_KEY_FIELDS)},
    detail       TEXT NOT NULL,
    UNIQUE (project_id, time, event_source, event_name, {", ".join(DETAIL_KEY_FIELDS)})
);
CREATE INDEX IF NOT EXISTS events_by_name ON events (project_id, event_name, time DESC);
CREATE INDEX IF NOT EXISTS events_by_time ON events (project_id, time DESC);
"""
# Words of the content, for the console's search. unicode61 folds case and splits on what is not a letter or
# digit, so "A-1002" is the phrase "a 1002" both in the index and in a query.
_TEXT_SCHEMA = "CREATE VIRTUAL TABLE IF NOT EXISTS events_text USING fts5(content, event_id UNINDEXED)"
# The console's timeline: the smallest of these that gives at most TIMELINE_BARS bars over the range.
TIMELINE_BARS = 120
_BUCKETS_MS = tuple(m * 60_000 for m in (1, 2, 5, 10, 15, 30, 60, 180, 360, 720, 1440, 10080))


def new_event_id(t_ms: int | None = None) -> str:
    """``ev`` + 13 digits of ms + 9 of [A-Za-z0-9], like ``ev1606302402256R6doP5YeZ``."""
    t = now_ms() if t_ms is None else t_ms
    return f"ev{t % 10**13:013d}" + "".join(secrets.choice(_ALNUM) for _ in range(9))


def normalise_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """The detail as the query API shows it: every field present, custom-event defaults filled in.

    An absent event_type can only be EVENT.CUSTOM (EVENT.SYS cannot be reported); an absent sub_event_type
    of a custom event is SUB_EVENT.CUSTOM (the query page: "If the event type is custom event, the value is
    SUB_EVENT.CUSTOM"). These are readings, not documented facts, and the same-event rule uses them.
    """
    d: dict[str, Any] = {
        "content": "",
        "group_id": "",
        "resource_id": "",
        "resource_name": "",
        "event_state": "",
        "event_level": "",
        "event_user": "",
        "event_type": EVENT_TYPE_CUSTOM,
        "dimensions": [],
    }
    d.update({k: v for k, v in detail.items() if v is not None})
    d.setdefault("sub_event_type", default_sub_event_type(d["event_type"]))
    return d



_FILTER_COLUMNS = ("event_type", "sub_event_type", "event_source", "event_level", "event_user", "event_state")


def _where(
    project_id: str, equal: Mapping[str, Any], from_ms: int | None, to_ms: int | None
) -> tuple[str, list[Any]]:
    """The WHERE clause (and its arguments) of a project's events: columns equal to values, a time range."""
    where: list[str] = ["project_id = ?"]
    args: list[Any] = [project_id]
    for column, value in equal.items():
        where.append(f"{column} = ?")
        args.append(value)
    if from_ms is not None:
        where.append("time >= ?")
        args.append(from_ms)
    if to_ms is not None:
        where.append("time <= ?")
        args.append(to_ms)
    return " AND ".join(where), args


def search_words(text: str) -> list[str]:
    """The words of a search: pieces between spaces that hold a letter or digit (punctuation alone finds
    nothing in a word index, so it is left out)."""
    return [w for w in text.split() if re.search(r"\w", w)]


def bucket_ms(span_ms: int) -> int:
    """The timeline's bar width for a range: one minute up to two hours, wider beyond, at most
    ``TIMELINE_BARS`` bars."""
    for b in _BUCKETS_MS:
        if span_ms <= b * TIMELINE_BARS:
            return b
    day = 86_400_000
    return -(-span_ms // (TIMELINE_BARS * day)) * day


class EventStore:
    """Thread-safe: one connection, one lock (the emulator's handler threads share it)."""

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self.fts = self._index_text()

    def _index_text(self) -> bool:
        """Create the content index if this SQLite has FTS5 and fill it when it is behind the events (a
        database from before it, or written where FTS5 was missing). False: search falls back to LIKE."""
        try:
            self._db.execute(_TEXT_SCHEMA)
        except sqlite3.OperationalError:  # "no such module: fts5"
            return False
        (indexed,) = self._db.execute("SELECT COUNT(*) FROM events_text").fetchone()
        (stored,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
        if indexed != stored:
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM events_text")
                rows = self._db.execute("SELECT event_id, detail FROM events").fetchall()
                self._db.executemany(
                    "INSERT INTO events_text (content, event_id) VALUES (?, ?)",
                    ((str(json.loads(d).get("content") or ""), i) for i, d in rows),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return True

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, project_id: str, items: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, str]], int]:
        """Store valid items; returns ``[{event_id, event_name}]`` in order and how many were new."""
        out: list[dict[str, str]] = []
        new = 0
        cols = ["project_id", "event_id", "event_name", "event_source", "time", *DETAIL_KEY_FIELDS, "detail"]
        key_sql = " AND ".join(
            f"{c} = ?" for c in ["project_id", "time", "event_source", "event_name", *DETAIL_KEY_FIELDS]
        )
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for item in items:
                    detail = normalise_detail(item.get("detail") or {})
                    same = event_key({**item, "detail": detail})  # (source, name, *DETAIL_KEY_FIELDS)
                    keys = list(same[2:])
                    key = [project_id, item["time"], *same]
                    row = self._db.execute(f"SELECT event_id FROM events WHERE {key_sql}", key).fetchone()
                    if row:
                        event_id = row[0]
                    else:
                        event_id = new_event_id()
                        values = [
                            project_id,
                            event_id,
                            item["event_name"],
                            item["event_source"],
                            item["time"],
                            *keys,
                            json.dumps(detail, ensure_ascii=False),
                        ]
                        self._db.execute(
                            f"INSERT INTO events ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                            values,
                        )
                        if self.fts:
                            self._db.execute(
                                "INSERT INTO events_text (content, event_id) VALUES (?, ?)",
                                [str(detail.get("content") or ""), event_id],
                            )
                        new += 1
                    out.append({"event_id": event_id, "event_name": str(item["event_name"])})
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return out, new

    def query(
        self,
        project_id: str,
        event_name: str,
        filters: Mapping[str, Any],
        start: int = 0,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], int, list[str], list[str]]:
        """(page newest first, total matches, distinct users, distinct sources) for one event name."""
        equal = {f: filters[f] for f in _FILTER_COLUMNS if f in filters}
        cond, args = _where(project_id, {"event_name": event_name, **equal}, filters.get("from"), filters.get("to"))
        with self._lock:
            page, total = self._page(cond, args, limit, start)
            users = [r[0] for r in self._db.execute(f"SELECT DISTINCT event_user FROM events WHERE {cond}", args)]
            sources = [r[0] for r in self._db.execute(f"SELECT DISTINCT event_source FROM events WHERE {cond}", args)]
        return page, int(total), sorted(users), sorted(sources)

    def kinds(self, project_id: str) -> list[dict[str, Any]]:
        """Every event name of a project with its type, sub-type, source, count and latest time."""
        with self._lock:
            rows = self._db.execute(
                # SQLite gives a bare column the value of the row that MAX() picked: the latest source.
                "SELECT event_name, event_type, sub_event_type, event_source, COUNT(*), MAX(time) FROM events "
                "WHERE project_id = ? GROUP BY event_name, event_type, sub_event_type "
                "ORDER BY MAX(time) DESC",
                [project_id],
            ).fetchall()
        return [
            {
                "event_name": r[0],
                "event_type": r[1],
                "sub_event_type": r[2],
                "event_count": r[4],
                "latest_occur_time": r[5],
                "latest_event_source": r[3],
            }
            for r in rows
        ]

    def projects(self) -> list[dict[str, Any]]:
        """Every project that holds events, with its count and latest time, latest first (the console's
        project chooser)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT project_id, COUNT(*), MAX(time) FROM events GROUP BY project_id ORDER BY MAX(time) DESC"
            ).fetchall()
        return [{"project_id": r[0], "event_count": r[1], "latest_occur_time": r[2]} for r in rows]

    def recent(
        self,
        project_id: str,
        *,
        event_name: str | None = None,
        event_level: str | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        words: list[str] | None = None,
        before: tuple[int, int] | None = None,
        limit: int = 200,
    ) -> tuple[list[dict[str, Any]], int, tuple[int, int] | None]:
        """(events of every name newest first, at most ``limit``; total matches; the cursor of the next
        older page or None): what the console lists. ``words``: each must be in the content (a word's
        start, with FTS5). ``before``: the cursor a previous page gave, so a page further down stays put
        while new events arrive. The service's API only queries one name at a time; this is the emulator's
        own, read-only view."""
        cond, args = self._console_where(project_id, event_name, event_level, start_time, end_time, words)
        page_cond, page_args = cond, list(args)
        if before is not None:
            page_cond += " AND (time < ? OR (time = ? AND rowid < ?))"
            page_args += [before[0], before[0], before[1]]
        with self._lock:
            (total,) = self._db.execute(f"SELECT COUNT(*) FROM events WHERE {cond}", args).fetchone()
            rows = self._db.execute(
                f"SELECT event_id, event_name, event_source, time, detail, rowid FROM events WHERE {page_cond} "
                "ORDER BY time DESC, rowid DESC LIMIT ?",
                [*page_args, limit + 1],
            ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return [_console_event(r) for r in rows], int(total), (rows[-1][3], rows[-1][5]) if more else None

    def event(self, project_id: str, event_id: str) -> dict[str, Any] | None:
        """One event by id, as ``recent`` lists it (the console's detail view of a shared link)."""
        with self._lock:
            r = self._db.execute(
                "SELECT event_id, event_name, event_source, time, detail FROM events "
                "WHERE project_id = ? AND event_id = ?",
                [project_id, event_id],
            ).fetchone()
        return None if r is None else _console_event(r)

    def timeline(
        self,
        project_id: str,
        *,
        event_name: str | None = None,
        event_level: str | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        words: list[str] | None = None,
    ) -> dict[str, Any]:
        """Counts of matching events per bar of time and level over the range (the matches' own first and
        last time where the range leaves an end open): ``{from, to, bucket_ms, buckets: [[start, {level:
        count}]]}``, empty bars left out."""
        cond, args = self._console_where(project_id, event_name, event_level, start_time, end_time, words)
        with self._lock:
            lo, hi = self._db.execute(f"SELECT MIN(time), MAX(time) FROM events WHERE {cond}", args).fetchone()
            lo = start_time if start_time is not None else lo
            hi = end_time if end_time is not None else hi
            if lo is None or hi is None or hi < lo:
                return {"from": lo, "to": hi, "bucket_ms": _BUCKETS_MS[0], "buckets": []}
            width = bucket_ms(hi - lo + 1)
            rows = self._db.execute(
                f"SELECT time - time % ? AS bar, event_level, COUNT(*) FROM events WHERE {cond} "
                "GROUP BY bar, event_level ORDER BY bar",
                [width, *args],
            ).fetchall()
        buckets: dict[int, dict[str, int]] = {}
        for bar, level, n in rows:
            buckets.setdefault(bar, {})[level] = n
        return {"from": lo - lo % width, "to": hi, "bucket_ms": width, "buckets": [[b, c] for b, c in buckets.items()]}

    def _console_where(
        self,
        project_id: str,
        event_name: str | None,
        event_level: str | None,
        start_time: int | None,
        end_time: int | None,
        words: list[str] | None,
    ) -> tuple[str, list[Any]]:
        equal = {k: v for k, v in (("event_name", event_name), ("event_level", event_level)) if v is not None}
        cond, args = _where(project_id, equal, start_time, end_time)
        if not words:
            return cond, args
        if self.fts:
            # Each word a quoted phrase (a quote inside doubled), matched as a prefix: the user's text is
            # never FTS5 syntax.
            match = " AND ".join('"' + w.replace('"', '""') + '"*' for w in words)
            return cond + " AND event_id IN (SELECT event_id FROM events_text WHERE events_text MATCH ?)", [
                *args,
                match,
            ]
        for w in words:
            escaped = w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            cond += " AND json_extract(detail, '$.content') LIKE ? ESCAPE '\\'"
            args.append(f"%{escaped}%")
        return cond, args

    def _page(self, cond: str, args: list[Any], limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """(matching events newest first, ``limit`` from ``offset``; total matches). Under ``_lock``."""
        total = self._db.execute(f"SELECT COUNT(*) FROM events WHERE {cond}", args).fetchone()[0]
        rows = self._db.execute(
            f"SELECT event_id, event_name, event_source, time, detail FROM events WHERE {cond} "
            "ORDER BY time DESC, rowid DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        return [_console_event(r) for r in rows], int(total)

    def count(self, project_id: str | None = None) -> int:
        with self._lock:
            if project_id is None:
                return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM events WHERE project_id = ?", [project_id]).fetchone()[0])

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM events")
            if self.fts:
                self._db.execute("DELETE FROM events_text")


def _console_event(r: Any) -> dict[str, Any]:
    """A row of (event_id, event_name, event_source, time, detail, ...) as the console's API gives an event."""
    return {"event_id": r[0], "event_name": r[1], "event_source": r[2], "time": r[3], "detail": json.loads(r[4])}
