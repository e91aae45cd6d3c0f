"""The emulator's web console: ``GET /`` shows what an app sent, as Cloud Eye's own console would.

A page of plain HTML, CSS and JavaScript shipped in ``static/`` (no build step, nothing fetched from outside:
the Content-Security-Policy allows only the emulator itself) and a small JSON API the page reads:

- ``GET /_console/api/projects``: the projects that hold events, latest first;
- ``GET /_console/api/events?project=P&name=N&level=L&from=MS&to=MS&limit=K``: events of every name, newest
  first, with the project's event names for the name filter.

Everything here is read-only: other methods get 405, and nothing in the store or the emulator's state changes.
Who may read: anyone when the emulator is open (its API already answers anyone), only this machine (a
loopback client) when it checks credentials, so the console is never a way around them.
"""

from __future__ import annotations

import json
from functools import cache
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from ..config import is_loopback
from ..events import LEVELS, PROJECT_ID
from .store import EventStore

PREFIX = "_console"
ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
MAX_LIMIT = 1000
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
    if rest == ["api", "events"]:
        status, payload = _events(store, parse_qs(query, keep_blank_values=True))
        return _reply(handler, status, _json(payload), "application/json")
    return _reply(handler, 404, _json({"error_msg": "no such console route"}), "application/json")


def _events(store: EventStore, params: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
    def one(name: str) -> str | None:
        values = params.get(name)
        return values[-1].strip() or None if values else None

    project = one("project")
    if project is None or PROJECT_ID.check(project):
        return 400, {"error_msg": "project: a valid project id is required"}
    level = one("level")
    if level is not None and level not in LEVELS:
        return 400, {"error_msg": f"level: one of {', '.join(LEVELS)}"}
    numbers: dict[str, int | None] = {}
    for key in ("from", "to", "limit"):
        text = one(key)
        if text is not None and not text.isdigit():
            return 400, {"error_msg": f"{key}: a whole number"}
        numbers[key] = int(text) if text is not None else None
    limit = min(max(numbers["limit"] or 200, 1), MAX_LIMIT)
    events, total = store.recent(
        project,
        event_name=one("name"),
        event_level=level,
        start_time=numbers["from"],
        end_time=numbers["to"],
        limit=limit,
    )
    names = sorted(k["event_name"] for k in store.kinds(project))
    return 200, {"events": events, "total": total, "limit": limit, "names": names}


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
