"""Hostile input (hypothesis): whatever an app logs, nothing is raised into it, nothing the handler sends is
refused by the emulator, and every record is accounted for."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ces_logging import CESHandler
from ces_logging.emulator import Emulator
from ces_logging.events import (
    EVENT_NAME,
    RESOURCE_ID,
    derive_event_name,
    fit_content,
    validate_event,
)

from ..conftest import PROJECT

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(),
    st.binary(),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
ces_extra = st.one_of(
    anything,
    st.fixed_dictionaries(
        {},
        optional={
            "event_name": anything,
            "resource_id": anything,
            "resource_name": anything,
            "event_user": anything,
            "group_id": anything,
            "dimensions": st.one_of(anything, st.dictionaries(st.text(max_size=40), anything, max_size=8)),
        },
    ),
)


@pytest.fixture  # one test uses it: a wider scope would let another test's dictConfig close its handler
def hostile_setup() -> Iterator[tuple[Emulator, CESHandler, logging.Logger]]:
    with Emulator() as emu:
        h = CESHandler(project_id=PROJECT, endpoint=emu.url, flush_interval=0.05)
        log = logging.getLogger("hostile")
        log.propagate = False
        log.setLevel(1)
        log.addHandler(h)
        yield emu, h, log
        log.removeHandler(h)
        h.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    msg=st.one_of(st.text(max_size=6000), anything),
    args=st.one_of(st.just(()), st.tuples(anything), st.tuples(anything, anything)),
    extra=ces_extra,
    logger_suffix=st.text(max_size=80),
    level=st.integers(min_value=1, max_value=70),
    with_exc=st.booleans(),
)
def test_hostile_records(
    hostile_setup: tuple[Emulator, CESHandler, logging.Logger],
    msg: Any,
    args: tuple[Any, ...],
    extra: Any,
    logger_suffix: str,
    level: int,
    with_exc: bool,
) -> None:
    emu, h, base = hostile_setup
    log = base.getChild(logger_suffix) if logger_suffix and "." not in logger_suffix[:1] else base
    exc_info = (ValueError, ValueError("\udcff bad \x00"), None) if with_exc else None
    log.log(level, msg, *args, extra={"ces": extra}, exc_info=exc_info)  # must not raise
    assert h.flush(timeout=30)
    s = h.stats
    assert s.sent + s.dropped + s.queued == s.received
    assert s.dropped == 0, s.dropped_by_reason  # nothing refused, nothing lost
    assert emu.stats().get("rejected_requests", 0) == 0


@given(st.text(max_size=200))
def test_sanitisers_always_give_valid_values(text: str) -> None:
    name = derive_event_name(text)
    assert EVENT_NAME.check(name) is None
    rid = RESOURCE_ID.sanitise(text)
    assert rid is None or RESOURCE_ID.check(rid) is None


@given(st.text(max_size=9000))
def test_fit_content_bounds(text: str) -> None:
    out = fit_content(text)
    assert len(out) + out.count("\n") <= 4096
    if len(text) + text.count("\n") <= 4096:
        assert out == text
    else:
        assert " … [truncated " in out and out.startswith(text[:100].split("\n")[0][:50])


def test_validate_event_rejects_non_objects() -> None:
    assert validate_event("x") == ["item: must be an object, got str"]
