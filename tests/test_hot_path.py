"""``handle``'s fast path keeps exactly what ``Preparer.prepare`` keeps, for every kind of record, and wakes
the worker exactly when ``RecordBuffer.offer`` would; it is used only while it may be (no formatter, open,
active, plain items, no SIGTERM handed on, no subclass's own ``emit``), and whatever goes wrong in it never
reaches the app and never keeps a record twice.

The items are read from the handler's buffer before the worker takes them (a long ``flush_interval`` and a
batch size above the records logged keep them there), then compared with what ``prepare`` makes of the same
record. Speed is ``make bench``'s business, not this file's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import pytest

from ces_logging import CESHandler
from ces_logging.emulator import Emulator

from .conftest import PROJECT, wait_for


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def pair(emu: Emulator) -> Iterator[tuple[logging.Logger, CESHandler, Keep]]:
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, flush_interval=60.0, handle_sigterm=False)
    keep = Keep()
    log = logging.getLogger(f"hot{time.monotonic_ns()}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(keep)
    log.addHandler(h)
    yield log, h, keep
    log.removeHandler(h)
    log.removeHandler(keep)
    h.close()


@contextlib.contextmanager
def attached(h: CESHandler) -> Iterator[logging.Logger]:
    """A logger of its own with ``h`` on it; ``h`` closed at the end, whatever happens."""
    log = logging.getLogger(f"hot{time.monotonic_ns()}")
    log.propagate = False
    log.addHandler(h)
    try:
        yield log
    finally:
        log.removeHandler(h)
        h.close()


def assert_all_delivered(emu: Emulator, h: CESHandler, n: int, timeout: float = 10) -> None:
    """``n`` records stored once each, none left queued, and the counts' invariant."""
    assert h.flush(timeout=timeout)
    assert wait_for(lambda: emu.count(PROJECT) == n)
    assert wait_for(lambda: h.stats.queued == 0)
    s = h.stats
    assert s.sent == n and s.queued == 0
    assert s.sent + s.dropped + s.queued + s.folded == s.received


class Odd:
    def __str__(self) -> str:
        return "odd %s"


def log_every_kind(log: logging.Logger) -> None:
    log.warning("user %s failed to log in from %s", 7, "203.0.113.7")
    log.warning("no arguments, a literal 100%")
    log.warning("%(who)s paid %(amount).2f", {"who": "ann", "amount": 3.5})
    log.warning("one too few: %s %s", 1)  # cannot format: prepare's text says so, marked sanitised
    log.warning("x" * 5000)  # longer than can be sent: cut by prepare
    log.warning("")
    log.warning(Odd(), 1)  # not a str msg
    log.warning("surrogate \ud800 in the text")
    log.warning("with extra", extra={"order": 1})
    log.warning("with overrides", extra={"ces": {"event_name": "Custom"}})
    log.warning("stack", stack_info=True)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("with a traceback")


def test_the_fast_path_keeps_what_prepare_keeps(pair: tuple[logging.Logger, CESHandler, Keep]) -> None:
    log, h, keep = pair
    assert h._fast
    log_every_kind(log)
    items = list(h._buffer.items)
    assert len(items) == len(keep.records) == 12  # none taken yet: a batch is 100 and the interval a minute
    for record, item in zip(keep.records, items, strict=True):
        assert item == h.preparer.prepare(record, None), record.msg
    s = h.stats
    assert s.received == 12 and s.queued == 12
    assert s.sent + s.dropped + s.queued + s.folded == s.received


def test_a_formatter_turns_the_fast_path_off_and_is_used(
    emu: Emulator, pair: tuple[logging.Logger, CESHandler, Keep]
) -> None:
    log, h, keep = pair
    fmt = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    h.setFormatter(fmt)
    assert not h._fast
    log.warning("formatted %s", 1)
    assert h._buffer.items[-1][3] == f"WARNING {log.name}: formatted 1"
    h.formatter = None  # an assignment, as some code does: the fast path is back
    assert h._fast
    log.warning("plain %s", 2)
    assert h._buffer.items[-1] == h.preparer.prepare(keep.records[-1], None)
    assert_all_delivered(emu, h, 2)


def test_a_closed_handler_takes_nothing_by_the_fast_path(pair: tuple[logging.Logger, CESHandler, Keep]) -> None:
    log, h, _ = pair
    h.close()
    assert not h._fast
    log.warning("after close %s", 1)
    s = h.stats
    assert s.dropped_by_reason.get("closed") == 1 and s.queued == 0
    assert s.sent + s.dropped + s.queued + s.folded == s.received


@pytest.mark.parametrize(
    "kwargs",
    [{"json_content": True}, {"storm_control": "10/5s"}, {"event_level": "ERROR", "context_records": 5}],
)
def test_options_that_change_the_item_keep_the_general_way(emu: Emulator, kwargs: dict[str, object]) -> None:
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, handle_sigterm=False, **kwargs)  # type: ignore[arg-type]
    try:
        assert not h._fast
    finally:
        h.close()


