"""``ces_logging.otel.current_trace_ids``: the real OpenTelemetry SDK's spans, and a process without it."""

from __future__ import annotations

import pytest

from ces_logging.otel import current_trace_ids

from .conftest import run_python

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
sampling = pytest.importorskip("opentelemetry.sdk.trace.sampling")


def test_ids_of_the_recording_span_in_w3c_hex() -> None:
    tracer = sdk_trace.TracerProvider().get_tracer("test")
    assert current_trace_ids() is None  # no span
    with tracer.start_as_current_span("outer") as outer:
        ctx = outer.get_span_context()
        assert current_trace_ids() == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
        with tracer.start_as_current_span("inner") as inner:
            trace_id, span_id = current_trace_ids()  # type: ignore[misc]
            assert trace_id == f"{ctx.trace_id:032x}" and span_id == f"{inner.get_span_context().span_id:016x}"
            assert len(trace_id) == 32 and len(span_id) == 16 and trace_id == trace_id.lower()
        assert current_trace_ids() == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")  # back to the outer span
    assert current_trace_ids() is None


def test_a_span_that_is_not_recording_gives_none() -> None:
    tracer = sdk_trace.TracerProvider(sampler=sampling.ALWAYS_OFF).get_tracer("test")
    with tracer.start_as_current_span("sampled out") as span:
        assert span.get_span_context().is_valid and not span.is_recording()
        assert current_trace_ids() is None


def test_without_opentelemetry_none_and_the_import_is_tried_once() -> None:
    r = run_python("""
        import sys

        class NoOtel:
            tries = 0
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    NoOtel.tries += 1
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoOtel())
        from ces_logging.otel import current_trace_ids
        assert all(current_trace_ids() is None for _ in range(10_000))
        print("tries", NoOtel.tries)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["tries", "1"]
