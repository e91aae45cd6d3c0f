"""Process life cycle: scripts that just end, fork, interpreter exit with a hung service."""

from __future__ import annotations

import logging
import os
import time

import pytest

from ces_logging import CESHandler
from ces_logging.emulator import Emulator

from .conftest import PROJECT, run_python


def test_script_that_just_exits_delivers_everything(emu: Emulator) -> None:
    r = run_python(f"""
        import logging, ces_logging
        ces_logging.configure(endpoint="{emu.url}", project_id="{PROJECT}", event_name="atExit",
                              flush_interval=60, batch_size=100)
        for i in range(250):
            logging.getLogger("s").error("record %d", i)
    """)
    assert r.returncode == 0, r.stderr
    assert emu.count(PROJECT) == 250 and r.stderr == ""


def test_exit_with_hung_service_is_bounded_and_says_what_was_lost(emu: Emulator) -> None:
    emu.add_fault(count=5, delay=20.0, status=503)
    t = time.monotonic()
    r = run_python(f"""
        import logging, ces_logging
        ces_logging.configure(endpoint="{emu.url}", project_id="{PROJECT}", grace_period=1.0, timeout=30)
        logging.getLogger("s").error("lost in a hung service")
    """)
    elapsed = time.monotonic() - t
    emu.clear_faults()
    assert r.returncode == 0
    assert "1 event(s) not delivered at exit" in r.stderr
    # The hung requests answer after 20 s: an exit that waited for one ends after that. Within 15 s: the 1 s
    # grace period, and the child interpreter's start-up and teardown on a loaded machine.
    assert elapsed < 20.0 - 5.0, elapsed


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_delivers_its_own_records(emu: Emulator, isolated_logger: logging.Logger) -> None:
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="forked", flush_interval=0.05)
    isolated_logger.addHandler(h)
    for i in range(3):
        isolated_logger.error("parent %d", i)
    assert h.flush(timeout=10)
    pid = os.fork()
    if pid == 0:  # the child: log, flush, leave at once
        code = 1
        try:
            for i in range(5):
                isolated_logger.error("child %d", i)
            ok = h.flush(timeout=10)
            code = 0 if ok and h.stats.sent == 5 and h.stats.received == 5 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    isolated_logger.error("parent after fork")
    assert h.flush(timeout=10)
    contents = sorted(e["detail"]["content"] for e in emu.events(PROJECT, "forked"))
    assert contents == sorted(
        [f"parent {i}" for i in range(3)] + [f"child {i}" for i in range(5)] + ["parent after fork"]
    )
    assert h.stats.sent == 4  # the parent's counters are the parent's


def test_worker_started_lazily_and_one_per_handler(emu: Emulator, isolated_logger: logging.Logger) -> None:
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="lazy", flush_interval=0.05)
    isolated_logger.addHandler(h)
    assert not h._worker.alive  # made, not started: no thread until the first record
    isolated_logger.error("first")
    thread = h._worker._thread
    assert thread is not None and thread.is_alive()
    for _ in range(250):
        isolated_logger.error("more")
    assert h.flush(timeout=10)
    assert h._worker._thread is thread and thread.is_alive()  # the same one thread did it all
    assert h.stats.sent == 251 and h.stats.batches >= 3


def test_sigterm_while_the_app_reads_the_counts_drains_and_ends(emu: Emulator) -> None:
    """SIGTERM lands while the app's thread is inside the buffer's ``counts`` (``stats``, ``flush``): the
    drain runs on that very thread and reads the counts again. A lock held there hung a pool worker for ever
    (seen under Python 3.10: ``with Pool`` sends SIGTERM to its workers while their finalizer flushes). Here
    the signal is raised from a trace function at a line inside ``counts``; the process must drain and end by
    SIGTERM with every record stored."""
    r = run_python(
        f"""
        import logging, signal, sys
        import ces_logging
        from ces_logging.buffer import RecordBuffer
        h = ces_logging.CESHandler(project_id="{PROJECT}", endpoint="{emu.url}", event_name="midCounts",
                                   flush_interval=60)
        log = logging.getLogger("mid")
        log.propagate = False
        log.addHandler(h)
        for i in range(50):
            log.error("record %d", i)
        lines = 0
        def trace(frame, event, arg):
            global lines
            if frame.f_code is RecordBuffer.counts.__code__:
                if event == "line":
                    lines += 1
                    if lines == 2:  # past the first line: where a lock taken there would be held
                        sys.settrace(None)
                        signal.raise_signal(signal.SIGTERM)
                return trace
            return None
        sys.settrace(trace)
        h.stats  # reads the counts on this thread
        print("not ended by SIGTERM", flush=True)
        """,
        timeout=30,
    )
    assert r.returncode == -15, (r.returncode, r.stdout, r.stderr)
    assert emu.count(PROJECT) == 50
