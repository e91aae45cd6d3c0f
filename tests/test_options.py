"""``Options``: one typed, checked, documented object for every setting of a handler.

Unit tests of the object (kwargs, strings, the environment and their precedence; each check; the repr without
secrets; documentation for every field), and through the handler against the emulator: what the options say is
what reaches the service, whichever way they were given.
"""

from __future__ import annotations

import logging
import pydoc
from pathlib import Path
from typing import Any

import pytest

from ces_logging import CESHandler, ConfigError, Options, configure, handler_factory
from ces_logging.emulator import Emulator
from ces_logging.options import SECRETS

from .conftest import AK, PROJECT, SK

ENV = {"CES_ENDPOINT": "http://127.0.0.1:9", "CES_PROJECT_ID": "envproject", "CES_EVENT_SOURCE": "env.source"}


# --- keyword arguments ------------------------------------------------------------------------------------------


def test_defaults_are_the_declared_ones() -> None:
    o = Options()
    assert (o.batch_size, o.flush_interval, o.queue_size, o.queue_max_bytes) == (100, 2.0, 100_000, 32 * 2**20)
    assert (o.overflow, o.overflow_timeout, o.max_in_flight, o.timeout, o.grace_period) == ("drop", 5.0, 4, 10.0, 5.0)
    assert (o.event_source, o.level, o.event_level, o.storm_control, o.context_records) == ("app.log", 0, None, None, 0)
    assert o.process_identity is True and o.handle_sigterm is True and o.verify is True and o.json_content is False
    assert o.given() == {} and repr(o) == "Options()"
    for f in Options.fields():
        assert getattr(o, f.name) == f.default == getattr(Options, f.name), f.name


def test_values_are_kept_in_one_form() -> None:
    """Whatever form an option is given in, the object keeps one: a level as its number, storm control as
    (N, W), seconds as floats, an endpoint without its trailing slash, dimension values as strings."""
    o = Options(
        level="info",
        event_level="ERROR",
        context_records=3,
        storm_control="10/2m",
        flush_interval=1,
        endpoint="http://127.0.0.1:9/ces/",
        dimensions={"n": 7},
        level_map={"WARNING": "Major"},
    )
    assert (o.level, o.event_level, o.storm_control, o.flush_interval) == (20, 40, (10, 120.0), 1.0)
    assert isinstance(o.flush_interval, float)
    assert o.endpoint == "http://127.0.0.1:9/ces"
    assert o.dimensions == {"n": "7"} and o.level_map == {30: "Major"}
    assert Options(storm_control="off").storm_control is None


def test_immutable_replace_and_equality() -> None:
    o = Options(batch_size=50)
    with pytest.raises(AttributeError, match="replace"):
        o.batch_size = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del o.batch_size
    p = o.replace(flush_interval=0.5)
    assert (o.flush_interval, p.flush_interval, p.batch_size) == (2.0, 0.5, 50)
    assert p.given() == {"batch_size": 50, "flush_interval": 0.5}
    assert o == Options(batch_size=50) and o != p and o != Options()
    with pytest.raises(ConfigError, match="batch_size"):
        o.replace(batch_size=0)  # checked as in the constructor


# --- strings (handler_factory, INI, YAML) -----------------------------------------------------------------------


