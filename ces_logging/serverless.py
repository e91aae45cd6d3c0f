"""Serverless (Huawei FunctionGraph, or any platform that freezes the process between invocations): deliver
what an invocation logged before it returns.

The platform freezes the process as soon as the function returns. The worker thread cannot run while it is
frozen, so what an invocation logged would wait for the next invocation (minutes later, with times that may be
near the edge of the service's window) or be lost with the instance when the platform reclaims it, which it
does without a SIGTERM. So the end of each invocation is a flush: every open ``CESHandler`` sends what was logged
before it, and the function returns once the service has taken it, or after ``timeout`` seconds in all (a slow
or unreachable service delays a return by that much at most; what is still queued then goes with the next
invocation, counted as ``queued`` meanwhile, never as sent).

Two spellings of the same rule::

    @ces_logging.deliver_before_return          # or (timeout=1.0)
    def handler(event, context): ...

    def handler(event, context):
        with ces_logging.invocation(): ...

The flush runs when the function raises, too: the error it logged on the way out is the one most wanted.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar, overload

from . import lifecycle

__all__ = ["DEFAULT_TIMEOUT", "Invocation", "deliver_all", "deliver_before_return", "invocation"]

DEFAULT_TIMEOUT: Final = 2.0  # seconds an invocation's return may wait for the service, in all
_CO_COROUTINE: Final = 0x80  # inspect.CO_COROUTINE (importing inspect costs a cold start a few ms)

F = TypeVar("F", bound=Callable[..., Any])


_RESERVE: Final = 0.2  # seconds of the platform's time limit left to the function's own return


def _time_left(args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float) -> float:
    """``timeout``, or less when the invocation's context says the platform's time limit is nearer: a flush
    must never push a function over it (the platform would then fail the invocation). The context is the
    second argument (``handler(event, context)``) or ``context=``; FunctionGraph's tells the time left with
    ``getRemainingTimeInMilliSeconds()``, AWS Lambda's with ``get_remaining_time_in_millis()``."""
    context = kwargs.get("context", args[1] if len(args) > 1 else None)
    for name in ("getRemainingTimeInMilliSeconds", "get_remaining_time_in_millis"):
        method = getattr(context, name, None)
        if callable(method):
            try:
                left = float(method()) / 1000.0 - _RESERVE
            except Exception:
                return timeout
            return max(0.0, min(timeout, left))
    return timeout


def deliver_all(timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Flush every open ``CESHandler`` within ``timeout`` seconds in all. True when everything logged before
    the call was delivered (nothing dropped since the previous flush), False when some is still queued or was
    dropped. An inactive handler (nothing configured) has nothing to wait for."""
    from .handler import CESHandler

    deadline = time.monotonic() + max(0.0, timeout)
    ok = True
    for h in lifecycle.open_handlers():
        if isinstance(h, CESHandler) and h.active:
            ok = h.flush(timeout=max(0.0, deadline - time.monotonic())) and ok
    return ok


class Invocation:
    """What ``invocation()`` yields: after the block, ``delivered`` says whether everything it logged was
    delivered before the block ended (None while the block runs)."""

    __slots__ = ("delivered", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.delivered: bool | None = None


@contextmanager
def invocation(timeout: float = DEFAULT_TIMEOUT) -> Iterator[Invocation]:
    """The body of one invocation: on the way out (a return or an exception), deliver what was logged, waiting
    at most ``timeout`` seconds."""
    inv = Invocation(timeout)
    try:
        yield inv
    finally:
        inv.delivered = deliver_all(timeout)


@overload
def deliver_before_return(fn: F, /) -> F: ...


@overload
def deliver_before_return(*, timeout: float = DEFAULT_TIMEOUT) -> Callable[[F], F]: ...


def deliver_before_return(fn: F | None = None, /, *, timeout: float = DEFAULT_TIMEOUT) -> F | Callable[[F], F]:
    """A decorator for a serverless function (``def handler(event, context)``, or an ``async def``): each call
    delivers what it logged before it returns or raises (see ``invocation``), within ``timeout`` seconds, and
    within what the platform's time limit leaves (the context's time left, less a fifth of a second)."""

    def wrap(f: F) -> F:
        if getattr(getattr(f, "__code__", None), "co_flags", 0) & _CO_COROUTINE:

            @functools.wraps(f)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await f(*args, **kwargs)
                finally:
                    # The flush waits on the worker: off the event loop, so other tasks go on meanwhile.
                    import asyncio

                    left = _time_left(args, kwargs, timeout)
                    await asyncio.get_running_loop().run_in_executor(None, deliver_all, left)

            return run_async  # type: ignore[return-value]

        @functools.wraps(f)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return f(*args, **kwargs)
            finally:
                deliver_all(_time_left(args, kwargs, timeout))

        return run  # type: ignore[return-value]

    return wrap(fn) if fn is not None else wrap
