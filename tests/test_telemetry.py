"""Telemetry: listeners, Prometheus values, OpenTelemetry spans, a real scrape."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import resilient as rs
from resilient.telemetry import (
    BreakerStateChanged,
    CallFailed,
    CallRejected,
    CallSucceeded,
    Event,
    reset_telemetry,
)
from resilient.testing import FakeClock


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    rs.configure_telemetry(registry=reg, metrics=True, tracing=False)
    yield reg
    reset_telemetry()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rs.configure_telemetry(tracer_provider=provider, tracing=True, registry=CollectorRegistry())
    yield exporter
    reset_telemetry()


def _value(reg: CollectorRegistry, metric: str, /, **labels: str) -> float:
    value = reg.get_sample_value(metric, labels)
    return 0.0 if value is None else value


class Flaky:
    """Fails ``failures`` times, then returns ``"ok"``."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"boom {self.calls}")
        return "ok"


def _breaker(name: str, clock: FakeClock | None = None) -> rs.CircuitBreaker:
    return rs.CircuitBreaker(
        name,
        window_size=2,
        minimum_calls=2,
        failure_rate_threshold=1.0,
        open_duration=10.0,
        clock=clock or FakeClock(),
    )


# -- listeners -------------------------------------------------------------------------------


def test_listener_receives_typed_events_and_can_be_removed(registry: CollectorRegistry) -> None:
    seen: list[Event] = []
    rs.add_listener(seen.append)
    try:
        breaker = _breaker("listened")
        for _ in range(2):
            with pytest.raises(ConnectionError):
                breaker.call(Flaky(1))
        with pytest.raises(rs.CircuitOpenError):
            breaker.call(Flaky(0))
    finally:
        rs.remove_listener(seen.append)
    kinds = [type(e) for e in seen]
    assert kinds.count(CallFailed) == 2
    changes = [e for e in seen if isinstance(e, BreakerStateChanged)]
    assert [(c.from_state, c.to_state) for c in changes] == [("closed", "open")]
    rejected = [e for e in seen if isinstance(e, CallRejected)]
    assert len(rejected) == 1 and rejected[0].reason == "open"
    assert all(e.name == "listened" and e.policy == "breaker" for e in seen)
    count = len(seen)
    with pytest.raises(rs.CircuitOpenError):
        breaker.call(Flaky(0))
    assert len(seen) == count, "a removed listener must not receive events"


def test_per_policy_on_event_only_sees_its_policy(registry: CollectorRegistry) -> None:
    mine: list[Event] = []
    breaker = rs.CircuitBreaker("mine", on_event=mine.append)
    other = rs.CircuitBreaker("other")
    breaker.call(lambda: 1)
    other.call(lambda: 2)
    assert [type(e) for e in mine] == [CallSucceeded]
    assert mine[0].name == "mine"


