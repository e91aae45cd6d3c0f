"""Building a handler from settings: ``handler_factory`` (dictConfig, INI, YAML: every option may be a string)
and ``configure`` (one line for scripts).

Kept apart from ``config.py`` (where settings come from: env, regions, endpoints), which ``handler.py`` imports:
this module imports ``handler.py``, so the two never import each other.
"""

from __future__ import annotations

import logging
from typing import Any

from .handler import CESHandler
from .options import Options


def handler_factory(options: Options | None = None, **values: object) -> CESHandler:
    """A ``CESHandler`` from options that may all be strings: for dictConfig's
    ``"()": "ces_logging.handler_factory"``, INI files, YAML and the environment.

    Takes the options of ``Options`` by name (``Options.from_strings`` reads them: integers and seconds as
    numbers, ``true``/``false`` (and ``1``/``0``, ``yes``/``no``) for switches, ``"name=value,name2=value2"`` or a
    JSON object for ``dimensions``, ``level_map`` and ``state_map``; ``verify`` is a switch or a CA bundle's path),
    over the ``options`` object when one is given.

    Raises:
        ConfigError: An unknown option (the message lists the known ones), or a value that cannot be read
            (the message names its key).
    """
    return CESHandler(options, **Options.read_strings(values))


def configure(
    level: int | str | None = None,
    logger: str | logging.Logger | None = None,
    *,
    options: Options | None = None,
    **handler_kwargs: Any,
) -> CESHandler:
    """One line for scripts: a ``CESHandler`` on the root logger (or the one given) at ``level``.

    Takes an ``Options`` object, or its options as keywords (or both: the keywords change the object's).
    ``level`` is ``WARNING`` unless given, here or in ``options``.

    Reads ``CES_ENDPOINT``, ``CES_REGION``, ``CES_PROJECT_ID`` (or ``HUAWEICLOUD_SDK_PROJECT_ID``),
    ``CES_EVENT_SOURCE``, ``CES_AUTH_TOKEN`` and the credential chain for what is not passed. Calling it again
    replaces the handler it added before (no second worker).

    When the logger's level would filter out what the handler is meant to send, the logger is lowered to the
    handler's level, and the logger's other handlers that had no level of their own get the logger's previous
    one: what they printed before, they print now, no more (a console at WARNING does not start printing
    INFO because Cloud Eye wants it)."""
    if level is None:  # WARNING, unless the options object given sets a level
        level = options.level if options is not None and "level" in options.given() else "WARNING"
    handler = CESHandler(options, level=level, **handler_kwargs)
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    for old in [h for h in target.handlers if getattr(h, "_ces_configured", False)]:
        target.removeHandler(old)
        old.close()
    handler._ces_configured = True  # type: ignore[attr-defined]
    previous = target.getEffectiveLevel()
    if previous > handler.level:
        for other in target.handlers:
            if other.level < previous:
                other.setLevel(previous)
        target.setLevel(handler.level)  # else the logger would filter out what the handler is meant to send
    target.addHandler(handler)
    return handler
