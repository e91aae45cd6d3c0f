"""The logging libraries apps put in front of logging (issue 16): each recipe in examples/ runs in its own
process against the emulator, and every event's content is exactly what a StreamHandler with the same formatter
printed for the same record (both handlers on one logger, so timestamps in the formats are the same record's).

What is compared: the StreamHandler's output is the events' contents, in the order logged, each followed by the
StreamHandler's terminator, and nothing else. Then the fields that bound key-values (``ces_...``) choose."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from loguru import logger

from ces_logging import CESHandler
from ces_logging.emulator import Emulator

from .conftest import PROJECT, ROOT


def run_example(emu: Emulator, script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``examples/<script>`` in a fresh interpreter, endpoint and project from the environment as in production.
    No flush in the scripts: the handler delivers at exit."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": str(ROOT), "CES_ENDPOINT": emu.url, "CES_PROJECT_ID": PROJECT, **env},
    )
    assert r.returncode == 0, r.stderr
    assert "ces_logging:" not in r.stderr, r.stderr  # nothing lost at exit, no diagnostics
    return r


def stored(emu: Emulator) -> list[dict[str, Any]]:
    """Every event of the project."""
    names = [k["event_name"] for k in emu.state.store.kinds(PROJECT)]
    return [e for n in names for e in emu.events(PROJECT, n)]


def content(e: dict[str, Any]) -> str:
    return str(e["detail"]["content"])


def printed_events(printed: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Asserts that ``printed`` (a StreamHandler's output) is the events' contents, each followed by the
    StreamHandler's newline, and nothing else: each record's output is one event's content, character for
    character. Returns the events in the order they were printed (logged): events of different levels or names
    logged in one millisecond have equal times, so ``time`` cannot tell their order."""
    assert events, "no event stored"
    rest = sorted(events, key=lambda e: e["time"])
    ordered = []
    pos = 0
    while rest:
        match = next((e for e in rest if printed.startswith(content(e) + "\n", pos)), None)
        assert match is not None, (
            f"printed at {pos}: {printed[pos : pos + 400]!r}\nnot an event's content: {[content(e) for e in rest]}"
        )
        rest.remove(match)
        ordered.append(match)
        pos += len(content(match)) + 1
    assert printed[pos:] == "", f"printed but not stored: {printed[pos:]!r}"
    return ordered


