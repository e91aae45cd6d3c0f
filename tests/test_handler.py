"""CESHandler end to end: records logged in this process become events stored by the emulator over HTTP."""

from __future__ import annotations

import json
import logging
import logging.config
import threading
import time
from typing import Any

import pytest

from ces_logging import CESHandler, ConfigError, configure, handler_factory
from ces_logging.emulator import Emulator

from .conftest import PROJECT, frozen_wall_clock, wait_for


def make(emu: Emulator, **kw: Any) -> CESHandler:
    kw.setdefault("flush_interval", 0.05)
    return CESHandler(project_id=PROJECT, endpoint=emu.url, **kw)


@pytest.fixture
def log(isolated_logger: logging.Logger) -> logging.Logger:
    return isolated_logger


def stored(emu: Emulator, name: str) -> list[dict[str, Any]]:
    return emu.events(PROJECT, name)


def attach(log: logging.Logger, h: CESHandler) -> CESHandler:
    log.addHandler(h)
    return h


def check_accounting(h: CESHandler) -> None:
    s = h.stats
    assert s.sent + s.dropped + s.queued == s.received
    assert s.dropped == sum(s.dropped_by_reason.values())


# --- mapping ----------------------------------------------------------------------------------------------------


def test_level_and_state_mapping(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="mapping"))
    for lvl in (logging.DEBUG, logging.INFO, 25, logging.WARNING, 35, logging.ERROR, logging.CRITICAL, 60):
        log.log(lvl, "level %d", lvl)
    assert h.flush(timeout=10)
    got = {
        int(e["detail"]["content"].split()[1]): (e["detail"]["event_level"], e["detail"]["event_state"])
        for e in stored(emu, "mapping")
    }
    assert got == {
        10: ("Info", "normal"),
        20: ("Info", "normal"),
        25: ("Info", "normal"),
        30: ("Minor", "warning"),
        35: ("Minor", "warning"),
        40: ("Major", "incident"),
        50: ("Critical", "incident"),
        60: ("Critical", "incident"),
    }
    e = stored(emu, "mapping")[0]
    assert e["event_source"] == "app.log"
    assert e["detail"]["event_type"] == "EVENT.CUSTOM" and e["detail"]["sub_event_type"] == "SUB_EVENT.CUSTOM"
    check_accounting(h)


def test_level_and_state_maps_override(emu: Emulator, log: logging.Logger) -> None:
    h = attach(
        log, make(emu, event_name="custom", level_map={"WARNING": "Major", 25: "Minor"}, state_map={"Major": "warning"})
    )
    log.warning("w")
    log.log(25, "notice")
    assert h.flush(timeout=10)
    got = {
        e["detail"]["content"]: (e["detail"]["event_level"], e["detail"]["event_state"]) for e in stored(emu, "custom")
    }
    assert got == {"w": ("Major", "warning"), "notice": ("Minor", "warning")}


def test_time_is_record_created_ms(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="timing"))
    rec = log.makeRecord(log.name, logging.ERROR, __file__, 1, "at a time", None, None)
    rec.created = time.time() - 120.5
    log.handle(rec)
    assert h.flush(timeout=10)
    assert stored(emu, "timing")[0]["time"] == int(rec.created * 1000)


def test_event_name_from_logger_name(emu: Emulator) -> None:
    weird = logging.getLogger("9my-app.db.conn pool")
    weird.propagate = False
    h = attach(weird, make(emu))
    try:
        weird.error("x")
        assert h.flush(timeout=10)
        assert stored(emu, "L9my_app_db_conn_pool")
    finally:
        weird.removeHandler(h)
        h.close()


def test_per_record_overrides(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="base", resource_id="r-default", dimensions={"env": "prod"}))
    log.error(
        "boom",
        extra={
            "ces": {
                "event_name": "paymentFailed",
                "resource_id": "order-1",
                "resource_name": "shop@eu",
                "event_user": "ops bot",
                "group_id": "rg15221211517051YWWkEnVd",
                "dimensions": {"region": "eu"},
            }
        },
    )
    log.error("plain")
    assert h.flush(timeout=10)
    e = stored(emu, "paymentFailed")[0]["detail"]
    assert (e["resource_id"], e["event_user"], e["group_id"]) == ("order-1", "ops bot", "rg15221211517051YWWkEnVd")
    assert e["resource_name"].startswith("shop@eu@")  # the user's name, then the process identity
    assert e["dimensions"] == [{"name": "env", "value": "prod"}, {"name": "region", "value": "eu"}]
    plain = stored(emu, "base")[0]["detail"]
    assert plain["resource_id"] == "r-default" and plain["dimensions"] == [{"name": "env", "value": "prod"}]
    assert h.stats.sanitised == 0


