"""The emulator's event store: SQLite, so events survive a restart when a file is given.

It applies the same-event rule with a unique index over the key fields, so a second report of an event
(a retry, or a different message in the same millisecond) gives back the first one's id and stores nothing.
"""

from __future__ import annotations

import json
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
"""


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
        limit: int = 200,
    ) -> tuple[list[dict[str, Any]], int]:
        """(events of every name newest first, at most ``limit``; total matches): what the console lists.
        The service's API only queries one name at a time; this is the emulator's own, read-only view."""
        equal = {k: v for k, v in (("event_name", event_name), ("event_level", event_level)) if v is not None}
        cond, args = _where(project_id, equal, start_time, end_time)
        with self._lock:
            return self._page(cond, args, limit, 0)

    def _page(self, cond: str, args: list[Any], limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """(matching events newest first, ``limit`` from ``offset``; total matches). Under ``_lock``."""
        total = self._db.execute(f"SELECT COUNT(*) FROM events WHERE {cond}", args).fetchone()[0]
        rows = self._db.execute(
            f"SELECT event_id, event_name, event_source, time, detail FROM events WHERE {cond} "
            "ORDER BY time DESC, rowid DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        page = [
            {"event_id": r[0], "event_name": r[1], "event_source": r[2], "time": r[3], "detail": json.loads(r[4])}
            for r in rows
        ]
        return page, int(total)

    def count(self, project_id: str | None = None) -> int:
        with self._lock:
            if project_id is None:
                return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM events WHERE project_id = ?", [project_id]).fetchone()[0])

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM events")
