"""Context with the error (option ``context_records=N``): the few records that led to an event travel in it.

An alarm that says "payment failed" is better with the records that came just before it from the same flow of
control. Records below the handler's ``event_level`` (but at or above its ``level``, which is the logging
threshold) are not events: the last N of them are kept, per thread or per asyncio task where one is current,
and the next event from that thread or task carries them, oldest first, after its own text (JSON content: a
``context`` list). Then they are gone: each context record goes with at most one event.

Why a ``ContextVar`` holding an immutable tuple: an asyncio task runs in a copy of its creator's context, so a
value set in one task is invisible to the others, and a thread has its own context; a tuple replaced (never
changed in place) cannot be shared by mistake through such a copy. The value is tagged with its owner (the task,
or the thread) so that a task created after its parent kept some records starts empty rather than with the
parent's records, and a thread that inherits a context (Python 3.14's ``thread_inherit_context``) does too.

Cost on the app's thread for a context record: the message rendered (its arguments may change once the call
returns), a tuple of at most N small tuples, a ``ContextVar.set``. Memory: at most N lines of at most
``LINE_CHARS`` characters per live thread or task. Context records are not counted in ``received`` (they never
were candidates for an event); ``stats.context_kept`` counts them.

The event's own message and traceback keep priority within the 4,096-character limit: context takes the room
left, newest records first (the ones closest to the error), and a line that does not fit whole is left out.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Final

from .buffer import Tally
from .events import MAX_CONTENT, content_cost, safe_text

if TYPE_CHECKING:
    from contextvars import ContextVar

MAX_CONTEXT_RECORDS: Final = 100
LINE_CHARS: Final = 400  # what is kept of one context record's message

Line = tuple[float, str, str, str]  # created, level name, logger name, message


def _owner() -> int:
    """The current asyncio task when one is running on this thread, else the thread (as an id: nothing is kept
    alive by it)."""
    aio = sys.modules.get("asyncio")
    if aio is not None:
        loop = aio._get_running_loop()
        if loop is not None:
            task = aio.current_task(loop)
            if task is not None:
                return id(task)
    return threading.get_ident()


class ContextKeeper:
    """One per handler: its own ``ContextVar``, so two handlers keep their own records."""

    def __init__(self, records: int) -> None:
        from contextvars import ContextVar  # only a handler with context_records: not with ``import ces_logging``

        self.records = records
        self._var: ContextVar[tuple[int, tuple[Line, ...]] | None] = ContextVar(f"ces_context_{id(self)}")
        self.kept = Tally()

    # --- the app's thread ------------------------------------------------------------------------------------

    def keep(self, record: logging.LogRecord) -> None:
        """Keep a record below the event threshold as context. Never raises."""
        try:
            try:
                msg = record.getMessage()
            except Exception:
                msg = f"[ces_logging: could not format the log message] {safe_text(record.msg)[:200]}"
            if len(msg) > LINE_CHARS:
                msg = msg[:LINE_CHARS] + "…"
            line = (record.created, record.levelname, record.name, msg)
            owner = _owner()
            cur = self._var.get(None)
            if cur is None or cur[0] != owner or self.records == 1:
                lines: tuple[Line, ...] = (line,)
            else:
                lines = (*cur[1][1 - self.records :], line)
            self._var.set((owner, lines))
            self.kept.add()
        except Exception:  # pragma: no cover - a broken record: context is a nicety, never a failure
            pass

    def take(self) -> tuple[Line, ...]:
        """The records kept for the current thread or task, which are given to this event and forgotten."""
        cur = self._var.get(None)
        if cur is None:
            return ()
        self._var.set(None)
        return cur[1] if cur[0] == _owner() else ()

    def attach(self, text: str, json_content: bool) -> str:
        """The event's content with the kept context in the room its own text leaves. Never raises."""
        try:
            lines = self.take()
            if not lines:
                return text
            return _attach_json(text, lines) if json_content else _attach_text(text, lines)
        except Exception:  # pragma: no cover - as above
            return text


def _clock(created: float) -> str:
    t = time.localtime(created)
    return f"{time.strftime('%H:%M:%S', t)}.{int(created * 1000) % 1000:03d}"


def _attach_text(text: str, lines: tuple[Line, ...]) -> str:
    room = MAX_CONTENT - content_cost(text) - 64  # the header line
    chosen: list[str] = []
    for created, level, name, msg in reversed(lines):  # newest first: closest to the error
        rendered = safe_text(f"{_clock(created)} {level} {name}: {msg}")
        cost = content_cost(rendered) + 1
        if cost > room:
            break
        room -= cost
        chosen.append(rendered)
    if not chosen:
        return text
    left = len(lines) - len(chosen)
    more = f", {left} older left out" if left else ""
    header = f"--- context: {len(chosen)} earlier record(s), oldest first{more} ---"
    return "\n".join([text.rstrip("\n"), header, *reversed(chosen)])


def _attach_json(text: str, lines: tuple[Line, ...]) -> str:
    from datetime import datetime, timezone  # JSON content with context only: not worth every import's cost

    try:
        obj = json.loads(text)
    except ValueError:
        return text
    if not isinstance(obj, dict):
        return text
    room = MAX_CONTENT - content_cost(text) - len(', "context": []')
    chosen: list[dict[str, Any]] = []
    for created, level, name, msg in reversed(lines):
        entry = {
            "time": datetime.fromtimestamp(created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": level,
            "logger": name,
            "message": safe_text(msg),
        }
        cost = content_cost(json.dumps(entry, ensure_ascii=False)) + 2
        if cost > room:
            break
        room -= cost
        chosen.append(entry)
    if not chosen:
        return text
    obj["context"] = chosen[::-1]
    out = json.dumps(obj, ensure_ascii=False)
    return out if content_cost(out) <= MAX_CONTENT else text
