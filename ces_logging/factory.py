"""Building a handler from settings: ``handler_factory`` (dictConfig, INI, YAML: every option may be a string)
and ``configure`` (one line for scripts).

Kept apart from ``config.py`` (where settings come from: env, regions, endpoints), which ``handler.py`` imports:
this module imports ``handler.py``, so the two never import each other.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from .errors import ConfigError
from .handler import CESHandler

_BOOL: Final = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_INT_OPTS: Final = (
    "batch_size",
    "queue_size",
    "queue_max_bytes",
    "spool_max_bytes",
    "max_in_flight",
    "context_records",
)
_FLOAT_OPTS: Final = ("flush_interval", "timeout", "grace_period", "overflow_timeout")
_BOOL_OPTS: Final = ("json_content", "allow_insecure", "process_identity", "handle_sigterm")
_MAP_OPTS: Final = ("dimensions", "level_map", "state_map")


def _convert(key: str, value: object) -> object:
    """Strings (from INI, YAML or env) to the option's type; a clear error names the key."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if key in _INT_OPTS:
            return int(text)
        if key in _FLOAT_OPTS:
            return float(text)
        if key in _BOOL_OPTS:
            return _BOOL[text.lower()]
        if key == "verify":
            return _BOOL.get(text.lower(), text)  # a CA bundle path stays a path
        if key in _MAP_OPTS:
            # "name=value,name2=value2" (JSON objects are accepted too)
            if text.startswith("{"):
                loaded = json.loads(text)
                if not isinstance(loaded, dict):
                    raise ValueError("not an object")
                return loaded
            pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError("expected name=value pairs separated by commas")
            return {k.strip(): v.strip() for k, v in pairs}
    except (ValueError, KeyError) as e:
        raise ConfigError(f"option {key}={value!r} cannot be read: {e or 'bad value'}") from None
    return text


def _handler_options() -> set[str]:
    """``CESHandler``'s keyword names, read from its code object (``inspect.signature`` would load inspect,
    ast and dis at import: every process pays that)."""
    code = CESHandler.__init__.__code__
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    return set(names) - {"self", "client", "env"}


def handler_factory(**options: object) -> CESHandler:
    """A ``CESHandler`` from options that may all be strings: for dictConfig's
    ``"()": "ces_logging.handler_factory"``, INI files, YAML and the environment.

    Takes the options of ``CESHandler`` (all but ``client`` and ``env``). A string is read as the option's
    type: integers and seconds as numbers, ``true``/``false`` (and ``1``/``0``, ``yes``/``no``) for switches,
    ``"name=value,name2=value2"`` or a JSON object for ``dimensions``, ``level_map`` and ``state_map``;
    ``verify`` is a switch or a CA bundle's path.

    Raises:
        ConfigError: An unknown option (the message lists the known ones), or a value that cannot be read
            (the message names its key).
    """
    known = _handler_options()
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {k: _convert(k, v) for k, v in options.items()}
    return CESHandler(**kwargs)  # type: ignore[arg-type]


def configure(
    level: int | str = "WARNING", logger: str | logging.Logger | None = None, **handler_kwargs: Any
) -> CESHandler:
    """One line for scripts: a ``CESHandler`` on the root logger (or the one given) at ``level``.

    Reads ``CES_ENDPOINT``, ``CES_REGION``, ``CES_PROJECT_ID`` (or ``HUAWEICLOUD_SDK_PROJECT_ID``),
    ``CES_EVENT_SOURCE``, ``CES_AUTH_TOKEN`` and the credential chain for what is not passed. Calling it again
    replaces the handler it added before (no second worker).

    When the logger's level would filter out what the handler is meant to send, the logger is lowered to the
    handler's level, and the logger's other handlers that had no level of their own get the logger's previous
    one: what they printed before, they print now, no more (a console at WARNING does not start printing
    INFO because Cloud Eye wants it)."""
    handler = CESHandler(level=level, **handler_kwargs)
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