def test_bad_overrides_are_sanitised_and_counted(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="sani"))
    log.error(
        "a",
        extra={
            "ces": {
                "event_name": "bad name!",
                "resource_id": "has space/and?" * 20,
                "event_user": "x@y.z",
                "group_id": "nope",
                "dimensions": {f"d{i}": i for i in range(9)} | {"1bad": "v", "e": ""},
            }
        },
    )
    log.error("b", extra={"ces": "not a mapping"})
    assert h.flush(timeout=10)
    s = h.stats
    assert s.sent == 2 and s.dropped == 0 and s.sanitised >= 5
    ev = stored(emu, "bad_name_")[0]["detail"]
    assert len(ev["resource_id"]) == 128 and " " not in ev["resource_id"]
    assert ev["event_user"] == "x_y_z" and not ev["group_id"] and len(ev["dimensions"]) == 4
    assert stored(emu, "sani")[0]["detail"]["content"] == "b"


def test_traceback_and_long_content(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="content"))
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("failed to look up")
    log.error("y" * 10_000)
    log.error("line\n" * 3000)
    assert h.flush(timeout=10)
    by_start = {e["detail"]["content"][:4]: e["detail"]["content"] for e in stored(emu, "content")}
    tb = by_start["fail"]
    assert "Traceback (most recent call last)" in tb and "KeyError: 'missing'" in tb
    long = by_start["yyyy"]
    assert len(long) <= 4096 and "chars] … " in long and "… [truncated " in long  # cut in the middle
    lines = by_start["line"]
    assert len(lines) + lines.count("\n") <= 4096  # newlines counted twice (the service may escape them)


def test_json_content_stays_valid_when_cut(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="jsonc", json_content=True))
    log.warning("short %s", "one", extra={"order": 7})
    log.warning("z" * 9000)
    try:
        raise ValueError("v" * 6000)
    except ValueError:
        log.exception("with trace")
    assert h.flush(timeout=10)
    docs = [json.loads(e["detail"]["content"]) for e in stored(emu, "jsonc")]
    assert all(len(e["detail"]["content"]) <= 4096 for e in stored(emu, "jsonc"))
    by_msg = {d["message"][:5]: d for d in docs}
    assert by_msg["short"]["message"] == "short one" and by_msg["short"]["order"] == 7
    assert by_msg["short"]["levelname"] == "WARNING"
    assert " … [truncated " in by_msg["zzzzz"]["message"]
    assert "with " in by_msg


def test_unformattable_message_still_becomes_an_event(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="unfmt"))

    class Evil:
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    log.error("%d items", "not a number")
    log.error(Evil())
    assert h.flush(timeout=10)
    contents = sorted(e["detail"]["content"] for e in stored(emu, "unfmt"))
    assert len(contents) == 2
    assert all("could not format" in c for c in contents)
    check_accounting(h)


# --- distinct events ----------------------------------------------------------------------------------------------


def test_50_identical_records_in_one_millisecond_are_50_events(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="burst"))
    with frozen_wall_clock("2026-11-24 10:00:00.123"):
        for _ in range(50):
            log.error("same text")  # same key fields, same created time
        assert h.flush(timeout=10)
    times = sorted(e["time"] for e in stored(emu, "burst"))
    assert len(times) == 50 and len(set(times)) == 50
    assert times[0] == 1795514400123  # 2026-11-24 10:00:00.123 UTC, the records' own time
    assert times[-1] - times[0] == 49


# --- batching, retries, isolation -------------------------------------------------------------------------------