def test_strings_are_read_as_each_options_type() -> None:
    o = Options.from_strings(
        batch_size=" 50 ",
        flush_interval="0.25",
        json_content="yes",
        process_identity="off",
        handle_sigterm="0",
        allow_insecure="TRUE",
        dimensions="env=prod, team=shop",
        level_map='{"WARNING": "Major"}',
        state_map="Minor=incident",
        verify="/etc/ssl/ca.pem",
        storm_control="10/5s",
        context_records="2",
        event_level="ERROR",
        level="INFO",
        event_name="viaStrings",
        spool_dir="/tmp/spool",
    )
    assert (o.batch_size, o.flush_interval, o.json_content, o.process_identity) == (50, 0.25, True, False)
    assert (o.handle_sigterm, o.allow_insecure, o.verify) == (False, True, "/etc/ssl/ca.pem")
    assert o.dimensions == {"env": "prod", "team": "shop"} and o.level_map == {30: "Major"}
    assert o.state_map == {"Minor": "incident"} and o.storm_control == (5 * 2, 5.0)
    assert (o.context_records, o.event_level, o.level, o.event_name, o.spool_dir) == (2, 40, 20, "viaStrings",
                                                                                      "/tmp/spool")  # fmt: skip
    assert Options.from_strings(verify="false").verify is False
    # values that are not strings (YAML's numbers and lists) are taken as they are
    assert Options.from_strings(batch_size=7, storm_control=[3, 1]).storm_control == (3, 1.0)


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"batch_size": "lots"}, "batch_size='lots'"),
        ({"flush_interval": "soon"}, "flush_interval"),
        ({"json_content": "maybe"}, "json_content"),
        ({"dimensions": "env"}, "dimensions"),
        ({"dimensions": "[1, 2]"}, "dimensions"),
        ({"level_map": "{not json"}, "level_map"),
        ({"token_provider": "my.module.Provider"}, "token_provider"),
        ({"colour": "red"}, "unknown option.*colour.*known: "),
    ],
)
def test_unreadable_strings_name_the_option(values: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Options.from_strings(**values)


# --- the environment, and precedence ----------------------------------------------------------------------------


def test_the_environment_fills_what_no_argument_gave() -> None:
    o = Options(batch_size=5).with_env(ENV)
    assert (o.endpoint, o.project_id, o.event_source, o.batch_size) == ("http://127.0.0.1:9", "envproject",
                                                                       "env.source", 5)  # fmt: skip
    assert o.given().keys() == {"endpoint", "project_id", "event_source", "batch_size"}  # repr shows where it went


def test_an_argument_wins_over_the_environment_and_the_environment_over_the_default() -> None:
    o = Options(project_id="argproject", event_source="arg.source").with_env(ENV)
    assert (o.project_id, o.event_source, o.endpoint) == ("argproject", "arg.source", "http://127.0.0.1:9")
    assert Options().with_env({}).event_source == "app.log"
    assert Options(event_source=None).with_env(ENV).event_source == "env.source"  # None: not given
    assert Options(event_source=None, batch_size=None) == Options() and repr(Options(level=None)) == "Options()"
    # the first variable of each option's list wins; an empty one counts as unset
    two = {"CES_REGION": "cn-north-4", "HUAWEICLOUD_SDK_REGION": "cn-east-3", "CES_PROJECT_ID": " ",
           "HUAWEICLOUD_SDK_PROJECT_ID": "sdkproject"}  # fmt: skip
    o = Options().with_env(two)
    assert (o.region, o.project_id) == ("cn-north-4", "sdkproject")
    assert Options().with_env({"HUAWEICLOUD_SDK_REGION": "cn-east-3"}).region == "cn-east-3"


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"event_source.*CES_EVENT_SOURCE"):
        Options().with_env({"CES_EVENT_SOURCE": "nodot"})
    with pytest.raises(ConfigError, match=r"endpoint.*environment"):
        Options().with_env({"CES_ENDPOINT": "ftp://example.com"})
    Options(event_source="ok.source").with_env({"CES_EVENT_SOURCE": "nodot"})  # not read: an argument gave it


