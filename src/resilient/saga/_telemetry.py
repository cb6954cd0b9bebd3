"""Saga telemetry: typed ``SagaEvent``s, Prometheus families, OpenTelemetry spans.

Events go through a ``PolicyTelemetry("saga", name)`` handle, like every policy's, so global
listeners, the saga's ``on_event`` and the current span all see them. The saga-specific metric
families (SAGA.md 4.7) come from ``Families.family`` so they follow the registry the user
configured. Spans are only started when an OpenTelemetry SDK provider is set (the same
test ``PolicyTelemetry.tracer()`` makes), so a saga without tracing pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, TraceFlags
from prometheus_client import Counter, Gauge, Histogram

from .._types import Kwargs
from ..telemetry import Listener, PolicyTelemetry, SagaEvent
from ..telemetry._hub import STATE, metrics_registry
from ..telemetry._prometheus import Families, families_for

__all__ = ["SagaTelemetry", "parse_traceparent", "traceparent_of"]


class _SagaFamilies:
    """The saga's metric families in one registry. Names, labels, help texts and buckets are
    the catalog's (``telemetry/_catalog.py``); ``Families.family`` registers each once."""

    __slots__ = (
        "compensation_failures",
        "finished",
        "in_flight",
        "recovered",
        "stale_epoch",
        "started",
        "step_seconds",
        "stuck",
        "total",
        "unknown_version",
    )

    def __init__(self, families: Families) -> None:
        family = families.family
        self.total: Counter = family("resilient_saga_total")
        self.started: Counter = family("resilient_saga_started_total")
        self.finished: Counter = family("resilient_saga_finished_total")
        self.step_seconds: Histogram = family("resilient_saga_step_seconds")
        self.in_flight: Gauge = family("resilient_saga_in_flight")
        self.stuck: Gauge = family("resilient_saga_stuck")
        self.compensation_failures: Counter = family("resilient_saga_compensation_failures_total")
        self.recovered: Counter = family("resilient_saga_recovered_total")
        self.stale_epoch: Counter = family("resilient_saga_stale_epoch_total")
        self.unknown_version: Counter = family("resilient_saga_unknown_version_total")


def traceparent_of(span: Span) -> str | None:
    """The W3C ``traceparent`` of ``span`` (``None`` for an invalid context)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The remote span context named by a ``traceparent`` string, or ``None``."""
    if not value:
        return None
    parts = value.split("-")
    if len(parts) != 4:
        return None
    try:
        ctx = SpanContext(
            trace_id=int(parts[1], 16),
            span_id=int(parts[2], 16),
            is_remote=True,
            trace_flags=TraceFlags(int(parts[3], 16)),
        )
    except ValueError:
        return None
    return ctx if ctx.is_valid else None


class SagaTelemetry:
    """One saga definition's telemetry; cheap to consult when nothing listens."""

    def __init__(self, name: str, on_event: Listener | None) -> None:
        self.name = name
        # The saga counts its own runs (resilient_saga_total); calls are its steps' policies'.
        self.handle = PolicyTelemetry("saga", name, on_event, counts_calls=False)
        self._gen = -1
        self._saga: _SagaFamilies | None = None

    def _refresh(self) -> None:
        if self._gen == STATE.generation:
            return
        self._gen = STATE.generation
        self._saga = _SagaFamilies(families_for(metrics_registry())) if STATE.metrics else None

    def metrics(self) -> _SagaFamilies | None:
        """The saga metric families, or ``None`` when metrics are off."""
        self._refresh()
        return self._saga

    def active(self) -> bool:
        """True when anything would observe a saga (listeners, metrics, an SDK tracer)."""
        handle = self.handle
        if handle.gen != STATE.generation:
            handle.refresh()
        return bool(handle.listeners) or self.metrics() is not None or self.tracer() is not None

    # -- events --------------------------------------------------------------------------------
    def emit(
        self,
        kind: str,
        saga_id: str,
        step: str | None = None,
        attempt: int | None = None,
        error: BaseException | None = None,
        detail: str | None = None,
    ) -> None:
        """Build and deliver a ``SagaEvent`` if anyone (listener, span) would receive it."""
        handle = self.handle
        if handle.gen != STATE.generation:
            handle.refresh()
        if not handle.listeners and not (handle.tracing and _recording()):
            return
        handle.emit(
            SagaEvent(
                policy="saga",
                name=self.name,
                kind=kind,
                saga_id=saga_id,
                step=step,
                attempt=attempt,
                error=error,
                detail=detail,
            )
        )

    # -- metrics -------------------------------------------------------------------------------
    def finished(self, status: str) -> None:
        """Count a saga reaching a final status (``resilient_saga_total`` and friends)."""
        fams = self.metrics()
        if fams is None:
            return
        fams.total.labels(self.name, status).inc()
        fams.finished.labels(self.name, status).inc()
        if status == "stuck":
            fams.stuck.labels(self.name).inc()

    # -- spans ---------------------------------------------------------------------------------
    def tracer(self) -> trace.Tracer | None:
        """The tracer to use, or ``None`` when spans would go nowhere."""
        handle = self.handle
        if handle.gen != STATE.generation:
            handle.refresh()
        return handle.tracer() if handle.tracing else None

    def root_span(self, saga_id: str, link_to: str | None) -> AbstractContextManager[Span | None]:
        """The ``saga <name>`` span around one drive of a saga; a recovered run links to the
        trace the saga was started in."""
        tracer = self.tracer()
        if tracer is None:
            return nullcontext()
        links = []
        remote = parse_traceparent(link_to)
        if remote is not None:
            links.append(Link(remote))
        return _span(
            tracer,
            f"saga {self.name}",
            {"saga.name": self.name, "saga.key": saga_id},
            links,
        )

    def step_span(
        self, saga_id: str, step: str, phase: str, attempt: int
    ) -> AbstractContextManager[Span | None]:
        """A child span for one step attempt or one compensation attempt."""
        tracer = self.tracer()
        if tracer is None:
            return nullcontext()
        label = "saga.step" if phase == "forward" else "saga.compensate"
        return _span(
            tracer,
            f"{label} {step}",
            {
                "saga.name": self.name,
                "saga.key": saga_id,
                "saga.step": step,
                "saga.phase": phase,
                "saga.attempt": attempt,
            },
            [],
        )


def _recording() -> bool:
    span = trace.get_current_span()
    return span.is_recording() and not isinstance(span, NonRecordingSpan)


@contextmanager
def _span(tracer: trace.Tracer, name: str, attributes: Kwargs, links: list[Link]) -> Iterator[Span]:
    with tracer.start_as_current_span(
        name,
        attributes=attributes,
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span
