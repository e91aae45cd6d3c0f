"""Serverless: ``deliver_before_return`` / ``invocation()`` deliver what an invocation logged before it returns.

The platform (FunctionGraph, or any that freezes the process between invocations) is played by a real child
process that runs one invocation per line it reads, frozen with SIGSTOP as soon as an invocation has returned,
thawed with SIGCONT for the next one, and killed with SIGKILL at the end, as a reclaimed instance is (no SIGTERM,
no atexit). Whatever is not in the service by the time the process is frozen is what a real platform loses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

import ces_logging
from ces_logging import CESHandler
from ces_logging.emulator import Emulator

from .conftest import PROJECT, ROOT, wait_for

RECORDS = 40  # per invocation
INVOCATIONS = 5

FUNCTION = """
import json, logging, sys
import ces_logging

handler = ces_logging.CESHandler(
    project_id={project!r}, endpoint={url!r}, event_source="fn.test", flush_interval=60.0
)
log = logging.getLogger("fn")
log.propagate = False
log.addHandler(handler)


@ces_logging.deliver_before_return(timeout=10.0)
def main(event, context):
    for i in range({records}):
        log.warning("invocation %s record %s", event, i)
    return "ok"


for line in sys.stdin:
    k = int(line)
    result = main(k, None)
    s = handler.stats
    print(json.dumps({{"k": k, "result": result, "received": s.received, "sent": s.sent, "dropped": s.dropped,
                      "queued": s.queued, "folded": s.folded}}), flush=True)
