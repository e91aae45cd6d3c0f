"""The emulator's web console: ``GET /`` shows what an app sent, as Cloud Eye's own console would.

A page of plain HTML, CSS and JavaScript shipped in ``static/`` (no build step, nothing fetched from outside:
the Content-Security-Policy allows only the emulator itself) and a small JSON API the page reads:

- ``GET /_console/api/projects``: the projects that hold events, latest first;
- ``GET /_console/api/events?project=P&name=N&level=L&from=MS&to=MS&q=WORDS&before=CURSOR&limit=K``: events
  of every name, newest first, with the project's event names for the name filter and ``next``, the cursor of
  the next older page (null at the oldest event). ``q``: words the content must hold (see store.py);
- ``GET /_console/api/event?project=P&id=ID``: one event (a shared link to its detail);
- ``GET /_console/api/timeline?`` the same filters: counts per minute (wider bars over long ranges) and level.

Everything here is read-only: other methods get 405, and nothing in the store or the emulator's state changes.
Who may read: anyone when the emulator is open (its API already answers anyone), only this machine (a
loopback client) when it checks credentials, so the console is never a way around them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from ..config import is_loopback
from ..events import LEVELS, PROJECT_ID
from .store import EventStore, search_words

PREFIX = "_console"
ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
MAX_LIMIT = 1000
# A search is a few words: enough for a person, never a query that scans for long.
MAX_SEARCH_CHARS = 200
MAX_SEARCH_WORDS = 8
# Only the emulator itself: a page that shows untrusted log content must not load or send anything elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def serves(segs: list[str]) -> bool:
    """True for the routes this module answers: ``/`` and ``/_console/...``."""
    return segs == [""] or segs == ["index.html"] or (len(segs) >= 2 and segs[0] == PREFIX)


def may_read(client_host: str, emulator_open: bool) -> bool:
    """Anyone may read an open emulator (its API answers anyone); one that checks credentials shows its
    console to this machine only, so the console never reads around them."""
    return emulator_open or is_loopback(client_host)


@cache
def _asset(name: str) -> bytes:
    return (resources.files(__package__ or "ces_logging.emulator") / "static" / name).read_bytes()


def respond(
    handler: BaseHTTPRequestHandler, method: str, segs: list[str], query: str, store: EventStore, open_: bool
) -> int:
    """Answer one console request on ``handler``; returns the HTTP status sent."""
    if method != "GET":
        return _reply(handler, 405, _json({"error_msg": "the console is read-only"}), "application/json",
                      {"Allow": "GET"})  # fmt: skip
    if not may_read(str(handler.client_address[0]), open_):
        return _reply(handler, 403, _json({"error_msg": "the console answers this machine only"}), "application/json")
    if segs in ([""], ["index.html"]):
        return _reply(handler, 200, _asset("console.html"), "text/html; charset=utf-8")
    rest = segs[1:]
    if len(rest) == 1 and rest[0] in ASSETS:
        return _reply(handler, 200, _asset(rest[0]), ASSETS[rest[0]])
    if rest == ["api", "projects"]:
        return _reply(handler, 200, _json({"projects": store.projects()}), "application/json")
    if len(rest) == 2 and rest[0] == "api" and rest[1] in _API:
        status, payload = _API[rest[1]](store, parse_qs(query, keep_blank_values=True))
        return _reply(handler, status, _json(payload), "application/json")
    return _reply(handler, 404, _json({"error_msg": "no such console route"}), "application/json")


class _BadQuery(ValueError):
    """A query parameter the API refuses (400, with the message)."""


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1].strip() or None if values else None


def _number(params: dict[str, list[str]], name: str) -> int | None:
    text = _one(params, name)
    if text is not None and not (text.isdigit() and len(text) <= 18):
        raise _BadQuery(f"{name}: a whole number")
    return int(text) if text is not None else None


def _filters(params: dict[str, list[str]]) -> dict[str, Any]:
    """The filters every listing shares, checked: project, name, level, time range, search words."""
    project = _one(params, "project")
    if project is None or PROJECT_ID.check(project):
        raise _BadQuery("project: a valid project id is required")
    level = _one(params, "level")
    if level is not None and level not in LEVELS:
        raise _BadQuery(f"level: one of {', '.join(LEVELS)}")
    text = _one(params, "q") or ""
    words = search_words(text)
    if len(text) > MAX_SEARCH_CHARS or len(words) > MAX_SEARCH_WORDS:
        raise _BadQuery(f"q: at most {MAX_SEARCH_WORDS} words and {MAX_SEARCH_CHARS} characters")
    if text and not words:
        raise _BadQuery("q: no word to search for (a word holds a letter or a digit)")
    return {
        "project_id": project,
        "event_name": _one(params, "name"),
        "event_level": level,
        "start_time": _number(params, "from"),
        "end_time": _number(params, "to"),
        "words": words,
    }


_Answer = Callable[[EventStore, dict[str, list[str]]], tuple[int, dict[str, Any]]]


def _checked(answer: _Answer) -> _Answer:
    """Turn a refused parameter into a 400 answer."""

    def run(store: EventStore, params: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        try:
            return answer(store, params)
        except _BadQuery as e:
            return 400, {"error_msg": str(e)}

    return run


@_checked
def _events(store: EventStore, params: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
    filters = _filters(params)
    limit = min(max(_number(params, "limit") or 200, 1), MAX_LIMIT)
    cursor = _one(params, "before")
    before: tuple[int, int] | None = None
    if cursor is not None:
        t, _, row = cursor.partition("-")
        if not (t.isdigit() and row.isdigit() and len(t) <= 18 and len(row) <= 18):
            raise _BadQuery("before: the 'next' cursor of a previous page")
        before = (int(t), int(row))
    events, total, older = store.recent(**filters, before=before, limit=limit)
    names = sorted(k["event_name"] for k in store.kinds(filters["project_id"]))
    return 200, {
        "events": events,
        "total": total,
        "limit": limit,
        "names": names,
        "next": f"{older[0]}-{older[1]}" if older else None,
        "search": "words" if store.fts else "substrings",
    }


@_checked
def _event(store: EventStore, params: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
    project = _one(params, "project")
    event_id = _one(params, "id")
    if project is None or PROJECT_ID.check(project) or event_id is None:
        raise _BadQuery("project and id are required")
    event = store.event(project, event_id)
    if event is None:
        return 404, {"error_msg": "no such event in this project"}
    return 200, {"event": event}


@_checked
def _timeline(store: EventStore, params: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
    return 200, store.timeline(**_filters(params))


_API: dict[str, _Answer] = {"events": _events, "event": _event, "timeline": _timeline}


def _json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


def _reply(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> int:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Cache-Control", "no-store")
    handler.send_header("X-Content-Type-Options", "nosniff")
    handler.send_header("Content-Security-Policy", CSP)
    handler.send_header("Referrer-Policy", "no-referrer")
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(body)
    return status
