"""The sender pool: threads that run jobs, one at a time each. It knows nothing of HTTP, batches or counts.

Each sender has an inbox of its own; the idle ones wait in a stack, and a job goes to the one that became idle
last. So while one sender keeps up, one thread does all the work and the others end after ``IDLE_S`` without
any: batches taken in turn by several idle threads from one shared queue cost more CPU per event (GIL hand-overs,
cold caches) than one thread running them all.

Invariants: a job is handed only to a live sender's inbox (a job in a dead one's would wait for ever); at most
``limit`` senders are busy (the caller's limit, the throttle's); ``run(job)`` is called exactly once per job
handed, and ``on_error(job, exc)`` when it raises, so the caller can count the job. Every sender's thread ident
is in ``threads`` while it runs (records logged there must not loop back into a handler).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

from .. import notice

IDLE_S: Final = 30.0  # a sender with nothing to do for this long ends (a new one starts when needed)

J = TypeVar("J")


class SenderPool(Generic[J]):
    def __init__(
        self,
        run: Callable[[J], None],
        on_error: Callable[[J, BaseException], None],
        on_idle: Callable[[], None],
        threads: set[int],
        name: str,
    ) -> None:
        self.run = run
        self.on_error = on_error
        self.on_idle = on_idle  # after each job, outside the lock (the caller wakes its batcher)
        self.threads = threads
        self.name = name
        self._senders: list[tuple[threading.Thread, queue.SimpleQueue[J | None]]] = []
        self._idle: list[queue.SimpleQueue[J | None]] = []
        self._jobs_out = 0  # jobs handed and not yet finished (under ``cond``)
        # re-entrant: a SIGTERM's drain may interrupt ``join`` on its own thread
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)  # a sender became idle

    def renew_locks(self) -> None:
        """New locks made with ``threading`` as it is now (the first start; see green.py)."""
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)

    def hand(self, job: J, limit: int) -> bool:
        """Under ``cond``: give ``job`` to an idle sender, or to a new one, when fewer than ``limit`` are busy;
        False when all the senders allowed are busy (wait on ``cond`` and try again)."""
        self._senders = [s for s in self._senders if s[0].is_alive()]
        alive = [inbox for _, inbox in self._senders]
        self._idle = [q for q in self._idle if any(q is a for a in alive)]
        if len(self._senders) - len(self._idle) >= limit:
            return False
        self._jobs_out += 1
        if self._idle:
            self._idle.pop().put(job)  # the sender that became idle last: its thread is warm
            return True
        inbox: queue.SimpleQueue[J | None] = queue.SimpleQueue()
        inbox.put(job)
        t = threading.Thread(target=self._sender, args=(inbox,), name=f"{self.name}-send", daemon=True)
        self._senders.append((t, inbox))
        notice.start_thread(t)
        return True

    def jobs_out(self) -> int:
        """Jobs handed and not yet finished."""
        with self.lock:
            return self._jobs_out

    def busy(self) -> int:
        with self.lock:
            return len(self._senders) - len(self._idle)

    def end_all(self) -> None:
        """Each sender ends after the job it runs now (if any)."""
        with self.lock:
            inboxes = [inbox for _, inbox in self._senders]
        for inbox in inboxes:
            inbox.put(None)

    def all_threads(self) -> list[threading.Thread]:
        with self.lock:
            return [t for t, _ in self._senders]

    def _sender(self, inbox: queue.SimpleQueue[J | None]) -> None:
        """One job at a time from its inbox (a job is handed to it only when it is idle); ends after ``IDLE_S``
        without work, or at ``end_all``."""
        notice.keep_signals_off_this_thread()
        me = threading.get_ident()
        self.threads.add(me)
        try:
            while True:
                try:
                    job = inbox.get(timeout=IDLE_S)
                except queue.Empty:
                    with self.cond:
                        if any(q is inbox for q in self._idle):  # still idle: nobody handed it a job
                            self._leave(inbox)
                            return
                    continue  # a job was handed over just now: take it
                if job is None:
                    with self.cond:
                        self._leave(inbox)
                    return
                self._run_one(job, inbox)
        finally:
            self.threads.discard(me)

    def _run_one(self, job: J, inbox: queue.SimpleQueue[J | None]) -> None:
        try:
            self.run(job)
        except BaseException as e:  # a bug (or a library's BaseException): the caller counts the job, go on
            self.on_error(job, e)
        finally:
            with self.cond:
                self._jobs_out -= 1
                self._idle.append(inbox)
                self.cond.notify_all()
            self.on_idle()

    def _leave(self, inbox: Any) -> None:
        """Under ``cond``: a sender that ends is no longer a sender, idle or not."""
        self._idle = [q for q in self._idle if q is not inbox]
        self._senders = [s for s in self._senders if s[1] is not inbox]