def test_batches_by_size(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="bysize", batch_size=10, flush_interval=60))
    for i in range(35):
        log.error("n%d", i)
    assert wait_for(lambda: h.stats.sent == 30)  # three full batches go without a flush
    assert h.stats.batches == 3 and h.stats.queued == 5
    assert h.flush(timeout=10)
    assert h.stats.batches == 4 and emu.count(PROJECT) == 35


def test_batches_by_interval(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="byint", flush_interval=0.3))
    for i in range(3):
        log.error("n%d", i)
    assert wait_for(lambda: emu.count(PROJECT) == 3, timeout=5)  # no flush: the interval sends them
    assert wait_for(lambda: h.stats.sent == 3) and h.stats.batches == 1  # counted when the answer is read


def test_retries_on_503_and_honours_retry_after(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="retry"))
    emu.add_fault(count=1, status=503)
    emu.add_fault(count=1, status=429, retry_after="1")
    for i in range(20):
        log.error("n%d", i)
    assert h.flush(timeout=30)
    s = h.stats
    assert s.sent == 20 and s.retries == 2 and s.dropped == 0
    assert emu.count(PROJECT) == 20


def test_reply_lost_after_store_is_delivered_once(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="lost", timeout=0.5))
    emu.add_fault(count=1, store=True, delay=1.5)  # stored, but the answer comes after the client gave up
    emu.add_fault(count=1, store=True, drop=True)  # stored, then the connection is reset
    for i in range(10):
        log.error("n%d", i)
    assert h.flush(timeout=30)
    assert h.stats.sent == 10 and h.stats.retries == 2
    assert emu.count(PROJECT) == 10  # the retried batch was the same items: stored once


def test_400_isolates_bad_items(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="iso"))
    emu.add_fault(count=1000, reject_matching="POISON")
    for i in range(30):
        log.error("POISON %d" if i in (3, 17) else "fine %d", i)
    assert not h.flush(timeout=30)  # False: two records were dropped (flush says so since wave 2)
    s = h.stats
    check_accounting(h)
    assert s.sent == 28 and s.dropped_by_reason == {"rejected": 2}
    assert sorted(e["detail"]["content"] for e in stored(emu, "iso")) == sorted(
        f"fine {i}" for i in range(30) if i not in (3, 17)
    )
    emu.clear_faults()


def test_auth_failure_drops_with_reason(log: logging.Logger) -> None:
    with Emulator(token="right") as emu:
        h = attach(log, CESHandler(project_id=PROJECT, endpoint=emu.url, token="wrong", flush_interval=0.05))
        log.error("x")
        assert not h.flush(timeout=30)  # accounted for, but dropped: False
        assert h.stats.dropped_by_reason == {"auth": 1}
        check_accounting(h)


def test_too_old_records_are_dropped_not_sent(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="old"))
    emu.add_fault(count=1, status=503)
    with frozen_wall_clock("2026-11-24 10:00:00") as clock:
        log.error("will be too old")
        assert wait_for(lambda: h.stats.retries == 1)
        clock.tick(3600)  # an hour passes before the retry
        assert not h.flush(timeout=10)  # accounted for, but dropped
    assert h.stats.dropped_by_reason == {"too_old": 1} and h.stats.sent == 0
    assert emu.stats().get("rejected_requests", 0) == 0  # never sent to be refused


def test_records_already_out_of_window_are_dropped(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="stale"))
    rec = log.makeRecord(log.name, logging.ERROR, __file__, 1, "stale", None, None)
    rec.created = time.time() - 3600
    log.handle(rec)
    log.error("fresh")
    assert not h.flush(timeout=10)  # one dropped
    assert h.stats.dropped_by_reason == {"too_old": 1} and h.stats.sent == 1
    assert h.flush(timeout=10)  # nothing dropped since the last flush


# --- the queue, flush, close -----------------------------------------------------------------------------------


