"""Where events go: global listeners, per-policy ``on_event``, Prometheus and OpenTelemetry.

The hub keeps one small global configuration object. Every policy owns a
:class:`PolicyTelemetry` handle that caches what it needs (metric children, span name,
attributes) and rebuilds itself only when the configuration's ``generation`` changes, so the
per-call cost with nobody listening is two attribute reads and an integer compare.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _otel
from ._events import (
    BreakerStateChanged,
    CallFailed,
    CallRejected,
    CallSucceeded,
    Event,
    RetryScheduled,
)
from ._stats import UNLOCKED, CallStats

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider
    from prometheus_client import CollectorRegistry

    from ._prometheus import Families

__all__ = [
    "Listener",
    "PolicyTelemetry",
    "SavedState",
    "add_listener",
    "configure_telemetry",
    "isolate",
    "remove_listener",
    "restore_state",
    "save_state",
    "STATE",
]

Listener = Callable[[Event], None]

_log = logging.getLogger("resilient.telemetry")
_INSTRUMENTATION = "resilient"


class _State:
    """The global telemetry configuration; replaced field by field under ``_lock``."""

    __slots__ = ("generation", "listeners", "metrics", "registry", "tracer_provider", "tracing")

    def __init__(self) -> None:
        self.generation = 0
        self.listeners: tuple[Listener, ...] = ()
        self.metrics = True
        self.tracing = True
        self.registry: CollectorRegistry | None = None  # prometheus-client's global one
        self.tracer_provider: TracerProvider | None = None


STATE = _State()
_lock = threading.Lock()
_failed_listeners: set[int] = set()
_handles: weakref.WeakSet[PolicyTelemetry] = weakref.WeakSet()


def _bump() -> None:
    """A new configuration: every policy's cache is stale. ``plain`` is cleared on each handle
    (after the increment) so the telemetry-off fast path is one attribute read per call."""
    STATE.generation += 1
    for handle in list(_handles):
        handle.plain = False


def _otel_arrived() -> None:
    """The OpenTelemetry API was imported: handles built before it look again (an SDK
    provider may follow; from now on every counted call compares the API's provider)."""
    with _lock:
        _bump()


_otel.watch_import(_otel_arrived)


def metrics_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """``registry``, or the configured one, or prometheus-client's global ``REGISTRY``
    (imported here, when metrics are first needed)."""
    registry = registry if registry is not None else STATE.registry
    return _default_registry(registry)


def _default_registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    if registry is not None:
        return registry
    from prometheus_client import REGISTRY  # the default: imported when first needed

    return REGISTRY


def add_listener(listener: Listener) -> None:
    """Send every event of every policy to ``listener`` (called synchronously, in the thread
    or task that made the decision; keep it fast). A listener that raises is logged once and
    never breaks the protected call."""
    if not callable(listener):
        raise TypeError(f"listener must be callable, got {listener!r}")
    with _lock:
        STATE.listeners = (*STATE.listeners, listener)
        _bump()


def remove_listener(listener: Listener) -> None:
    """Stop sending events to ``listener`` (no error if it was not registered)."""
    with _lock:
        STATE.listeners = tuple(x for x in STATE.listeners if x != listener)
        _bump()


def configure_telemetry(
    *,
    metrics: bool | None = None,
    tracing: bool | None = None,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
) -> None:
    """Switch sinks on or off and point them elsewhere.

    ``metrics``/``tracing`` enable or disable Prometheus metrics and OpenTelemetry spans (both
    on by default; spans cost nothing until an OpenTelemetry SDK is installed). ``registry``
    sends metrics to another ``CollectorRegistry`` (default: prometheus-client's global one);
    ``tracer_provider`` sends spans to another provider (default: the global one). Arguments
    left as ``None`` keep their current value.
    """
    with _lock:
        if metrics is not None:
            STATE.metrics = bool(metrics)
        if tracing is not None:
            STATE.tracing = bool(tracing)
        if registry is not None:
            STATE.registry = registry
        if tracer_provider is not None:
            STATE.tracer_provider = tracer_provider
        _bump()


def reset_telemetry() -> None:
    """Back to defaults: metrics and tracing on, global registry and provider, no listeners."""
    with _lock:
        STATE.listeners = ()
        STATE.metrics = True
        STATE.tracing = True
        STATE.registry = None
        STATE.tracer_provider = None
        _bump()


SavedState = tuple[
    tuple[Listener, ...], bool, bool, "CollectorRegistry | None", "TracerProvider | None"
]
"""The whole configuration, as :func:`save_state` returns it."""


def save_state() -> SavedState:
    """The current configuration, for :func:`restore_state` (test isolation)."""
    with _lock:
        return (
            STATE.listeners,
            STATE.metrics,
            STATE.tracing,
            STATE.registry,
            STATE.tracer_provider,
        )


def restore_state(saved: SavedState) -> None:
    """Put back a configuration :func:`save_state` returned; every policy's cache follows."""
    with _lock:
        (
            STATE.listeners,
            STATE.metrics,
            STATE.tracing,
            STATE.registry,
            STATE.tracer_provider,
        ) = saved
        _bump()


def isolate(registry: CollectorRegistry) -> SavedState:
    """Save the configuration, then start a fresh one: no listeners, metrics into
    ``registry``; the on/off switches and the tracer provider stay (they are the session's
    choice, not state a test leaves behind). Undo with :func:`restore_state`."""
    saved = save_state()
    with _lock:
        STATE.listeners = ()
        STATE.registry = registry
        _bump()
    return saved


def _call_listener(listener: Listener, event: Event) -> None:
    try:
        listener(event)
    except Exception:
        key = id(listener)
        if key not in _failed_listeners:
            _failed_listeners.add(key)
            _log.exception(
                "resilient listener %r raised while handling %s; the protected call is not "
                "affected (further errors of this listener are not logged)",
                listener,
                type(event).__name__,
            )


class PolicyTelemetry:
    """One policy's view of the telemetry configuration, cached until it changes.

    The hot path reads plain attributes only: ``quiet`` (nothing at all to do: no metrics, no
    listener, tracing off), ``observing`` (metrics or listeners), ``active_tracer`` (the
    tracer to open spans with, ``None`` without an SDK) and ``stats``. They are valid while
    ``gen`` equals ``STATE.generation`` and ``otel_global`` is still the OpenTelemetry API's
    global provider; :meth:`current` re-checks both. ``plain_gen`` equals ``gen`` when there
    is nothing to do at all (``quiet``) and ``metrics_gen`` when the only work is ``stats``
    (no listener, no tracer): the decorator's wrappers test them with one compare.
    """

    __slots__ = (
        "__weakref__",
        "_breaker_state",
        "_children",
        "_families",
        "_gauges",
        "_rejections",
        "_tracer",
        "_tracer_provider",
        "active_tracer",
        "attach",
        "counts_calls",
        "detach",
        "detail",
        "gen",
        "kind",
        "listeners",
        "metrics",
        "metrics_gen",
        "name",
        "observing",
        "on_event",
        "otel",
        "otel_global",
        "plain",
        "plain_gen",
        "quiet",
        "skips_unsampled",
        "span_attributes",
        "span_name",
        "stats",
        "tracing",
    )

    def __init__(
        self, kind: str, name: str, on_event: Listener | None = None, *, counts_calls: bool = True
    ) -> None:
        self.kind = kind
        self.name = name
        self.on_event = on_event
        # False for handles whose owner never executes calls (saga, pipeline, passthrough): they
        # must not publish an always-empty resilient_call_duration_seconds series.
        self.counts_calls = counts_calls
        self.span_name = f"{kind} {name}"
        self.span_attributes: dict[str, Any] = {"resilient.policy": kind, "resilient.name": name}
        self.gen = -1
        self.plain = False
        self.plain_gen = self.metrics_gen = -2
        self._gauges: dict[str, Callable[[], float]] = {}
        self._breaker_state: tuple[str, tuple[str, ...]] | None = None
        self._families: Families | None = None
        self._children: dict[tuple[str, ...], Any] = {}
        self._rejections: dict[str, Any] = {}  # reason -> its series (also in _children)
        _handles.add(self)
        self.refresh(warm=False)

    def rename(self, name: str) -> None:
        """The policy took a new name (an unnamed policy named after the function it
        decorates): series published under the old name are withdrawn, new ones use ``name``."""
        old = self.name
        families = self._families
        if families is not None:
            if self.counts_calls:
                families.calls.forget(self.kind, old)
            for family, *labels in self._children:
                if old in labels:
                    families.family(family).remove(*labels)
        self.name = name
        self.span_name = f"{self.kind} {name}"
        self.span_attributes = {"resilient.policy": self.kind, "resilient.name": name}
        self.gen = -1
        self.plain = False
        self.plain_gen = self.metrics_gen = -2
        self.refresh()

    def set_on_event(self, on_event: Listener | None) -> None:
        self.on_event = on_event
        self.gen = -1
        self.plain = False
        self.plain_gen = self.metrics_gen = -2
        self.refresh()

    def refresh(self, *, warm: bool = True) -> None:
        """Rebuild the cache from the global configuration.

        A cold refresh (when the policy is built) does not import prometheus-client for the
        metrics: if nothing has imported it yet, the handle stays stale and the policy's first
        call (a warm refresh) registers its metrics, so ``import resilient`` and building
        policies at import time stay cheap, and the first scrape after the first call exports
        them."""
        with _lock:
            gen = STATE.generation
            self.metrics = STATE.metrics
            self.tracing = STATE.tracing
            self._tracer_provider = STATE.tracer_provider
            listeners = STATE.listeners
            registry = STATE.registry
        self.plain = False
        self.plain_gen = self.metrics_gen = -2  # invalid while the fields below are rebuilt
        self.listeners = listeners + ((self.on_event,) if self.on_event is not None else ())
        deferred = self.metrics and not warm and "prometheus_client" not in sys.modules
        self._families = None
        if self.metrics and not deferred:
            from ._prometheus import families_for

            self._families = families_for(_default_registry(registry))
        self._children = {}
        self._rejections = {}
        self.stats: CallStats | None = (
            self._families.calls.stats(self.kind, self.name)
            if self._families is not None and self.counts_calls
            else None
        )
        self.otel = _otel.api()
        self.otel_global = self.otel._TRACER_PROVIDER
        self.skips_unsampled = False
        self._tracer: Tracer | None = self._resolve_tracer() if self.tracing else None
        self.active_tracer = self._tracer
        if self._families is not None:
            for family, read in self._gauges.items():
                self._child(family, self.name).set_function(read)
            if self._breaker_state is not None:
                self._set_breaker_state(*self._breaker_state)
        self.observing = self.metrics or bool(self.listeners)
        self.detail = bool(self.listeners) or self._tracer is not None
        self.quiet = not self.observing and not self.tracing
        self.gen = -1 if deferred else gen  # stale: the first telemetry use refreshes warm
        self.plain_gen = gen if self.quiet else -2
        self.plain = self.quiet
        if STATE.generation != gen:  # reconfigured meanwhile: _bump may have run before us
            self.plain = False
        self.metrics_gen = (
            gen
            if UNLOCKED
            and not deferred
            and self.stats is not None
            and not self.listeners
            and self._tracer is None
            else -2
        )

    def _resolve_tracer(self) -> Tracer | None:
        self.skips_unsampled = False
        provider = self._tracer_provider
        if provider is None:
            if self.otel_global is None:
                return None  # no SDK configured yet: spans would be no-ops; skip their cost
            trace = self.otel
            provider = trace.get_tracer_provider()
            if isinstance(provider, trace.ProxyTracerProvider):
                return None
        self.skips_unsampled = _otel.drops_unsampled_children(provider)
        from opentelemetry import context  # loaded with the API: a provider exists

        self.attach: Callable[[Any], object] = context.attach
        self.detach: Callable[[Any], None] = context.detach
        return provider.get_tracer(_INSTRUMENTATION)

    def current(self) -> None:
        """Rebuild the cache if the configuration or the global tracer provider changed."""
        if self.gen != STATE.generation or self.otel._TRACER_PROVIDER is not self.otel_global:
            self.refresh()

    # -- tracing -----------------------------------------------------------------------------
    def spans_now(self) -> bool:
        """Whether a call starting now should open a span (asked only with a tracer).

        Not inside a request that was not sampled, when the sampler is parent based: such a
        span would never be recorded, and opening one (ids, a sampling decision, a context
        switch) is most of what tracing costs. The parent's context still reaches downstream
        calls, so their spans stay unsampled too."""
        return not (self.skips_unsampled and _otel.inside_unsampled_span(self.otel))

    def tracer(self) -> Tracer | None:
        """The tracer to use now, or ``None`` when spans would go nowhere (no SDK)."""
        self.current()
        return self.active_tracer

    # -- metrics -----------------------------------------------------------------------------
    def _child(self, family: str, *labels: str) -> Any:
        key = (family, *labels)
        child = self._children.get(key)
        if child is None:
            assert self._families is not None
            child = self._families.family(family).labels(*labels)
            self._children[key] = child
        return child

    def record_call(
        self,
        outcome: str,
        duration: float,
        error: BaseException | None,
        span: Span | None,
    ) -> None:
        """Account one finished execution of the policy: metrics, span outcome, call event.

        The caller (``Policy._execute``) brought the cache up to date when the call began."""
        if self.stats is not None:
            self.stats.record(outcome, duration)
        if span is not None:
            span.set_attribute("resilient.outcome", outcome)
            if error is not None and outcome not in ("success", "cancelled"):
                span.record_exception(error)
                span.set_status(self.otel.StatusCode.ERROR, f"{type(error).__name__}: {error}")
        if self.listeners and outcome != "rejected":
            if error is None and outcome in ("success", "fallback"):
                self.emit(CallSucceeded(policy=self.kind, name=self.name, duration=duration))
            elif outcome != "cancelled":
                self.emit(
                    CallFailed(policy=self.kind, name=self.name, duration=duration, error=error)
                )

    def gauge_source(self, family: str, read: Callable[[], float]) -> None:
        """Publish the gauge ``family`` (its catalog name, labelled by ``name`` only) for this
        policy by calling ``read`` at scrape time
        (re-bound when the registry changes): a gauge that moves on every call, like the
        bulkhead's in-flight count, then costs nothing per call."""
        self._gauges[family] = read
        if self._families is not None:
            self._child(family, self.name).set_function(read)

    def breaker_state(self, state: str, all_states: tuple[str, ...]) -> None:
        """Publish ``state`` as the breaker's current state (1) and every other as 0 (when
        metrics are registered; a cold handle publishes it on its first warm refresh)."""
        self._breaker_state = (state, all_states)
        if self.gen != STATE.generation and self.gen != -1:
            self.refresh()
        if self._families is not None:
            self._set_breaker_state(state, all_states)

    def _set_breaker_state(self, state: str, all_states: tuple[str, ...]) -> None:
        for s in all_states:
            self._child("resilient_breaker_state", self.name, s).set(1 if s == state else 0)

    # -- events ------------------------------------------------------------------------------
    def rejected(self, reason: str, retry_after: float | None = None) -> None:
        """Account a refused call: the rejections counter, and a ``CallRejected`` event when a
        listener or a span would see it (events are not built for metrics alone)."""
        if self.gen != STATE.generation or self.otel._TRACER_PROVIDER is not self.otel_global:
            self.refresh()
        series = self._rejections.get(reason)
        if series is None and self._families is not None:
            # kept under its full key too, so a rename withdraws it with the other series
            series = self._child("resilient_rejections_total", self.kind, self.name, reason)
            self._rejections[reason] = series
        if series is not None:
            if UNLOCKED:  # ``CounterSeries.inc`` inlined: exact under the GIL, see there
                series.value += 1
            else:
                series.inc()
        if self.detail:
            self.emit(
                CallRejected(
                    policy=self.kind, name=self.name, reason=reason, retry_after=retry_after
                )
            )

    def retry_scheduled(self, attempt: int, delay: float, error: BaseException | None) -> None:
        """Account a scheduled retry: the attempts counter, and a ``RetryScheduled`` event
        when a listener or a span would see it."""
        self._count_attempt("retry_attempts")
        if self.detail:
            self.emit(
                RetryScheduled(
                    policy=self.kind, name=self.name, attempt=attempt, delay=delay, error=error
                )
            )

    def hedge_attempt(self) -> None:
        """Count one hedged attempt (``resilient_hedge_attempts_total``)."""
        self._count_attempt("hedge_attempts")

    def _count_attempt(self, kind: str) -> None:
        """One more on the counter ``resilient_<kind>_total{name}`` (``retry_attempts`` or
        ``hedge_attempts``): an extra attempt, counted whether or not an event is built."""
        if self.gen != STATE.generation or self.otel._TRACER_PROVIDER is not self.otel_global:
            self.refresh()
        if self._families is not None:
            self._child(f"resilient_{kind}_total", self.name).inc()

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to the current span and every listener. (Metrics are moved by
        the dedicated methods above, so they count even when no event is built.)"""
        if self.gen != STATE.generation:
            self.refresh()
        if self.tracing and self.otel is not _otel.ABSENT:
            span = self.otel.get_current_span()
            if span.is_recording():
                span.add_event(_event_name(event), _event_attributes(event))
        for listener in self.listeners:
            _call_listener(listener, event)

    def wants_events(self) -> bool:
        """True when an event would reach a listener or a span: build events for rare
        decisions (state changes, fallbacks, timeouts) only when this is true. Metrics never
        need an event: they are moved by the dedicated methods above."""
        self.current()
        return self.detail

    def wants_detail(self) -> bool:
        """True when a listener or a span would see a per-call event that no metric needs
        (``BulkheadAdmitted``): skip building those on the happy path otherwise (a span that
        is not recording, in a trace that is not sampled, sees nothing)."""
        self.current()
        if self.listeners:
            return True
        return self._tracer is not None and self.otel.get_current_span().is_recording()


def _event_name(event: Event) -> str:
    if isinstance(event, BreakerStateChanged):
        return "state_change"
    name = type(event).__name__
    out = [name[0].lower()]
    for ch in name[1:]:
        if ch.isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _event_attributes(event: Event) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for slot in _slots_of(type(event)):
        if slot in ("at", "policy", "name"):
            continue
        value = getattr(event, slot)
        if value is None:
            continue
        if isinstance(value, BaseException):
            attrs[f"resilient.{slot}"] = f"{type(value).__name__}: {value}"
        elif isinstance(value, (str, bool, int, float)):
            attrs[f"resilient.{slot}"] = value
        else:
            attrs[f"resilient.{slot}"] = str(value)
    return attrs


_slot_cache: dict[type, tuple[str, ...]] = {}


def _slots_of(cls: type) -> tuple[str, ...]:
    found = _slot_cache.get(cls)
    if found is None:
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            names.extend(getattr(klass, "__slots__", ()))
        found = tuple(dict.fromkeys(n for n in names if not n.startswith("_")))
        _slot_cache[cls] = found
    return found
