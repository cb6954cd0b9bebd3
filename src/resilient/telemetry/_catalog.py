"""Every Prometheus metric family ``resilient`` exports, as one table of plain data.

The exporters (``_prometheus.py`` and the saga's ``_telemetry.py``) take each family's name,
label names, help text and buckets from :data:`CATALOG`; so does the Grafana dashboard
generator (``resilient._dashboard``), and the tests check both directions: every entry is
really exported, with exactly its labels, and every exported family is an entry. A name typed
twice drifts; a name read from here cannot.

The module is data only (no prometheus-client import), so anything may import it for free.

Adding a metric is one :class:`MetricSpec` in :data:`CATALOG`; ``Families.family(name)`` then
builds and registers it (a standard counter, gauge or histogram) for whichever policy exports
it. A metric that deserves a dashboard panel also gets one panel spec in ``_dashboard.py``.
Only metrics that something exports belong here: the tests fail on an entry nobody exports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = ["CATALOG", "OUTCOMES", "MetricSpec", "MetricType", "by_name", "spec"]

MetricType = Literal["counter", "gauge", "histogram"]

# Policy kinds whose executions go through ``Policy._execute`` and so are counted and timed
# (``saga_compensation`` is the default policy a saga runs its compensations under).
_CALL_KINDS = (
    "breaker",
    "bulkhead",
    "adaptive_bulkhead",
    "rate_limiter",
    "retry",
    "timeout",
    "fallback",
    "hedge",
    "chaos_fault",
    "chaos_latency",
    "chaos_result",
    "saga_compensation",
)

OUTCOMES = (
    "success",
    "failure",
    "rejected",
    "timeout",
    "fallback",
    "cancelled",
    "injected",
)
"""Every value of the ``outcome`` label of ``resilient_calls_total``: ``injected`` marks a
call a chaos policy tampered with on purpose (or that failed with an injected error), so a
rehearsal never reads as an incident."""

# Latencies of protected calls: from sub-millisecond cache hits to multi-second timeouts.
_CALL_BUCKETS = (
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
# Saga steps are remote calls with their own retries: milliseconds to a minute.
_STEP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class MetricSpec:
    """One metric family as Prometheus scrapes it.

    ``name`` is the name queries use: counters end in ``_total`` (prometheus-client appends
    it; :attr:`family` is the name to give it), histograms are queried through
    ``<name>_bucket``/``_sum``/``_count``. ``labels`` are in the order exporters pass values.
    ``policies`` are the policy kinds (``Policy.kind``; ``"saga"`` for sagas,
    ``"state_backend"`` for any policy given a shared ``state=``) whose instances export the
    family. ``values`` pairs a label with its closed set of values where consumers
    need it (the dashboard maps breaker states to colours), in a stable order.
    """

    name: str
    type: MetricType
    labels: tuple[str, ...]
    help: str
    policies: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    values: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        # Checked once at import, so a malformed entry fails every test, not one scrape.
        where = f"metric catalog entry {self.name!r}"
        if not self.name.startswith("resilient_") or not self.name.isidentifier():
            raise ValueError(f"{where}: names are identifiers starting with 'resilient_'")
        if self.type not in ("counter", "gauge", "histogram"):
            raise ValueError(f"{where}: type must be counter, gauge or histogram")
        if (self.type == "counter") != self.name.endswith("_total"):
            raise ValueError(f"{where}: counters, and only counters, end in '_total'")
        if self.type == "histogram" and self.name.endswith(("_bucket", "_sum", "_count")):
            raise ValueError(f"{where}: a histogram is named without its sample suffix")
        if (self.type == "histogram") != bool(self.buckets):
            raise ValueError(f"{where}: histograms, and only histograms, have buckets")
        if list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError(f"{where}: buckets must be strictly increasing")
        if len(set(self.labels)) != len(self.labels) or "le" in self.labels:
            raise ValueError(f"{where}: labels must be distinct and not 'le'")
        if not all(label.isidentifier() for label in self.labels):
            raise ValueError(f"{where}: label names must be identifiers")
        if not self.policies or not self.help:
            raise ValueError(f"{where}: say which policies export it and what it means")
        if not {label for label, _ in self.values} <= set(self.labels):
            raise ValueError(f"{where}: values are listed for labels it does not have")

    @property
    def family(self) -> str:
        """The name to register with prometheus-client (counters without ``_total``)."""
        return self.name[: -len("_total")] if self.type == "counter" else self.name

    def values_of(self, label: str) -> tuple[str, ...]:
        """The listed values of ``label`` (empty when the set is open or not listed)."""
        return dict(self.values).get(label, ())


CATALOG: tuple[MetricSpec, ...] = (
    MetricSpec(
        "resilient_calls_total",
        "counter",
        ("policy", "name", "outcome"),
        "Calls through a resilience policy, by outcome.",
        _CALL_KINDS,
        values=(("outcome", OUTCOMES),),
    ),
    MetricSpec(
        "resilient_call_duration_seconds",
        "histogram",
        ("policy", "name"),
        "Time spent in a resilience policy per call, including the protected function.",
        _CALL_KINDS,
        buckets=_CALL_BUCKETS,
    ),
    MetricSpec(
        "resilient_breaker_state",
        "gauge",
        ("name", "state"),
        "1 for the circuit breaker's current state, 0 for the others.",
        ("breaker",),
        values=(
            ("state", ("closed", "open", "half_open", "forced_open", "disabled", "metrics_only")),
        ),
    ),
    MetricSpec(
        "resilient_retry_attempts_total",
        "counter",
        ("name",),
        "Retries scheduled (attempts after the first).",
        ("retry",),
    ),
    MetricSpec(
        "resilient_hedge_attempts_total",
        "counter",
        ("name",),
        "Hedged attempts started (attempts after the first).",
        ("hedge",),
    ),
    MetricSpec(
        "resilient_bulkhead_in_flight",
        "gauge",
        ("name",),
        "Calls currently holding a bulkhead slot.",
        ("bulkhead", "adaptive_bulkhead"),
    ),
    MetricSpec(
        "resilient_bulkhead_limit",
        "gauge",
        ("name",),
        "The concurrency limit an adaptive bulkhead currently enforces.",
        ("adaptive_bulkhead",),
    ),
    MetricSpec(
        "resilient_ratelimiter_tokens",
        "gauge",
        ("name",),
        "Tokens in a rate limiter's bucket (calls that may start now without waiting).",
        ("rate_limiter",),
    ),
    MetricSpec(
        "resilient_rejections_total",
        "counter",
        ("policy", "name", "reason"),
        "Calls a policy refused without running them, by reason "
        "(for a retry: retries its budget refused).",
        ("breaker", "bulkhead", "adaptive_bulkhead", "rate_limiter", "retry"),
    ),
    MetricSpec(
        "resilient_state_backend_up",
        "gauge",
        ("name",),
        "1 while the policy's shared state backend (rs.RedisState) answers, 0 while the policy "
        "runs on local state because it does not.",
        ("state_backend",),
    ),
    MetricSpec(
        "resilient_saga_total",
        "counter",
        ("name", "outcome"),
        "Sagas finished, by outcome (completed, compensated, stuck).",
        ("saga",),
    ),
    MetricSpec(
        "resilient_saga_started_total",
        "counter",
        ("saga",),
        "Sagas started.",
        ("saga",),
    ),
    MetricSpec(
        "resilient_saga_finished_total",
        "counter",
        ("saga", "status"),
        "Sagas that reached a final status.",
        ("saga",),
    ),
    MetricSpec(
        "resilient_saga_step_seconds",
        "histogram",
        ("saga", "step", "phase", "outcome"),
        "Duration of one step attempt or compensation attempt.",
        ("saga",),
        buckets=_STEP_BUCKETS,
    ),
    MetricSpec(
        "resilient_saga_in_flight",
        "gauge",
        ("saga",),
        "Sagas being driven by this process.",
        ("saga",),
    ),
    MetricSpec(
        "resilient_saga_stuck",
        "gauge",
        ("saga",),
        "Sagas this process moved to STUCK and no operator has resolved yet.",
        ("saga",),
    ),
    MetricSpec(
        "resilient_saga_compensation_failures_total",
        "counter",
        ("saga", "step"),
        "Failed compensation attempts.",
        ("saga",),
    ),
    MetricSpec(
        "resilient_saga_recovered_total",
        "counter",
        ("saga",),
        "Sagas taken over by recovery.",
        ("saga",),
    ),
    MetricSpec(
        "resilient_saga_stale_epoch_total",
        "counter",
        (),
        "Log writes refused because another process took the saga over.",
        ("saga",),
    ),
    MetricSpec(
        "resilient_saga_unknown_version_total",
        "counter",
        ("saga",),
        "Unfinished sagas skipped because their definition version is not registered.",
        ("saga",),
    ),
)
"""Every family ``resilient`` exports, in the order the docs and the dashboard list them."""

_BY_NAME: Mapping[str, MetricSpec] = MappingProxyType({s.name: s for s in CATALOG})
if len(_BY_NAME) != len(CATALOG):
    raise ValueError("the metric catalog names a family twice")


def by_name() -> Mapping[str, MetricSpec]:
    """``{name as scraped: spec}`` of every catalog entry (read-only)."""
    return _BY_NAME


def spec(name: str) -> MetricSpec:
    """The entry scraped as ``name``; a ``KeyError`` naming the catalog otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(
            f"{name!r} is not in the metric catalog (resilient/telemetry/_catalog.py)"
        ) from None