def test_bounded_queue_accounting(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="bounded", queue_size=5, batch_size=1))
    emu.add_fault(count=1, store=True, delay=1.0)  # the first request hangs a second
    log.error("first")
    assert wait_for(lambda: emu.stats().get("faults_served") == 1)
    for i in range(20):
        log.error("n%d", i)
    s = h.stats
    # The queue holds 5 while the first request hangs: at most 15 of the 20 are dropped (more would be a queue
    # smaller than asked). Exactly 15 only when the loop ends before the worker, which may take a record off the
    # queue whenever it gets the GIL, takes one: a bound, and at least one drop (an unbounded queue has none).
    full = s.dropped_by_reason.get("queue_full", 0)
    assert s.received == 21 and s.dropped_by_reason == {"queue_full": full} and 1 <= full <= 15, s
    check_accounting(h)
    assert not h.flush(timeout=10)  # everything accounted for, some of it dropped: False
    s = h.stats
    assert (s.sent, s.dropped, s.queued) == (21 - full, full, 0)
    assert emu.count(PROJECT) == 21 - full
    check_accounting(h)


def test_flush_false_when_not_delivered_in_time(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="slow"))
    emu.add_fault(count=1, store=True, delay=1.0)
    log.error("x")
    assert h.flush(timeout=0.1) is False
    assert h.flush(timeout=10) is True


def test_close_with_hung_service_returns_within_grace(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="hung", grace_period=0.5, timeout=30))
    emu.add_fault(count=1, delay=8.0, status=503)
    log.error("x")
    assert wait_for(lambda: emu.stats().get("faults_served") == 1)
    t = time.monotonic()
    h.close()
    # The hung request answers after 8 s: a close that ends well before that did not wait for it. The margin
    # over the 0.5 s grace period is for a loaded machine; the 8 s hang is what a wrong close would wait for.
    assert time.monotonic() - t < 8.0 - 2.0
    log.removeHandler(h)


def test_emit_after_close_is_counted(emu: Emulator, log: logging.Logger) -> None:
    h = attach(log, make(emu, event_name="closed"))
    log.error("before")
    h.close()
    log.error("after")
    s = h.stats
    assert s.sent == 1 and s.dropped_by_reason == {"closed": 1}
    check_accounting(h)


def test_worker_http_logs_do_not_loop_back() -> None:
    """What is logged on the worker's threads (urllib3's lines, a token provider's, a formatter's) never comes
    back into a handler: the provider here logs a WARNING each time the worker asks it for a token, to a root
    logger at DEBUG that has the CES handler. Another handler on root sees those records (so they were logged,
    and reached root), the CES handler does not: one record received, one event, however many requests."""

    class ChattyProvider:
        def token(self) -> str:
            logging.getLogger("provider.iam").warning("fetching a token on %s", threading.current_thread().name)
            return "tok"

        def invalidate(self) -> None:
            pass

    seen: list[logging.LogRecord] = []

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    root = logging.getLogger()
    with Emulator(token="tok") as emu:
        h = CESHandler(project_id=PROJECT, endpoint=emu.url, token_provider=ChattyProvider(), event_name="noloop",
                       flush_interval=0.05)  # fmt: skip
        root.addHandler(h)
        root.addHandler(Seen())
        root.setLevel(logging.DEBUG)
        logging.getLogger("app").error("one record")
        assert h.flush(timeout=10)
        assert [r.name for r in seen if r.name == "provider.iam"], [r.name for r in seen]
        assert any(r.thread != threading.get_ident() for r in seen if r.name == "provider.iam")
        assert h.flush(timeout=10)
        assert h.stats.received == 1 and emu.count(PROJECT) == 1, (h.stats, emu.count(PROJECT))
        root.removeHandler(h)
        h.close()


