"""Several processes log records whose event fields, time included, are all the same.

``python tests/apps/same_key.py METHOD K M``: every record's ``created`` is pinned to ``SAME_KEY_T`` (from the
environment), so each process's events get the times T, T+1, ... T+M-1 and every field of the same-event key
is equal across processes, except what the handler adds to tell processes apart. The parent logs M records and
flushes, then K children (started with METHOD; under fork they inherit the parent's used handler) do the same.
Each process prints ``{"pid", "flushed", "stats"}`` as one JSON line. ``SAME_KEY_OPTIONS`` (JSON) goes to
``configure``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing as mp
import os
import sys

import ces_logging

T = float(os.environ["SAME_KEY_T"])
HANDLER = ces_logging.configure(
    level="WARNING", event_name="sameKey", flush_interval=60, **json.loads(os.environ.get("SAME_KEY_OPTIONS", "{}"))
)


class PinnedTime(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.created = T
        return True


HANDLER.addFilter(PinnedTime())


def log_and_flush(m: int) -> None:
    for _ in range(m):
        logging.getLogger("same").error("the very same error")
    ok = HANDLER.flush(timeout=30)
    line = json.dumps({"pid": os.getpid(), "flushed": ok, "stats": dataclasses.asdict(HANDLER.stats)}) + "\n"
    # One write of the whole line: the processes finish together, and print()'s text and line end can be two
    # writes (seen under Python 3.10: two children's lines run into one).
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), line.encode())


def main() -> None:
    method, k, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    log_and_flush(m)
    ctx = mp.get_context(method)
    procs = [ctx.Process(target=log_and_flush, args=(m,)) for _ in range(k)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit(f"a child failed: {[p.exitcode for p in procs]}")


if __name__ == "__main__":
    main()
