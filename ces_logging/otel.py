"""OpenTelemetry trace ids: which trace and span a log record was made in, when the app is traced.

Optional: with ``opentelemetry-api`` installed (``pip install ces-logging[otel]``) and a span recording on
the calling thread, ``current_trace_ids()`` gives its ids as the W3C hex strings other tools show, so an event
in Cloud Eye can be matched with its trace. Without the package it returns None at the cost of one global
check: the import is attempted once per process, never again. It never raises into the caller.
"""

from __future__ import annotations

from typing import Any

_UNTRIED: Any = object()
_trace: Any = _UNTRIED  # the ``opentelemetry.trace`` module, None when it cannot be imported


def _load() -> Any:
    global _trace
    try:
        from opentelemetry import trace as module
    except Exception:  # ImportError, or a broken install: no trace ids, never an error in the app
        _trace = None
    else:
        _trace = module
    return _trace


def current_trace_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` in lower-case hex (32 and 16 digits) of the current span when it is recording;
    None when OpenTelemetry is absent, no span is current, or the current one is not recording (sampled out)."""
    trace = _trace
    if trace is _UNTRIED:
        trace = _load()
    if trace is None:
        return None
    try:
        span = trace.get_current_span()
        if not span.is_recording():
            return None
        ctx = span.get_span_context()
        if not ctx.is_valid:
            return None
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    except Exception:
        return None