def test_raising_listener_never_changes_a_result(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    def bad(event: Event) -> None:
        raise RuntimeError("listener bug")

    rs.add_listener(bad)
    try:
        breaker = _breaker("robust")
        retry = rs.Retry("robust", attempts=3, wait=0)
        fallback = rs.Fallback("fallback value")
        with caplog.at_level(logging.ERROR, logger="resilient.telemetry"):
            assert breaker.call(lambda: 41) == 41
            assert retry.call(Flaky(2)) == "ok"
            assert fallback.call(Flaky(5)) == "fallback value"
            with pytest.raises(ConnectionError):
                breaker.call(Flaky(1))
    finally:
        rs.remove_listener(bad)
    logged = [r for r in caplog.records if "listener" in r.getMessage()]
    assert len(logged) == 1, "a failing listener is logged once, not on every event"


# -- Prometheus ------------------------------------------------------------------------------


def _scripted_breaker_sequence_values(reg: CollectorRegistry, name: str) -> None:
    assert _value(reg, "resilient_calls_total", policy="breaker", name=name, outcome="success") == 1
    assert _value(reg, "resilient_calls_total", policy="breaker", name=name, outcome="failure") == 2
    assert (
        _value(reg, "resilient_calls_total", policy="breaker", name=name, outcome="rejected") == 3
    )
    assert (
        _value(reg, "resilient_rejections_total", policy="breaker", name=name, reason="open") == 3
    )
    assert _value(reg, "resilient_breaker_state", name=name, state="open") == 1
    assert _value(reg, "resilient_breaker_state", name=name, state="closed") == 0
    assert _value(reg, "resilient_call_duration_seconds_count", policy="breaker", name=name) == 6


def test_breaker_counters_and_state_gauge_sync(registry: CollectorRegistry) -> None:
    breaker = _breaker("scripted-sync")
    assert _value(registry, "resilient_breaker_state", name="scripted-sync", state="closed") == 1
    breaker.call(lambda: "fine")
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(Flaky(1))
    for _ in range(3):
        with pytest.raises(rs.CircuitOpenError):
            breaker.call(lambda: "never")
    _scripted_breaker_sequence_values(registry, "scripted-sync")


@pytest.mark.anyio
async def test_breaker_counters_and_state_gauge_async(registry: CollectorRegistry) -> None:
    breaker = _breaker("scripted-async")

    async def fine() -> str:
        return "fine"

    async def fail() -> str:
        raise ConnectionError("down")

    await breaker.acall(fine)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.acall(fail)
    for _ in range(3):
        with pytest.raises(rs.CircuitOpenError):
            await breaker.acall(fine)
    _scripted_breaker_sequence_values(registry, "scripted-async")


def test_retry_and_bulkhead_metrics(registry: CollectorRegistry) -> None:
    retry = rs.Retry("metered", attempts=3, wait=0)
    assert retry.call(Flaky(2)) == "ok"
    assert _value(registry, "resilient_retry_attempts_total", name="metered") == 2
    assert (
        _value(registry, "resilient_calls_total", policy="retry", name="metered", outcome="success")
        == 1
    )

    bulkhead = rs.Bulkhead("metered", max_concurrent=1)
    inside: list[float] = []

    def work() -> None:
        inside.append(_value(registry, "resilient_bulkhead_in_flight", name="metered"))
        with pytest.raises(rs.BulkheadFullError):
            bulkhead.call(lambda: None)

    bulkhead.call(work)
    assert inside == [1.0]
    assert _value(registry, "resilient_bulkhead_in_flight", name="metered") == 0
    assert (
        _value(
            registry, "resilient_rejections_total", policy="bulkhead", name="metered", reason="full"
        )
        == 1
    )


def test_metrics_can_be_switched_off(registry: CollectorRegistry) -> None:
    rs.configure_telemetry(metrics=False)
    breaker = rs.CircuitBreaker("silent")
    breaker.call(lambda: None)
    assert (
        _value(
            registry, "resilient_calls_total", policy="breaker", name="silent", outcome="success"
        )
        == 0
    )
    rs.configure_telemetry(metrics=True)
    breaker.call(lambda: None)
    assert (
        _value(
            registry, "resilient_calls_total", policy="breaker", name="silent", outcome="success"
        )
        == 1
    )


def test_real_scrape_parses(registry: CollectorRegistry) -> None:
    breaker = _breaker("scraped")
    breaker.call(lambda: None)
    with pytest.raises(ConnectionError):
        breaker.call(Flaky(1))
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert {"resilient_calls", "resilient_breaker_state", "resilient_call_duration_seconds"} <= set(
        families
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in families["resilient_calls"].samples
    }
    key = (
        "resilient_calls_total",
        (("name", "scraped"), ("outcome", "failure"), ("policy", "breaker")),
    )
    assert samples[key] == 1


# -- OpenTelemetry ---------------------------------------------------------------------------


def _by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


def _check_retry_pipeline_spans(finished: tuple[ReadableSpan, ...]) -> None:
    (retry_span,) = _by_name(finished, "retry traced")
    breaker_spans = _by_name(finished, "breaker traced")
    timeout_spans = _by_name(finished, "timeout traced")
    assert len(breaker_spans) == 3 and len(timeout_spans) == 3
    assert retry_span.attributes is not None
    assert retry_span.attributes["resilient.outcome"] == "success"
    assert retry_span.attributes["resilient.policy"] == "retry"
    assert [e.name for e in retry_span.events].count("retry_scheduled") == 2
    ordered = sorted(breaker_spans, key=lambda s: s.start_time or 0)
    outcomes = [s.attributes["resilient.outcome"] for s in ordered if s.attributes]
    assert outcomes == ["failure", "failure", "success"]
    assert ordered[0].status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in ordered[0].events)
    for b in breaker_spans:
        assert b.parent is not None and b.parent.span_id == retry_span.context.span_id
    breaker_ids = {b.context.span_id for b in breaker_spans}
    for t in timeout_spans:
        assert t.parent is not None and t.parent.span_id in breaker_ids
        assert t.context.trace_id == retry_span.context.trace_id


