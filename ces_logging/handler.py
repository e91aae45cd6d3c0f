"""``CESHandler``: a log record becomes a Cloud Eye custom event, delivered in the background.

The app's thread does the least possible in ``emit``: keep what can be sent (``Preparer.prepare``: the
content rendered now, never the record or its frames), append it to a buffer bounded by count and by bytes, and
maybe wake the worker. Formatting into the API's fields, batching and HTTP happen on the worker's threads.
``emit`` never blocks (unless ``overflow="block"`` asks it to, for a bounded time), never does I/O and never
raises: a full buffer drops the record and counts it.

What a record becomes is ``mapping.py``'s business; the worker's life is ``_delivery``'s; how the process ends
(exit, SIGTERM, fork, multiprocessing) is ``lifecycle.py``'s. This module ties them to ``logging.Handler``.

Counting: ``sent + dropped + queued + folded == received`` holds at every moment (``folded``: storm control,
see ``storm.py``), against threads, re-entry from a signal
handler, and an exception at any bytecode of ``emit`` (see ``buffer.py``).
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from . import forks, lifecycle, notice
from .alarms import AlarmOptions
from .buffer import WAKE_MASK, RecordBuffer
from .errors import ConfigError
from .events import MAX_CONTENT
from .mapping import DEFAULT_LEVEL_MAP, DEFAULT_STATE_MAP, EventBuilder
from .options import OVERFLOW_POLICIES, FieldsInDoc, Options, parse_level
from .prepare import ITEM_OVERHEAD, ITEM_TEXT, PLAIN_RECORD_KEYS, Preparer
from .spool import Spool
from .throttle import throttle_for
from .worker import WORKER_THREADS, Worker

if TYPE_CHECKING:  # the HTTP stack loads when a handler that sends is built, not with this module
    from ._service.client import CESClient
    from .model import HandlerStats

__all__ = ["DEFAULT_LEVEL_MAP", "DEFAULT_STATE_MAP", "OVERFLOW_POLICIES", "CESHandler", "HandlerStats", "Options"]

MAX_RESTARTS: Final = 5  # a worker that dies of a bug is replaced this many times per handler, then it says so


def _holding_logging_lock() -> bool:
    """True when this thread holds ``logging._lock`` (dictConfig, logging.shutdown under reconfiguration):
    waiting for the worker then could deadlock with anything on it that needs the lock."""
    lock = getattr(logging, "_lock", None)
    is_owned = getattr(lock, "_is_owned", None)
    try:
        return bool(is_owned()) if is_owned is not None else False
    except Exception:
        return False


def _build_options(options: Options | None, kwargs: Mapping[str, Any], env: Mapping[str, str]) -> Options:
    """The one ``Options`` of a handler: the object given, with the keywords given over it, with the
    environment for what neither gave."""
    if options is not None and not isinstance(options, Options):
        raise ConfigError(
            f"CESHandler's one positional argument is an Options, got {type(options).__name__}: pass "
            "project_id=, region=, endpoint= and the other options by keyword"
        )
    if options is None:
        options = Options(**kwargs)
    elif kwargs:
        options = options.replace(**kwargs)
    return options.with_env(env)


def _client_for(opts: Options, env: Mapping[str, str] | None) -> CESClient | None:
    """The client the options describe; None (an inactive handler) when no endpoint, region or project id is
    set anywhere (a laptop, CI, a ``manage.py`` command): the app runs, one line says so."""
    if not (opts.endpoint or opts.region or opts.project_id):
        notice.say(
            "inactive",
            "no Cloud Eye endpoint, region or project id configured: this handler is inactive and sends "
            "nothing. Set CES_ENDPOINT (or CES_REGION) and CES_PROJECT_ID to turn it on.",
            interval=3600,
        )
        return None
    from ._service.client import CESClient  # only for a handler that will send (no HTTP stack until it sends)

    return CESClient(
        opts.project_id,
        region=opts.region,
        endpoint=opts.endpoint,
        ak=opts.ak,
        sk=opts.sk,
        security_token=opts.security_token,
        token=opts.token,
        token_provider=opts.token_provider,
        timeout=opts.timeout,
        verify=opts.verify,
        allow_insecure=opts.allow_insecure,
        env=env,
    )


class CESHandler(logging.Handler, metaclass=FieldsInDoc):  # help() lists every option (options.py)
    """Sends log records to Cloud Eye as custom events, batched and delivered by a background worker.

    Its settings are one ``Options`` object: ``CESHandler(options=Options(...))``, or the same options as
    keywords, ``CESHandler(project_id=..., batch_size=50)``, which build it (keywords given with ``options``
    change those). Every option is listed below and documented where ``Options`` declares it. Each is a plain
    value, so that ``logging.config.dictConfig`` can build the handler with ``"class": "ces_logging.CESHandler"``;
    ``handler_factory`` takes each of them as a string too. Bad values raise ``ConfigError`` here, never when a
    record is logged. ``emit`` never blocks (unless ``overflow="block"``) and never raises.

    With no endpoint, region or project id given anywhere (arguments or environment), the handler is inactive:
    it says so once on stderr and counts what it is given as ``inactive``; the app runs. Values that are given
    but wrong raise ``ConfigError``.

    Args:
        options: The handler's settings (see ``Options``); the environment fills what it does not give.
        client: A ``CESClient`` of your own to send with, instead of one built from the options.
        env: The environment to read instead of ``os.environ`` (tests).
        **kwargs: Options by name, as ``Options`` takes them.

    Raises:
        ConfigError: An option is given but wrong; the message names it, never a secret's value.
    """

    # Attributes that exist before anything in __init__ can fail, so a half-built handler (a ConfigError in
    # the middle) leaves nothing for exit, fork or logging.shutdown to trip on.
    _is_closed = True
    _active = False
    _worker: Worker | None = None
    _built = False  # set last: flush and close of a handler whose construction failed do nothing
    _pid = 0  # the process this handler's state belongs to (see ``_new_process``)
    # ``handle``'s fast path applies while ``_fast_pid`` is this process's pid (a record's pid is compared with
    # it, one comparison for two rules); 0, never a pid, while it does not: closed, inactive, a formatter,
    # items that are more than the message (JSON content, context, storm keys, an event_level), a subclass's
    # own ``emit``, or a SIGTERM handed on to a server (``lifecycle.terminating``: each record is delivered as
    # it is logged). Kept by ``_refresh_fast``, which the setters of ``_closed`` and ``formatter`` call
    # (whoever sets them: close, setFormatter, dictConfig, an assignment), and so do a new pid and lifecycle.
    _fast_pid = 0
    _plain = False
    _own_filter = False  # a subclass's own ``filter()``: asked for every record, so never the fast path
    _formatter: logging.Formatter | None = None

    def _fast_applies(self) -> bool:
        return (
            self._plain
            and self._active
            and not self._is_closed
            and self._formatter is None
            and "emit" not in self.__dict__  # an emit set on the instance (mock.patch.object) is called
            and lifecycle.terminating() is None
        )

    def _refresh_fast(self) -> None:
        on = self._fast_applies()
        self._fast_pid = self._pid if on else 0
        # Asked again after the store: a SIGTERM handed on (or a setter on another thread) that turned it off
        # between the question and the store must not be undone by it.
        if on and not self._fast_applies():
            self._fast_pid = 0

    if not TYPE_CHECKING:  # hidden from mypy, which would otherwise take any attribute name as valid

        def __setattr__(self, name: str, value: Any) -> None:
            object.__setattr__(self, name, value)
            if name == "emit":  # an emit set on the instance (mock.patch.object): see _fast_applies
                self._refresh_fast()

        def __delattr__(self, name: str) -> None:
            object.__delattr__(self, name)
            if name == "emit":
                self._refresh_fast()

    @property
    def _fast(self) -> bool:
        """Whether ``handle``'s fast path applies in this process."""
        return self._fast_pid != 0 and self._fast_pid == self._pid

    # Each setter turns the flag off before it changes anything: a signal handler that logs between two of
    # its steps then takes the general way, which reads the attributes themselves.
    @property
    def formatter(self) -> logging.Formatter | None:
        return self._formatter

    @formatter.setter
    def formatter(self, fmt: logging.Formatter | None) -> None:
        self._fast_pid = 0
        self._formatter = fmt
        self._refresh_fast()

    @property
    def _closed(self) -> bool:
        return self._is_closed

    @_closed.setter
    def _closed(self, value: bool) -> None:
        self._fast_pid = 0
        self._is_closed = value
        self._refresh_fast()

    def __init__(
        self,
        options: Options | None = None,
        *,
        client: CESClient | None = None,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        opts = _build_options(options, kwargs, os.environ if env is None else env)
        super().__init__(opts.level)
        self.options = opts
        self.alarms = AlarmOptions.of(opts)
        self.event_level = self.alarms.event_level
        self.builder = EventBuilder(
            event_source=opts.event_source,
            event_name=opts.event_name,
            resource_id=opts.resource_id,
            resource_name=opts.resource_name,
            group_id=opts.group_id,
            event_user=opts.event_user,
            dimensions=dict(opts.dimensions or {}),
            level_map={**DEFAULT_LEVEL_MAP, **{parse_level(k): v for k, v in (opts.level_map or {}).items()}},
            state_map={**DEFAULT_STATE_MAP, **(opts.state_map or {})},
            process_identity=opts.process_identity,
        )
        self.preparer = Preparer(
            json_content=opts.json_content, storm_keys=self.alarms.storm is not None, context=self.alarms.context
        )
        self._own_filter = type(self).filter is not logging.Filterer.filter
        self._plain = (
            not self.preparer.json_content
            and self.preparer.context is None
            and not self.preparer.storm_keys
            and self.event_level == logging.NOTSET
            and type(self).emit is CESHandler.emit  # a subclass's own emit is called for every record
            and not self._own_filter
        )
        self.event_source = opts.event_source
        self.event_name = opts.event_name
        self.batch_size = opts.batch_size
        self.flush_interval = opts.flush_interval
        self.queue_size = opts.queue_size
        self.queue_max_bytes = opts.queue_max_bytes
        self.overflow = opts.overflow
        self.overflow_timeout = opts.overflow_timeout
        self.max_in_flight = opts.max_in_flight
        self.grace_period = opts.grace_period
        self.handle_sigterm = opts.handle_sigterm
        self._reported_lost = 0
        self._restarts = 0
        self._flushed_drops = 0
        self._start_lock = threading.RLock()
        self._starting_since = 0.0
        self.spool: Spool | None = None
        self.client = client if client is not None else _client_for(opts, env)
        if self.client is not None and opts.spool_dir is not None:
            try:
                self.spool = Spool(opts.spool_dir, opts.spool_max_bytes)
            except OSError as e:  # a read-only or full disk: work from memory, say so, never fail the app
                notice.say("spool-error", f"spool at {opts.spool_dir} unusable ({e}); events kept in memory only")
        self._active = self.client is not None
        self._pid = os.getpid()
        self._reset_queue()
        self._closed = False  # and with it, handle's fast path (see _refresh_fast)
        self._built = True
        lifecycle.register(self, sends=self._active)
        if self._active and self.handle_sigterm:
            lifecycle.install_sigterm()
        if self.spool is not None and self.spool.pending():
            self._start()  # a previous process left batches: deliver them without waiting for a record

    def _reset_queue(self) -> None:
        self._buffer = RecordBuffer(self.queue_size, self.queue_max_bytes, self.batch_size)
        if self.client is None:
            self._worker = None
            return
        self._worker = Worker(
            self._buffer,
            self.builder,
            self.client,
            throttle_for(self.client.endpoint, self.client.project_id, self.max_in_flight),
            batch_size=self.batch_size,
            flush_interval=self.flush_interval,
            spool=self.spool,
            sizes=_sizes,
            fold=self.alarms.storm_control(self.preparer.json_content),
        )

    def __repr__(self) -> str:
        if self.client is None:
            return f"<CESHandler {logging.getLevelName(self.level)} source={self.event_source!r} inactive>"
        return (
            f"<CESHandler {logging.getLevelName(self.level)} source={self.event_source!r} "
            f"endpoint={self.client.endpoint!r} project_id={self.client.project_id!r}>"
        )

    @property
    def active(self) -> bool:
        """False when nothing was configured (see the class docstring): records are counted, not sent."""
        return self._active

    # --- the hot path ----------------------------------------------------------------------------------------

    def handle(self, record: logging.LogRecord) -> Any:
        """``Handler.handle`` without the handler's lock: ``emit`` needs none (see buffer.py), and a signal
        that raises between the stdlib's ``acquire()`` and its ``try`` would leave the lock held for ever, so
        that every other thread's logging call on this handler would block.

        The common record is kept right here, in one function with no call, because the app's thread pays for
        every step of it on every record: a plain ``LogRecord`` of this process (its pid equal to
        ``_fast_pid``, which also says the fast path applies), made on an app thread, with no filters, nothing
        added to it, no traceback, a short message that formats. What it keeps is exactly what ``emit`` keeps
        of the same record (``Preparer.prepare``), appended by ``RecordBuffer.offer``'s rule written out here
        (bounds, then ``buffer.wakes``); tests hold both equal. Anything else, a full buffer included, goes the
        general way below, to ``emit``, which also says what failed."""
        appended = False
        try:
            if (
                type(record) is _LogRecord
                and (d := record.__dict__)["process"] == self._fast_pid
                and not self.filters
                and len(d) <= PLAIN_RECORD_KEYS  # nothing added: extras, structlog's, ``ces``
                and (thread := d["thread"]) not in WORKER_THREADS
                and thread is not None
                and type(msg := d["msg"]) is str
                and not (d["exc_info"] or d["exc_text"] or d["stack_info"])
                and "ces" not in d
                and _OTEL not in _modules
            ):
                try:
                    text = msg % args if (args := d["args"]) else msg  # LogRecord.getMessage, for a str msg
                except Exception:  # an argument's own __str__ may raise: the general way says what failed
                    text = ""
                buf = self._buffer
                items = buf.items
                if (
                    0 < (size := len(text)) <= _SHORT
                    and (size := size + ITEM_OVERHEAD) + buf.bytes_in <= buf.bytes_cap
                    and len(items) < buf.max_items
                ):
                    item = (d["created"], d["levelno"], d["name"], text, None, False, None)
                    buf.bytes_in += size
                    items.append(item)  # counts it
                    appended = True
                    if (n := len(items)) == 1 or n == buf.batch_size or not n & WAKE_MASK:  # buffer.wakes
                        self._wake()
                    return True
        except Exception as e:
            if not _raised_here(e):
                raise  # the app's signal handler raised between two of our steps: the app's (see emit)
            if appended:  # a bug of ours after the record was kept (and counted): said, never kept twice
                self.handleError(record)
                return True
            # A bug of ours before, or a record that lacks a standard attribute: the general way deals with it.
        # The general way. Records logged on a worker thread (urllib3's, a formatter's) must not loop back into
        # a handler: the thread the record was made on (a QueueListener hands on other threads' records), read
        # from the record; looked up only where logging.logThreads is off (then as threading has it now: gevent
        # may have patched it since this module was imported).
        thread = getattr(record, "thread", None)
        if thread in WORKER_THREADS or (thread is None and threading.get_ident() in WORKER_THREADS):
            return False
        rv: Any = True
        if self.filters or self._own_filter:  # a subclass's own filter() is asked even with no filters added
            rv = self.filter(record)
            if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may return a replacement record
                record = rv
            if not rv:
                return rv
        self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        """Keep what can be sent of ``record`` (``Preparer.prepare``) in the buffer, for the worker. Never raises
        (a bug of ours is counted as ``error``), never waits on the network (but see ``_deliver_now``)."""
        # A new process is noticed even where no at-fork hook ran (uWSGI): the record carries the pid that
        # logging read when it made it, so the usual case costs one comparison and no system call.
        if getattr(record, "process", None) != self._pid:
            self._new_process()
        buf = self._buffer
        appended = False
        try:
            if record.levelno < self.event_level:  # below event_level: context for the next event (alarms.py)
                self.alarms.keep(record)
                return
            if self._closed or not self._active:
                buf.refuse("closed" if self._active else "inactive")
                return
            item = self.preparer.prepare(record, self.formatter)
            size = len(item[ITEM_TEXT]) + ITEM_OVERHEAD
            wake = buf.offer(item, size)  # the record is counted by the append in it (see buffer.py)
            if wake < 0:  # FULL: nothing appended
                if not self._room(buf, size):
                    buf.refuse("queue_full")
                    return
                wake = buf.put(item, size)
            appended = True
            if wake:  # the buffer's rule says the worker must look now
                self._wake()
            if lifecycle.terminating_until is not None and lifecycle.terminating():
                self._deliver_now()  # (once the hand-over's grace period is over, lifecycle turns it back)
        except Exception as e:
            if not _raised_here(e):
                # Raised by the app's own signal handler between two of our bytecodes (the ``signal.alarm``
                # timeout pattern): it is the app's, so it goes on to the app. The record counts only if it
                # was already appended (one step), so the counts hold either way.
                raise
            if not appended:  # a bug of ours: never the app's problem, and never an uncounted record
                with contextlib.suppress(Exception):
                    buf.refuse("error")
            self.handleError(record)

    def _wake(self) -> None:
        """The buffer's rule says the worker must look now; a worker that is not running is started."""
        worker = self._worker
        if worker is not None:
            worker.wakeup.set()
            if not worker.alive:
                self._start()

    def _new_process(self) -> None:
        """A record from another pid: this process may be a fork that ran no at-fork hook; then every handler
        starts afresh (``forks.py``) before the record goes into a buffer of its own. Or the record was made in
        another process (a ``QueueListener``'s): nothing to do."""
        try:
            if os.getpid() == self._pid:
                return
            forks.changed()
            self._pid = os.getpid()  # a closed handler is not renewed: ask once, not on every record
            self._refresh_fast()
        except Exception:
            pass

    def _deliver_now(self) -> None:
        """SIGTERM was handed on to a server's graceful shutdown, after which the server may end the process
        by the default action at any moment (uvicorn does): each record is delivered before ``emit`` returns,
        for at most one grace period in all. The one case where the app's thread waits on the network."""
        w = self._worker
        until = lifecycle.terminating()
        if w is None or until is None or threading.get_ident() in WORKER_THREADS:
            return
        target = self._counts()[0]
        w.request_flush()
        if not w.alive:
            self._start()
        w.wait_accounted(target, self._accounted, until, with_spooled=True)

    def _room(self, buf: RecordBuffer, size: int) -> bool:
        """The buffer is full: with a spool, twice the bound is let in (the worker spills it to disk); with
        ``overflow="block"``, wait a bounded time for the worker to make room (to spill, with a spool: the
        app's thread waits, the worker writes); else no room."""
        factor = 2 if self.spool is not None else 1
        if factor == 2 and buf.room(size, factor):
            return True
        if self.overflow != "block" or self._worker is None:
            return False
        if not self._worker.alive:
            self._start()
        self._worker.wakeup.set()
        return buf.wait_for_room(size, factor, self.overflow_timeout)

    def _start(self) -> None:
        """Start the worker, or replace one that died of a bug (at most ``MAX_RESTARTS`` times). Safe against
        another thread starting it at the same moment, and against a signal landing anywhere in it: the lock
        is re-entrant and taken by ``with`` (never left held), and a start already under way on this thread (a
        signal handler that logs while ``Thread.start`` waits) is not started twice."""
        worker = self._worker
        if worker is None or self._closed or worker.alive:
            return
        if not self._start_lock.acquire(timeout=0.2):  # another thread is starting it
            return
        try:
            now = time.monotonic()
            if worker.alive or now - self._starting_since < 1.0:
                return  # started meanwhile, or a start under way on this thread (re-entered from a signal)
            # A time, not a flag: should a signal's exception ever skip the cleanup below, it expires by itself.
            self._starting_since = now
            if worker.started:
                if self._restarts >= MAX_RESTARTS:
                    return
                self._restarts += 1
                notice.say("restart", f"the delivery thread had stopped; started again ({self._restarts})")
            elif self.client is not None and worker.throttle.made_with is not threading.Lock:
                # gevent or eventlet patched since construction: the process's throttle as of now (green.py)
                worker.throttle = throttle_for(self.client.endpoint, self.client.project_id, self.max_in_flight)
            try:
                worker.start()
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                notice.say("no-thread", "cannot start the delivery thread at interpreter shutdown")
                return
        finally:
            self._starting_since = 0.0
            self._start_lock.release()
        if self.handle_sigterm:
            lifecycle.install_sigterm()  # again: a server may have reset it since (only from the main thread)

    # --- stats, flush, close ---------------------------------------------------------------------------------

    def _counts(self) -> tuple[int, int, dict[str, int], int]:
        """(received, sent, dropped by reason, folded), consistent with each other."""
        w = self._worker
        buf = self._buffer
        if w is None:
            taken, waiting = buf.counts()
            refused = buf.refused_counts()
            return taken + waiting + sum(refused.values()), 0, refused, 0
        with w.stats.cond:
            taken, waiting = buf.counts()
            sent = w.stats.sent
            folded = w.stats.folded
            reasons = dict(w.stats.dropped)
        refused = buf.refused_counts()
        for k, v in refused.items():
            reasons[k] = reasons.get(k, 0) + v
        return taken + waiting + sum(refused.values()), sent, reasons, folded

    def _accounted(self) -> int:
        _, sent, reasons, folded = self._counts()
        return sent + sum(reasons.values()) + folded

    @property
    def stats(self) -> HandlerStats:
        from .model import HandlerStats  # a dataclass: its module loads inspect, so not before it is asked for

        received, sent, reasons, folded = self._counts()
        dropped = sum(reasons.values())
        ws = self._worker.stats if self._worker is not None else None
        return HandlerStats(
            received=received,
            sent=sent,
            dropped=dropped,
            queued=received - sent - dropped - folded,
            retries=ws.retries if ws else 0,
            batches=ws.batches if ws else 0,
            sanitised=self.builder.sanitised,
            dropped_by_reason=reasons,
            spooled=ws.spooled if ws else 0,
            recovered_sent=ws.recovered_sent if ws else 0,
            recovered_dropped=dict(ws.recovered_dropped) if ws else {},
            folded=folded,
            context_kept=self.alarms.context_kept,
            spool_skipped=ws.spool_skipped if ws else 0,
        )

    def flush(self, timeout: float | None = None) -> bool:  # type: ignore[override]
        """Deliver everything logged before this call; True only when all of it was delivered (none of the
        records accounted for since the previous flush was dropped), False when some was dropped or is still
        queued when ``timeout`` ends.

        ``timeout=None`` waits at most ``grace_period`` seconds (``logging.shutdown`` and frameworks call
        ``flush()`` with no argument, and must never hang on a service that is down), and at interpreter exit no
        longer than what is left of the exit's grace period. Never waits while this thread holds
        ``logging._lock``, nor on a worker thread: it then only asks the worker to send now and answers."""
        if not self._built:
            return False
        if self._pid != os.getpid():
            self._new_process()
        received, sent, reasons, folded = self._counts()
        target = received
        w = self._worker
        if w is None:
            return self._flush_result(sent + sum(reasons.values()) >= target)
        if sent + sum(reasons.values()) + folded < target:
            w.request_flush()
            if not w.alive:
                self._start()
            if not (_holding_logging_lock() or threading.get_ident() in WORKER_THREADS):
                deadline = time.monotonic() + (self.grace_period if timeout is None else timeout)
                exit_deadline = lifecycle.exit_deadline()
                if exit_deadline is not None:
                    deadline = min(deadline, exit_deadline)
                while self._accounted() < target and time.monotonic() < deadline:
                    if not w.alive:  # never started (an interrupted start) or dead of a bug: start it again
                        self._start()
                        if not w.alive:
                            time.sleep(0.05)
                            continue
                    w.wait_accounted(target, self._accounted, min(deadline, time.monotonic() + 0.5))
        return self._flush_result(self._accounted() >= target)

    def _flush_result(self, accounted: bool) -> bool:
        drops = sum(self._counts()[2].values())
        clean = drops == self._flushed_drops
        self._flushed_drops = drops
        return accounted and clean

    def close(self, grace_period: float | None = None) -> None:
        """Deliver what is queued within the grace period (default ``grace_period``; at interpreter exit, what
        is left of the exit's), then stop the worker.

        Under ``logging._lock`` (dictConfig replacing handlers) it does not wait: the worker finishes in the
        background within the grace period, and interpreter exit waits for it."""
        if not self._built:  # construction failed: nothing of ours to close, and nothing registered
            super().close()
            return
        if self._pid != os.getpid():
            self._new_process()
        grace = self.grace_period if grace_period is None else grace_period
        exit_deadline = lifecycle.exit_deadline()
        if exit_deadline is not None:
            grace = min(grace, max(0.0, exit_deadline - time.monotonic()))
        if not self._closed:
            self._closed = True
            worker = self._worker
            if worker is not None and worker.started:
                worker.stop(grace)
                if _holding_logging_lock() or threading.get_ident() in WORKER_THREADS:
                    lifecycle.add_draining(worker)
                else:
                    worker.join(grace + 0.5)
                    self._report_left()
            elif worker is not None and getattr(self._buffer, "items", None):
                self._report_left()  # records that no worker of this process ever took: said, not lost silently
            lifecycle.unregister(self)
        super().close()

    def _report_left(self) -> None:
        """What closing (or the end of the process) leaves undelivered: one line, never rate-limited away."""
        s = self.stats
        given_up = s.dropped_by_reason.get("shutdown", 0)
        lost = s.queued - s.spooled + given_up - self._reported_lost
        self._reported_lost = given_up
        if lost > 0:
            w = self._worker
            if w is not None and not w.ran:
                why = (
                    "the delivery thread never ran in this process (a server that forks without at-fork hooks "
                    "and keeps threads from running: uWSGI needs --enable-threads)"
                )
            else:
                why = f"the service did not take them within the grace period ({self.grace_period:g} s)"
            notice.write(f"ces_logging: {lost} event(s) not delivered at exit: {why}")
        if s.spooled and self.spool is not None:
            notice.write(
                f"ces_logging: {s.spooled} event(s) wait in the spool at {self.spool.dir}; the next process "
                "with the same spool_dir sends them"
            )

    # --- lifecycle.Managed ---------------------------------------------------------------------------------------

    def _is_open(self) -> bool:
        return not self._closed

    def _hurry(self, deadline: float, final: bool) -> None:
        w = self._worker
        if w is None:
            return
        if self._buffer.items and not w.alive:
            self._start()
        w.hurry(deadline, final)

    def _wait_delivered(self, deadline: float) -> bool:
        """Everything received so far sent, dropped or safe on disk, by ``deadline``, and none of it given up
        at the deadline unsaid. Records the worker gives up as ``shutdown`` (a request still running when the
        deadline came) are said only by ``_report_left``, which ``_give_up`` runs when this answers False: a
        sender that counts them a moment before the deadline wakes this wait must not make it answer True,
        or the process ends by SIGTERM with the loss counted and never said."""
        w = self._worker
        if w is None:
            return True
        if not w.started:  # it could not be started: what waits in memory is not delivered (said by _give_up)
            return not getattr(self._buffer, "items", None)
        target = self._counts()[0]

        def settled() -> int:
            return self._accounted() + w.stats.spooled

        if settled() < target:
            w.request_flush()
            w.wait_accounted(target, self._accounted, deadline, with_spooled=True)
        return settled() >= target and self._counts()[2].get("shutdown", 0) <= self._reported_lost

    def _give_up(self) -> None:
        """The process's grace period is over: account for what is left, say it, stop."""
        w = self._worker
        self._closed = True
        if w is not None and w.started:
            w.stop(0.0)
            w.join(0.3)
            w.stats.abandon()  # a request still running may land, or not: counted as lost, said below
        self._report_left()
        lifecycle.unregister(self)

    def _after_fork_in_child(self) -> None:
        """The child gets an empty buffer, fresh counters, a new worker (started by its first emit) and new
        connections: what the parent had queued is the parent's to send."""
        # The child's own buffer first: a record logged meanwhile (a signal handler, another thread of a uWSGI
        # child) goes into it, not into the parent's, which is thrown away.
        self._fast_pid = 0
        self._reset_queue()
        self._pid = os.getpid()
        self._start_lock = threading.RLock()
        self._starting_since = 0.0
        self._restarts = 0
        self._flushed_drops = 0
        self.createLock()
        if self.client is not None:
            self.client.reset_connections()
        if self.spool is not None:
            self.spool.renew_owner()
        self._refresh_fast()


_PACKAGE_DIR: Final = os.path.dirname(os.path.abspath(__file__))
# handle's fast path, as globals (one look-up each)
_LogRecord: Final = logging.LogRecord
_modules: Final = sys.modules
_OTEL: Final = "opentelemetry.trace"  # imported only by an app that traces: then prepare adds the span's ids
_SHORT: Final = MAX_CONTENT // 2  # below this, a message never needs cutting to fit (see prepare)


def _raised_here(e: BaseException) -> bool:
    """True when the innermost frame of ``e``'s traceback is this package's code (a bug of ours), False when it
    is someone else's: a signal handler of the app's that raised while ``emit`` ran."""
    tb = e.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PACKAGE_DIR)


_TEXT = operator.itemgetter(ITEM_TEXT)


def _sizes(items: list[Any]) -> int:
    """The bytes ``emit`` counted for these items (their text and ``ITEM_OVERHEAD`` each), in C loops."""
    return sum(map(len, map(_TEXT, items))) + ITEM_OVERHEAD * len(items)


def __getattr__(name: str) -> Any:
    """``HandlerStats`` by its old address, loaded on first use (see ``model.py``)."""
    if name == "HandlerStats":
        from .model import HandlerStats

        return HandlerStats
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
