"""A new process: what to renew in it, and how it is noticed where no at-fork hook runs.

``os.register_at_fork`` runs its hooks in a child made by ``os.fork`` (multiprocessing, gunicorn, Celery). uWSGI
forks its workers from C and runs none of them (unless ``--py-call-osafterfork``): such a child inherits locks
that may be held by threads it does not have, and a worker object whose ``Thread.is_alive()`` is True although
no thread runs there. So the same hooks also run when the handler sees a pid other than the one they last ran
for (``changed``: on emit, flush, close and at exit). Every module that keeps a lock or a thread for the process
registers its renewal here, once, and it runs once per new process whichever way the process was noticed.

A leaf module: it imports nothing of the package, so anything may register with it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

_hooks: list[Callable[[], None]] = []
pid = os.getpid()  # the process the hooks last ran for


def on_new_process(fn: Callable[[], None]) -> None:
    """Run ``fn`` in every new process, before its first use of the package there."""
    _hooks.append(fn)


def new_process() -> None:
    """The hooks, in the order they were registered (a module's own state before the handlers')."""
    global pid
    pid = os.getpid()
    for fn in list(_hooks):
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