def by_name(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        out.setdefault(e["event_name"], []).append(e)
    return out


def levels(events: list[dict[str, Any]]) -> list[str]:
    return [e["detail"]["event_level"] for e in events]


def dims(e: dict[str, Any]) -> dict[str, str]:
    return {d["name"]: d["value"] for d in e["detail"].get("dimensions", [])}


# --- structlog -----------------------------------------------------------------------------------------------


def test_structlog_processor_formatter_json(emu: Emulator) -> None:
    """The issue's case: ProcessorFormatter(JSONRenderer) on the handler, wrap_for_formatter last in structlog's
    chain. The formatter sees structlog's event dict, as the console's does."""
    r = run_example(emu, "structlog_stdlib.py")
    events = printed_events(r.stdout, stored(emu))
    names = by_name(events)
    assert set(names) == {"shop_checkout", "paymentProvider", "shop_legacy"}
    checkout = names["shop_checkout"]
    assert levels(checkout) == ["Info", "Major", "Major"]
    failed = json.loads(content(checkout[1]))
    assert {k: failed[k] for k in ("order", "amount", "event", "level")} == {
        "order": 1002,
        "amount": 12.5,
        "event": "payment_failed",
        "level": "error",
    }
    crashed = json.loads(content(checkout[2]))  # format_exc_info ran at emit, inside the except block
    assert (
        crashed["event"] == "refund_crashed"
        and "ZeroDivisionError: integer division or modulo by zero" in crashed["exception"]
    )
    (legacy,) = names["shop_legacy"]  # plain logging through the same formatter (foreign_pre_chain)
    expected = {"event": "stock low for sku-7: 3 left", "logger": "shop.legacy", "level": "warning"}
    assert json.loads(content(legacy)) == expected
    assert levels([legacy]) == ["Minor"]


def test_structlog_bound_key_values_choose_name_level_dimensions(emu: Emulator) -> None:
    """ces_event_name and ces_dimensions bound on the structlog logger, ces_event_level passed in the call."""
    run_example(emu, "structlog_stdlib.py")
    (provider,) = by_name(stored(emu))["paymentProvider"]
    assert provider["detail"]["event_level"] == "Major" and provider["detail"]["event_state"] == "incident"
    assert dims(provider) == {"provider": "acme"}
    assert provider["event_source"] == "shop.api"
    assert json.loads(content(provider))["event"] == "provider_slow"  # the logged level stays warning in the text


def test_structlog_console_renderer_without_colours(emu: Emulator) -> None:
    r = run_example(emu, "structlog_stdlib.py", "console")
    events = printed_events(r.stdout, stored(emu))
    assert all("\x1b[" not in content(e) for e in events)
    checkout = by_name(events)["shop_checkout"]
    assert re.search(r"\[error\s*\] payment_failed\s+\[shop\.checkout\] amount=12\.5 order=1002$", content(checkout[1]))
    # ConsoleRenderer takes sys.exc_info() when it renders: the traceback is there because that was at emit
    assert "refund_crashed" in content(
        checkout[2]
    ) and "ZeroDivisionError: integer division or modulo by zero" in content(checkout[2])
    (provider,) = by_name(events)["paymentProvider"]
    assert dims(provider) == {"provider": "acme"} and provider["detail"]["event_level"] == "Major"


def test_structlog_rendering_before_the_stdlib(emu: Emulator) -> None:
    """structlog's own JSONRenderer with stdlib.LoggerFactory: the record's message is the JSON line."""
    r = run_example(emu, "structlog_first.py")
    events = printed_events(r.stdout, stored(emu))
    (names,) = [set(by_name(events))]
    assert names == {"shop_jobs"} and levels(events) == ["Info", "Minor", "Major"]
    assert json.loads(content(events[1]))["minutes"] == 42
    first_line, _, traceback = content(events[2]).partition("\n")  # log.exception: the stdlib adds exc_info too
    assert json.loads(first_line)["event"] == "job_failed" and traceback.rstrip().endswith("OSError: disk full")


def test_django_structlog_settings_shape(emu: Emulator, tmp_path: Path) -> None:
    """django-structlog's documented LOGGING and structlog.configure, plus the Cloud Eye handler with
    json_formatter: the events are the JSON file's warning-and-above lines; context bound with contextvars is
    in them, for foreign (django.request) records too, because they are rendered on the request's thread."""
    log_file = tmp_path / "json.log"
    run_example(emu, "django_structlog_settings.py", JSON_LOG_FILE=str(log_file))
    lines = log_file.read_text().splitlines()
    assert len(lines) == 3  # payment_started (INFO: file only), card_declined, the crash
    warned = "".join(ln + "\n" for ln in lines if json.loads(ln)["level"] in ("warning", "error", "critical"))
    events = printed_events(warned, stored(emu))
    names = by_name(events)
    (declined,) = names["shop_payments"]
    assert json.loads(content(declined))["request_id"] == "r-42"
    assert declined["detail"]["event_level"] == "Major" and dims(declined) == {"provider": "acme"}
    (crash,) = names["django_request"]
    rendered = json.loads(content(crash))
    assert rendered["request_id"] == "r-43" and "RuntimeError: unhandled in a view" in rendered["exception"]


# --- loguru --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["format", "serialize"])
def test_loguru_sink(emu: Emulator, mode: str) -> None:
    """logger.add(CESHandler(...), format=...) and with serialize=True, beside logger.add(StreamHandler) with the
    same options; logger.bind(ces_...) chooses the event's name and dimensions (loguru puts bound values in
    record.extra)."""
    r = run_example(emu, "loguru_sink.py", *(["serialize"] if mode == "serialize" else []))
    events = printed_events(r.stdout, stored(emu))
    names = by_name(events)
    assert levels(names["shopWorker"]) == ["Info", "Major", "Major"]
    (provider,) = names["paymentProvider"]
    assert levels([provider]) == ["Minor"] and dims(provider) == {"provider": "acme"}
    crashed = content(names["shopWorker"][2])
    if mode == "serialize":
        record = json.loads(crashed)["record"]
        assert record["message"] == "refund crashed" and record["exception"]["type"] == "ZeroDivisionError"
        assert json.loads(content(provider))["record"]["extra"]["ces_dimensions"] == {"provider": "acme"}
    else:
        line = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| ERROR    \| __main__:<module>:\d+ - refund crashed\n"
        assert re.match(line, crashed)
        assert "ZeroDivisionError: integer division or modulo by zero" in crashed


# --- python-json-logger, Django's server log, LoggerAdapter ----------------------------------------------------


def test_python_json_logger_with_extras(emu: Emulator) -> None:
    r = run_example(emu, "json_logger.py")
    events = printed_events(r.stdout, stored(emu))
    assert {e["event_name"] for e in events} == {"shop_api"} and levels(events) == ["Minor", "Major", "Major"]
    slow, failed, crashed = (json.loads(content(e)) for e in events)
    assert (slow["message"], slow["request_id"], slow["path"], slow["ms"]) == ("slow request", "r-42", "/pay", 2300)
    assert failed["message"] == "payment failed for order-1002" and failed["request_id"] == "r-43"
    assert events[1]["detail"]["resource_id"] == "order-1002" and dims(events[1]) == {"provider": "acme"}
    assert crashed["request_id"] == "r-44" and "KeyError: 'basket'" in crashed["exc_info"]


def test_django_server_formatter(emu: Emulator) -> None:
    """runserver's request log (django.server) with Django's ServerFormatter, served for real on 127.0.0.1."""
    r = run_example(emu, "django_server_log.py")
    events = printed_events(r.stdout, stored(emu))
    assert [e["event_name"] for e in events] == ["django_server", "django_server"]
    assert levels(events) == ["Info", "Minor"]
    assert re.fullmatch(r'\[\d\d/\w{3}/\d{4} \d\d:\d\d:\d\d\] "GET /orders HTTP/1\.1" 200 2', content(events[0]))
    assert re.fullmatch(r'\[[^]]+\] "GET /missing HTTP/1\.1" 404 \d+', content(events[1]))


def test_logger_adapter(emu: Emulator) -> None:
    """The adapter's dict: %(request_id)s in the format, and ces_dimensions choosing the events' dimensions."""
    r = run_example(emu, "logger_adapter.py")
    events = printed_events(r.stdout, stored(emu))
    assert levels(events) == ["Info", "Minor", "Major"]
    assert all(" shop.orders [r-42] " in content(e) for e in events)
    assert all(dims(e) == {"tenant": "acme"} for e in events)
    assert content(events[2]).endswith("ValueError: invalid literal for int() with base 10: 'twelve'")


# --- in process: the rule's edges (no global structlog configuration: wrap_logger; loguru's sink removed after) ---


def handler_beside_console(
    emu: Emulator, log: logging.Logger, formatter: logging.Formatter | None
) -> tuple[CESHandler, io.StringIO]:
    """A CESHandler and a StreamHandler on one logger, both with ``formatter``."""
    printed = io.StringIO()
    console = logging.StreamHandler(printed)
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, flush_interval=0.05)
    for handler in (console, h):
        if formatter is not None:
            handler.setFormatter(formatter)
        log.addHandler(handler)
    return h, printed


