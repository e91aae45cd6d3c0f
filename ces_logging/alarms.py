"""The handler's state for events worth alarming on, made from its checked options (``options.py``):
``storm_control`` (``storm.py``), ``context_records`` (``context.py``) and ``event_level``.

``event_level`` is the events' own threshold, apart from the handler's ``level`` (the logging threshold): a
handler only sees records at or above its level and its logger's, so to keep lower records as context it must
see them, and only those at or above ``event_level`` become events. Records below ``event_level`` are never
``received``: they are kept as context when ``context_records`` asks for it, and ignored otherwise.
"""

from __future__ import annotations

import logging

from .context import ContextKeeper
from .options import Options, parse_level
from .storm import StormControl, parse_storm_control


class AlarmOptions:
    __slots__ = ("context", "event_level", "storm")

    def __init__(self, storm: tuple[int, float] | None, context: ContextKeeper | None, event_level: int) -> None:
        self.storm = storm
        self.context = context
        self.event_level = event_level

    @classmethod
    def of(cls, options: Options) -> AlarmOptions:
        """From options already checked (``options.py`` holds the rules: the ranges, and that
        ``context_records`` needs ``event_level``)."""
        n = options.context_records
        level = logging.NOTSET if options.event_level is None else parse_level(options.event_level)
        return cls(parse_storm_control(options.storm_control), ContextKeeper(n) if n else None, level)

    def storm_control(self, json_content: bool) -> StormControl | None:
        """A fresh worker-side state (one per worker: a forked child starts with no groups)."""
        return StormControl(*self.storm, json_content=json_content) if self.storm else None

    def keep(self, record: logging.LogRecord) -> None:
        """A record below ``event_level``: context for the next event, or nothing."""
        if self.context is not None:
            self.context.keep(record)

    @property
    def context_kept(self) -> int:
        return self.context.kept.value if self.context is not None else 0
