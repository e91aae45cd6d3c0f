"""Storm control (option ``storm_control="N/Ws"``): a burst of alike records becomes N events and one summary.

A failing dependency makes an app log the same error thousands of times a minute; each is a POST item, a line
in the console and a notification, and the burst drowns the distinct errors behind it. Records are *alike* when
they share logger name, level and message template (``record.msg`` before its arguments; for exceptions, also
the exception type). Per alike group, the first N records in each window of W seconds become events as usual;
the rest are *folded*: counted, and when the window closes one summary event of the group goes out, built from
the group's last record with ``[+K similar in Ws]`` after its content (K: the records it stands for).

Where it runs, and why there: the app's thread only computes the group's key (``storm_key``, in
``Preparer.prepare``, when the option is on); the deciding happens on the worker's batcher thread, when it
takes records from the buffer (``StormControl.admit``). So the buffer stays the one count of received records
(its counts survive signals at any bytecode, see ``buffer.py``), the groups are touched by one thread only
(no lock), and the buffer's bounds still bound memory. The cost: a folded record waits in the buffer like any
other until the worker takes it.

Accounting: a folded record stays *in flight* (queued) until its summary's outcome: delivered, its records
count as ``folded``; dropped, they count as dropped with the summary's reason. Summaries ride in batches with the
other events (a request each would cost as many requests as the burst saved); the batch's ``worker.Ledger`` knows
which of its events are summaries and how many records each stands for, so the count is exact whatever happens
to the request, in the halves of a batch split to isolate a rejected item too. A summary never goes to the spool
(a spool file knows how many events it holds, not how many records each stands for): with the service down,
the other events of its batch go to disk and the summaries retry in memory.
Hence ``sent + dropped + queued + folded == received``.

Windows follow the records' own times (``record.created``), so a worker that is behind (an outage) still groups
records by when they were logged. Memory is bounded: at most ``MAX_GROUPS`` groups, each holding a count and at
most one prepared record (its last folded one); a new group beyond that pushes out the oldest one, whose
pending summary goes out then.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from .errors import ConfigError
from .events import MAX_CONTENT, content_cost, fit_content

MAX_GROUPS: Final = 1000
MAX_WINDOW_S: Final = 3600.0  # a summary must be sent while its records are inside the service's 1 h window
_TEMPLATE_CHARS: Final = 200  # a message that is not a template (not a str) is keyed by its first characters
_SCAN_EVERY_S: Final = 0.25
_FORCE_EVERY_S: Final = 1.0
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|m)?\s*")


def parse_storm_control(value: object) -> tuple[int, float] | None:
    """``"N/Ws"`` (``"10/5s"``, ``"10/2m"``), ``(N, W)``, or None/""/"off" for off. Bad values: ConfigError."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "off", "none")):
        return None
    n: object
    w: object
    if isinstance(value, str):
        m = _SPEC.fullmatch(value)
        if not m:
            raise ConfigError(f'storm_control must look like "10/5s" (N records per W seconds), got {value!r}')
        n, w = int(m.group(1)), float(m.group(2)) * (60.0 if m.group(3) == "m" else 1.0)
    elif isinstance(value, tuple | list) and len(value) == 2:
        n, w = value
    else:
        raise ConfigError(f'storm_control must be "N/Ws" or a tuple (N, W), got {value!r}')
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"storm_control: N must be an integer >= 1, got {n!r}")
    if isinstance(w, bool) or not isinstance(w, int | float) or not 0 < w <= MAX_WINDOW_S:
        raise ConfigError(f"storm_control: W must be a number of seconds in (0, {MAX_WINDOW_S:g}], got {w!r}")
    return n, float(w)


def storm_key(record: Any, text: str) -> tuple[Any, ...] | None:
    """What makes records alike: logger name, level, template, exception type. Runs on the app's thread for
    every event record when storm control is on: a few attribute reads and one tuple. Never raises (a record
    it cannot key, None, is never folded)."""
    try:
        msg = record.msg
        if not isinstance(msg, str):
            event = msg.get("event") if isinstance(msg, Mapping) else None  # structlog's event dict
            msg = event if isinstance(event, str) else text[:_TEMPLATE_CHARS]
        if len(msg) > _TEMPLATE_CHARS:  # a group's key must not hold a huge message for a whole window
            msg = (msg[:_TEMPLATE_CHARS], hash(msg))
        ei = record.exc_info
        exc = ei[0] if isinstance(ei, tuple) and ei else None
        key = (record.name, record.levelno, msg, exc)
        hash(key)  # an exception type with a metaclass that cannot hash: not grouped
        return key
    except Exception:
        return None


