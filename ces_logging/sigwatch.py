"""A SIGTERM that the main thread did not act on, in a multiprocessing child: sent to it again.

A signal handler written in Python runs on the main thread, at its next bytecode. A multiprocessing Pool ends
its workers with SIGTERM while they wait in C for the task queue's lock, and then waits for them without a time
limit. CPython can miss the handler there (the lock's wait is left for the signal and entered again with the
handler not run), whoever installed it; a second SIGTERM ends the worker. The default action never misses, so
installing a handler must not make the app's ``with Pool(...)`` wait for ever.

The rule: in a multiprocessing child where our SIGTERM handler is in place, the process's wakeup fd (written by
CPython's C-level handler for every signal, whatever the main thread is doing) is a pipe read by a thread of
ours. When it shows a SIGTERM and our handler has not started within ``RESEND_AFTER_S``, the signal is sent
again to the main thread, at most ``MAX_RESENDS`` times. Only in multiprocessing children, and only when the
wakeup fd is free: an app's event loop (asyncio, trio) owns it elsewhere, and trio warns when it finds one set.
Only when our handler ends the process (no handler of the app's behind it), so that a second delivery cannot
run an app's graceful shutdown twice. Not under gevent or eventlet (their hub owns the signals; green.py).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import Final

from . import forks, green, notice

# ``signal`` is imported by the functions that use it, at their first call: with its enums it would cost every
# ``import ces_logging`` most of a millisecond, and only a handler that sends needs it.

RESEND_AFTER_S: Final = 0.5
MAX_RESENDS: Final = 5

_started = threading.Event()  # set by our handler as it starts: the SIGTERM was acted on
_pipe: tuple[int, int] | None = None  # (read, write) of the wakeup fd, in the process _pid
_pid = 0


def handler_started() -> None:
    """Called first thing by our SIGTERM handler (on the main thread)."""
    _started.set()


def in_multiprocessing_child() -> bool:
    mp = sys.modules.get("multiprocessing.process")
    if mp is None:
        return False
    try:
        return mp.parent_process() is not None
    except Exception:
        return False


def watch(ours_ends_the_process: Callable[[], bool]) -> None:
    """From the main thread, once our handler is in place: start watching, if the rule above allows it here."""
    import signal

    global _pipe, _pid
    if _pid == os.getpid() or green.patched() or not in_multiprocessing_child():
        return
    if threading.current_thread() is not threading.main_thread():
        return
    r, w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(w, False)
    try:
        old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except (ValueError, OSError):
        os.close(r)
        os.close(w)
        return
    if old != -1:  # someone else's: give it back and stay out
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(old)
        os.close(r)
        os.close(w)
        return
    _pipe, _pid = (r, w), os.getpid()
    _started.clear()
    t = threading.Thread(target=_run, args=(r, ours_ends_the_process), name="ces-logging-sigwatch", daemon=True)
    notice.start_thread(t)


def _run(r: int, ours_ends_the_process: Callable[[], bool]) -> None:
    import signal

    notice.keep_signals_off_this_thread()
    main = threading.main_thread().ident
    while True:
        try:
            data = os.read(r, 64)
        except OSError:
            return  # closed after a fork
        if not data:
            return
        if signal.SIGTERM not in data:
            continue
        for _ in range(MAX_RESENDS):
            if _started.wait(RESEND_AFTER_S) or not ours_ends_the_process() or main is None:
                break
            with contextlib.suppress(OSError, ValueError):
                signal.pthread_kill(main, signal.SIGTERM)
        return


def _after_fork_in_child() -> None:
    """A child has no watching thread: give back the wakeup fd it inherited, then close the pipe (a signal of
    the child's written there would be read by the parent's thread). The pipe stays open when the wakeup fd
    cannot be given back here, so that CPython never writes a signal's byte into a number reused by another
    file."""
    global _pipe, _pid
    if _pipe is None:
        return  # before any import: a child forked while another thread imported would wait on its lock
    import signal  # loaded already: ``watch`` imported it

    r, w = _pipe
    _pipe, _pid = None, 0
    _started.clear()
    try:
        old = signal.set_wakeup_fd(-1)  # the forking thread is the child's main thread
    except (ValueError, OSError):
        return
    if old not in (-1, w):
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(old)
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


forks.on_new_process(_after_fork_in_child)