@pytest.mark.parametrize("log_threads", [True, False])
def test_records_made_on_a_worker_thread_never_loop_back(
    pair: tuple[logging.Logger, CESHandler, Keep], monkeypatch: pytest.MonkeyPatch, log_threads: bool
) -> None:
    """A record made on one of the worker's threads (its HTTP stack's logs, a formatter's) is not taken, also
    when another thread hands it on (a QueueListener), and also with ``logging.logThreads`` off (the record
    then carries no thread: the handling thread's own is asked)."""
    import threading

    from ces_logging.worker import WORKER_THREADS

    log, h, keep = pair
    monkeypatch.setattr(logging, "logThreads", log_threads)
    made: list[logging.LogRecord] = []
    handed_on = threading.Event()

    def as_worker() -> None:
        me = threading.get_ident()
        WORKER_THREADS.add(me)
        try:
            log.warning("from a worker thread")  # handled on this thread
            made.append(log.makeRecord(log.name, logging.WARNING, "f", 1, "handed on", None, None))
            handed_on.wait(10)  # still a worker thread while the app's thread handles its record
        finally:
            WORKER_THREADS.discard(me)

    t = threading.Thread(target=as_worker)
    t.start()
    try:
        assert wait_for(lambda: len(made) == 1)
        if log_threads:  # handed on by this (not a worker) thread: the record's own thread decides
            assert h.handle(made[0]) is False
    finally:
        handed_on.set()
        t.join(10)
    assert len(keep.records) == 1
    log.warning("from the app's thread")
    s = h.stats
    assert s.received == 1  # the app's record only
    assert s.sent + s.dropped + s.queued + s.folded == s.received


class _Wakeups:
    def __init__(self) -> None:
        self.n = 0

    def set(self) -> None:
        self.n += 1


class _StubWorker:
    """Stands in for the worker: counts wake-ups and takes nothing, so the buffer's length is the records'."""

    alive = True

    def __init__(self) -> None:
        self.wakeup = _Wakeups()


def test_the_fast_path_wakes_the_worker_by_the_buffers_rule(emu: Emulator) -> None:
    """The fast path writes ``buffer.wakes`` out; the general way (a formatter) goes through ``offer``: both
    must wake the worker on exactly the records the rule names (first, a full batch, every 1024th)."""
    from ces_logging.buffer import wakes

    h = CESHandler(project_id=PROJECT, endpoint=emu.url, flush_interval=60.0, batch_size=7, handle_sigterm=False)
    with attached(h) as log:
        real = h._worker
        try:
            for formatter in (None, logging.Formatter("%(message)s")):
                h.setFormatter(formatter)
                assert h._fast is (formatter is None)
                stub = _StubWorker()
                h._worker = stub  # type: ignore[assignment]
                start = len(h._buffer.items)
                for i in range(2100):
                    log.warning("record %s", i)
                assert len(h._buffer.items) == start + 2100
                assert stub.wakeup.n == sum(wakes(n, 7) for n in range(start + 1, start + 2101)), formatter
        finally:
            h._worker = real
        h.setFormatter(None)
        assert_all_delivered(emu, h, 4200, timeout=30)


class _Explodes:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def test_an_argument_that_cannot_be_printed_never_reaches_the_app(
    emu: Emulator, pair: tuple[logging.Logger, CESHandler, Keep]
) -> None:
    log, h, keep = pair
    log.warning("value %s", _Explodes())  # must not raise here
    assert h._buffer.items[-1] == h.preparer.prepare(keep.records[-1], None)
    assert_all_delivered(emu, h, 1)


@pytest.mark.parametrize("missing", ["exc_text", "thread", "process", "msg", "args", "created", "levelno", "name"])
def test_a_record_missing_a_standard_attribute_never_reaches_the_app(
    pair: tuple[logging.Logger, CESHandler, Keep], missing: str
) -> None:
    """Some code strips records; whichever attribute is gone, the app never sees an exception, the record is
    counted once, and the buffer's byte count is what its items hold (none leaks from a half-made item)."""
    from ces_logging.handler import _sizes

    log, h, _ = pair
    record = log.makeRecord(log.name, logging.WARNING, "f", 1, "odd %s", (1,), None)
    delattr(record, missing)
    h.handle(record)  # must not raise
    s = h.stats
    assert s.received == 1
    assert s.sent + s.dropped + s.queued + s.folded == s.received
    buf = h._buffer
    assert buf.bytes_in - buf.bytes_out == _sizes(list(buf.items))


