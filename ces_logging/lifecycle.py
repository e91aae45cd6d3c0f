"""The process around the handlers: exit, SIGTERM, fork and multiprocessing workers.

Every way a process ends gets the same treatment: every open handler delivers what was logged before, retries
included, within one grace period (the longest configured), and what cannot be delivered is counted and said on
stderr. The ways, and the hook each needs:

- a script that returns, ``sys.exit``: ``atexit`` (registered when this module is imported, so it runs before
  ``logging.shutdown``, which was registered earlier; records logged after it, by atexit hooks registered before
  our import, are still sent while the grace period lasts, and ``CESHandler.close`` from ``logging.shutdown``
  waits for them no longer than that);
- SIGTERM (docker, Kubernetes, systemd, gunicorn, uvicorn): a signal handler installed from the main thread
  that drains, then hands the signal on: to the handler that was there before (chained, never replaced: a
  server's graceful shutdown goes on), or, when that was the default, by restoring the default and raising the
  signal again, so the process still ends *by SIGTERM* (status -15 / 143). uvicorn saves the handler it finds
  and puts it back before raising SIGTERM again after its graceful shutdown: that handler is ours when the app
  was loaded first, so the second drain sends what the shutdown logged;
- multiprocessing workers, which end with ``os._exit`` after multiprocessing's own finalizers (``close();
  join()``) or by SIGTERM (``terminate()``, a Pool's ``with``): a finalizer registered in every child process
  (``multiprocessing.util.Finalize``, via ``register_after_fork``, which runs in children of every start method),
  and the SIGTERM handler above;
- ``fork``: the child renews every lock and starts with empty queues (what the parent queued is the parent's),
  also where no at-fork hook ran (uWSGI): the new pid is noticed on emit, flush, close and at exit. Each module
  renews its own state through ``forks.py``; this one renews its registry, then every open handler, after
  every module's renewal (forks.py's order rule);
- PID 1 of a pid namespace ignores the SIGTERM handed on by the default action: its drain is a hurry, not the
  exit's deadline, and delivery goes on as before;
- under gevent or eventlet, a SIGTERM that lands in the hub drains in a greenlet of its own (green.py).

Nothing here waits while holding ``logging._lock`` or a handler's lock, and every wait has a deadline.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
import weakref
from typing import Any, Protocol

from . import forks, green, sigwatch
from .worker import Worker

# ``signal`` is imported by the functions that use it, at their first call: with its enums it would cost every
# ``import ces_logging`` most of a millisecond, and only a handler that sends needs it.


class Managed(Protocol):
    """What this module needs of a handler."""

    grace_period: float

    def _hurry(self, deadline: float, final: bool) -> None: ...

    def _wait_delivered(self, deadline: float) -> bool: ...

    def _give_up(self) -> None: ...

    def _after_fork_in_child(self) -> None: ...

    def _is_open(self) -> bool: ...

    def _refresh_fast(self) -> None: ...


_HANDLERS: weakref.WeakSet[Any] = weakref.WeakSet()
_DRAINING: set[Worker] = set()  # workers of closed handlers still delivering in the background
_registry_lock = threading.RLock()  # re-entrant: a drain in a signal handler may interrupt one
_exit_deadline: float | None = None  # monotonic; set when the process began to end


def register(h: Managed, *, sends: bool = True) -> None:
    """``sends``: False for an inactive handler, which never has anything to deliver at a multiprocessing
    child's end, so it does not load multiprocessing (and subprocess, socket, pickle) to hook it."""
    with _registry_lock:
        _HANDLERS.add(h)
    if sends:
        _install_mp_hook()


def unregister(h: Managed) -> None:
    with _registry_lock:
        _HANDLERS.discard(h)


def add_draining(w: Worker) -> None:
    with _registry_lock:
        _DRAINING.add(w)


def exit_deadline() -> float | None:
    """When the process is ending: the monotonic time by which everything must be delivered."""
    return _exit_deadline


def open_handlers() -> list[Managed]:
    with _registry_lock:
        return [h for h in list(_HANDLERS) if h._is_open()]