def assert_accounted(h: CESHandler) -> None:
    assert h.flush(timeout=10)
    s = h.stats
    assert s.sent + s.dropped + s.queued == s.received and s.queued == 0


def structlog_logger(log: logging.Logger) -> Any:
    return structlog.wrap_logger(
        log,
        processors=[structlog.stdlib.add_log_level, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def test_structlog_bound_overrides_bad_values_are_sanitised_and_counted(
    emu: Emulator, isolated_logger: logging.Logger
) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(processor=structlog.processors.JSONRenderer())
    h, printed = handler_beside_console(emu, isolated_logger, formatter)
    log = structlog_logger(isolated_logger).bind(ces_event_name="boundName")
    log.warning("fine", ces={"resource_id": "order-1", "event_state": "incident"}, ces_dimensions={"shop": "eu"})
    log.warning("bad", ces_event_level="Severe", ces_dimensions="not-a-mapping")  # both ignored, counted
    assert_accounted(h)
    fine, bad = printed_events(printed.getvalue(), stored(emu))
    assert fine["event_name"] == bad["event_name"] == "boundName"
    assert (fine["detail"]["event_level"], fine["detail"]["event_state"]) == ("Minor", "incident")
    assert fine["detail"]["resource_id"] == "order-1" and dims(fine) == {"shop": "eu"}
    assert (bad["detail"]["event_level"], bad["detail"]["event_state"]) == ("Minor", "warning") and dims(bad) == {}
    assert h.stats.sanitised == 2


def test_context_is_read_when_the_record_is_logged(emu: Emulator, isolated_logger: logging.Logger) -> None:
    """merge_contextvars in foreign_pre_chain and a mutable argument: what counts is the moment of the call (the
    context is cleared and the argument changed before the worker could see the record)."""
    formatter = structlog.stdlib.ProcessorFormatter(
        processor=structlog.processors.JSONRenderer(), foreign_pre_chain=[structlog.contextvars.merge_contextvars]
    )
    h, printed = handler_beside_console(emu, isolated_logger, formatter)
    basket = ["sku-1"]
    structlog.contextvars.bind_contextvars(request_id="r-7")
    try:
        isolated_logger.warning("basket %s rejected", basket)
    finally:
        structlog.contextvars.clear_contextvars()
    basket.append("sku-2")
    assert_accounted(h)
    (e,) = printed_events(printed.getvalue(), stored(emu))
    assert json.loads(content(e)) == {"event": "basket ['sku-1'] rejected", "request_id": "r-7"}


def test_long_rendering_is_the_printed_line_cut(emu: Emulator, isolated_logger: logging.Logger) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(processor=structlog.processors.JSONRenderer())
    h, printed = handler_beside_console(emu, isolated_logger, formatter)
    structlog_logger(isolated_logger).error("huge", payload="x" * 10_000)
    assert_accounted(h)
    (e,) = stored(emu)
    line = printed.getvalue()[:-1]
    head, _, rest = content(e).partition(" … [truncated ")
    count, _, tail = rest.partition(" chars] … ")
    assert len(line) > 10_000 and line.startswith(head) and line.endswith(tail) and len(head) > 2_800
    assert int(count) == len(line) - len(head) - len(tail) and len(content(e)) <= 4096  # cut in the middle


def test_loguru_bind_in_process(emu: Emulator) -> None:
    """loguru passes bound values as record.extra: ces mapping and flat keys both work; a bad level is counted."""
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="loguruDefault", flush_interval=0.05)
    sink = logger.add(h, format="{level} {message}")
    try:
        logger.bind(ces={"resource_id": "job-1"}, ces_event_level="Critical").warning("disk {}% full", 95)
        logger.bind(ces_event_name="loguruBound", ces_event_level=3).info("bad level")
        assert_accounted(h)
    finally:
        logger.remove(sink)
        h.close()
    (full,) = emu.events(PROJECT, "loguruDefault")
    assert full["detail"]["content"] == "WARNING disk 95% full"
    assert (full["detail"]["event_level"], full["detail"]["event_state"]) == ("Critical", "incident")
    assert full["detail"]["resource_id"] == "job-1"
    (bad,) = emu.events(PROJECT, "loguruBound")
    assert bad["detail"]["event_level"] == "Info" and h.stats.sanitised == 1


# --- the documented recipes (docs/guides/libraries.md) ----------------------------------------------------------

SECTION = (ROOT / "docs" / "guides" / "libraries.md").read_text()
RECIPES = re.findall(r"```python\n(.*?)```", SECTION, flags=re.S)
# what each recipe's comments promise: {event name: [levels]}, and the dimensions of every event
PROMISES = {
    "wrap_for_formatter": ({"shop_checkout": ["Major"], "paymentProvider": ["Major"]}, {"provider": "acme"}),
    "structlog.processors.JSONRenderer(),  #": ({"shop_jobs": ["Minor"]}, {}),
    "from loguru import logger": ({"shopWorker": ["Major"]}, {"provider": "acme"}),
    "JsonFormatter": ({"shop_api": ["Minor"]}, {}),
    "LoggerAdapter": ({"shop_orders": ["Minor"]}, {"tenant": "acme"}),
}


def test_readme_section_has_every_recipe() -> None:
    assert len(RECIPES) == 6
    for marker in PROMISES:
        assert sum(marker in code for code in RECIPES) == 1, marker
    assert sum("LOGGING = {" in code for code in RECIPES) == 1


@pytest.mark.parametrize("marker", list(PROMISES))
def test_readme_recipe(marker: str, emu: Emulator, tmp_path: Path) -> None:
    """Each documented recipe as a script: the console's output is the events' contents, and the fields its
    comments promise."""
    (code,) = [c for c in RECIPES if marker in c]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CES_", "HUAWEICLOUD_SDK_"))}
    env.update(CES_ENDPOINT=emu.url, CES_PROJECT_ID=PROJECT, HUAWEICLOUD_SDK_CREDENTIALS_FILE=str(tmp_path / "none"))
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert r.returncode == 0 and "ces_logging:" not in r.stderr, r.stderr
    events = printed_events(r.stdout, stored(emu))
    names, dimensions = PROMISES[marker]
    assert {n: levels(evs) for n, evs in by_name(events).items()} == names
    assert all(dims(e) == dimensions for e in events)


def test_readme_django_server_logging_is_the_examples() -> None:
    """The documented LOGGING for django.server is the one examples/django_server_log.py runs (and its test checks)."""
    (code,) = [c for c in RECIPES if "LOGGING = {" in c]
    scope: dict[str, Any] = {}
    exec(code, scope)
    sys.path.insert(0, str(ROOT))
    try:
        from examples.django_server_log import LOGGING
    finally:
        sys.path.remove(str(ROOT))
    assert scope["LOGGING"] == LOGGING
