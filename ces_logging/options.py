"""``Options``: every setting of a ``CESHandler``, typed, checked and documented in one place.

Each option is declared once, below, with its type, default, unit, environment variable and documentation; the
class docstring (what ``help()`` and the reference page show) and ``CESHandler``'s are generated from those
declarations, so a new option is documented where it is declared or not at all.

One object is built from three sources, in this order of precedence: keyword arguments (typed, as in code and
``dictConfig``'s ``"class"``), strings (``Options.from_strings``: ``handler_factory``, INI and YAML files), then the
environment (``Options.with_env``: the ``CES_*`` variables each field names), then the field's default. Every check
runs when the object is made and raises ``ConfigError`` naming the option (never quoting a secret), so a bad setting
is found when the app starts, never when it logs. Credentials are the exception to the environment rule: the
credential chain (``credentials.py``) reads their variables, in the official SDK's order.

Cheap to import (``import ces_logging`` loads it): no ``dataclasses`` (it loads ``inspect``), no HTTP stack.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from .config import (
    ENV_ENDPOINT,
    ENV_EVENT_SOURCE,
    ENV_PROJECT_IDS,
    ENV_REGION,
    ENV_SDK_REGION,
    ENV_TOKEN,
    check_endpoint,
    env_first,
)
from .context import MAX_CONTEXT_RECORDS
from .errors import ConfigError
from .events import (
    DIMENSION_NAME,
    DIMENSION_VALUE,
    EVENT_NAME,
    EVENT_USER,
    GROUP_ID,
    LEVELS,
    MAX_DIMENSIONS,
    MAX_EVENTS_PER_REQUEST,
    PROJECT_ID,
    RESOURCE_ID,
    RESOURCE_NAME,
    STATES,
    TextRule,
    check_event_source,
)
from .storm import parse_storm_control
from .throttle import DEFAULT_MAX_IN_FLIGHT

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform

    from ._service.auth import TokenProvider
else:

    def dataclass_transform(**_: object) -> Callable[[Any], Any]:
        """Only for type checkers (``typing`` has it from 3.11 on): they read ``Options``' fields as a frozen,
        keyword-only dataclass's, so ``Options(batch_size="x")`` is a type error before it is a ConfigError."""
        return lambda f: f


__all__ = ["OVERFLOW_POLICIES", "SECRETS", "FieldsInDoc", "Options", "parse_level"]

OVERFLOW_POLICIES: Final = ("drop", "block")
MAX_IN_FLIGHT_LIMIT: Final = 16
SECRETS: Final = frozenset({"sk", "security_token", "token"})  # never in a repr (ak, the key's id, may be)
_HIDDEN: Final = "'***'"
_BOOL: Final = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}

Check = Callable[[str, Any], Any]  # (option name, value) -> the value as kept, or ConfigError
Read = Callable[[str], Any]  # a string (INI, YAML, environment) -> the option's type, or ValueError


# --- the checks: one per kind of option -----------------------------------------------------------------------


def parse_level(level: int | str, name: str = "level") -> int:
    """A logging level from its number or name (``"ERROR"``, ``"error"``, ``"40"``)."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str):
        if level.strip().lstrip("-").isdigit():
            return int(level)
        value = logging.getLevelName(level.strip().upper())
        if isinstance(value, int):
            return value
    raise ConfigError(f"{name}: unknown logging level {level!r}")


def _level(name: str, value: Any) -> int:
    return parse_level(value, name)


def _optional_level(name: str, value: Any) -> int | None:
    return None if value is None else parse_level(value, name)


def _integer(low: int, high: int | None = None, why: str = "") -> Check:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f">= {low}"
            raise ConfigError(f"{name} must be an integer {span}{why}, got {value!r}")
        return value

    return check


def _seconds(positive: bool = False) -> Check:
    def check(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (positive and value == 0):
            what = "a positive number of seconds" if positive else "a number of seconds >= 0"
            raise ConfigError(f"{name} must be {what}, got {value!r}")
        return float(value)

    return check


def _switch(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def _text(rule: TextRule | None = None) -> Check:
    """An optional string; checked by the API's rule for that field when there is one."""

    def check(name: str, value: Any) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {type(value).__name__}")
        if rule is not None and (why := rule.check(value)):
            raise ConfigError(f"{name} {value!r} is not valid: {why}")
        return value

    return check


def _secret(name: str, value: Any) -> str | None:
    """Its value is checked by ``auth.py`` (which never quotes it); here only its type, never quoted."""
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {type(value).__name__}")
    return value or None


