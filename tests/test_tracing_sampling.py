"""Spans under a sampler: inside a trace that is not sampled, a parent-based sampler would
drop a policy's span anyway, so the policy does not open one (that is most of what tracing
costs); the trace context downstream calls see is the parent's either way. Any other sampler,
or a sampled parent, gets its spans as before."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from prometheus_client import CollectorRegistry

import resilient as rs
from resilient.telemetry import reset_telemetry


def _parent(*, sampled: bool) -> trace.NonRecordingSpan:
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else 0)
    return trace.NonRecordingSpan(
        trace.SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=flags)
    )


def _traced(sampler: Sampler) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rs.configure_telemetry(tracer_provider=provider, tracing=True, registry=CollectorRegistry())
    yield exporter
    reset_telemetry()


@pytest.fixture
def ratio_sampled() -> Iterator[InMemorySpanExporter]:
    """The production set-up: the SDK's parent-based sampler around a 1% ratio."""
    yield from _traced(ParentBased(TraceIdRatioBased(0.01)))


@pytest.fixture
def always_on() -> Iterator[InMemorySpanExporter]:
    """A sampler that records children of unsampled parents: its spans are never skipped."""
    yield from _traced(ALWAYS_ON)


def _pipeline() -> rs.Pipeline:
    return rs.pipeline(
        rs.Retry("sampling", attempts=2, wait=0),
        rs.CircuitBreaker("sampling"),
        rs.Bulkhead("sampling", max_concurrent=4),
    )


def test_no_span_inside_an_unsampled_request(ratio_sampled: InMemorySpanExporter) -> None:
    seen: list[trace.SpanContext] = []
    with trace.use_span(_parent(sampled=False)):
        _pipeline().call(lambda: seen.append(trace.get_current_span().get_span_context()))
    assert ratio_sampled.get_finished_spans() == ()
    # no span was opened: the function runs in the request's own span, so downstream calls
    # carry the request's trace, flagged as not sampled
    assert (seen[0].trace_id, seen[0].span_id) == (0xABC, 0xDEF)
    assert not seen[0].trace_flags.sampled


def test_unsampled_calls_are_still_counted(ratio_sampled: InMemorySpanExporter) -> None:
    registry = CollectorRegistry()
    rs.configure_telemetry(registry=registry)
    breaker = rs.CircuitBreaker("counted-unsampled")
    with trace.use_span(_parent(sampled=False)):
        breaker.call(lambda: None)
    labels = {"policy": "breaker", "name": "counted-unsampled", "outcome": "success"}
    assert registry.get_sample_value("resilient_calls_total", labels) == 1.0


def test_spans_inside_a_sampled_request(ratio_sampled: InMemorySpanExporter) -> None:
    with trace.use_span(_parent(sampled=True)):
        _pipeline().call(lambda: None)
    names = sorted(span.name for span in ratio_sampled.get_finished_spans())
    assert names == ["breaker sampling", "bulkhead sampling", "retry sampling"]
    assert all(span.context.trace_id == 0xABC for span in ratio_sampled.get_finished_spans())


def test_a_sampler_that_records_unsampled_children_keeps_every_span(
    always_on: InMemorySpanExporter,
) -> None:
    with trace.use_span(_parent(sampled=False)):
        span_id = rs.CircuitBreaker("always").call(
            lambda: trace.get_current_span().get_span_context().span_id
        )
    assert span_id != 0xDEF
    assert [span.name for span in always_on.get_finished_spans()] == ["breaker always"]


def test_a_root_call_opens_its_span_and_nested_policies_follow_its_decision(
    ratio_sampled: InMemorySpanExporter,
) -> None:
    """Without a parent the outermost policy opens the root span (the sampler decides); the
    policies inside follow that decision."""
    contexts: list[trace.SpanContext] = []
    for _ in range(200):
        _pipeline().call(lambda: contexts.append(trace.get_current_span().get_span_context()))
    sampled = [c for c in contexts if c.trace_flags.sampled]
    finished = ratio_sampled.get_finished_spans()
    assert all(c.is_valid for c in contexts)  # a root span was always current
    assert len(finished) == 3 * len(sampled)  # a sampled root: all three policies' spans
    assert len({c.trace_id for c in contexts}) == 200


@pytest.mark.anyio
async def test_async_calls_skip_spans_inside_an_unsampled_request(
    ratio_sampled: InMemorySpanExporter,
) -> None:
    async def work() -> trace.SpanContext:
        await anyio.lowlevel.checkpoint()
        return trace.get_current_span().get_span_context()

    with trace.use_span(_parent(sampled=False)):
        context = await _pipeline().acall(work)
    assert ratio_sampled.get_finished_spans() == ()
    assert (context.trace_id, context.span_id) == (0xABC, 0xDEF)
