"""The metric catalog and what the library really exports agree, in both directions.

Each scenario drives one policy kind (or a saga, or a pipeline of everything) against a fresh
``CollectorRegistry`` and reads the scrape back. It must export exactly the catalog families
whose ``policies`` include the kinds it ran, each sample with exactly the catalog's labels,
type and help text, and nothing that is not in the catalog. Together the scenarios cover
every catalog entry, so an entry nobody exports fails too.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import resilient as rs
from resilient.saga.testing import CrashPoint, SimulatedCrash, crash_at
from resilient.telemetry import configure_telemetry, reset_telemetry
from resilient.telemetry._catalog import CATALOG, MetricSpec, by_name, spec
from resilient.testing import FakeClock

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    configure_telemetry(registry=reg, metrics=True, tracing=False)
    try:
        yield reg
    finally:
        reset_telemetry()


# -- the scenarios ------------------------------------------------------------------------------
def _breaker() -> None:
    breaker = rs.CircuitBreaker("cat-breaker", window_size=2, minimum_calls=2)

    @breaker
    def fail() -> None:
        raise ConnectionError("down")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            fail()
    with pytest.raises(rs.CircuitOpenError):
        fail()


def _bulkhead() -> None:
    bulkhead = rs.Bulkhead("cat-bulkhead", max_concurrent=1)
    assert bulkhead.call(lambda: 1) == 1
    with bulkhead, pytest.raises(rs.BulkheadFullError):
        bulkhead.call(lambda: 2)


def _retry() -> None:
    answers: list[Any] = [ConnectionError("once"), "ok", ConnectionError("again")]
    budget = rs.RetryBudget("cat-retry", ratio=0.0, min_per_second=0.1, window=10.0)

    @rs.Retry("cat-retry", attempts=2, wait=0, budget=budget)
    def flaky() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    assert flaky() == "ok"  # the budget's one retry
    with pytest.raises(ConnectionError):  # refused by the budget: a retry_budget rejection
        flaky()


def _rate_limiter() -> None:
    limiter = rs.RateLimiter("cat-limiter", rate=1.0, burst=1, clock=FakeClock())
    assert limiter.call(lambda: 1) == 1
    with pytest.raises(rs.RateLimitedError):
        limiter.call(lambda: 2)


def _adaptive_bulkhead() -> None:
    bulkhead = rs.AdaptiveBulkhead("cat-adaptive", initial=1, max_limit=2, clock=FakeClock())
    assert bulkhead.call(lambda: 1) == 1
    with bulkhead, pytest.raises(rs.BulkheadFullError):
        bulkhead.call(lambda: 2)


def _timeout() -> None:
    assert rs.Timeout(5.0, name="cat-timeout").call(lambda: 1) == 1


def _fallback() -> None:
    def fail() -> int:
        raise ConnectionError("down")

    assert rs.Fallback(value=7, name="cat-fallback").call(fail) == 7


def _hedge() -> None:
    clock = FakeClock()
    release = threading.Event()
    calls: list[int] = []

    def replica() -> str:
        calls.append(1)
        if len(calls) == 1:  # the slow replica: the hedge's delay passes meanwhile
            clock.advance(0.1)
            release.wait(10.0)
            return "slow"
        return "fast"

    try:
        assert rs.Hedge("cat-hedge", delay=0.1, clock=clock).call(replica) == "fast"
    finally:
        release.set()


def _chaos() -> None:
    fault = rs.chaos.Fault("cat-chaos", rate=1.0, error=ConnectionError, seed=1)
    with pytest.raises(ConnectionError):
        fault.call(lambda: 1)
    latency = rs.chaos.Latency("cat-chaos", rate=1.0, seconds=0.0, seed=1)
    assert latency.call(lambda: 2) == 2
    assert rs.chaos.Result("cat-chaos", rate=1.0, value=3, seed=1).call(lambda: 0) == 3


def _sync_pipeline() -> None:
    answers: list[Any] = [ConnectionError("once"), "ok", ConnectionError("again")]

    def flaky() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    budget = rs.RetryBudget("cat-pipe", ratio=0.0, min_per_second=0.1, window=10.0)
    pipe = rs.pipeline(
        rs.Retry("cat-pipe", wait=0, budget=budget), rs.Timeout(5.0, name="cat-pipe")
    )
    assert pipe.call(flaky) == "ok"
    with pytest.raises(ConnectionError):  # the budget is spent: a retry_budget rejection
        pipe.call(flaky)


def _crash_under(saga: rs.Saga, saga_id: str, step: str) -> None:
    with crash_at(CrashPoint.AFTER_STEP_RECORDED, step):
        try:
            saga.run_sync({}, saga_id=saga_id)
        except SimulatedCrash:
            return  # not pytest.raises: its ExceptionInfo would keep the saga's frames alive
    pytest.fail("the armed crash point did not fire")


def _crash_under_old_version(store: rs.SagaStore, clock: FakeClock) -> None:
    # In a frame of its own so nothing references the v1 definition once this returns: the
    # process "restarted" without it.
    old = rs.Saga("cat-versioned", store=store, clock=clock)
    old.add_step("only", lambda ctx: "done")
    _crash_under(old, "v1-run", "only")


def _saga() -> None:
    clock = FakeClock()
    store = rs.InMemorySagaStore()

    def build() -> rs.Saga:
        saga = rs.Saga("cat-saga", store=store, clock=clock)
        saga.add_step("reserve", lambda ctx: "reserved", compensate=lambda ctx, done: None)

        def charge(ctx: rs.SagaContext) -> str:
            if ctx.data.get("decline"):
                raise ConnectionError("payments down")
            return "charged"

        saga.add_step("charge", charge)
        return saga

    saga = build()
    saga.run_sync({}, saga_id="done")  # completed
    with pytest.raises(rs.SagaFailed):  # compensated, under the default compensation policy
        saga.run_sync({"decline": True}, saga_id="declined")

    _crash_under(saga, "crashed", "reserve")  # recovered by "another process"
    clock.advance(31.0)
    assert build().recover_sync().outcomes == {"crashed": rs.SagaStatus.COMPLETED}

    def undo_fails(ctx: rs.SagaContext, done: Any) -> None:
        raise ConnectionError("refund service down")

    def decline(ctx: rs.SagaContext) -> str:
        raise rs.Rejected("declined")

    stuck = rs.Saga("cat-stuck", store=store, clock=clock)  # default policy sleeps on clock
    stuck.add_step("reserve", lambda ctx: "reserved", compensate=undo_fails)
    stuck.add_step("charge", decline)
    with pytest.raises(rs.SagaStuck):
        stuck.run_sync({}, saga_id="stuck")

    _crash_under_old_version(store, clock)
    gc.collect()
    clock.advance(31.0)
    newer = rs.Saga("cat-versioned", store=store, clock=clock, version=2)
    newer.add_step("only", lambda ctx: "done")
    assert "v1-run" in newer.recover_sync().skipped


async def _async_everything() -> None:
    answers: list[Any] = [ConnectionError("once"), "ok"]

    async def flaky() -> str:
        await anyio.lowlevel.checkpoint()
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    breaker = rs.CircuitBreaker("cat-async")
    pipe = rs.pipeline(
        rs.Fallback(value="fallback", name="cat-async"),
        rs.Retry("cat-async", wait=0, on=(ConnectionError,)),
        breaker,
        rs.RateLimiter("cat-async", rate=100.0),
        rs.Timeout(5.0, name="cat-async"),
        rs.Bulkhead("cat-async", max_concurrent=2),
        rs.AdaptiveBulkhead("cat-async"),
    )
    assert await pipe.acall(flaky) == "ok"
    breaker.force_open()
    assert await pipe.acall(flaky) == "fallback"  # rejected by the breaker, then answered


def _shared_breaker() -> None:
    # An unreachable server: the gauge is exported (at 0) without any Redis running.
    pytest.importorskip("redis", reason="the redis extra is not installed")
    state = rs.RedisState("redis://127.0.0.1:1/0", prefix="cat")
    try:
        breaker = rs.CircuitBreaker("cat-shared", state=state)
        assert breaker.call(lambda: 1) == 1
        breaker.force_open()  # the backend is down: forced open locally
        with pytest.raises(rs.CircuitOpenError):
            breaker.call(lambda: 2)
    finally:
        state.close()


_ALL_CALL_KINDS = {
    "breaker",
    "bulkhead",
    "retry",
    "timeout",
    "fallback",
    "rate_limiter",
    "adaptive_bulkhead",
}
SCENARIOS: dict[str, tuple[Callable[[], None], set[str]]] = {
    "breaker": (_breaker, {"breaker"}),
    "shared breaker": (_shared_breaker, {"breaker", "state_backend"}),
    "bulkhead": (_bulkhead, {"bulkhead"}),
    "rate_limiter": (_rate_limiter, {"rate_limiter"}),
    "adaptive_bulkhead": (_adaptive_bulkhead, {"adaptive_bulkhead"}),
    "retry": (_retry, {"retry"}),
    "timeout": (_timeout, {"timeout"}),
    "fallback": (_fallback, {"fallback"}),
    "hedge": (_hedge, {"hedge"}),
    "chaos": (_chaos, {"chaos_fault", "chaos_latency", "chaos_result"}),
    "pipeline": (_sync_pipeline, {"retry", "timeout"}),  # a pipeline adds no series
    "saga": (_saga, {"saga", "saga_compensation"}),
}


# -- reading a scrape back ----------------------------------------------------------------------
def _catalog_name(family_name: str, family_type: str) -> str:
    return family_name + "_total" if family_type == "counter" else family_name


def _sample_names(metric: MetricSpec) -> set[str]:
    """The sample names prometheus-client may write for ``metric``; ``_created`` is its
    creation timestamp of counters and histograms (OpenMetrics counts it in the family)."""
    if metric.type == "counter":
        return {metric.name, metric.family + "_created"}
    if metric.type == "histogram":
        return {metric.name + s for s in ("_bucket", "_sum", "_count", "_created")}
    return {metric.name}


def _check_exported(registry: CollectorRegistry, kinds: set[str]) -> None:
    exported: dict[str, set[str]] = {}  # catalog name -> policy label values seen
    for family in registry.collect():
        name = _catalog_name(family.name, family.type)
        assert name in by_name(), f"{name} is exported but not in the metric catalog"
        metric = spec(name)
        assert family.type == metric.type, f"{name}: exported as {family.type}"
        assert family.documentation == metric.help, f"{name}: help text differs"
        if not family.samples:
            continue
        exported[name] = set()
        for sample in family.samples:
            assert sample.name in _sample_names(metric), f"{sample.name} is not a {name} sample"
            labels = set(sample.labels) - ({"le"} if sample.name.endswith("_bucket") else set())
            assert labels == set(metric.labels), (
                f"{sample.name}{sample.labels}: the catalog says labels {metric.labels}"
            )
            if "policy" in sample.labels:
                exported[name].add(sample.labels["policy"])
    expected = {m.name for m in CATALOG if set(m.policies) & kinds}
    assert set(exported) == expected, (
        f"running {sorted(kinds)} exported {sorted(exported)}; "
        f"the catalog expects {sorted(expected)}"
    )
    for name, policies in exported.items():
        assert policies <= kinds & set(spec(name).policies), (
            f"{name} has series for policy kinds {sorted(policies)}; ran {sorted(kinds)}"
        )
    # What Prometheus parses from the text format: catalog families and their _created gauges.
    text = generate_latest(registry).decode()
    known = {m.family for m in CATALOG} | {m.name for m in CATALOG}
    created = {m.family + "_created" for m in CATALOG if m.type != "gauge"}
    for family in text_string_to_metric_families(text):
        assert family.name in known | created, f"{family.name} in the scrape is not in the catalog"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_policy_kind_exports_exactly_its_catalog_families(
    scenario: str, registry: CollectorRegistry
) -> None:
    run, kinds = SCENARIOS[scenario]
    run()
    _check_exported(registry, kinds)


@pytest.mark.anyio
async def test_async_pipeline_of_every_policy_exports_their_families(
    registry: CollectorRegistry,
) -> None:
    await _async_everything()
    _check_exported(registry, _ALL_CALL_KINDS)


def test_the_scenarios_cover_every_catalog_entry() -> None:
    ran = set().union(*(kinds for _, kinds in SCENARIOS.values()))
    for metric in CATALOG:
        assert set(metric.policies) <= ran | {"saga_compensation"}, metric.name
        assert set(metric.policies) & ran, f"no scenario exports {metric.name}"


def test_labels_with_listed_values_match_the_library() -> None:
    states = spec("resilient_breaker_state").values_of("state")
    assert states == tuple(s.value for s in rs.BreakerState)


def test_outcomes_recorded_by_the_library_are_listed(registry: CollectorRegistry) -> None:
    _fallback()
    _chaos()
    _timeout()
    seen = {
        s.labels["outcome"]
        for family in registry.collect()
        for s in family.samples
        if family.name == "resilient_calls"
    }
    assert seen == {"success", "fallback", "injected"}
    assert seen <= set(spec("resilient_calls_total").values_of("outcome"))


def test_breaker_publishes_every_listed_state(registry: CollectorRegistry) -> None:
    rs.CircuitBreaker("cat-states")
    seen = {
        s.labels["state"]
        for family in registry.collect()
        for s in family.samples
        if family.name == "resilient_breaker_state"
    }
    assert seen == set(spec("resilient_breaker_state").values_of("state"))


def test_catalog_imports_nothing_but_the_standard_library() -> None:
    # Loaded by path, without importing the resilient package (whose imports are not the
    # catalog's business): the catalog alone must not pull in prometheus-client or OTel.
    code = (
        "import importlib.util, sys\n"
        f"path = {str(SRC / 'resilient' / 'telemetry' / '_catalog.py')!r}\n"
        "s = importlib.util.spec_from_file_location('catalog', path)\n"
        "m = importlib.util.module_from_spec(s)\n"
        "sys.modules['catalog'] = m\n"
        "s.loader.exec_module(m)\n"
        "assert len(m.CATALOG) > 0\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in "
        "('prometheus_client', 'opentelemetry', 'resilient')]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "calls_total"}, "starting with 'resilient_'"),
        ({"name": "resilient_calls"}, "end in '_total'"),
        ({"type": "gauge"}, "end in '_total'"),
        ({"type": "summary"}, "counter, gauge or histogram"),
        ({"labels": ("name", "name")}, "distinct"),
        ({"labels": ("le",)}, "not 'le'"),
        ({"buckets": (1.0,)}, "only histograms"),
        ({"policies": ()}, "which policies"),
        ({"values": (("reason", ("open",)),)}, "labels it does not have"),
    ],
)
def test_malformed_entries_are_refused(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "name": "resilient_things_total",
        "type": "counter",
        "labels": ("name",),
        "help": "Things.",
        "policies": ("breaker",),
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        MetricSpec(**fields)


def test_histogram_entries_need_increasing_buckets() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        MetricSpec("resilient_x_seconds", "histogram", (), "X.", ("breaker",), buckets=(2.0, 1.0))
    with pytest.raises(ValueError, match="sample suffix"):
        MetricSpec("resilient_x_count", "histogram", (), "X.", ("breaker",), buckets=(1.0,))


def test_unknown_names_say_where_the_catalog_is() -> None:
    with pytest.raises(KeyError, match=r"_catalog\.py"):
        spec("resilient_nothing_total")


def test_every_catalog_entry_is_documented() -> None:
    docs = Path(__file__).resolve().parents[1] / "docs"
    text = (docs / "telemetry.md").read_text(encoding="utf-8")
    text += (docs / "saga.md").read_text(encoding="utf-8")
    missing = [m.name for m in CATALOG if f"`{m.name}" not in text]
    assert not missing, f"not described in docs/telemetry.md or docs/saga.md: {missing}"