def _event_source(name: str, value: Any) -> str:
    if why := check_event_source(value):
        raise ConfigError(f"{name} {value!r} is not valid: {why}")
    return str(value)


def _token_provider(name: str, value: Any) -> Any:
    if value is not None and not callable(getattr(value, "token", None)):
        raise ConfigError(f"{name} must be an object with a token() method, got {type(value).__name__}")
    return value


def _mapping(name: str, value: Any) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping, got {type(value).__name__}")
    return value


def _dimensions(name: str, value: Any) -> dict[str, str] | None:
    if not value:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping of name to value, got {type(value).__name__}")
    if len(value) > MAX_DIMENSIONS:
        raise ConfigError(f"at most {MAX_DIMENSIONS} {name} are allowed, got {len(value)}")
    out = {}
    for key, v in value.items():
        if why := DIMENSION_NAME.check(key):
            raise ConfigError(f"dimension name {key!r} is not valid: {why}")
        if why := DIMENSION_VALUE.check(str(v)):
            raise ConfigError(f"dimension {key!r} value is not valid: {why}")
        out[key] = str(v)
    return out


def _level_map(name: str, value: Any) -> dict[int, str] | None:
    if not value:
        return None
    out = {}
    for k, v in _mapping(name, value).items():
        if v not in LEVELS:
            raise ConfigError(f"{name}: {v!r} is not a Cloud Eye level ({', '.join(LEVELS)})")
        out[parse_level(k, name)] = v
    return out


def _state_map(name: str, value: Any) -> dict[str, str] | None:
    if not value:
        return None
    for k, v in _mapping(name, value).items():
        if k not in LEVELS or v not in STATES:
            raise ConfigError(
                f"{name}: {k!r} -> {v!r} must map a level ({', '.join(LEVELS)}) to a state ({', '.join(STATES)})"
            )
    return dict(value)


def _choice(*allowed: str) -> Check:
    def check(name: str, value: Any) -> str:
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        return str(value)

    return check


def _storm(name: str, value: Any) -> tuple[int, float] | None:
    return parse_storm_control(value)


def _path(name: str, value: Any) -> str | os.PathLike[str] | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(f"{name} must be a directory's path, got {type(value).__name__}")
    return value


def _verify(name: str, value: Any) -> bool | str:
    if not isinstance(value, bool | str):
        raise ConfigError(f"{name} must be True, False or a CA bundle's path, got {type(value).__name__}")
    return value


# --- reading strings --------------------------------------------------------------------------------------------


def _read_bool(text: str) -> bool:
    try:
        return _BOOL[text.lower()]
    except KeyError:
        raise ValueError("expected true or false") from None


def _read_verify(text: str) -> bool | str:
    return _BOOL.get(text.lower(), text)  # a CA bundle's path stays a path


def _read_map(text: str) -> dict[str, str]:
    """``"name=value,name2=value2"``, or a JSON object."""
    if text.startswith("{"):
        loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise ValueError("not an object")
        return loaded
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError("expected name=value pairs separated by commas")
    return {k.strip(): v.strip() for k, v in pairs}


def _no_string(text: str) -> Any:
    raise ValueError("an object, not a string")


# --- the declarations -------------------------------------------------------------------------------------------


class Field:
    """One option: what ``option()`` declares. ``Options.fields()`` lists them in declaration order."""

    __slots__ = ("check", "default", "doc", "env", "name", "read", "secret", "shown", "type", "unit")

    def __init__(
        self, default: Any, doc: str, check: Check, read: Read | None, env: tuple[str, ...], unit: str, shown: str
    ) -> None:
        self.name = ""  # set by _options_class, from the attribute's name
        self.type = ""
        self.default = default
        self.doc = doc
        self.check = check
        self.read = read
        self.env = env
        self.unit = unit
        self.shown = shown
        self.secret = False

    def text(self) -> str:
        """What the field does, then its default, unit and environment variables: its documentation."""
        shown = self.shown or ("none" if self.default is None else f"``{self.default!r}``")
        tail = [f"Default: {shown}."]
        if self.unit:
            tail.append(f"Unit: {self.unit}.")
        if self.env:
            tail.append(f"Environment: {' or '.join(f'``{e}``' for e in self.env)}.")
        return f"{self.doc} {' '.join(tail)}"

    def describe(self) -> str:
        """The field's entry in a Google-style ``Attributes:`` section (what ``help()`` shows)."""
        return f"{self.name} ({self.type}): {self.text()}"


