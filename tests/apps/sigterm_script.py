"""A long-running script that is stopped by SIGTERM.

``python tests/apps/sigterm_script.py MODE N OPTIONS_JSON``: logs N errors (``flush_interval=60``, so they
wait in the queue), prints ``READY`` and waits (60 s at most) for the signal. OPTIONS_JSON goes to
``ces_logging.configure``. MODE ``plain``: the script has no SIGTERM handler of its own. MODE ``app_handler``:
before ``ces_logging`` is imported the app installs its own handler, which sets a flag; the main loop then
logs one more record, flushes, prints its stats as JSON and returns normally (exit status 0).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sys
import time
from types import FrameType

mode, n, options = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
stop = False


def on_term(signum: int, frame: FrameType | None) -> None:
    global stop
    stop = True
    print("APP HANDLER RAN", flush=True)


if mode == "app_handler":
    signal.signal(signal.SIGTERM, on_term)

import ces_logging  # noqa: E402  (after the app's own handler, as an app that sets one early would)

handler = ces_logging.configure(level="WARNING", event_name="sigterm", flush_interval=60, **options)
log = logging.getLogger("sig")
for i in range(n):
    log.error("record %d", i)
print("READY", flush=True)
deadline = time.monotonic() + 60
while not stop and time.monotonic() < deadline:
    time.sleep(0.02)
if not stop:
    sys.exit(9)  # no signal reached the app
log.error("after the signal")
ok = handler.flush(timeout=20)
print(json.dumps({"flushed": ok, "stats": dataclasses.asdict(handler.stats)}), flush=True)
