"""A total deadline for one exchange, without the HTTP stack: ``with total_deadline(10): ...``.

A per-operation timeout bounds each socket operation, not the exchange: a server that sends a byte every 1.5 s
keeps a 2 s timeout waiting for as long as it likes. Here a watchdog thread shuts the exchange's sockets down
when its deadline passes, so the blocked read returns at once and the block fails with ``Timeout``. A
transport registers each socket it uses inside the block with ``watch`` (``transport.FastPost`` does;
``deadline.DeadlineAdapter``'s connection pools do it for ``requests``, whose ``deadline.total_deadline`` raises
``requests.Timeout`` instead).

This module imports only the standard library's ``socket`` and ``threading``: the worker's lean POST uses it, and
that path must not load ``requests`` (a process pays every import on its first send).

Cost on the hot path: a thread-local look-up, a heap push under a lock, and no thread wake-up in the usual
case (the watchdog sleeps until the earliest deadline and then drops the finished ones in one go).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from .. import forks, notice


class Timeout(TimeoutError):
    """The total deadline passed before the exchange was done. Named as ``requests`` names its own, so that a
    failure reads the same whichever transport had it."""


class _Scope:
    """One exchange: its deadline and the sockets it uses."""

    __slots__ = ("deadline", "done", "fired", "seconds", "socks")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.socks: list[socket.socket] = []
        self.done = False
        self.fired = False


class _Watchdog:
    """One daemon thread for the process; started on first use, made again in a forked child."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Scope]] = []
        self._seq = itertools.count()
        self._waiting_until: float | None = None  # what the thread sleeps towards; None: no thread or idle
        self._thread: threading.Thread | None = None
        # Made with the process's ``threading`` as it was then: once gevent or eventlet patched it, a new one is
        # made (its thread is a greenlet, and a greenlet must not wait on a real lock; see green.py).
        self.made_with = threading.Lock

    def add(self, scope: _Scope) -> None:
        with self._cond:
            heapq.heappush(self._heap, (scope.deadline, next(self._seq), scope))
            if self._thread is None:
                t = self._thread = threading.Thread(target=self._run, name="ces-deadline", daemon=True)
                try:
                    notice.start_thread(t)
                except BaseException:  # an app's signal handler raised before the thread started: not started
                    if t.ident is None:
                        self._thread = None
                    raise
            elif self._waiting_until is None or scope.deadline < self._waiting_until:
                self._cond.notify()

    def watch(self, scope: _Scope, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._cond:
            if scope.done:
                return
            if scope.fired:
                _kill(sock)
            elif sock not in scope.socks:
                scope.socks.append(sock)

    def finish(self, scope: _Scope) -> None:
        with self._cond:
            scope.done = True
            scope.socks.clear()  # the heap entry stays until its time; it holds no socket meanwhile

    def _run(self) -> None:
        notice.keep_signals_off_this_thread()
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    _, _, scope = heapq.heappop(self._heap)
                    if not scope.done:
                        scope.fired = True
                        for s in scope.socks:
                            _kill(s)
                self._waiting_until = self._heap[0][0] if self._heap else None
                # At most an hour at a time: an infinite timeout would overflow the lock's wait.
                self._cond.wait(None if self._waiting_until is None else min(self._waiting_until - now, 3600.0))


def _kill(sock: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: the latter drops the SSL object under a reading thread.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_watchdog = _Watchdog()
_local = threading.local()


def _after_fork() -> None:
    global _watchdog
    _watchdog = _Watchdog()


forks.on_new_process(_after_fork)


def _current() -> _Scope | None:
    scope: _Scope | None = getattr(_local, "scope", None)
    return scope


@contextlib.contextmanager
def total_deadline(seconds: float) -> Iterator[None]:
    """Every socket the block ``watch``es is shut down ``seconds`` after the block starts; an exception raised
    because of that becomes ``Timeout``."""
    if _watchdog.made_with is not threading.Lock:
        _after_fork()
    scope = _Scope(seconds)
    prev = _current()
    _local.scope = scope
    _watchdog.add(scope)
    try:
        yield
    except Exception:
        if scope.fired:
            raise Timeout(f"no complete answer within {seconds:g} s (total deadline)") from None
        raise
    finally:
        _local.scope = prev
        _watchdog.finish(scope)


def watch(sock: Any) -> None:
    """Put a socket under the current ``total_deadline`` block (none: nothing)."""
    scope = _current()
    if scope is not None and isinstance(sock, socket.socket):
        _watchdog.watch(scope, sock)
