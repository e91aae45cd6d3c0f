"""multiprocessing workers that log and end, the ways apps end them.

``python tests/apps/pool_script.py METHOD MODE N [late]``: METHOD a start method (fork, spawn, forkserver); MODE
``with`` (``with Pool(4)``: its exit calls ``terminate()``, i.e. SIGTERM to the workers), ``close_join``
(``close(); join()``: the workers return and end without atexit under fork), ``process`` (four
``Process``es that log and return). N tasks each log one warning with a resource id of its own, so that no two
events can be merged: every one must be stored. ``configure`` runs at import, so that spawn and forkserver
children (which import this module again) have a handler too, as in a real app. ``late``: multiprocessing is
imported after the handler is built (by ``main``, as an app that starts a pool in a command does), not before.

The pool's workers wait for each other before the first task and each task takes a few milliseconds, so the
tasks spread over all four (about 50 each, below a batch of 100): every record is still queued in its worker
when the pool ends it, and the way the worker ends decides whether it is delivered.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

if "late" not in sys.argv[4:]:
    import multiprocessing.pool  # noqa: F401 - loaded before the handler is built (with multiprocessing.util)

import ces_logging
from ces_logging import lifecycle

ces_logging.configure(level="WARNING", event_name="poolTask", flush_interval=60)
MP_AT_CONFIGURE = lifecycle._mp_hooked  # hooked when the handler was built, not by the at-fork hook
log = logging.getLogger("pool")


def ready(barrier: Any) -> None:
    barrier.wait(60)


def task(i: int) -> int:
    log.warning("task %d", i, extra={"ces": {"resource_id": f"task-{i}"}})
    time.sleep(0.005)
    return os.getpid()


def tasks(lo: int, hi: int) -> None:
    for i in range(lo, hi):
        task(i)


def main() -> None:
    import multiprocessing as mp

    method, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ctx = mp.get_context(method)
    pids: list[int] = []
    exitcodes: list[int | None] = []
    if mode == "with":
        with ctx.Pool(4, initializer=ready, initargs=(ctx.Barrier(4),)) as pool:
            pids = pool.map(task, range(n), chunksize=1)
    elif mode == "close_join":
        pool = ctx.Pool(4, initializer=ready, initargs=(ctx.Barrier(4),))
        pids = pool.map(task, range(n), chunksize=1)
        pool.close()
        pool.join()
    elif mode == "process":
        procs = [ctx.Process(target=tasks, args=(k * n // 4, (k + 1) * n // 4)) for k in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        pids = [p.pid or 0 for p in procs]
        exitcodes = [p.exitcode for p in procs]
    else:
        raise SystemExit(f"unknown mode {mode}")
    most = max(pids.count(p) for p in set(pids)) if mode != "process" else n // 4
    out = {"workers": len(set(pids)), "most_tasks": most, "exitcodes": exitcodes, "mp_at_configure": MP_AT_CONFIGURE}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
