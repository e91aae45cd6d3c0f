"""The handler's options for events worth alarming on, read and checked in one place: ``storm_control``
(``storm.py``), ``context_records`` (``context.py``) and ``event_level``.

``event_level`` is the events' own threshold, apart from the handler's ``level`` (the logging threshold): a
handler only sees records at or above its level and its logger's, so to keep lower records as context it must
see them, and only those at or above ``event_level`` become events. Records below ``event_level`` are never
``received``: they are kept as context when ``context_records`` asks for it, and ignored otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .context import MAX_CONTEXT_RECORDS, ContextKeeper
from .errors import ConfigError
from .storm import StormControl, parse_storm_control


class AlarmOptions:
    __slots__ = ("context", "event_level", "storm")

    def __init__(self, storm: tuple[int, float] | None, context: ContextKeeper | None, event_level: int) -> None:
        self.storm = storm
        self.context = context
        self.event_level = event_level

    @classmethod
    def parse(
        cls,
        storm_control: object,
        context_records: object,
        event_level: int | str | None,
        parse_level: Callable[[int | str], int],
    ) -> AlarmOptions:
        storm = parse_storm_control(storm_control)
        n = context_records
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_CONTEXT_RECORDS:
            raise ConfigError(f"context_records must be an integer from 0 to {MAX_CONTEXT_RECORDS}, got {n!r}")
        if n and event_level is None:
            raise ConfigError(
                "context_records keeps the records below event_level: set event_level (say 'ERROR') and a lower "
                "level for the handler and its logger (say 'INFO'), so that the handler sees those records"
            )
        threshold = logging.NOTSET if event_level is None else parse_level(event_level)
        return cls(storm, ContextKeeper(n) if n else None, threshold)

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
