"""Prometheus metric families, created once per ``CollectorRegistry``.

prometheus-client refuses to register a metric name twice in one registry, and users may point
``resilient`` at a fresh registry at any time (tests do, per test). So families are built lazily
per registry and cached; label children are cached by the per-policy handle, because
``.labels()`` costs a dict lookup and a lock on every call otherwise.

Names, label names, help texts and buckets come from the metric catalog (``_catalog.py``); this
module only decides how each family is kept. The per-call families are plain numbers exported
at scrape time (:class:`CallStats`, :class:`PlainCounter`); every other catalog entry is a
standard prometheus-client counter, gauge or histogram, registered when first used.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ._catalog import MetricSpec, spec
from ._stats import BOUNDS, UNLOCKED, CallStats

__all__ = [
    "CounterSeries",
    "Families",
    "PlainCounter",
    "families_for",
    "forget_families",
]

_CALLS = spec("resilient_calls_total")
_CALL_DURATION = spec("resilient_call_duration_seconds")
# Counted on failure paths that peers answer in about a microsecond: plain integers.
_PLAIN_COUNTERS = frozenset(
    {
        "resilient_retry_attempts_total",
        "resilient_rejections_total",
        "resilient_hedge_attempts_total",
    }
)

_BOUNDS_TEXT = tuple(repr(float(b)) for b in BOUNDS)


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

    def forget(self, kind: str, name: str) -> None:
        """Stop exporting the policy ``kind``/``name`` (it was renamed)."""
        with self._lock:
            self._stats.pop((kind, name), None)

    def describe(self) -> list[Metric]:
        return [
            CounterMetricFamily(_CALLS.family, _CALLS.help, labels=list(_CALLS.labels)),
            HistogramMetricFamily(
                _CALL_DURATION.family, _CALL_DURATION.help, labels=list(_CALL_DURATION.labels)
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
                if count:
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
    """One labelled series of a :class:`PlainCounter`: an integer, updated without a lock on
    CPython with a GIL (exact there for the reason ``_stats.py`` gives) and behind a short
    lock elsewhere."""

    __slots__ = ("_lock", "value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        """Add ``amount`` (exact under any number of threads)."""
        if UNLOCKED:
            self.value += amount
            return
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

    def __init__(self, metric: MetricSpec) -> None:
        self._name = metric.family
        self._documentation = metric.help
        self._labelnames = list(metric.labels)
        self._series: dict[tuple[str, ...], CounterSeries] = {}
        self._lock = threading.Lock()

    def labels(self, *values: str) -> CounterSeries:
        """The series of ``values`` (created on first use)."""
        found = self._series.get(values)
        if found is None:
            with self._lock:
                found = self._series.setdefault(values, CounterSeries())
        return found

    def remove(self, *values: str) -> None:
        """Stop exporting the series of ``values`` (like prometheus-client's ``remove``)."""
        with self._lock:
            self._series.pop(values, None)

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        with self._lock:
            items = sorted(self._series.items())
        for labels, series in items:
            family.add_metric(list(labels), series.value)
        yield family


def _standard(metric: MetricSpec, registry: CollectorRegistry) -> Any:
    """A prometheus-client family for ``metric``, registered with ``registry``."""
    if metric.type == "counter":
        return Counter(metric.family, metric.help, metric.labels, registry=registry)
    if metric.type == "gauge":
        return Gauge(metric.family, metric.help, metric.labels, registry=registry)
    return Histogram(
        metric.family, metric.help, metric.labels, registry=registry, buckets=metric.buckets
    )


class Families:
    """Every metric family ``resilient`` exports, bound to one registry.

    The per-call families (``resilient_calls_total``, ``resilient_call_duration_seconds``)
    are registered at once, because every policy's handle needs them; every other catalog
    entry on first use through :meth:`family`, so a scrape lists only families that some
    live policy or saga exports.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.calls = _CallCollector()
        registry.register(self.calls)
        self._built: dict[str, Any] = {}
        self._lock = threading.Lock()

    def family(self, name: str) -> Any:
        """The family scraped as ``name`` (a catalog name, e.g. ``resilient_breaker_state``),
        built and registered on first use; its ``.labels(...)`` take the catalog's label
        order. ``KeyError`` for a name the catalog does not list."""
        found = self._built.get(name)
        if found is None:
            with self._lock:
                found = self._built.get(name)
                if found is None:
                    found = self._build(spec(name))
                    self._built[name] = found
        return found

    def _build(self, metric: MetricSpec) -> Any:
        if metric in (_CALLS, _CALL_DURATION):
            raise ValueError(f"{metric.name} is kept per policy: use Families.calls")
        if metric.name in _PLAIN_COUNTERS:
            counter = PlainCounter(metric)
            self.registry.register(counter)
            return counter
        return _standard(metric, self.registry)


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


def forget_families(registry: CollectorRegistry) -> None:
    """Drop the families bound to ``registry`` from the cache, so a throw-away registry (one
    per test, ``resilient.testing.isolated_registry``) is not kept alive by it. Policies still
    holding them rebuild from the current configuration when it changes."""
    with _cache_lock:
        found = _cache.get(id(registry))
        if found is not None and found.registry is registry:
            del _cache[id(registry)]
