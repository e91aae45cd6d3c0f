"""Issue 27: the spool's counts under threads (a unit test of the worker's parts, with a fake client).

``stats.spooled`` counts this handler's items on disk; the batcher, when it finds no file to claim, compares it
with what is on disk (``_refresh_own_spooled``) so that files another process delivered stop counting here. A
sender removes its own file before it counts the outcome (a flush that sees the batch sent finds the file
gone): a refresh in between saw the file gone and counted it as sent "by someone else", then the sender counted
it again: ``spooled`` below 0 and ``queued=-1`` (seen once in tests/test_spool_hostile.py). The window is a
few bytecodes wide; here the test thread plays the batcher, claiming and refreshing in a tight loop while real
sender threads deliver, with the GIL switching as often as it can, file after file: against the worker without
the fix it failed 3 runs in 3 ("spooled went down to -6"), within the first few hundred files.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ces_logging.buffer import RecordBuffer
from ces_logging.spool import Spool
from ces_logging.throttle import Throttle
from ces_logging.worker import Ledger, Worker

from .conftest import item

FILES = 300  # own spool files of two events each, written and claimed in turn
DEADLINE_S = 30.0  # the whole test, on a loaded machine: it needs well under 5 s idle


class TakingClient:
    """Takes every batch at once (what the worker needs of ``CESClient``), counting the events."""

    timeout = 5.0

    def __init__(self) -> None:
        self.taken = 0
        self.lock = threading.Lock()

    def send_events_body(self, body: bytes, *, timeout: float | None = None) -> tuple[int, bytes]:
        n = len(json.loads(body))
        with self.lock:
            self.taken += n
        return 201, b"[]"

    def reset_connections(self) -> None:
        pass


def never_built(item: Any, now: int) -> Any:  # the test writes events, it never builds any
    raise AssertionError("not used")


def test_spooled_counts_never_go_below_zero_while_senders_remove_their_files(tmp_path: Path) -> None:
    client = TakingClient()
    spool = Spool(tmp_path / "spool", 50 * 2**20)
    buf = RecordBuffer(1000, 2**20)
    w = Worker(buf, never_built, client, Throttle(4), batch_size=100, flush_interval=1.0, spool=spool)  # type: ignore[arg-type]
    stats = w.stats
    lowest_spooled = 0
    highest_accounted = 0
    written = 0
    deadline = time.monotonic() + DEADLINE_S
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the GIL changes hands as often as it can: every interleaving gets its chance
    try:
        while time.monotonic() < deadline and written < FILES:
            # what the spool's write does for a batch from memory: taken, written, counted as spooled
            stats.taken(2)
            batch: list[Any] = [item("count", content=f"{written}-{i}") for i in range(2)]
            assert w.spool_state.write(batch, Ledger(stats, "memory", spool.owner))
            written += 1
            # The batcher's turns until this file is accounted for: claim and dispatch it, then (nothing left
            # to claim) refresh, again and again, while a sender removes the file and sends its halves.
            while time.monotonic() < deadline and stats.sent < 2 * written:
                w.spool_state.backlog = True
                w._send_one_spooled()
                with stats.cond:
                    lowest_spooled = min(lowest_spooled, stats.spooled)
                    highest_accounted = max(highest_accounted, stats.sent + sum(stats.dropped.values()))
                time.sleep(0.0005)
        while time.monotonic() < deadline and stats.spooled > 0:  # the last halves' counts
            time.sleep(0.01)
    finally:
        sys.setswitchinterval(switch)
        w.hurry_state.stopping = True
        w._finish()  # ends the senders
        assert w.join(10)
    assert written == FILES
    assert lowest_spooled >= 0, f"spooled went down to {lowest_spooled}"
    assert highest_accounted <= 2 * FILES, f"{highest_accounted} accounted for {2 * FILES} items"
    with stats.cond:
        assert stats.sent == 2 * FILES and not stats.dropped, (stats.sent, stats.dropped)
        assert stats.spooled == 0 and stats.in_flight == 0, (stats.spooled, stats.in_flight)
    assert client.taken == 2 * FILES and spool.count_of_owner(spool.owner) == 0
