"""Prometheus metric families, created once per ``CollectorRegistry``.

prometheus-client refuses to register a metric name twice in one registry, and users may point
``resilient`` at a fresh registry at any time (tests do, per test). So families are built lazily
per registry and cached; label children are cached by the per-policy handle, because
``.labels()`` costs a dict lookup and a lock on every call otherwise.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CallStats", "CounterSeries", "Families", "PlainCounter", "families_for"]

# Latencies of protected calls: from sub-millisecond cache hits to multi-second timeouts.
_DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


_FIRST_BOUND = _DURATION_BUCKETS[0]
_BOUNDS_TEXT = tuple(repr(float(b)) for b in _DURATION_BUCKETS)


class CallStats:
    """Counts and latency histogram of one policy's executions, kept as plain numbers.

    ``resilient_calls_total`` and ``resilient_call_duration_seconds`` move on every call, so they
    are the hot path: prometheus-client's ``Counter.inc`` + ``Histogram.observe`` cost ~0.9 us
    (a lock per bucket and several checks), which alone would eat half of our 2 us budget. One
    short lock around a few integer updates costs a fraction of that; the numbers are turned
    into metric families only when Prometheus scrapes.
    """

    __slots__ = ("_lock", "buckets", "counts", "total")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.buckets = [0] * (len(_DURATION_BUCKETS) + 1)
        self.total = 0.0

    def record(self, outcome: str, duration: float) -> None:
        """Count one execution with ``outcome`` that took ``duration`` seconds."""
        # Most protected calls land in the first bucket: skip the search for them.
        index = 0 if duration <= _FIRST_BOUND else bisect_left(_DURATION_BUCKETS, duration)
        lock = self._lock
        lock.acquire()  # not ``with``: on CPython 3.11 that costs twice the lock round trip
        try:
            counts = self.counts
            counts[outcome] = counts.get(outcome, 0) + 1
            self.buckets[index] += 1
            self.total += duration
        finally:
            lock.release()

    def snapshot(self) -> tuple[dict[str, int], list[int], float]:
        with self._lock:
            return dict(self.counts), list(self.buckets), self.total


class _CallCollector(Collector):
    """Exports every policy's :class:`CallStats` at scrape time."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], CallStats] = {}
        self._lock = threading.Lock()

    def stats(self, kind: str, name: str) -> CallStats:
        key = (kind, name)
        found = self._stats.get(key)
        if found is None:
            with self._lock:
                found = self._stats.setdefault(key, CallStats())
        return found

    def describe(self) -> list[Metric]:
        return [
            CounterMetricFamily(
                "resilient_calls",
                "Calls through a resilience policy, by outcome.",
                labels=["policy", "name", "outcome"],
            ),
            HistogramMetricFamily(
                "resilient_call_duration_seconds",
                "Time spent in a resilience policy per call, including the protected function.",
                labels=["policy", "name"],
            ),
        ]

    def collect(self) -> Iterator[Metric]:
        calls, duration = self.describe()
        assert isinstance(calls, CounterMetricFamily)
        assert isinstance(duration, HistogramMetricFamily)
        with self._lock:
            items = list(self._stats.items())
        for (kind, name), stats in items:
            counts, buckets, total = stats.snapshot()
            for outcome, count in sorted(counts.items()):
                calls.add_metric([kind, name, outcome], count)
            cumulative = []
            running = 0
            for bound, count in zip((*_BOUNDS_TEXT, "+Inf"), buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            duration.add_metric([kind, name], cumulative, total)
        yield calls
        yield duration


class CounterSeries:
    """One labelled series of a :class:`PlainCounter`: an integer behind a short lock."""

    __slots__ = ("_lock", "value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        """Add ``amount`` (exact under any number of threads)."""
        lock = self._lock
        lock.acquire()
        try:
            self.value += amount
        finally:
            lock.release()


class PlainCounter(Collector):
    """A labelled counter family kept as plain integers and exported at scrape time.

    Rejections and retries are counted per call on failure paths that peers answer in about
    a microsecond; prometheus-client's ``Counter.inc`` (~0.3 us: validity checks, a value
    object, its own lock) would be a large share of that. Same ``labels(...).inc()`` interface,
    same ``<name>_total`` samples (no ``_created`` series, like ``resilient_calls_total``).
    """

    def __init__(self, name: str, documentation: str, labelnames: list[str]) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = labelnames
        self._series: dict[tuple[str, ...], CounterSeries] = {}
        self._lock = threading.Lock()

    def labels(self, *values: str) -> CounterSeries:
        """The series of ``values`` (created on first use)."""
        found = self._series.get(values)
        if found is None:
            with self._lock:
                found = self._series.setdefault(values, CounterSeries())
        return found

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        with self._lock:
            items = sorted(self._series.items())
        for labels, series in items:
            family.add_metric(list(labels), series.value)
        yield family


class Families:
    """Every metric family ``resilient`` exports, bound to one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.calls = _CallCollector()
        registry.register(self.calls)
        self.breaker_state = Gauge(
            "resilient_breaker_state",
            "1 for the circuit breaker's current state, 0 for the others.",
            ["name", "state"],
            registry=registry,
        )
        self.retry_attempts = PlainCounter(
            "resilient_retry_attempts", "Retries scheduled (attempts after the first).", ["name"]
        )
        registry.register(self.retry_attempts)
        self.bulkhead_in_flight = Gauge(
            "resilient_bulkhead_in_flight",
            "Calls currently holding a bulkhead slot.",
            ["name"],
            registry=registry,
        )
        self.rejections = PlainCounter(
            "resilient_rejections",
            "Calls a policy refused without running them, by reason.",
            ["policy", "name", "reason"],
        )
        registry.register(self.rejections)
        self.saga = Counter(
            "resilient_saga",
            "Sagas finished, by outcome (completed, compensated, stuck).",
            ["name", "outcome"],
            registry=registry,
        )
        self._extra: dict[str, Any] = {}
        self._extra_lock = threading.Lock()

    def extra(self, key: str, factory: Any) -> Any:
        """A family owned by another module (the saga's), created once per registry."""
        family = self._extra.get(key)
        if family is None:
            with self._extra_lock:
                family = self._extra.get(key)
                if family is None:
                    family = factory(self.registry)
                    self._extra[key] = family
        return family


_cache: dict[int, Families] = {}
_cache_lock = threading.Lock()


def families_for(registry: CollectorRegistry) -> Families:
    """The metric families bound to ``registry`` (built on first use)."""
    found = _cache.get(id(registry))
    if found is not None and found.registry is registry:
        return found
    with _cache_lock:
        found = _cache.get(id(registry))
        if found is None or found.registry is not registry:
            found = Families(registry)
            _cache[id(registry)] = found
        return found