def option(
    *,
    default: Any,
    doc: str,
    check: Check,
    read: Read | None = None,
    env: tuple[str, ...] = (),
    unit: str = "",
    shown: str = "",
) -> Any:
    """Declares one field of ``Options``.

    Args:
        default: The value when neither an argument, a string nor the environment gives one.
        doc: What the option does, in the reader's words (the reference page and ``help()`` show it).
        check: ``(name, value) -> value as kept``; raises ``ConfigError`` naming the option.
        read: How a string (``handler_factory``, INI, YAML, the environment) becomes the option's type; None: the
            string is the value (the check reads it).
        env: Environment variables read, in order, when no argument gives a value.
        unit: The unit of a number (seconds, bytes, ...).
        shown: The default as the documentation says it, when ``repr(default)`` would not say it well.
    """
    return Field(default, doc, check, read, env, unit, shown)


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(option,))
def _options_class(cls: type[Options]) -> type[Options]:
    """Collects the ``option()`` declarations of ``cls`` (in order) and puts their defaults in their place. For a
    type checker, it makes ``cls`` a frozen, keyword-only dataclass of those fields."""
    fields = []
    for name, value in list(vars(cls).items()):
        if isinstance(value, Field):
            value.name = name
            value.type = cls.__annotations__[name]
            value.secret = name in SECRETS
            fields.append(value)
            setattr(cls, name, value.default)
    cls._fields = tuple(fields)
    cls._by_name = {f.name: f for f in fields}
    return cls


class FieldsInDoc(type):
    """The metaclass of ``Options`` and ``CESHandler``: their docstring (``help()``, pydoc, IDEs) ends with an
    entry per option, made from the declarations when first read. Made at import, it would cost every process
    about a millisecond that almost none of them uses."""

    _fields_heading = "Options:"

    @property
    def __doc__(cls) -> str | None:  # type: ignore[override]  # read-only: assigning it would drop the entries
        own: str | None = vars(cls).get("__doc__")
        if own is None or not isinstance(own, str):
            return own
        full: str | None = vars(cls).get("_full_doc")
        if full is None:
            full = own.rstrip() + "\n\n" + describe(Options.fields(), cls._fields_heading)
            type.__setattr__(cls, "_full_doc", full)
        return full


def describe(fields: tuple[Field, ...] | list[Field], heading: str, indent: str = "    ") -> str:
    """``heading`` and one indented entry per field, as Google-style docstrings write them; each line starts
    with ``indent``, the indentation of the class docstring it is appended to (``help()`` removes it)."""
    lines = [indent + heading]
    for f in fields:
        lines.extend(_wrap(f.describe(), indent + "    ", indent + "        "))
    return "\n".join(lines) + "\n"


def _wrap(text: str, first: str, rest: str, width: int = 100) -> list[str]:
    """Words into lines of at most ``width`` characters (``textwrap`` would be one more import for every process)."""
    lines: list[str] = []
    line = first
    for word in text.split():
        if len(line) + len(word) + 1 > width and line.strip():
            lines.append(line)
            line = rest
        line += word if line in (first, rest) else " " + word
    lines.append(line)
    return lines


