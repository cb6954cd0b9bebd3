"""``rs.chaos`` at the public API: Fault, Latency, Result on sync, asyncio, trio and threads.

What users rely on: a seed replays the same injections for the same calls, whatever threads
and tasks make them; the rate is what was asked; switched off, nothing is injected and
nothing is recorded; switched at run time (attribute, by name, from the environment); an
injected error is recognisable and recorded as ``injected`` by every policy that sees it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import resilient as rs
from resilient._core.chaos import ChaosDice
from resilient.telemetry import ChaosInjected, configure_telemetry, reset_telemetry
from resilient.telemetry._events import Event
from resilient.testing import FakeClock


class Injected(Exception):
    pass


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    configure_telemetry(registry=reg, metrics=True, tracing=False)
    try:
        yield reg
    finally:
        reset_telemetry()


def _calls(registry: CollectorRegistry, policy: str, name: str, outcome: str) -> float:
    value = registry.get_sample_value(
        "resilient_calls_total", {"policy": policy, "name": name, "outcome": outcome}
    )
    return 0.0 if value is None else value


def _fault_positions(fault: rs.chaos.Fault, calls: int) -> list[int]:
    positions = []
    for n in range(calls):
        try:
            fault.call(lambda: None)
        except Injected:
            positions.append(n)
    return positions


# -- must hold: repeatable per seed, at the asked rate ------------------------------------------
def test_seed_42_at_rate_0_3_gives_the_same_positions_twice_at_the_asked_rate() -> None:
    first = _fault_positions(rs.chaos.Fault(rate=0.3, error=Injected, seed=42), 10_000)
    second = _fault_positions(rs.chaos.Fault(rate=0.3, error=Injected, seed=42), 10_000)
    assert first == second
    assert 0.28 <= len(first) / 10_000 <= 0.32
    other = _fault_positions(rs.chaos.Fault(rate=0.3, error=Injected, seed=43), 10_000)
    assert other != first  # the seed matters


def test_threads_share_one_sequence_of_decisions() -> None:
    fault = rs.chaos.Fault(rate=0.3, error=Injected, seed=42)
    hits: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = 0
        for _ in range(1_250):
            try:
                fault.call(lambda: None)
            except Injected:
                mine += 1
        with lock:
            hits.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    dice = ChaosDice(42, 0.3)
    assert sum(hits) == sum(dice.hits(n) for n in range(10_000))  # the same 10,000 decisions
    assert fault.calls == 10_000


@pytest.mark.anyio
async def test_tasks_share_one_sequence_of_decisions() -> None:
    fault = rs.chaos.Fault(rate=0.3, error=Injected, seed=42)
    hits = 0

    async def one() -> None:
        nonlocal hits
        await anyio.lowlevel.checkpoint()
        try:
            await fault.acall(anyio.lowlevel.checkpoint)
        except Injected:
            hits += 1

    async with anyio.create_task_group() as tg:
        for _ in range(1_000):
            tg.start_soon(one)
    assert hits == sum(ChaosDice(42, 0.3).hits(n) for n in range(1_000))


# -- must hold: switched off, nothing is injected ----------------------------------------------
@pytest.mark.anyio
async def test_disabled_injects_nothing_and_records_nothing(registry: CollectorRegistry) -> None:
    fault = rs.chaos.Fault("off", rate=1.0, error=Injected, enabled=False)
    result = rs.chaos.Result("off", rate=1.0, value="fake", enabled=False)

    @fault
    def sync_call() -> str:
        return "real"

    @result
    async def async_call() -> str:
        return "real"

    for _ in range(100):
        assert sync_call() == "real"
        assert fault.call(lambda: "real") == "real"
        assert await async_call() == "real"
        assert await rs.pipeline(result, fault).acall(async_call) == "real"
    assert fault.calls == 0 and result.calls == 0
    assert _calls(registry, "chaos_fault", "off", "success") == 0
    assert _calls(registry, "chaos_result", "off", "success") == 0


# -- switching at run time --------------------------------------------------------------------
def test_enabled_and_rate_are_settable_at_run_time() -> None:
    fault = rs.chaos.Fault(rate=1.0, error=Injected, enabled=False)
    assert fault.call(lambda: 1) == 1
    fault.enabled = True
    with pytest.raises(Injected):
        fault.call(lambda: 1)
    fault.rate = 0.0
    assert fault.call(lambda: 1) == 1
    with pytest.raises(TypeError, match="enabled"):
        fault.enabled = "yes"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="rate"):
        fault.rate = 2.0


def test_set_enabled_switches_every_chaos_policy_of_a_name() -> None:
    fault = rs.chaos.Fault("rehearsal-db", rate=1.0, error=Injected, enabled=False)
    result = rs.chaos.Result("rehearsal-db", rate=1.0, value=0, enabled=False)
    other = rs.chaos.Fault("rehearsal-other", rate=1.0, error=Injected, enabled=False)
    switched = rs.chaos.set_enabled(True, name="rehearsal-db")
    assert switched == [fault, result]
    assert fault.enabled and result.enabled and not other.enabled
    assert set(rs.chaos.policies("rehearsal-db")) == {fault, result}
    rs.chaos.set_enabled(False, name="rehearsal-db")
    assert not fault.enabled and not result.enabled


def test_the_environment_switches_chaos_in_a_named_pipeline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS_STAGING__CHAOS_FAULT__ENABLED", "true")
    monkeypatch.setenv("RESILIENT__PAYMENTS_STAGING__CHAOS_FAULT__RATE", "1")
    monkeypatch.setenv("RESILIENT__PAYMENTS_STAGING__CHAOS_FAULT__ERROR", "ConnectionError")
    monkeypatch.setenv("RESILIENT__PAYMENTS_STAGING__CHAOS_LATENCY__ENABLED", "false")
    registry = rs.Registry()
    pipe = registry.policy(
        "payments-staging",
        "chaos_fault",
        "retry",
        "chaos_latency",
        retry={"attempts": 2, "wait": 0},
        chaos_latency={"rate": 1.0, "seconds": 5.0},
    )
    assert [p.kind for p in pipe.policies] == ["retry", "chaos_latency", "chaos_fault"]
    latency = pipe.policies[1]
    assert isinstance(latency, rs.chaos.Latency) and not latency.enabled  # a member, off
    with pytest.raises(ConnectionError) as info:
        pipe.call(lambda: "real")
    assert rs.chaos.is_injected(info.value)
    fault = registry.chaos_fault("payments-staging")
    fault.enabled = False  # ... and off again while the service runs
    assert pipe.call(lambda: "real") == "real"


# -- what is injected ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "error",
    [Injected("configured"), Injected, lambda: Injected("from a factory")],
    ids=["instance", "class", "factory"],
)
def test_fault_error_forms_raise_a_fresh_marked_error(error: Any) -> None:
    fault = rs.chaos.Fault("db", rate=1.0, error=error)
    raised = []
    for _ in range(2):
        with pytest.raises(Injected) as info:
            fault.call(lambda: None)
        raised.append(info.value)
    assert raised[0] is not raised[1]
    assert all(rs.chaos.is_injected(e) for e in raised)
    assert not rs.chaos.is_injected(Injected("real"))


def test_fault_does_not_call_the_function() -> None:
    calls: list[int] = []
    fault = rs.chaos.Fault(rate=1.0, error=Injected)
    with pytest.raises(Injected):
        fault.call(calls.append, 1)
    assert calls == []


def test_result_answers_instead_of_the_function() -> None:
    calls: list[int] = []
    result = rs.chaos.Result(rate=1.0, value={"items": []})
    assert result.call(lambda: calls.append(1) or "real") == {"items": []}
    assert calls == []


def test_latency_waits_then_calls() -> None:
    clock = FakeClock()
    latency = rs.chaos.Latency(rate=1.0, seconds=0.25, sleep=clock.sleep)
    assert latency.call(lambda: "real") == "real"
    assert clock.sleeps == [0.25]


@pytest.mark.anyio
async def test_async_latency_waits_on_the_given_sleep_then_calls() -> None:
    clock = FakeClock()
    latency = rs.chaos.Latency(rate=1.0, seconds=0.25, sleep=clock.asleep)

    async def real() -> str:
        return "real"

    assert await latency.acall(real) == "real"
    assert clock() == 0.25


@pytest.mark.anyio
async def test_async_latency_is_cancellable() -> None:
    latency = rs.chaos.Latency(rate=1.0, seconds=3600.0)

    async def real() -> str:
        return "real"

    with anyio.move_on_after(0) as scope:
        await latency.acall(real)
    assert scope.cancelled_caught


def test_instant_retries_makes_injected_latency_instant() -> None:
    from resilient.testing import instant_retries

    latency = rs.chaos.Latency(rate=1.0, seconds=3600.0)
    with instant_retries():
        assert latency.call(lambda: "real") == "real"


@pytest.mark.anyio
async def test_async_fault_and_result() -> None:
    async def real() -> str:
        return "real"

    with pytest.raises(Injected):
        await rs.chaos.Fault(rate=1.0, error=Injected).acall(real)
    assert await rs.chaos.Result(rate=1.0, value="fake").acall(real) == "fake"
    assert await rs.chaos.Result(rate=0.0, value="fake").acall(real) == "real"


# -- told apart from an incident ----------------------------------------------------------------
def test_every_policy_records_an_injected_fault_as_injected(registry: CollectorRegistry) -> None:
    pipe = rs.pipeline(
        rs.Retry("rehearsal", attempts=2, wait=0),
        rs.CircuitBreaker("rehearsal"),
        rs.chaos.Fault("rehearsal", rate=1.0, error=ConnectionError),
    )
    with pytest.raises(ConnectionError):
        pipe.call(lambda: None)
    assert _calls(registry, "chaos_fault", "rehearsal", "injected") == 2
    assert _calls(registry, "breaker", "rehearsal", "injected") == 2
    assert _calls(registry, "retry", "rehearsal", "injected") == 1
    assert _calls(registry, "breaker", "rehearsal", "failure") == 0


def test_injected_results_and_latency_are_recorded_as_injected(
    registry: CollectorRegistry,
) -> None:
    rs.chaos.Result("canned", rate=1.0, value=0).call(lambda: 1)
    rs.chaos.Latency("slow", rate=1.0, seconds=0.0).call(lambda: 1)
    rs.chaos.Latency("slow", rate=0.0, seconds=0.0).call(lambda: 1)
    assert _calls(registry, "chaos_result", "canned", "injected") == 1
    assert _calls(registry, "chaos_latency", "slow", "injected") == 1
    assert _calls(registry, "chaos_latency", "slow", "success") == 1


def test_spans_and_events_say_injected() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    events: list[Event] = []
    configure_telemetry(tracing=True, tracer_provider=provider)
    try:
        fault = rs.chaos.Fault("traced", rate=1.0, error=Injected, on_event=events.append)
        with pytest.raises(Injected):
            fault.call(lambda: None)
    finally:
        reset_telemetry()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "chaos_fault traced"]
    assert span.attributes is not None and span.attributes["resilient.outcome"] == "injected"
    (event,) = [e for e in events if isinstance(e, ChaosInjected)]
    assert event.injection == "fault" and isinstance(event.error, Injected)


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "named"),
    [
        (rs.chaos.Fault, {"rate": -0.1, "error": Injected}, ValueError, "rate"),
        (rs.chaos.Fault, {"rate": 1.5, "error": Injected}, ValueError, "rate"),
        (rs.chaos.Fault, {"rate": float("nan"), "error": Injected}, ValueError, "rate"),
        (rs.chaos.Fault, {"rate": "0.3", "error": Injected}, TypeError, "rate"),
        (rs.chaos.Fault, {"rate": 0.1, "error": "boom"}, TypeError, "error"),
        (rs.chaos.Fault, {"rate": 0.1, "error": KeyboardInterrupt}, ValueError, "error"),
        (rs.chaos.Fault, {"rate": 0.1, "error": lambda: "boom"}, ValueError, "error"),
        (rs.chaos.Fault, {"rate": 0.1, "error": Injected, "seed": 1.5}, TypeError, "seed"),
        (rs.chaos.Fault, {"rate": 0.1, "error": Injected, "enabled": 1}, TypeError, "enabled"),
        (rs.chaos.Latency, {"rate": 2, "seconds": 1.0}, ValueError, "rate"),
        (rs.chaos.Latency, {"rate": 0.5, "seconds": -1.0}, ValueError, "seconds"),
        (rs.chaos.Result, {"rate": -1, "value": None}, ValueError, "rate"),
    ],
)
def test_bad_input_names_the_option(
    cls: type[rs.chaos.ChaosPolicy], kwargs: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("RESILIENT__DB__CHAOS_FAULT__RATE", "1.5"),
        ("RESILIENT__DB__CHAOS_FAULT__RATE", "lots"),
        ("RESILIENT__DB__CHAOS_FAULT__ENABLED", "sometimes"),
        ("RESILIENT__DB__CHAOS_FAULT__ERROR", "builtins.NoSuchError"),
        ("RESILIENT__DB__CHAOS_FAULT__ERROR", "builtins.KeyboardInterrupt"),
        ("RESILIENT__DB__CHAOS_FAULT__SEED", "forty-two"),
    ],
)
def test_bad_environment_is_a_config_error_naming_the_variable(
    variable: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(rs.ConfigError, match=variable):
        rs.chaos.Fault.from_env("db", rate=0.1, error=Injected)


def test_settings_are_readable_and_follow_run_time_switches() -> None:
    for policy in (
        rs.chaos.Fault(rate=0.1, error=Injected, seed=3),
        rs.chaos.Latency(rate=0.1, seconds=1.0, seed=3),
        rs.chaos.Result(rate=0.1, value=None, seed=3),
    ):
        assert set(policy.settings) == set(type(policy).options)
        assert (policy.settings["rate"], policy.settings["seed"]) == (0.1, 3)
        policy.rate, policy.enabled = 0.5, False
        assert (policy.settings["rate"], policy.settings["enabled"]) == (0.5, False)


def test_latency_seconds_are_settable_at_run_time() -> None:
    clock = FakeClock()
    latency = rs.chaos.Latency(rate=1.0, seconds=0.25, sleep=clock.sleep)
    latency.seconds = 2.0
    latency.call(lambda: None)
    assert clock.sleeps == [2.0] and latency.settings["seconds"] == 2.0
    with pytest.raises(ValueError, match="seconds"):
        latency.seconds = -1.0


def test_latency_with_an_async_sleep_refuses_sync_calls() -> None:
    clock = FakeClock()
    latency = rs.chaos.Latency(rate=1.0, seconds=1.0, sleep=clock.asleep)
    with pytest.raises(TypeError, match="async sleep"):
        latency.call(lambda: None)


def test_a_random_seed_is_readable_to_replay_a_run() -> None:
    fault = rs.chaos.Fault(rate=0.3, error=Injected)
    replay = rs.chaos.Fault(rate=0.3, error=Injected, seed=fault.seed)
    assert _fault_positions(fault, 500) == _fault_positions(replay, 500)


def test_injected_latency_advances_the_installed_fake_clock() -> None:
    from resilient.testing import fake_clock

    with fake_clock() as clock:
        latency = rs.chaos.Latency(rate=1.0, seconds=0.8)
        assert latency.call(lambda: "real") == "real"
    assert clock.sleeps == [0.8]
