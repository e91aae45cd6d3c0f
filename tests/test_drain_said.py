"""Issue 27: records given up at the end of the process's grace period are always said, whoever counts first.

``test_processes.py::test_sigterm_with_a_hung_service_is_bounded_by_the_grace_period`` ended now and then (6 runs
in 25 under load, Python 3.10) with no "not delivered" line: the sender whose request was cut at the deadline
counted its batch as ``shutdown`` a moment before the drain's wait woke, the drain took everything as accounted
for and skipped ``_give_up`` (which says the loss), and the process ended by SIGTERM in silence. Here that order
is made certain: the worker gives the record up first, then the drain's wait is asked.
"""

from __future__ import annotations

import logging
import time

import pytest

from ces_logging import CESHandler
from ces_logging.emulator import Emulator

from .conftest import PROJECT, wait_for


def test_a_batch_given_up_before_the_drain_wakes_is_said(
    emu: Emulator, isolated_logger: logging.Logger, capfd: pytest.CaptureFixture[str]
) -> None:
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, flush_interval=60, grace_period=2)
    isolated_logger.addHandler(h)
    isolated_logger.error("one")
    # The process's final deadline, already passed: the worker gives the record up as ``shutdown`` at once.
    h._hurry(time.monotonic() - 1.0, final=True)
    assert wait_for(lambda: h.stats.dropped_by_reason.get("shutdown") == 1, timeout=10), h.stats
    assert emu.count(PROJECT) == 0
    # Everything is accounted for, but the loss has not been said: the drain must not call this delivered.
    assert h._wait_delivered(time.monotonic() + 1.0) is False
    h._give_up()  # what lifecycle.drain does with that answer
    err = capfd.readouterr().err
    assert "ces_logging: 1 event(s) not delivered at exit" in err, err
    # Said once: a later drain finds nothing unsaid, and closing says nothing more.
    assert h._wait_delivered(time.monotonic() + 1.0) is True
    isolated_logger.removeHandler(h)
    h.close()
    s = h.stats
    assert s.sent + s.dropped + s.queued + s.folded == s.received == 1 and s.queued == 0, s
    assert "not delivered" not in capfd.readouterr().err