def test_an_emit_patched_on_the_instance_is_called(
    emu: Emulator, pair: tuple[logging.Logger, CESHandler, Keep]
) -> None:
    from unittest import mock

    log, h, _ = pair
    with mock.patch.object(h, "emit") as emit:
        assert not h._fast
        log.warning("seen by the patch %s", 1)
        assert emit.call_count == 1
    assert h._fast  # the patch undone: the fast path is back
    log.warning("kept %s", 2)
    assert h.stats.received == 1
    assert_all_delivered(emu, h, 1)


def test_a_subclass_with_its_own_filter_is_asked(emu: Emulator) -> None:
    class OnlyErrors(CESHandler):
        def filter(self, record: logging.LogRecord) -> bool:
            return record.levelno >= logging.ERROR

    h = OnlyErrors(project_id=PROJECT, endpoint=emu.url, handle_sigterm=False)
    with attached(h) as log:
        assert not h._fast
        log.warning("filtered out")
        log.error("kept")
        assert_all_delivered(emu, h, 1)
        assert h.stats.received == 1


def test_a_subclass_with_its_own_emit_gets_every_record(emu: Emulator) -> None:
    seen: list[str] = []

    class Mine(CESHandler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())
            super().emit(record)

    h = Mine(project_id=PROJECT, endpoint=emu.url, handle_sigterm=False)
    with attached(h) as log:
        assert not h._fast
        log.warning("mine %s", 1)
        assert seen == ["mine 1"]
        assert_all_delivered(emu, h, 1)


def test_a_sigterm_handed_on_ends_the_fast_path(
    emu: Emulator, pair: tuple[logging.Logger, CESHandler, Keep], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After SIGTERM is handed on to a server's handler, each record must be delivered as it is logged (the
    server may end the process at any moment): the fast path, which only queues, must be off."""
    from ces_logging import lifecycle

    log, h, _ = pair
    handed: list[int] = []
    monkeypatch.setattr(lifecycle, "_previous_sigterm", lambda signum, frame: handed.append(signum))
    monkeypatch.setattr(lifecycle, "terminating_until", None)
    assert h._fast
    lifecycle._handle_sigterm(15, None)
    assert handed == [15]
    assert not h._fast
    log.warning("after SIGTERM %s", 1)
    assert emu.count(PROJECT) == 1  # delivered before the call returned
    assert_all_delivered(emu, h, 1)


def test_the_fast_path_comes_back_once_the_hand_over_is_over(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ces_logging import lifecycle

    monkeypatch.setattr(lifecycle, "_previous_sigterm", lambda signum, frame: None)
    monkeypatch.setattr(lifecycle, "terminating_until", None)
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, handle_sigterm=False, grace_period=0.3)
    with attached(h) as log:
        lifecycle._handle_sigterm(15, None)
        assert not h._fast
        time.sleep(0.4)  # the hand-over's grace period (the longest of the open handlers') is over
        log.warning("after the grace period %s", 1)  # the general way notices
        assert lifecycle.terminating_until is None and h._fast
        later = CESHandler(project_id=PROJECT, endpoint=emu.url, handle_sigterm=False)
        assert later._fast
        later.close()
        assert_all_delivered(emu, h, 1)


def test_a_sigterm_between_the_question_and_the_store_is_not_undone(
    emu: Emulator, pair: tuple[logging.Logger, CESHandler, Keep], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_refresh_fast`` asks whether the fast path applies, then stores the answer: a SIGTERM handed on that
    lands between the two (here, run by a trace hook at the store's line, where a signal handler may run) must
    leave it off, so that the next record is delivered as it is logged."""
    import sys

    from ces_logging import lifecycle

    log, h, _ = pair
    monkeypatch.setattr(lifecycle, "_previous_sigterm", lambda signum, frame: None)
    monkeypatch.setattr(lifecycle, "terminating_until", None)
    code = CESHandler._refresh_fast.__code__
    import pathlib

    lines = pathlib.Path(code.co_filename).read_text().splitlines()
    store = next(n for _, _, n in code.co_lines() if n and "self._fast_pid = self._pid" in lines[n - 1])
    fired: list[int] = []

    def tracer(frame: object, event: str, arg: object) -> object:
        if getattr(frame, "f_code", None) is code:

            def local(frame: object, event: str, arg: object) -> object:
                if event == "line" and getattr(frame, "f_lineno", 0) == store and not fired:
                    fired.append(1)
                    lifecycle._handle_sigterm(15, None)  # the signal lands here
                return local

            return local
        return None

    sys.settrace(tracer)  # type: ignore[arg-type]
    try:
        h.setFormatter(None)
    finally:
        sys.settrace(None)
    assert fired and lifecycle.terminating() is not None
    assert not h._fast
    log.warning("logged during the graceful shutdown %s", 1)
    assert emu.count(PROJECT) == 1  # delivered before the call returned
    assert_all_delivered(emu, h, 1)
