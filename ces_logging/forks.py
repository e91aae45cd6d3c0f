"""A new process: what to renew in it, and how it is noticed where no at-fork hook runs.

``os.register_at_fork`` runs its hooks in a child made by ``os.fork`` (multiprocessing, gunicorn, Celery). uWSGI
forks its workers from C and runs none of them (unless ``--py-call-osafterfork``): such a child inherits locks
that may be held by threads it does not have, and a worker object whose ``Thread.is_alive()`` is True although
no thread runs there. So the same hooks also run when the handler sees a pid other than the one they last ran
for (``changed``: on emit, flush, close and at exit), and they run once per new process whichever way the
process was noticed.

This is the one way to renew anything in a new process. Each module registers the renewal of its own state
here when it is imported (a lock, a table, a token: ``identity``, ``notice``, ``throttle``, ``spool``,
``mapping``'s time tables, ``worker``'s thread set, ``auth``'s providers, ``watchdog``'s thread, ``client``'s
count of new processes (its build locks), ``sigwatch``'s pipe and ``lifecycle``'s registry). The order rule, in
two phases:

1. module state (``on_new_process(fn)``): each renews its own module's state and nothing else, so these run
   in any order (the order of import, which nobody should rely on);
2. objects that use that state (``on_new_process(fn, after_modules=True)``: ``lifecycle``'s handlers, whose
   new worker leases spool files with the new process token and takes the new locks): after every hook of
   phase 1, registered whenever.

One rule follows for imports: a thread of ours never imports a module for the first time. A module that a
thread is importing when another forks stays half-imported and locked in the child, whose lock's owner is not
there, so the child's first import of it waits for ever (seen with uWSGI prefork: the app's workers hung). So
what the worker's threads need is imported on the app's thread, when a handler that sends is built: the lean
POST's transport (``CESClient``), ``random`` for the retries' jitter (``Worker``), ``requests`` for a provider
that fetches credentials over HTTP; and what a send reads needs no import at all (a ``Retry-After`` date is
parsed by ``errors`` itself, not by the email package).

A leaf module: it imports nothing of the package, so anything may register with it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

_module_hooks: list[Callable[[], None]] = []
_object_hooks: list[Callable[[], None]] = []
pid = os.getpid()  # the process the hooks last ran for


def on_new_process(fn: Callable[[], None], *, after_modules: bool = False) -> None:
    """Run ``fn`` in every new process, before its first use of the package there. ``after_modules``: ``fn``
    renews objects that use the modules' state, so it runs after every module's own renewal (see above)."""
    (_object_hooks if after_modules else _module_hooks).append(fn)


def new_process() -> None:
    """Every hook: the modules' own state first, then the objects that use it."""
    global pid
    pid = os.getpid()
    for fn in [*_module_hooks, *_object_hooks]:
        with contextlib.suppress(Exception):  # a new process must never fail the app's call that noticed it
            fn()


def changed() -> bool:
    """True, after running the hooks, when this process is not the one they last ran for (a fork that ran no
    at-fork hook). One system call: kept off the hot path (``emit`` asks only when a record's pid differs)."""
    if os.getpid() == pid:
        return False
    new_process()
    return True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=new_process)
