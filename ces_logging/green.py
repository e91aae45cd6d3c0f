"""gevent and eventlet: what the handler must know when the app's ``threading`` is monkey-patched.

The choice: under monkey-patching the worker is cooperative, a greenlet like every other "thread" of the app,
not a real OS thread taken from the unpatched originals. Its work is HTTP, and the whole HTTP stack the app
uses (``socket``, ``ssl``, DNS, the locks of urllib3's pools) is patched too: a real thread would run
gevent's sockets on a hub of its own, or eventlet's, which does not support it, and every lock it shares with
the app's greenlets (the buffer's, the counters' that ``flush`` waits on) would block the whole hub while held
or waited on. As a greenlet, it waits only where the app's own I/O waits, and costs no OS thread. What it needs
from the rest of the package:

- everything it waits on is made when it starts, not when the handler is built (``worker.Worker.start``): with
  ``gunicorn --preload`` the app (and the handler) is imported, and the worker process forked, before the
  server patches;
- nothing of ours changes the process's signal mask (``notice.keep_signals_off_this_thread``);
- a signal handler runs wherever the main OS thread is, often in the hub (the event loop), which must never
  wait: the SIGTERM drain then runs in a new greenlet (``lifecycle``).

Nothing here imports gevent or eventlet: they are looked up in ``sys.modules``, where an app that uses them
has already put them.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any


def patched() -> bool:
    """True when gevent or eventlet has patched ``threading``: our "threads" are greenlets."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        try:
            if monkey.is_module_patched("threading"):
                return True
        except Exception:
            pass
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None:
        try:
            return bool(patcher.is_monkey_patched("thread"))
        except Exception:
            return False
    return False


def on_main_os_thread() -> bool:
    """Under monkey-patching, a greenlet on the main OS thread (``threading.main_thread()`` is not it under
    eventlet): where signal handlers may be installed and run."""
    try:
        return patched() and threading.get_native_id() == os.getpid()
    except Exception:
        return False


def hub_library() -> str | None:
    """``"gevent"`` or ``"eventlet"`` when this code runs in that library's hub (a signal handler may), where
    nothing may wait; None elsewhere."""
    greenlet = sys.modules.get("greenlet")
    if greenlet is None:
        return None
    try:
        current = greenlet.getcurrent()
        hub_mod = sys.modules.get("gevent.hub")
        if hub_mod is not None and isinstance(current, hub_mod.Hub):
            return "gevent"
        hubs = sys.modules.get("eventlet.hubs")
        if hubs is not None:
            hub = getattr(getattr(hubs, "_threadlocal", None), "hub", None)
            if hub is not None and getattr(hub, "greenlet", None) is current:
                return "eventlet"
    except Exception:
        return None
    return None


def spawn_out_of_hub(fn: Callable[..., Any], *args: Any) -> bool:
    """In a hub: run ``fn(*args)`` in a new greenlet of the hub's library and say True. Elsewhere (or when
    that fails) False: the caller runs ``fn`` itself."""
    library = hub_library()
    if library is None:
        return False
    try:
        sys.modules[library].spawn(fn, *args)
    except Exception:
        return False
    return True
