"""Issue 22: storm summaries ride in batches with the other events, at no request of their own.

2,000 alike groups of 11 records under ``storm_control="10/5s"`` made 2,220 requests when each summary went
alone, against 220 with storm control off. Now the same burst makes no more requests than without storm control
(+10%), every record is accounted for (``folded`` counts what the summaries stand for), and the invariant holds.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ces_logging import CESHandler
from ces_logging.emulator import Emulator

from .conftest import PROJECT

GROUPS = 2000
PER_GROUP = 11
SIMILAR = re.compile(r"\[\+(\d+) similar in")


def burst(emu: Emulator, logger: logging.Logger, name: str, **kw: Any) -> tuple[int, CESHandler]:
    """Log the burst, flush, and count the requests the emulator received for it."""
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name=name, flush_interval=0.05, batch_size=100,
                   queue_size=GROUPS * PER_GROUP, queue_max_bytes=64 * 2**20, timeout=10, **kw)  # fmt: skip
    logger.addHandler(h)
    before = emu.state.stats["requests"]
    for g in range(GROUPS):
        for i in range(PER_GROUP):
            logger.error(f"dependency {g} failed, attempt %d", i)
    assert h.flush(timeout=60)
    requests = emu.state.stats["requests"] - before
    logger.removeHandler(h)
    s = h.stats
    assert s.sent + s.dropped + s.queued + s.folded == s.received == GROUPS * PER_GROUP, s
    assert s.queued == 0 and s.dropped == 0, s
    return requests, h


def test_storm_summaries_make_no_extra_requests(emu: Emulator, isolated_logger: logging.Logger) -> None:
    off, h_off = burst(emu, isolated_logger, "stormoff")
    on, h_on = burst(emu, isolated_logger, "stormon", storm_control="10/5s")
    s = h_on.stats
    assert s.folded == GROUPS and s.sent == GROUPS * 10, s  # 10 events a group, the 11th in its summary
    events = emu.events(PROJECT, "stormon")
    ks = [int(m.group(1)) for e in events if (m := SIMILAR.search(e["detail"]["content"]))]
    assert sum(ks) == GROUPS and len(events) == GROUPS * 10 + len(ks), (len(events), len(ks))
    print(f"requests: {on} with storm control, {off} without")
    assert on <= off * 1.10, f"{on} requests with storm control against {off} without"
    assert s.batches == on and h_off.stats.batches == off  # nothing was retried
    h_off.close()
    h_on.close()
