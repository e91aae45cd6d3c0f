"""The per-process identity that keeps events of different processes apart.

Cloud Eye stores one event per (time in ms, source, name, type, sub-type, state, level, user, resource id,
resource name): two processes that log the same error in the same millisecond make one stored event, and no
process can see another's times. So the writing process is put into a key field: ``resource_name`` (the field
the console shows as the resource, and the one whose characters fit a host name), as ``{host}@{pid}.{token}``.

- ``host`` tells containers apart (every container may be pid 1, but each has its own host name);
- ``pid`` tells apart the processes of one host (pre-fork servers, multiprocessing with any start method);
- ``token`` (random, renewed after fork and on ``renew()``) tells apart a pid used again (a container
  restarted, sub-interpreters of one process) and lets the time assigner start a fresh epoch when the clock
  steps back (see ``mapping.TimeAssigner``).

A host-wide time allocator was the other option: it needs shared files or memory, and still cannot see across
containers or hosts, so a key field is the mechanism that holds everywhere.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Final

from . import forks
from .events import RESOURCE_NAME

HOST_MAX: Final = 63  # a DNS label; leaves room for a user's own resource name in the 128 characters
_BAD: Final = re.compile(r"[^A-Za-z0-9_\-.]")

_lock = threading.Lock()
_pid = -1
_value = ""
#: Goes up whenever the identity changes (a new process, ``renew``): a builder that keeps keys made with the
#: identity (mapping.py's batch path) compares it after each time it assigns, one attribute read.
generation = 0


def _host() -> str:
    import socket  # here: only a handler that builds events needs it, not the import of the package

    try:
        name = socket.gethostname()
    except OSError:
        name = ""
    return _BAD.sub("_", name)[:HOST_MAX] or "host"


def current() -> str:
    """This process's identity (computed once per process; a new one after ``fork``)."""
    global _pid, _value, generation
    pid = os.getpid()
    if pid != _pid:
        with _lock:
            if pid != _pid:
                _value = f"{_host()}@{pid}.{os.urandom(2).hex()}"
                _pid = pid
                generation += 1
    return _value


def renew() -> str:
    """A new token for this process: every key that carried the old identity is a new key from now on."""
    global _pid
    with _lock:
        _pid = -1
    return current()


def with_identity(resource_name: str | None, identity: str) -> str:
    """The resource name to send: the identity alone, or the user's name followed by ``@`` and the identity
    (the user's part is cut, never the identity, to stay within the field's 128 characters)."""
    if not resource_name:
        return identity
    room = RESOURCE_NAME.max_len - len(identity) - 1
    return f"{resource_name[:room]}@{identity}"


def reset_after_fork() -> None:
    """A new process: a new lock (the parent's may have been held by a thread the child does not have); the
    identity itself is renewed by ``current``, which sees the new pid."""
    global _lock
    _lock = threading.Lock()


forks.on_new_process(reset_after_fork)