def test_secrets_are_left_to_the_credential_chain() -> None:
    """The credential chain reads ``CES_AUTH_TOKEN`` and ``HUAWEICLOUD_SDK_AK/SK`` in the SDK's order;
    the options do not copy them (a copy would put an environment token ahead of the profile's keys)."""
    o = Options().with_env({"CES_AUTH_TOKEN": "t", "HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK})
    assert o.given() == {} and o.token is None and o.ak is None


def test_the_handler_sends_with_options_from_every_source(emu: Emulator, isolated_logger: logging.Logger) -> None:
    """Over HTTP: the endpoint and project from the environment, the source from an argument over the
    environment's, the event name from a string, the batch size from an Options object."""
    env = {"CES_ENDPOINT": emu.url, "CES_PROJECT_ID": PROJECT, "CES_EVENT_SOURCE": "env.source"}
    h = CESHandler(Options(batch_size=1), env=env, event_source="arg.source", **Options.read_strings(
        {"event_name": "fromOptions", "flush_interval": "0.05"}))  # fmt: skip
    isolated_logger.addHandler(h)
    assert h.options.batch_size == 1 and h.batch_size == 1 and h.flush_interval == 0.05
    isolated_logger.error("one")
    assert h.flush(timeout=10)
    (event,) = emu.events(PROJECT, "fromOptions")
    assert event["event_source"] == "arg.source" and event["detail"]["content"] == "one"
    s = h.stats
    assert s.sent + s.dropped + s.queued + s.folded == s.received == 1 and s.queued == 0


def test_handler_factory_and_configure_take_options(emu: Emulator, isolated_logger: logging.Logger) -> None:
    base = Options(project_id=PROJECT, endpoint=emu.url, flush_interval=0.05)
    h = handler_factory(options=base, batch_size="7", event_name="viaFactory")
    try:
        assert (h.options.batch_size, h.options.project_id, h.options.event_name) == (7, PROJECT, "viaFactory")
    finally:
        h.close()
    with pytest.raises(ConfigError, match="batch_size"):
        handler_factory(options=base, batch_size="0")
    c = configure(logger=isolated_logger, options=base.replace(event_name="viaConfigure"))
    assert c.level == logging.WARNING  # configure's own default level
    c = configure(logger=isolated_logger, options=base.replace(level="INFO"))
    assert c.level == logging.INFO and len(isolated_logger.handlers) == 1  # the level the object gives
    c = configure("ERROR", logger=isolated_logger, options=base.replace(level="INFO"), batch_size=3)
    assert c.level == logging.ERROR and c.options.batch_size == 3  # an argument over the object
    isolated_logger.error("configured")
    assert c.flush(timeout=10)
    assert [e["detail"]["content"] for e in emu.events(PROJECT, isolated_logger.name)] == ["configured"]


def test_the_handler_refuses_a_positional_that_is_not_options() -> None:
    with pytest.raises(ConfigError, match="by keyword"):
        CESHandler("proj0123456789")  # type: ignore[arg-type]


# --- every check ------------------------------------------------------------------------------------------------


BAD: list[tuple[dict[str, Any], str]] = [
    ({"project_id": "bad id!"}, "project_id"),
    ({"region": 4}, "region"),
    ({"endpoint": "ftp://example.com"}, "endpoint"),
    ({"endpoint": "http://example.com"}, "allow_insecure"),
    ({"endpoint": "https://example.com/?q=1"}, "query"),
    ({"event_source": "nodot"}, "event_source"),
    ({"event_name": "bad name"}, "event_name"),
    ({"resource_id": "has space"}, "resource_id"),
    ({"resource_name": "has space"}, "resource_name"),
    ({"group_id": "short"}, "group_id"),
    ({"event_user": "x" * 65}, "event_user"),
    ({"token_provider": object()}, "token_provider"),
    ({"dimensions": {f"d{i}": "v" for i in range(5)}}, "dimensions"),
    ({"dimensions": {"1x": "v"}}, "dimension name"),
    ({"dimensions": ["a"]}, "dimensions"),
    ({"level_map": {"ERROR": "Huge"}}, "level_map"),
    ({"level_map": {"LOUD": "Major"}}, "level_map"),
    ({"state_map": {"Major": "burning"}}, "state_map"),
    ({"json_content": "yes"}, "json_content"),
    ({"process_identity": 1}, "process_identity"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 101}, "batch_size"),
    ({"batch_size": True}, "batch_size"),
    ({"batch_size": "50"}, "batch_size"),
    ({"flush_interval": -1}, "flush_interval"),
    ({"queue_size": 0}, "queue_size"),
    ({"queue_max_bytes": 4095}, "queue_max_bytes"),
    ({"overflow": "wait"}, "overflow"),
    ({"overflow_timeout": -0.1}, "overflow_timeout"),
    ({"max_in_flight": 0}, "max_in_flight"),
    ({"max_in_flight": 17}, "max_in_flight"),
    ({"timeout": 0}, "timeout"),
    ({"grace_period": "5"}, "grace_period"),
    ({"spool_dir": 5}, "spool_dir"),
    ({"spool_max_bytes": 0}, "spool_max_bytes"),
    ({"handle_sigterm": "yes"}, "handle_sigterm"),
    ({"storm_control": "ten per minute"}, "storm_control"),
    ({"context_records": 101, "event_level": "ERROR"}, "context_records"),
    ({"context_records": 3}, "event_level"),
    ({"event_level": "LOUDEST"}, "event_level.*LOUDEST"),
    ({"level": "LOUD"}, "level"),
    ({"verify": 1}, "verify"),
    ({"allow_insecure": "no"}, "allow_insecure"),
    ({"colour": "red"}, "unknown option.*colour"),
]


@pytest.mark.parametrize(("values", "says"), BAD, ids=[next(iter(v)) + "-" + s[:12] for v, s in BAD])
def test_each_bad_value_is_a_config_error_naming_the_option(values: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Options(**values)


def test_every_option_has_a_check_in_the_table_above() -> None:
    checked = {k for values, _ in BAD for k in values}
    unchecked = {f.name for f in Options.fields()} - checked - {"ak", "sk", "security_token", "token"}
    assert not unchecked, f"options with no bad value tried: {sorted(unchecked)}"


def test_the_handler_raises_the_options_errors_before_it_is_built(emu: Emulator) -> None:
    for values, says in BAD[:3] + BAD[-4:]:
        with pytest.raises(ConfigError, match=says):
            CESHandler(**values)
    with pytest.raises(ConfigError, match="timeout"):
        CESHandler(env={}, timeout=0)  # an inactive handler too: the options are wrong either way


# --- secrets ----------------------------------------------------------------------------------------------------


def test_no_secret_in_a_repr_or_an_error() -> None:
    secrets = {"sk": SK, "token": "token-value-secret", "security_token": "sec-token-value"}
    o = Options(ak=AK, endpoint="http://127.0.0.1:9", project_id=PROJECT, **secrets)
    shown = repr(o) + str(o) + repr(o.replace(batch_size=5)) + repr(o.given().keys())
    assert all(v not in shown for v in secrets.values()), shown
    assert "sk='***'" in shown and "token='***'" in shown and f"ak={AK!r}" in shown
    assert set(secrets) == SECRETS
    with pytest.raises(ConfigError) as e:
        Options(sk=12345678)  # type: ignore[arg-type]
    assert "12345678" not in str(e.value) and "sk" in str(e.value)
    h = CESHandler(options=o.replace(token=None))  # one kind of credentials: AK/SK and a security token
    try:
        assert all(v not in repr(h) + repr(h.options) for v in secrets.values())
    finally:
        h.close()


# --- documentation ----------------------------------------------------------------------------------------------


def test_every_field_is_documented_with_its_default_unit_and_variable() -> None:
    fields = Options.fields()
    names = [f.name for f in fields]
    assert len(names) == len(set(names)) >= 37
    for f in fields:
        text = f.text()
        assert len(f.doc.split()) >= 4 and "Default: " in text, f.name
        if f.env:
            assert all(v in text for v in f.env), f.name
        if isinstance(f.default, float):
            assert f.unit == "seconds", f.name
    for subject in (Options, CESHandler):
        page = pydoc.render_doc(subject, renderer=pydoc.plaintext)
        missing = [n for n in names if f"{n} (" not in page]
        assert not missing, f"help({subject.__name__}) does not show {missing}"


def test_the_reference_page_renders_every_field() -> None:
    """The site's page is generated (``make docs``); here the extension that feeds it is run on the
    declarations, as mkdocstrings runs it."""
    griffe = pytest.importorskip("griffe")
    import sys

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "tools"))
    try:
        from griffe_options import OptionsFields
    finally:
        sys.path.remove(str(root / "tools"))
    package = griffe.load("ces_logging", search_paths=[str(root)], extensions=griffe.load_extensions(OptionsFields))
    cls = package["options.Options"]
    for f in Options.fields():
        attr = cls.members[f.name]
        assert attr.docstring is not None and attr.docstring.value == f.text(), f.name
        assert attr.value == repr(f.default), f.name