def test_emit_never_raises(emu: Emulator, log: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    h = attach(log, make(emu, event_name="safe"))
    errors: list[Any] = []
    monkeypatch.setattr(h, "handleError", lambda record: errors.append(record))
    monkeypatch.setattr(h, "_buffer", None)  # a broken internal state
    log.error("x")  # must not raise
    assert len(errors) == 1


def test_exception_from_the_apps_signal_handler_reaches_the_app(
    emu: Emulator, log: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception raised by the app's own code while emit runs (a signal handler's timeout, say: here the
    formatter the app set) is the app's: it is not swallowed... unless it is a formatter's failure, which
    prepare() turns into an event that says so. Raised from outside the package elsewhere in emit, it goes on."""
    h = attach(log, make(emu, event_name="apps"))

    class Timeout(Exception):
        pass

    def interrupted(*_: Any) -> Any:
        raise Timeout()

    monkeypatch.setattr(h.preparer, "prepare", interrupted)
    with pytest.raises(Timeout):
        log.error("x", extra={"order": 1})  # an extra: the general way, through prepare (a plain record may not)
    assert h.stats.received == 0  # the call was interrupted before the record was taken: not counted
    check_accounting(h)


def test_emit_bug_is_counted_not_raised(emu: Emulator, log: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    h = attach(log, make(emu, event_name="safe"))
    errors: list[Any] = []
    monkeypatch.setattr(h, "handleError", lambda record: errors.append(record))

    monkeypatch.setattr(h._buffer, "max_items", None)  # a bug inside emit: TypeError in the package's own code
    log.error("x")  # must not raise
    assert len(errors) == 1 and h.stats.dropped_by_reason == {"error": 1}
    check_accounting(h)


# --- configuration ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"event_source": "nodot"}, "event_source"),
        ({"event_name": "bad name"}, "event_name"),
        ({"batch_size": 101}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"queue_size": 0}, "queue_size"),
        ({"flush_interval": -1}, "flush_interval"),
        ({"dimensions": {f"d{i}": "v" for i in range(5)}}, "dimensions"),
        ({"dimensions": {"1x": "v"}}, "dimension name"),
        ({"resource_id": "has space"}, "resource_id"),
        ({"level_map": {"ERROR": "Huge"}}, "level_map"),
        ({"state_map": {"Major": "burning"}}, "state_map"),
        ({"level": "LOUD"}, "level"),
    ],
)
def test_bad_options_fail_at_configuration(emu: Emulator, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make(emu, **kwargs)


def test_dictconfig_class_and_factory_with_strings(emu: Emulator) -> None:
    cfg = {
        "version": 1,
        "disable_existing_loggers": False,  # the others of this process stay enabled
        "handlers": {
            "ces": {
                "class": "ces_logging.CESHandler",
                "level": "WARNING",
                "project_id": PROJECT,
                "endpoint": emu.url,
                "event_name": "viaClass",
                "flush_interval": 0.05,
            },
            "ces2": {
                "()": "ces_logging.handler_factory",
                "project_id": PROJECT,
                "endpoint": emu.url,
                "event_name": "viaFactory",
                "batch_size": "50",
                "flush_interval": "0.05",
                "json_content": "false",
                "dimensions": "env=prod,team=shop",
            },
        },
        "loggers": {"dc": {"handlers": ["ces", "ces2"], "level": "INFO", "propagate": False}},
    }
    logging.config.dictConfig(cfg)
    try:
        logging.getLogger("dc").info("info is below the handler's WARNING")
        logging.getLogger("dc").error("configured")
        hs = logging.getLogger("dc").handlers
        assert all(isinstance(h, CESHandler) and h.flush(timeout=10) for h in hs)
        assert [e["detail"]["content"] for e in stored(emu, "viaClass")] == ["configured"]
        f = stored(emu, "viaFactory")
        assert len(f) == 2 and f[0]["detail"]["dimensions"] == [
            {"name": "env", "value": "prod"},
            {"name": "team", "value": "shop"},
        ]
        assert hs[0].name == "ces"  # logging.Handler.name stays the handler's own name
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})


def test_factory_errors_name_the_key(emu: Emulator) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        handler_factory(project_id=PROJECT, endpoint=emu.url, batch_size="lots")
    with pytest.raises(ConfigError, match="colour"):
        handler_factory(project_id=PROJECT, endpoint=emu.url, colour="red")


def test_reconfiguring_20_times_leaves_one_worker(emu: Emulator) -> None:
    handlers: list[CESHandler] = []
    for i in range(20):
        logging.config.dictConfig(
            {
                "version": 1,
                "handlers": {
                    "ces": {
                        "class": "ces_logging.CESHandler",
                        "project_id": PROJECT,
                        "endpoint": emu.url,
                        "event_name": "reconf",
                        "flush_interval": 0.05,
                        "grace_period": 1,
                    }
                },
                "loggers": {"rc": {"handlers": ["ces"], "level": "INFO", "propagate": False}},
                "disable_existing_loggers": False,
            }
        )
        handlers.append(logging.getLogger("rc").handlers[0])  # type: ignore[arg-type]
        logging.getLogger("rc").error("round %d", i)
    assert len(set(map(id, handlers))) == 20
    # The 19 replaced handlers were closed under logging's lock: their workers drain and end by themselves.
    assert wait_for(lambda: not any(h._worker.alive for h in handlers[:-1]), timeout=10)
    assert handlers[-1]._worker.alive
    assert handlers[-1].flush(timeout=10)
    assert emu.count(PROJECT) == 20, sorted((e["time"], e["detail"]["content"]) for e in stored(emu, "reconf"))
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    assert wait_for(lambda: not handlers[-1]._worker.alive, timeout=10)


def test_configure_one_liner_reads_env(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CES_ENDPOINT", emu.url)
    monkeypatch.setenv("CES_PROJECT_ID", PROJECT)
    monkeypatch.setenv("CES_EVENT_SOURCE", "shop.web")
    name = "cfg1"
    try:
        h1 = configure(logger=name, flush_interval=0.05)
        h2 = configure(level="INFO", logger=name, flush_interval=0.05)
        lg = logging.getLogger(name)
        assert lg.handlers == [h2] and h1.stats.received == 0
        lg.info("hello")
        assert h2.flush(timeout=10)
        e = stored(emu, "cfg1")[0]
        assert e["event_source"] == "shop.web" and e["detail"]["event_level"] == "Info"
    finally:
        for h in list(logging.getLogger(name).handlers):
            logging.getLogger(name).removeHandler(h)
            h.close()


def test_time_drift_is_bounded_and_counted(emu: Emulator, log: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the process identity, a key whose times run too far ahead drops records as key_rate."""
    from ces_logging.mapping import TimeAssigner

    monkeypatch.setattr(TimeAssigner, "MAX_DRIFT_MS", 20)  # 20 ms of drift instead of 5 min
    h = attach(log, make(emu, event_name="drift", process_identity=False))
    with frozen_wall_clock("2026-11-24 10:00:00"):
        for _ in range(30):
            log.error("same key, same millisecond")
        assert not h.flush(timeout=10)
    s = h.stats
    assert s.sent == 21 and s.dropped_by_reason == {"key_rate": 9}  # times t .. t+20, then no more room
    check_accounting(h)


def test_time_drift_with_identity_starts_a_new_key(
    emu: Emulator, log: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the process identity (the default), a key that runs out of room gets a fresh identity token: a new
    key, so nothing is dropped and nothing merges."""
    from ces_logging.mapping import TimeAssigner

    monkeypatch.setattr(TimeAssigner, "MAX_DRIFT_MS", 20)
    h = attach(log, make(emu, event_name="drift2"))
    with frozen_wall_clock("2026-11-24 10:00:00"):
        for _ in range(30):
            log.error("same key, same millisecond")
        assert h.flush(timeout=10)
    s = h.stats
    assert s.sent == 30 and s.dropped == 0
    assert len(stored(emu, "drift2")) == 30
    assert len({e["detail"]["resource_name"] for e in stored(emu, "drift2")}) == 2
    check_accounting(h)


def test_handler_formatter_is_used(emu: Emulator, log: logging.Logger) -> None:
    from pythonjsonlogger.json import JsonFormatter

    plain = attach(log, make(emu, event_name="fmtd"))
    plain.setFormatter(logging.Formatter("%(levelname)s [%(name)s] %(message)s"))
    js = attach(log, make(emu, event_name="fmtj", json_content=True))
    js.setFormatter(JsonFormatter("%(message)s %(lineno)d"))

    class Broken(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            raise RuntimeError("formatter bug")

    broken = attach(log, make(emu, event_name="fmtb"))
    broken.setFormatter(Broken())
    log.error("hello %s", "there")
    for h in (plain, js, broken):
        assert h.flush(timeout=10)
    assert stored(emu, "fmtd")[0]["detail"]["content"] == f"ERROR [{log.name}] hello there"
    doc = json.loads(stored(emu, "fmtj")[0]["detail"]["content"])
    assert doc["message"] == "hello there" and isinstance(doc["lineno"], int) and "levelname" not in doc
    assert stored(emu, "fmtb")[0]["detail"]["content"] == "hello there [ces_logging: formatter failed: RuntimeError]"
    assert broken.stats.sanitised == 1