def drain(final: bool) -> None:
    """Deliver everything every open handler holds within one grace period (the longest configured).

    ``final``: the process is ending (exit, a pool worker's end, SIGTERM with the default action): the deadline
    is the process's, shared by every later call (exit after SIGTERM, a finalizer and then atexit), and what is
    left when it passes is given up, counted and said. Otherwise (SIGTERM chained to a server's own handler,
    which goes on with a graceful shutdown) the hurry lasts one grace period and the handlers go on as before."""
    global _exit_deadline
    forks.changed()  # a process forked without at-fork hooks: its handlers start afresh first
    # No "already draining" shortcut: SIGTERM may land while a drain runs (a pool worker's finalizer, then
    # the pool's terminate()), and the handler then ends the process when it returns, so it must do the
    # waiting itself. Everything below is safe to run nested (re-entrant locks, idempotent steps).
    handlers = open_handlers()
    with _registry_lock:
        draining = list(_DRAINING)
    if not handlers and not draining:
        return
    grace = max([h.grace_period for h in handlers] + [5.0 if draining else 0.0])
    deadline = time.monotonic() + grace
    if final:
        if _exit_deadline is None:
            _exit_deadline = deadline
        deadline = _exit_deadline
    for h in handlers:
        h._hurry(deadline, final)
    for w in draining:
        w.hurry(deadline, final=True)
    done = [h._wait_delivered(deadline) for h in handlers]
    for w in draining:
        w.join(max(0.0, deadline - time.monotonic()))
    if final:
        for h, ok in zip(handlers, done, strict=True):
            if not ok:
                h._give_up()


def _at_exit() -> None:
    drain(final=True)


# --- SIGTERM ---------------------------------------------------------------------------------------------------

_previous_sigterm: Any = None
terminating_until: float | None = None


def terminating() -> float | None:
    """After a SIGTERM handed on to a server's own handler: until when records are delivered as logged. Once
    that is past, it is forgotten, and the handlers' fast path (which only queues) is back."""
    global terminating_until
    until = terminating_until
    if until is None:
        return None
    if time.monotonic() >= until:
        terminating_until = None
        for h in open_handlers():
            h._refresh_fast()
        return None
    return until


def install_sigterm() -> bool:
    """Put our SIGTERM handler in front of the one in place (only from the main thread; never over SIG_IGN or
    a handler installed from C, which cannot be chained). True when ours is in place now."""
    import signal

    global _previous_sigterm
    if threading.current_thread() is not threading.main_thread() and not green.on_main_os_thread():
        return False
    try:
        current = signal.getsignal(signal.SIGTERM)
    except (ValueError, AttributeError):
        return False
    if current is not _on_sigterm:
        if current is signal.SIG_IGN or current is None:
            return False
        try:
            signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):
            return False
        _previous_sigterm = current
    with contextlib.suppress(Exception):  # never fail the app for the watch
        sigwatch.watch(_ours_ends_the_process)
    return True


def _ours_ends_the_process() -> bool:
    """Our handler is in place and ends the process itself (none of the app's behind it; not PID 1)."""
    import signal

    try:
        current = signal.getsignal(signal.SIGTERM)
    except (ValueError, AttributeError):
        return False
    return current is _on_sigterm and not callable(_previous_sigterm) and _ends_by_default()


def _on_sigterm(signum: int, frame: Any) -> None:
    sigwatch.handler_started()  # acted on: no second delivery (sigwatch.py)
    # In gevent's or eventlet's hub (where the signal finds a process that waits), nothing may wait: the drain
    # and what follows run in a greenlet of their own, at once (see green.py).
    if green.spawn_out_of_hub(_handle_sigterm, signum, frame):
        return
    _handle_sigterm(signum, frame)


def _ends_by_default() -> bool:
    """Whether SIGTERM's default action ends this process: not for the init process of a pid namespace (PID 1
    of a container), which the kernel never ends by a signal it has no handler for."""
    return os.getpid() != 1