def summary_text(last: str, count: int, window: float, json_content: bool) -> str:
    """The summary's content: the group's last message, then ``[+K similar in Ws]``, within the 4,096 limit
    (the message is cut, never the marker). JSON content stays JSON, with a ``similar`` member."""
    if json_content:
        try:
            obj = json.loads(last)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            obj["similar"] = {"count": count, "window_s": window}
            text = json.dumps(obj, ensure_ascii=False)
            if content_cost(text) <= MAX_CONTENT:
                return text
            message = str(obj.get("message", ""))
            excess = content_cost(text) - MAX_CONTENT + 64
            obj["message"] = fit_content(message, max(0, len(message) - excess))
            text = json.dumps(obj, ensure_ascii=False)
            if content_cost(text) <= MAX_CONTENT:
                return text
            return json.dumps({"message": fit_content(message, 3000), "similar": obj["similar"]}, ensure_ascii=False)
    marker = f" [+{count} similar in {window:g}s]"
    return fit_content(last, MAX_CONTENT - len(marker)) + marker


class _Group:
    __slots__ = ("end", "folded", "last", "seen")

    def __init__(self, end: float) -> None:
        self.end = end  # the window's end, in record time (``record.created`` + W of its first record)
        self.seen = 1  # records of this window (the first N become events)
        self.folded = 0  # records folded since the last summary
        self.last: Any = None  # the last folded item


class StormControl:
    """The worker side. Only the batcher thread calls it (no lock)."""

    def __init__(self, limit: int, window: float, json_content: bool, max_groups: int = MAX_GROUPS) -> None:
        self.limit = limit
        self.window = window
        self.json_content = json_content
        self.max_groups = max_groups
        self._groups: dict[Any, _Group] = {}
        self._ready: list[tuple[Any, int]] = []  # summaries of windows closed by admit or eviction
        self._next_scan = 0.0
        self._busy_since: float | None = None  # urgent while the buffer was not empty, since

    @property
    def groups(self) -> int:
        return len(self._groups)

    @property
    def pending(self) -> int:
        """Records folded whose summary has not been handed out yet."""
        return sum(g.folded for g in self._groups.values()) + sum(w for _, w in self._ready)

    def admit(self, items: list[Any]) -> list[Any]:
        """The items that become events; the others are folded into their group (kept counted by the caller
        as in flight until their summary's outcome). An item's last field is its key (None: not grouped)."""
        out = []
        groups = self._groups
        for item in items:
            key = item[-1]
            if key is None:
                out.append(item)
                continue
            created = item[0]
            g = groups.get(key)
            if g is None or created >= g.end:
                if g is not None:
                    self._close(key, g, created)
                elif len(groups) >= self.max_groups:
                    self._evict(created)
                groups[key] = _Group(created + self.window)
                out.append(item)
            elif g.seen < self.limit:
                g.seen += 1
                out.append(item)
            else:
                g.folded += 1
                g.last = item
        return out

    def due(self, now: float, urgent: bool = False, busy: bool = False) -> list[tuple[Any, int]]:
        """Summaries to send now, as (item, records it stands for): those of windows closed by ``now`` (a
        wall-clock time), and when ``urgent`` (flush, close, exit, SIGTERM) all pending ones: once the buffer is
        empty (not ``busy``), so that one summary holds a whole burst, or at least once a second while the app
        keeps the buffer busy. Groups whose window is over are forgotten."""
        out, self._ready = self._ready, []
        everything = urgent and not busy
        if urgent and busy:  # the app keeps the buffer busy: all pending ones after a second of it
            if self._busy_since is None:
                self._busy_since = now
            everything = now - self._busy_since >= _FORCE_EVERY_S
        if everything or not urgent:
            self._busy_since = None
        if not everything and now < self._next_scan:
            return out
        self._next_scan = now + min(_SCAN_EVERY_S, self.window / 4)
        groups = self._groups
        for key in [k for k, g in groups.items() if g.folded or now >= g.end]:
            g = groups[key]
            if g.folded and (everything or now >= g.end):
                out.append(self._summary(g, now))
            if now >= g.end:
                del groups[key]
        return out

    def _close(self, key: Any, g: _Group, now: float) -> None:
        if g.folded:
            self._ready.append(self._summary(g, now))
        del self._groups[key]

    def _evict(self, now: float) -> None:
        """Full: forget the oldest group (insertion order), its pending summary goes out."""
        key = next(iter(self._groups))
        self._close(key, self._groups[key], now)

    def _summary(self, g: _Group, now: float) -> tuple[Any, int]:
        """The summary as a prepared item: the last folded record's, with the marker, stamped when its window
        closes (not at the last record's time: a long window could make that older than the service takes)."""
        last, n = g.last, g.folded
        g.folded, g.last = 0, None
        text = summary_text(last[3], n, self.window, self.json_content)
        return (max(last[0], now), last[1], last[2], text, last[4], False, None), n
