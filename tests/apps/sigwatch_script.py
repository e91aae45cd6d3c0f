"""A multiprocessing child whose main thread waits in C for a lock when SIGTERM's handler run is missed.

``python tests/apps/sigwatch_script.py METHOD CASE``. The child logs 5 errors (``flush_interval=60``: they are
still queued), then waits for a lock the parent holds, as a Pool worker waits for its task queue.
- ``missed``: the child writes SIGTERM's number into the wakeup fd itself, which is what CPython's C-level
  handler does when a SIGTERM arrives, without the Python-level handler being run: the case where CPython
  misses it. The child must still end by SIGTERM and deliver its 5 records.
- ``app_fd``: the app owns the wakeup fd; it must still be the app's after the handler starts.
Prints one JSON line: the child's exit code and what it saw.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import socket
import sys
from typing import Any


def child(case: str, lock: Any, ready: Any, out: Any) -> None:
    import ces_logging
    from ces_logging import sigwatch

    app_sock = None
    if case == "app_fd":
        app_sock = socket.socketpair()[0]
        app_sock.setblocking(False)
        signal.set_wakeup_fd(app_sock.fileno())
    ces_logging.configure(event_name="sigwatch", flush_interval=60)
    for i in range(5):
        logging.getLogger("child").error("queued %d", i, extra={"ces": {"resource_id": f"r{i}"}})
    if case == "app_fd":
        fd = signal.set_wakeup_fd(-1)
        out.send({"wakeup_fd_is_apps": app_sock is not None and fd == app_sock.fileno()})
        ready.set()
        return
    out.send({"watching": sigwatch._pipe is not None})
    ready.set()
    assert sigwatch._pipe is not None
    os.write(sigwatch._pipe[1], bytes([signal.SIGTERM]))  # delivered in C, never run in Python
    lock.acquire()  # waits for ever unless the SIGTERM is acted on


def main() -> None:
    method, case = sys.argv[1], sys.argv[2]
    import ces_logging

    ces_logging.configure(event_name="sigwatchParent", flush_interval=60)
    logging.getLogger("parent").error("the parent's handler, in a process that is no multiprocessing child")
    parent_fd = signal.set_wakeup_fd(-1)
    ctx = mp.get_context(method)
    lock, ready = ctx.Lock(), ctx.Event()
    lock.acquire()
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=child, args=(case, lock, ready, w))
    p.start()
    seen = r.recv() if r.poll(30) else {}
    p.join(20)
    code = p.exitcode
    if code is None:
        p.kill()
        p.join(5)
    print(json.dumps({"exitcode": code, "parent_wakeup_fd": parent_fd, **seen}), flush=True)


if __name__ == "__main__":
    main()