def _traced_pipeline() -> rs.Pipeline:
    return rs.pipeline(
        rs.Retry("traced", attempts=3, wait=0),
        rs.CircuitBreaker("traced", minimum_calls=10),
        rs.Timeout(5.0, name="traced"),
    )


def test_pipeline_spans_nest_and_record_retries_sync(spans: InMemorySpanExporter) -> None:
    assert _traced_pipeline().call(Flaky(2)) == "ok"
    _check_retry_pipeline_spans(spans.get_finished_spans())


@pytest.mark.anyio
async def test_pipeline_spans_nest_and_record_retries_async(spans: InMemorySpanExporter) -> None:
    flaky = Flaky(2)

    async def call() -> str:
        await anyio.lowlevel.checkpoint()
        return flaky()

    assert await _traced_pipeline().acall(call) == "ok"
    _check_retry_pipeline_spans(spans.get_finished_spans())


def test_rejected_call_span_has_rejection_event(spans: InMemorySpanExporter) -> None:
    breaker = rs.CircuitBreaker("rejecting")
    breaker.force_open()
    with pytest.raises(rs.CircuitOpenError):
        breaker.call(lambda: None)
    (span,) = _by_name(spans.get_finished_spans(), "breaker rejecting")
    assert span.attributes is not None and span.attributes["resilient.outcome"] == "rejected"
    events = {e.name: e for e in span.events}
    assert "call_rejected" in events
    attrs: Any = events["call_rejected"].attributes
    assert attrs["resilient.reason"] == "forced_open"


def test_tracing_can_be_switched_off(spans: InMemorySpanExporter) -> None:
    rs.configure_telemetry(tracing=False)
    rs.CircuitBreaker("untraced").call(lambda: None)
    assert _by_name(spans.get_finished_spans(), "breaker untraced") == []


def test_a_listener_added_while_telemetry_is_off_sees_the_next_call() -> None:
    rs.configure_telemetry(metrics=False, tracing=False)
    try:
        fallback = rs.Fallback("cached", name="quiet-then-heard")

        @fallback
        def down() -> str:
            raise ConnectionError("down")

        assert down() == "cached"  # the telemetry-off fast path is now in use
        seen: list[Event] = []
        rs.add_listener(seen.append)
        try:
            assert down() == "cached"
        finally:
            rs.remove_listener(seen.append)
        assert [type(e).__name__ for e in seen if e.name == "quiet-then-heard"] == [
            "FallbackUsed",
            "CallSucceeded",
        ]
    finally:
        reset_telemetry()


# -- exact counts under threads --------------------------------------------------------------------
def _hammer(calls: Callable[[], None], scrape: Callable[[], None], threads: int = 8) -> None:
    """Run ``calls`` on ``threads`` threads at once (switching every microsecond) while
    ``scrape`` runs again and again on another thread until they are done; then reset the
    telemetry."""
    barrier = threading.Barrier(threads + 1)
    done = threading.Event()

    def caller() -> None:
        barrier.wait()
        calls()

    def scraper() -> None:
        while not done.is_set():
            scrape()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=caller) for _ in range(threads)]
        scraping = threading.Thread(target=scraper)
        for t in workers:
            t.start()
        scraping.start()
        barrier.wait()
        for t in workers:
            t.join()
        done.set()
        scraping.join()
    finally:
        sys.setswitchinterval(old)
        reset_telemetry()


