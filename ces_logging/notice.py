"""The handler's own words to a person: one line on stderr, rate-limited, never through ``logging``.

Why not ``logging``: the handler is often the root logger's only handler (the Django and Flask recipes), so a
warning it logged about itself would come back to it, or vanish when it cannot send. A line on stderr is seen by
every deployment that keeps one (containers, systemd, gunicorn). One line per reason and interval says how many
times the same thing happened since the last line, so a storm of drops is a few lines, not a storm.

Nothing here formats a secret: callers pass counts, reasons and exception *types* with their short text, and
the client's own error text never carries a header value.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from typing import Final

from . import forks, green

INTERVAL_S: Final = 60.0  # at most one line per reason per minute (the first one at once)

# re-entrant: a SIGTERM's drain runs on the thread it interrupted, which may be saying something right then
_lock = threading.RLock()
_last: dict[str, float] = {}
_suppressed: dict[str, int] = {}


def say(reason: str, text: str, *, interval: float = INTERVAL_S) -> bool:
    """Write ``ces_logging: {text}`` on stderr unless the same ``reason`` was said less than ``interval`` s
    ago (then it is counted and the next line says how many were held back). True when a line was written."""
    now = time.monotonic()
    with _lock:
        last = _last.get(reason)
        if last is not None and now - last < interval:
            _suppressed[reason] = _suppressed.get(reason, 0) + 1
            return False
        _last[reason] = now
        held = _suppressed.pop(reason, 0)
    more = f" (and {held} more like it since the last line)" if held else ""
    write(f"ces_logging: {text}{more}")
    return True


def write(line: str) -> None:
    """One line on stderr, never raising (a closed or full stderr must not break the app or the worker)."""
    try:
        stream = sys.stderr
        if stream is not None:
            stream.write(line.rstrip("\n") + "\n")
            stream.flush()
    except Exception:
        pass


def reset_after_fork() -> None:
    """A new process says its own lines: a new lock, and nothing said or suppressed yet."""
    global _lock
    _lock = threading.RLock()
    _last.clear()
    _suppressed.clear()


forks.on_new_process(reset_after_fork)


@functools.cache
def _asynchronous_signals() -> frozenset[int]:
    """Every signal but SIGKILL, SIGSTOP and those the faulting instruction raises itself (never blocked: a
    fault with it blocked kills the process). Worked out at the first thread start: ``signal`` (and its enums)
    is imported when a handler first needs it, not by ``import ces_logging``."""
    import signal

    synchronous = {
        getattr(signal, n) for n in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS") if hasattr(signal, n)
    }
    try:
        return frozenset(signal.valid_signals()) - synchronous - {signal.SIGKILL, signal.SIGSTOP}
    except AttributeError:  # pragma: no cover - no valid_signals (Windows)
        return frozenset(getattr(signal, n) for n in ("SIGTERM", "SIGINT") if hasattr(signal, n))


def start_thread(t: threading.Thread) -> None:
    """``t.start()`` with every asynchronous signal blocked from the new thread's first instruction (a thread
    is born with its creator's signal mask; ``keep_signals_off_this_thread`` at the top of its function would
    come too late for a signal sent while it waits for the GIL). Two rules follow:
    - a signal sent to the process goes to a thread that can act on it: Python runs handlers on the main thread
      only, and a main thread asleep in C (``time.sleep``, a semaphore) is woken only by a signal sent to it;
    - no handler of the app runs in the creator while ``Thread.start`` is half done (one that raises, the
      ``signal.alarm`` pattern, would leave ``threading``'s books on the new thread wrong). A signal sent
      meanwhile waits, and runs once the creator's mask is back.

    Not under gevent or eventlet: the "thread" is a greenlet on the main OS thread, and starting it switches to
    other greenlets, which would run with the process's signals blocked (see ``keep_signals_off_this_thread``)."""
    if green.patched():
        t.start()
        return
    import signal

    # An app's handler may raise from any of these calls: ``pthread_sigmask`` runs pending handlers after it
    # changed the mask. The mask is read before it is changed, so that it is put back whatever raises.
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    except (AttributeError, OSError, ValueError):  # no pthread_sigmask (Windows)
        t.start()
        return
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, _asynchronous_signals())
        t.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def keep_signals_off_this_thread() -> None:
    """Block the process-directed signals that end a process (SIGTERM, SIGINT) on this thread, one of ours.

    The kernel hands such a signal to any thread that does not block it. Python runs the handler in the main
    thread only, at its next bytecode: when the signal lands on a thread of ours while the main thread sleeps
    in C (``time.sleep``, a blocking read), nothing wakes the main thread and the process goes on as if nothing
    had been sent, and the drain never runs. Blocked here, it goes to a thread that can act on it. Our threads
    never need them: the handlers run on the main thread anyway.

    Never on the main OS thread: under gevent or eventlet a "thread" of ours is a greenlet there, and blocking
    the signals on it would block them for the whole process (a script that SIGTERM and Ctrl-C cannot stop).
    The main thread's native id is the pid (Linux); a real thread's is not."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no pthread_sigmask (Windows)
        if threading.get_native_id() == os.getpid() or green.patched():
            return
        import signal

        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
