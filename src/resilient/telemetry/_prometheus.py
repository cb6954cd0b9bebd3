"""Prometheus metric families, created once per ``CollectorRegistry``.

prometheus-client refuses to register a metric name twice in one registry, and users may point
``resilient`` at a fresh registry at any time (tests do, per test). So families are built lazily
per registry and cached; label children are cached by the per-policy handle, because
``.labels()`` costs a dict lookup and a lock on every call otherwise.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Families", "families_for"]

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


class Families:
    """Every metric family ``resilient`` exports, bound to one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.calls = Counter(
            "resilient_calls",
            "Calls through a resilience policy, by outcome.",
            ["policy", "name", "outcome"],
            registry=registry,
        )
        self.call_duration = Histogram(
            "resilient_call_duration_seconds",
            "Time spent in a resilience policy per call, including the protected function.",
            ["policy", "name"],
            registry=registry,
            buckets=_DURATION_BUCKETS,
        )
        self.breaker_state = Gauge(
            "resilient_breaker_state",
            "1 for the circuit breaker's current state, 0 for the others.",
            ["name", "state"],
            registry=registry,
        )
        self.retry_attempts = Counter(
            "resilient_retry_attempts",
            "Retries scheduled (attempts after the first).",
            ["name"],
            registry=registry,
        )
        self.bulkhead_in_flight = Gauge(
            "resilient_bulkhead_in_flight",
            "Calls currently holding a bulkhead slot.",
            ["name"],
            registry=registry,
        )
        self.rejections = Counter(
            "resilient_rejections",
            "Calls a policy refused without running them, by reason.",
            ["policy", "name", "reason"],
            registry=registry,
        )
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