def _forced_open_breaker() -> Any:
    breaker = rs.CircuitBreaker("exact-rejecting-breaker")
    breaker.force_open()
    return breaker


def _empty_rate_limiter() -> Any:
    limiter = rs.RateLimiter("exact-rejecting-limiter", rate=1e-6, burst=1)
    assert limiter.try_acquire()  # the one token: every later call is refused
    return limiter


@pytest.mark.parametrize(
    ("make", "reason"),
    [(_forced_open_breaker, "forced_open"), (_empty_rate_limiter, "rate_limited")],
    ids=["breaker", "rate_limiter"],
)
def test_rejections_are_exact_under_eight_threads_and_never_decrease(
    make: Any, reason: str
) -> None:
    """A rejection is counted without a lock (telemetry/_stats.py, ``quick_rejected``; the
    rejections counter): eight threads switching every microsecond must add up exactly, and
    no scrape may see the rejected count or the histogram count go down or disagree."""
    registry = CollectorRegistry()
    rs.configure_telemetry(registry=registry)
    policy = make()
    kind = policy.kind
    labels = {"policy": kind, "name": policy.name}

    @policy
    def work() -> None:
        raise AssertionError("a refused call never runs")

    per_thread, threads = 3000, 8
    seen: list[tuple[float, float]] = []

    def scrape() -> None:
        rejected = registry.get_sample_value(
            "resilient_calls_total", {**labels, "outcome": "rejected"}
        )
        count = registry.get_sample_value("resilient_call_duration_seconds_count", labels)
        seen.append((rejected or 0.0, count or 0.0))

    def calls() -> None:
        for _ in range(per_thread):
            with contextlib.suppress(rs.PolicyRejectedError):
                work()

    _hammer(calls, scrape, threads)
    total = float(per_thread * threads)
    assert _value(registry, "resilient_calls_total", **labels, outcome="rejected") == total
    assert _value(registry, "resilient_calls_total", **labels, outcome="success") == 0
    assert _value(registry, "resilient_call_duration_seconds_count", **labels) == total
    assert _value(registry, "resilient_rejections_total", **labels, reason=reason) == total
    rejected_seen = [r for r, _ in seen]
    assert rejected_seen == sorted(rejected_seen), "a scrape saw the rejected count go down"


@pytest.mark.parametrize(
    "make",
    [
        lambda: rs.CircuitBreaker("exact-breaker", window_size=1000, minimum_calls=1000),
        lambda: rs.Bulkhead("exact-bulkhead", max_concurrent=64),
        lambda: rs.Retry("exact-retry", attempts=1),
        lambda: rs.Fallback(None, on=(KeyError,), name="exact-fallback"),
    ],
    ids=["breaker", "bulkhead", "retry", "fallback"],
)
def test_counts_are_exact_under_eight_threads_and_never_decrease(make: Any) -> None:
    """The per-call counters take no lock on the success path (telemetry/_stats.py): eight
    threads switching every microsecond must still add up exactly, and scrapes taken while
    they run must never see a count go down."""
    registry = CollectorRegistry()
    rs.configure_telemetry(registry=registry)
    policy = make()
    kind = policy.kind

    @policy
    def work(i: int) -> int:
        if i % 10 == 0:
            raise ValueError("one in ten fails")
        return i

    per_thread, threads = 4000, 8
    seen: list[float] = []

    def sample(outcome: str) -> float:
        value = registry.get_sample_value(
            "resilient_calls_total", {"policy": kind, "name": policy.name, "outcome": outcome}
        )
        return value or 0.0

    def calls() -> None:
        for i in range(per_thread):
            with contextlib.suppress(ValueError):
                work(i)

    _hammer(calls, lambda: seen.append(sample("success")), threads)
    total = per_thread * threads
    failures = total // 10
    assert sample("success") == total - failures
    assert sample("failure") == failures
    count = registry.get_sample_value(
        "resilient_call_duration_seconds_count", {"policy": kind, "name": policy.name}
    )
    assert count == total
    assert seen == sorted(seen), "a scrape saw the success count go down"