"""


@pytest.fixture
def short_idle_emu() -> Iterator[Emulator]:
    """Closes an idle keep-alive connection after 0.3 s: while the function is frozen the service (or a load
    balancer) drops the connection the worker kept, so each thaw finds it dead, as it would after minutes."""
    with Emulator(idle_timeout=0.3) as e:
        yield e


def _read_line(p: subprocess.Popen[str], timeout: float) -> str:
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    assert ready, f"the function gave no answer within {timeout} s"
    line = p.stdout.readline()
    assert line, "the function's process ended"
    return line


def test_frozen_between_invocations_then_killed_loses_nothing_and_sends_nothing_twice(
    short_idle_emu: Emulator,
) -> None:
    emu = short_idle_emu
    code = textwrap.dedent(FUNCTION.format(project=PROJECT, url=emu.url, records=RECORDS))
    p = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert p.stdin is not None
        for k in range(INVOCATIONS):
            if k:
                os.kill(p.pid, signal.SIGCONT)  # the next request thaws the instance
            p.stdin.write(f"{k}\n")
            p.stdin.flush()
            s = json.loads(_read_line(p, timeout=30))
            os.kill(p.pid, signal.SIGSTOP)  # the invocation returned: the platform freezes the process
            expected = (k + 1) * RECORDS
            assert s["result"] == "ok"
            assert s["sent"] + s["dropped"] + s["queued"] + s["folded"] == s["received"] == expected
            assert (s["sent"], s["dropped"], s["queued"]) == (expected, 0, 0), s
            # Frozen, the worker cannot send: what the service holds now is all it will ever get of this
            # invocation. The service stored each event before it answered, and the function returned after
            # the answer, so the count is exact here, not a race.
            assert emu.count(PROJECT) == expected
            time.sleep(1.0)  # frozen for longer than the service keeps an idle connection
        os.kill(p.pid, signal.SIGKILL)  # the platform reclaims the instance: no SIGTERM, no atexit
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                stream.close()
    stored = emu.events(PROJECT, "fn")
    contents = sorted(e["detail"]["content"] for e in stored)
    want = sorted(f"invocation {k} record {i}" for k in range(INVOCATIONS) for i in range(RECORDS))
    assert contents == want  # nothing lost, nothing stored twice
    assert emu.stats().get("events_duplicate", 0) == 0  # and nothing sent twice


@pytest.fixture
def fn_logger(emu: Emulator) -> Iterator[tuple[logging.Logger, CESHandler]]:
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, flush_interval=60.0, timeout=1.0, handle_sigterm=False)
    log = logging.getLogger(f"fn{time.monotonic_ns()}")
    log.propagate = False
    log.addHandler(h)
    yield log, h
    log.removeHandler(h)
    h.close()


def _settled(h: CESHandler) -> None:
    s = h.stats
    assert s.sent + s.dropped + s.queued + s.folded == s.received


def test_the_error_a_failing_invocation_logs_is_delivered_before_it_raises(
    emu: Emulator, fn_logger: tuple[logging.Logger, CESHandler]
) -> None:
    log, h = fn_logger

    @ces_logging.deliver_before_return
    def main(event: object, context: object) -> None:
        try:
            raise ValueError("bad order")
        except ValueError:
            log.exception("order %s failed", event)
            raise

    with pytest.raises(ValueError):
        main(7, None)
    assert emu.count(PROJECT) == 1  # before the exception reached the caller
    assert h.stats.queued == 0
    _settled(h)


def test_async_function(emu: Emulator, fn_logger: tuple[logging.Logger, CESHandler]) -> None:
    log, h = fn_logger

    @ces_logging.deliver_before_return(timeout=10.0)
    async def main(event: object, context: object) -> str:
        log.warning("async invocation %s", event)
        return "done"

    assert asyncio.run(main(1, None)) == "done"
    assert emu.count(PROJECT) == 1
    assert h.stats.queued == 0
    _settled(h)


def test_a_service_that_does_not_answer_delays_the_return_by_the_timeout_at_most(
    emu: Emulator, fn_logger: tuple[logging.Logger, CESHandler]
) -> None:
    """The bound is the point: a hung service must not hold the function until the platform's own timeout.
    What was not delivered stays queued (counted) and goes with a later invocation."""
    log, h = fn_logger
    emu.add_fault(seconds=60.0, delay=3.0)  # every report hangs past the handler's request timeout (1 s)
    t = time.monotonic()
    with ces_logging.invocation(timeout=0.5) as inv:
        log.error("payment failed")
    took = time.monotonic() - t
    assert inv.delivered is False
    assert took < 3.0  # 0.5 s asked: a wait for the handler's grace period (5 s) or for the service would fail
    s = h.stats
    assert s.queued == 1 and s.sent == 0
    _settled(h)
    emu.clear_faults()
    with ces_logging.invocation(timeout=30.0) as inv:
        pass  # the next invocation delivers what the previous one left
    assert inv.delivered is True
    assert wait_for(lambda: emu.count(PROJECT) == 1)
    assert h.stats.queued == 0
    _settled(h)


def test_with_nothing_configured_an_invocation_waits_for_nothing() -> None:
    h = CESHandler(handle_sigterm=False)  # inactive: no endpoint, region or project id anywhere
    log = logging.getLogger(f"idle{time.monotonic_ns()}")
    log.propagate = False
    log.addHandler(h)
    try:
        with ces_logging.invocation() as inv:
            log.error("not sent anywhere")
        assert inv.delivered is True
        assert h.stats.dropped_by_reason == {"inactive": 1}
    finally:
        log.removeHandler(h)
        h.close()


class FunctionGraphContext:
    """What FunctionGraph passes as ``context``: the time left before the platform's limit."""

    def __init__(self, left_ms: float) -> None:
        self.left_ms = left_ms

    def getRemainingTimeInMilliSeconds(self) -> float:  # the platform's name
        return self.left_ms


def test_the_platforms_time_limit_bounds_the_wait(
    emu: Emulator, fn_logger: tuple[logging.Logger, CESHandler]
) -> None:
    """10 s asked, 0.7 s left before the platform's limit: the function returns in time (a flush that pushed it
    over would make the platform fail the invocation); what is left goes with the next one."""
    log, h = fn_logger
    emu.add_fault(seconds=60.0, delay=3.0)  # every report hangs past the handler's request timeout (1 s)

    @ces_logging.deliver_before_return(timeout=10.0)
    def main(event: object, context: object) -> str:
        log.error("late order %s", event)
        return "ok"

    t = time.monotonic()
    assert main(1, FunctionGraphContext(700)) == "ok"
    took = time.monotonic() - t
    assert took < 3.0  # the 10 s asked would fail this
    s = h.stats
    assert s.queued == 1 and s.sent == 0
    _settled(h)
    emu.clear_faults()
    assert main(2, context=FunctionGraphContext(60_000)) == "ok"  # keyword, and time enough: both delivered
    assert wait_for(lambda: emu.count(PROJECT) == 2)
    assert h.stats.queued == 0
    _settled(h)