@_options_class
class Options(metaclass=FieldsInDoc):
    """Every setting of a ``CESHandler``, checked when the object is made.

    ``Options(batch_size=50, flush_interval=0.5)`` takes each option by keyword, typed;
    ``Options.from_strings(batch_size="50")`` takes strings (as ``handler_factory`` and configuration files give
    them); ``options.with_env()`` adds what the environment sets for the options not given; ``options.replace()``
    changes some. Precedence: an argument, then the environment, then the default; ``None`` for an option means its
    default. The object is immutable, and its ``repr`` shows the options given, never a secret's value.

    ``CESHandler(options=...)``, ``handler_factory(options=...)`` and ``configure(options=...)`` take one; each of
    them also takes the options as keywords and builds it.

    Raises:
        ConfigError: An unknown option (the message lists the known ones), or a value that is wrong (the message
            names the option, never a secret's value).
    """

    _fields_heading: ClassVar[str] = "Attributes:"
    _fields: ClassVar[tuple[Field, ...]] = ()  # set by _options_class
    _by_name: ClassVar[Mapping[str, Field]] = {}
    _given: ClassVar[frozenset[str]] = frozenset()  # each instance has its own: the names given

    # --- where to send, and as whom ---

    project_id: str | None = option(
        default=None,
        check=_text(PROJECT_ID),
        env=ENV_PROJECT_IDS,
        shown="the environment, else the credentials profile file's",
        doc="The project id (1-64 letters, digits, ``_``, ``-``).",
    )
    region: str | None = option(
        default=None,
        check=_text(),
        env=(ENV_REGION, ENV_SDK_REGION),
        doc="A region id such as ``cn-north-4``; the endpoint is then ``https://ces.{region}.myhuaweicloud.com`` "
        "(or ``HUAWEICLOUD_SDK_REGION_CES_<REGION>`` when set).",
    )
    endpoint: str | None = option(
        default=None,
        check=_text(),
        env=(ENV_ENDPOINT,),
        doc="The service's URL; wins over ``region``. A plain ``http://`` endpoint must be this machine unless "
        "``allow_insecure`` is set.",
    )
    ak: str | None = option(
        default=None,
        check=_secret,
        shown="the credential chain (``HUAWEICLOUD_SDK_AK``, the profile file, the ECS metadata)",
        doc="Access key for AK/SK signing (SDK-HMAC-SHA256).",
    )
    sk: str | None = option(
        default=None,
        check=_secret,
        shown="the credential chain (``HUAWEICLOUD_SDK_SK``, ...)",
        doc="Secret key, with ``ak``. Never shown in a ``repr``, a log line, an exception or the CLI.",
    )
    security_token: str | None = option(
        default=None,
        check=_secret,
        shown="the credential chain (``HUAWEICLOUD_SDK_SECURITY_TOKEN``, ...)",
        doc="The security token of temporary keys, with ``ak`` and ``sk``. Never shown.",
    )
    token: str | None = option(
        default=None,
        check=_secret,
        shown=f"the credential chain (``{ENV_TOKEN}``, ...)",
        doc="A fixed IAM token, sent as ``X-Auth-Token``. Never shown.",
    )
    token_provider: TokenProvider | None = option(
        default=None,
        check=_token_provider,
        read=_no_string,
        doc="An object whose ``token()`` returns a current token, such as ``IAMPasswordTokenProvider``; asked "
        "before each request and refreshed after a 401. Not from a string.",
    )

    # --- what each event says ---

    event_source: str = option(
        default="app.log",
        check=_event_source,
        env=(ENV_EVENT_SOURCE,),
        doc="The events' source, ``service.item``, 3-32 characters.",
    )
    event_name: str | None = option(
        default=None,
        check=_text(EVENT_NAME),
        shown="the logger's name",
        doc="A fixed event name for every record. By default the logger's name with ``.`` and other characters "
        "outside the API's set as ``_`` (``shop.checkout`` becomes ``shop_checkout``).",
    )
    resource_id: str | None = option(
        default=None, check=_text(RESOURCE_ID), doc="``detail.resource_id`` of every event."
    )
    resource_name: str | None = option(
        default=None,
        check=_text(RESOURCE_NAME),
        doc="``detail.resource_name`` of every event; the process identity follows it (``process_identity``).",
    )
    group_id: str | None = option(
        default=None, check=_text(GROUP_ID), doc="``detail.group_id`` (a resource group's 24-character id)."
    )
    event_user: str | None = option(default=None, check=_text(EVENT_USER), doc="``detail.event_user`` of every event.")
    dimensions: Mapping[str, Any] | None = option(
        default=None,
        check=_dimensions,
        read=_read_map,
        doc=f"Up to {MAX_DIMENSIONS} dimension names and values, on every event (a record's own are merged in). "
        'As a string: ``"name=value,name2=value2"`` or a JSON object.',
    )
    level_map: Mapping[int | str, str] | None = option(
        default=None,
        check=_level_map,
        read=_read_map,
        doc="``{logging level or its name: Cloud Eye level}`` thresholds, added to the defaults (CRITICAL and up: "
        "Critical, ERROR: Major, WARNING: Minor, below: Info). As a string: as ``dimensions``.",
    )
    state_map: Mapping[str, str] | None = option(
        default=None,
        check=_state_map,
        read=_read_map,
        doc="``{Cloud Eye level: event state}``, added to the defaults (Critical and Major: incident, Minor: "
        "warning, Info: normal). As a string: as ``dimensions``.",
    )
    json_content: bool = option(
        default=False,
        check=_switch,
        read=_read_bool,
        doc="Render the content as JSON (python-json-logger), kept valid JSON when it must be cut.",
    )
    process_identity: bool = option(
        default=True,
        check=_switch,
        read=_read_bool,
        doc="Put ``{host}@{pid}.{token}`` into ``resource_name`` so that records of different processes never "
        "merge under the service's same-event rule.",
    )

    # --- delivery ---

    batch_size: int = option(
        default=MAX_EVENTS_PER_REQUEST,
        check=_integer(1, MAX_EVENTS_PER_REQUEST, " (the API's limit)"),
        read=int,
        unit="events",
        doc=f"Events per request, 1-{MAX_EVENTS_PER_REQUEST} (the API's limit).",
    )
    flush_interval: float = option(
        default=2.0,
        check=_seconds(),
        read=float,
        unit="seconds",
        doc="How long a partial batch waits for more records before it is sent.",
    )
    queue_size: int = option(
        default=100_000,
        check=_integer(1),
        read=int,
        unit="records",
        doc="Records held in memory at most (the buffer between ``emit`` and the worker).",
    )
    queue_max_bytes: int = option(
        default=32 * 2**20,
        check=_integer(4096),
        read=int,
        unit="bytes",
        shown="32 MiB",
        doc="Bytes held in memory at most, 4096 or more (a queued record costs its content text, at most about "
        "4 KB, and about 240 bytes; never its arguments or traceback frames).",
    )
    overflow: str = option(
        default="drop",
        check=_choice(*OVERFLOW_POLICIES),
        doc='What ``emit`` does when the buffer is full: ``"drop"`` the new record (counted as ``queue_full``), '
        'or ``"block"`` for up to ``overflow_timeout`` waiting for room. With a spool, twice the bounds are let '
        'in while the worker spills to disk, and ``"block"`` waits for the spill.',
    )
    overflow_timeout: float = option(
        default=5.0,
        check=_seconds(),
        read=float,
        unit="seconds",
        doc='How long ``overflow="block"`` waits at most.',
    )
    max_in_flight: int = option(
        default=DEFAULT_MAX_IN_FLIGHT,
        check=_integer(1, MAX_IN_FLIGHT_LIMIT),
        read=int,
        unit="requests",
        doc=f"Requests in flight at once to one service, 1-{MAX_IN_FLIGHT_LIMIT}. The limit adapts (fewer after a "
        "429, a 5xx or a connection error; more while healthy and while more pay), and is shared by every handler "
        "of the process that talks to the same endpoint and project.",
    )
    timeout: float = option(
        default=10.0,
        check=_seconds(positive=True),
        read=float,
        unit="seconds",
        doc="How long a request may take in all (a total deadline, not a per-read one).",
    )
    grace_period: float = option(
        default=5.0,
        check=_seconds(),
        read=float,
        unit="seconds",
        doc="What ``close()``, ``flush()`` without a timeout, interpreter exit and SIGTERM give delivery, retries "
        "included.",
    )
    spool_dir: str | os.PathLike[str] | None = option(
        default=None,
        check=_path,
        shown="no spool",
        doc="A directory for the durable on-disk spool: batches that cannot be delivered now go there and are "
        "sent later, by this process or the next one with the same directory.",
    )
    spool_max_bytes: int = option(
        default=50 * 2**20,
        check=_integer(1),
        read=int,
        unit="bytes",
        shown="50 MiB",
        doc="The spool's size cap; over it the oldest files go first (``spool_full``).",
    )
    handle_sigterm: bool = option(
        default=True,
        check=_switch,
        read=_read_bool,
        doc="Drain on SIGTERM, then hand the signal on to the handler that was there (or end by SIGTERM as "
        "before). ``False`` leaves SIGTERM alone.",
    )

    # --- events worth alarming on (alarms.py) ---

    storm_control: tuple[int, float] | str | None = option(
        default=None,
        check=_storm,
        shown="off",
        doc='``"N/Ws"`` (``"10/5s"``, ``"10/2m"``) or ``(N, W)``: per group of alike records, N events per W '
        "seconds, then one summary event for the rest. Kept as the tuple ``(N, W)``.",
    )
    context_records: int = option(
        default=0,
        check=_integer(0, MAX_CONTEXT_RECORDS),
        read=int,
        unit="records",
        doc=f"The last N (0-{MAX_CONTEXT_RECORDS}) records below ``event_level``, per thread or asyncio task, go "
        "into the content of the next event. Needs ``event_level``.",
    )
    event_level: int | str | None = option(
        default=None,
        check=_optional_level,
        shown="every record the handler sees is an event",
        doc="Records below this level (a level or its name) are not events; with ``context_records`` they are kept "
        "as context. Kept as the level's number.",
    )
    level: int | str = option(
        default=logging.NOTSET,
        check=_level,
        shown="``NOTSET`` (0)",
        doc="The handler's logging level (what it sees at all); a level or its name, kept as its number.",
    )

    # --- the connection ---

    verify: bool | str = option(
        default=True,
        check=_verify,
        read=_read_verify,
        doc="TLS verification: ``True``, ``False`` or a CA bundle's path.",
    )
    allow_insecure: bool = option(
        default=False,
        check=_switch,
        read=_read_bool,
        doc="Allow a plain ``http://`` endpoint on another host (events and credentials then travel unencrypted).",
    )

    # --- construction -----------------------------------------------------------------------------------------

    if not TYPE_CHECKING:  # type checkers see the fields' signature (dataclass_transform above)

        def __init__(self, **values: Any) -> None:
            unknown = sorted(set(values) - set(self._by_name))
            if unknown:
                raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(self._by_name))}")
            given = {k: v for k, v in values.items() if v is not None}  # None: the default (YAML's null)
            kept = self.__dict__
            for f in self._fields:
                kept[f.name] = f.check(f.name, given[f.name]) if f.name in given else f.default
            kept["_given"] = frozenset(given)
            self._check_together()

    def _check_together(self) -> None:
        """The rules between options."""
        if self.context_records and self.event_level is None:
            raise ConfigError(
                "context_records keeps the records below event_level: set event_level (say 'ERROR') and a lower "
                "level for the handler and its logger (say 'INFO'), so that the handler sees those records"
            )
        if self.endpoint is not None:
            self.__dict__["endpoint"] = check_endpoint(self.endpoint, allow_insecure=self.allow_insecure)

    @classmethod
    def from_strings(cls, **values: object) -> Options:
        """Options from values that may be strings (``handler_factory``, INI, YAML): each string is read as its
        option's type (integers and seconds as numbers; ``true``/``false``, ``1``/``0``, ``yes``/``no``,
        ``on``/``off`` for switches); values of other types are taken as they are."""
        return cls(**cls.read_strings(values))

    @classmethod
    def read_strings(cls, values: Mapping[str, object]) -> dict[str, Any]:
        """Each string of ``values`` read as its option's type, as ``from_strings`` does, unchecked (the
        constructor checks)."""
        return {k: cls._read(k, v) for k, v in values.items()}

    @classmethod
    def _read(cls, name: str, value: object, source: str = "") -> object:
        f = cls._by_name.get(name)
        if f is None or f.read is None or not isinstance(value, str):
            return value  # an unknown name is refused by __init__, with the list of known ones
        try:
            return f.read(value.strip())
        except (ValueError, KeyError) as e:
            shown = "***" if f.secret else repr(value)
            raise ConfigError(f"option {name}={shown}{source} cannot be read: {e or 'bad value'}") from None

    def with_env(self, env: Mapping[str, str] | None = None) -> Options:
        """These options, with each one not given taken from its environment variable when that is set
        (``os.environ``, or ``env``)."""
        env = os.environ if env is None else env
        values = self.given()
        for f in self._fields:
            if not f.env or values.get(f.name) not in (None, ""):
                continue
            for var in f.env:
                text = env_first(env, var)
                if text is not None:
                    value = self._read(f.name, text, f" (from {var})")
                    try:
                        f.check(f.name, value)
                    except ConfigError as e:
                        raise ConfigError(f"{e} (from {var})") from None
                    values[f.name] = value
                    break
        if values.keys() == self._given:
            return self
        try:
            return type(self)(**values)
        except ConfigError as e:
            raise ConfigError(f"{e} (set in the environment)") from None

    def replace(self, **changes: Any) -> Options:
        """A copy with ``changes`` applied (checked as in the constructor)."""
        return type(self)(**{**self.given(), **changes})

    def given(self) -> dict[str, Any]:
        """The options given (by argument, string or environment), as kept: what ``repr`` shows."""
        return {f.name: getattr(self, f.name) for f in self._fields if f.name in self._given}

    @classmethod
    def fields(cls) -> tuple[Field, ...]:
        """Every option's declaration, in order: name, type, default, unit, environment variables, doc."""
        return cls._fields

    # --- an immutable value ---------------------------------------------------------------------------------

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Options are immutable: use options.replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Options are immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in self._fields)

    __hash__ = None  # type: ignore[assignment]  # mappings inside: not hashable

    def __repr__(self) -> str:
        shown = (
            f"{name}={_HIDDEN if value is not None and self._by_name[name].secret else repr(value)}"
            for name, value in self.given().items()
        )
        return f"Options({', '.join(shown)})"
