"""The first hour's set-up mistakes (issue 14, section 3), and OpenTelemetry ids on events (section 6)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from ces_logging import CESHandler, ConfigError, configure
from ces_logging.emulator import Emulator

from .conftest import PROJECT, run_python

DJANGO_STYLE = """
    import logging, logging.config
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"cloud_eye": {"class": "ces_logging.CESHandler", "level": "ERROR",
                                   "event_source": "shop.web"}},
        "root": {"handlers": ["cloud_eye"], "level": "INFO"},
    })
    h = logging.getLogger().handlers[0]
    logging.getLogger("shop").error("no Cloud Eye here")
    s = h.stats
    print("active", h.active, "received", s.received, "reasons", s.dropped_by_reason, "queued", s.queued)
"""


def test_no_settings_at_all_makes_an_inactive_handler_and_the_app_runs() -> None:
    """A laptop, CI, a ``manage.py`` command: no endpoint, region or project id anywhere. The README's Django
    LOGGING must not crash the app: one line on stderr says the handler is inactive and how to turn it on;
    records are counted (``inactive``), nothing else is said, not even at exit."""
    r = run_python(DJANGO_STYLE, HUAWEICLOUD_SDK_CREDENTIALS_FILE="/nonexistent")
    assert r.returncode == 0, r.stderr
    assert "active False received 1 reasons {'inactive': 1} queued 0" in r.stdout
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "inactive" in lines[0] and "CES_ENDPOINT" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_given_but_wrong_still_raises() -> None:
    with pytest.raises(ConfigError, match="endpoint"):
        CESHandler(endpoint="ftp://example.com", project_id=PROJECT)
    with pytest.raises(ConfigError, match="project"):
        CESHandler(endpoint="http://127.0.0.1:9", env={})  # an endpoint but no project id: a mistake, said


def test_a_half_built_handler_leaves_nothing_for_exit_to_trip_on() -> None:
    """A ConfigError in the middle of the constructor (here: a bad option after the client is made): no
    second traceback at exit, no attribute errors from the exit drain, fork hook or logging.shutdown."""
    r = run_python("""
        import logging, os
        from ces_logging import CESHandler, ConfigError
        for bad in ({"dimensions": {"1bad": "x"}}, {"spool_max_bytes": 0}, {"event_source": "nodot"}):
            try:
                CESHandler(project_id="p1", endpoint="http://127.0.0.1:9", **bad)
            except ConfigError as e:
                print("refused:", e)
        if os.fork() == 0:
            os._exit(0)
        os.wait()
        logging.shutdown()
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("refused:") == 3
    assert r.stderr == "", r.stderr


@pytest.fixture
def root_console() -> Iterator[io.StringIO]:
    """The root logger with a console handler at WARNING (as an app has it), restored afterwards."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    out = io.StringIO()
    console = logging.StreamHandler(out)
    root.handlers[:] = [console]
    root.setLevel(logging.WARNING)
    yield out
    for h in list(root.handlers):
        if h is not console:
            root.removeHandler(h)
            h.close()
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]


def test_configure_info_keeps_what_other_handlers_print(emu: Emulator, root_console: io.StringIO) -> None:
    """``configure(level="INFO")`` lowers the root logger so that INFO reaches Cloud Eye, and gives the
    console (which had no level of its own) the root's previous one: it prints what it printed before."""
    h = configure(level="INFO", project_id=PROJECT, endpoint=emu.url, event_name="cfgInfo", flush_interval=0.05)
    log = logging.getLogger("cfg.info")
    log.info("only for Cloud Eye")
    log.warning("for both")
    assert h.flush(timeout=10)
    assert root_console.getvalue() == "for both\n"
    got = sorted(e["detail"]["content"] for e in emu.events(PROJECT, "cfgInfo"))
    assert got == ["for both", "only for Cloud Eye"]
    s = h.stats
    assert s.sent + s.dropped + s.queued == s.received and s.queued == 0


@pytest.fixture
def sdk_trace() -> Any:
    """The OpenTelemetry SDK's tracing, or a skip of the test that needs it (and only of that one)."""
    return pytest.importorskip("opentelemetry.sdk.trace")


@pytest.mark.parametrize("json_content", [False, True])
def test_trace_ids_on_events_of_a_traced_app(
    emu: Emulator, isolated_logger: logging.Logger, json_content: bool, sdk_trace: Any
) -> None:
    """With a recording span, the event carries its trace and span ids: a short suffix on text, two fields
    in JSON. Without a span, nothing is added."""
    name = "traced" + ("Json" if json_content else "Text")
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name=name, flush_interval=0.05,
                   json_content=json_content)  # fmt: skip
    isolated_logger.addHandler(h)
    tracer = sdk_trace.TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("checkout") as span:
        ctx = span.get_span_context()
        isolated_logger.error("in a span")
    isolated_logger.error("outside")
    assert h.flush(timeout=10)
    by = {}
    for e in emu.events(PROJECT, name):
        c = e["detail"]["content"]
        by["in" if "in a span" in c else "out"] = c
    trace_id, span_id = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
    if json_content:
        doc = json.loads(by["in"])
        assert (doc["trace_id"], doc["span_id"]) == (trace_id, span_id)
        assert "trace_id" not in json.loads(by["out"])
    else:
        assert by["in"] == f"in a span [trace_id={trace_id} span_id={span_id}]"
        assert by["out"] == "outside"
    s = h.stats
    assert s.sent + s.dropped + s.queued == s.received and s.queued == 0