def _handle_sigterm(signum: int, frame: Any) -> None:
    import signal

    global _exit_deadline
    previous = _previous_sigterm
    ending = not callable(previous) and _ends_by_default()
    with contextlib.suppress(Exception):  # never keep a process from ending because of us
        # The exit's deadline (after which what is left is given up) only when the process really ends now;
        # else a hurry of one grace period, after which delivery goes back to normal.
        drain(final=ending)
    if not callable(previous) and not ending:
        return  # PID 1: the default action would be ignored; the process goes on, and so does delivery
    if callable(previous):
        global terminating_until
        # A graceful shutdown follows; the server may then end the process by the default action without
        # any hook of ours running (uvicorn restores the disposition it found and raises SIGTERM again), so
        # what is logged from now on is delivered as it is logged, for one grace period.
        handlers = open_handlers()
        grace = max([h.grace_period for h in handlers] + [0.0])
        terminating_until = time.monotonic() + grace
        for h in handlers:  # their fast path ends: each record now goes the way that delivers it at once
            h._refresh_fast()
        previous(signum, frame)  # a server's graceful shutdown, or the app's own handler
        return
    # The default: end by SIGTERM, as the process would have without us.
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGTERM)
    # Still here: the signal did not end the process (blocked, or a kernel that ignores it). It goes on, so
    # the exit's deadline is off again, and the next SIGTERM drains as this one did.
    _exit_deadline = None
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGTERM, _on_sigterm)


# --- multiprocessing -------------------------------------------------------------------------------------------

_mp_wanted = False  # a handler that sends was built: multiprocessing children must drain at their end
_mp_hooked = False


class _Anchor:
    """``register_after_fork`` keeps a weak reference to an object: this one lives as long as the module."""


_ANCHOR = _Anchor()


def _install_mp_hook() -> None:
    """Make every multiprocessing child (fork, spawn, forkserver) drain at its end: ``_exit_function`` runs the
    finalizers, then ``os._exit`` skips atexit.

    Without importing multiprocessing (with subprocess, socket and pickle: a fifth of a handler's build time): a
    process that has not loaded it has no multiprocessing child yet. If it loads it later and forks one, the
    hook is put in the child by ``_mp_after_fork``, before multiprocessing runs its after-fork step there; a
    spawn or forkserver child loads it before it builds its own handler, and is hooked here."""
    global _mp_wanted
    _mp_wanted = True
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return
    with _registry_lock:  # two threads building handlers at once register once
        if _mp_hooked:
            return
        _hook_mp(util)
    mpp = sys.modules.get("multiprocessing.process")
    if mpp is not None and mpp.current_process()._parent_pid is not None:
        _in_mp_child(_ANCHOR)  # built inside a child already past its after-fork step (a lazy import)


def _hook_mp(util: Any) -> None:
    """Run ``_in_mp_child`` in every multiprocessing child forked from here on (the registry is inherited)."""
    global _mp_hooked
    _mp_hooked = True
    util.register_after_fork(_ANCHOR, _in_mp_child)


def _mp_after_fork() -> None:
    """A forked child of a process whose handlers were built before it loaded multiprocessing: if this child
    is multiprocessing's, its ``Process._bootstrap`` has not run yet and will run the after-fork registry, so
    registering now hooks it. (In any other child the entry waits, harmless, for a multiprocessing child of
    its own.) Imports nothing: an at-fork hook (forks.py)."""
    if _mp_wanted and not _mp_hooked:
        util = sys.modules.get("multiprocessing.util")
        if util is not None:
            _hook_mp(util)


def _in_mp_child(_: object) -> None:
    import signal
    from multiprocessing import util

    util.Finalize(None, _mp_finalizer, exitpriority=-100)
    with contextlib.suppress(Exception):  # the child's main thread, before its target: the watch starts here
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            sigwatch.watch(_ours_ends_the_process)


def _mp_finalizer() -> None:
    drain(final=True)


# --- fork ------------------------------------------------------------------------------------------------------


def _reset_after_fork() -> None:
    """This module's state: a new lock, no deadline, no workers of closed handlers (they were the parent's)."""
    global _registry_lock, _exit_deadline, terminating_until
    _registry_lock = threading.RLock()
    terminating_until = None
    _exit_deadline = None
    _DRAINING.clear()


def _handlers_after_fork() -> None:
    """Every open handler starts afresh: an empty queue, new counters, a new worker, new connections."""
    for h in list(_HANDLERS):
        if h._is_open():
            h._after_fork_in_child()


forks.on_new_process(_reset_after_fork)
forks.on_new_process(_mp_after_fork)
forks.on_new_process(_handlers_after_fork, after_modules=True)  # on the modules' new locks and tokens
atexit.register(_at_exit)
