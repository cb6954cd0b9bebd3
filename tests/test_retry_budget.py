"""RetryBudget at the public API: one budget shared by many retries caps the retries of a
failing dependency, sync, asyncio and trio; refusals end retrying and are counted."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

import resilient as rs
from resilient.telemetry import reset_telemetry
from resilient.telemetry._events import CallRejected, Event, RetryScheduled
from resilient.testing import FakeClock


class Down(Exception):
    """The dependency is down."""


def _budget(**kwargs: Any) -> tuple[rs.RetryBudget, FakeClock]:
    clock = FakeClock()
    return rs.RetryBudget(clock=clock, **kwargs), clock


# -- the acceptance bound -----------------------------------------------------------------------
def test_a_failing_dependency_gets_at_most_twenty_percent_more_attempts() -> None:
    """10,000 calls, each allowed 5 attempts, against a dependency that always fails: with a
    budget of ratio 0.2 and no reserve, at most 1.2 attempts per call reach it."""
    budget, clock = _budget(ratio=0.2, min_per_second=0)
    attempts = [0]
    retry = rs.Retry(attempts=5, wait=0, on=Down, budget=budget)

    @retry
    def call() -> None:
        attempts[0] += 1
        raise Down

    for _ in range(10_000):
        with pytest.raises(Down):
            call()
        clock.advance(0.003)  # 30 s in all: the window (10 s) slides three times
    assert 10_000 < attempts[0] <= 12_000
    assert attempts[0] >= 11_900  # and the budget is used, not merely refused
    assert budget.balance < 1


@pytest.mark.anyio
async def test_the_bound_holds_for_async_calls() -> None:
    budget, clock = _budget(ratio=0.2, min_per_second=0)
    attempts = [0]

    @rs.Retry(attempts=5, wait=0, on=Down, budget=budget)
    async def call() -> None:
        attempts[0] += 1
        await anyio.lowlevel.checkpoint()
        raise Down

    for _ in range(1_000):
        with pytest.raises(Down):
            await call()
        clock.advance(0.01)
    assert 1_000 < attempts[0] <= 1_200


def test_threads_sharing_a_budget_stay_within_it_and_every_deposit_counts() -> None:
    budget, _ = _budget(ratio=0.2, min_per_second=0)  # the clock never moves: one window
    attempts = [0]
    lock = threading.Lock()
    flaky = rs.Retry(attempts=5, wait=0, on=Down, budget=budget)
    fine = rs.Retry(attempts=5, wait=0, on=Down, budget=budget)

    @flaky
    def failing() -> None:
        with lock:
            attempts[0] += 1
        raise Down

    @fine
    def working() -> int:
        return 1

    def worker() -> None:
        for _ in range(2_000):
            assert working() == 1  # a first attempt: deposits 0.2
            with pytest.raises(Down):
                failing()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = 8 * 2_000 * 2  # deposits: every first attempt of both retries, none lost
    first_attempts_failing = 8 * 2_000
    retries = attempts[0] - first_attempts_failing
    assert retries <= 0.2 * calls
    assert retries + budget.balance == pytest.approx(0.2 * calls)


# -- what a refusal does ------------------------------------------------------------------------
def test_a_refused_retry_ends_retrying_with_the_last_error_and_is_counted() -> None:
    registry = CollectorRegistry()
    rs.configure_telemetry(registry=registry, metrics=True, tracing=False)
    events: list[Event] = []
    try:
        budget, _ = _budget(ratio=0.0, min_per_second=0.2, window=10.0)  # two retries
        retry = rs.Retry("pay", attempts=4, wait=0, on=Down, budget=budget, on_event=events.append)
        attempt = [0]

        def fail() -> None:
            attempt[0] += 1
            raise Down(f"attempt {attempt[0]}")

        with pytest.raises(Down) as info:
            retry.call(fail)
        assert str(info.value) == "attempt 3"  # two retries, then the third was refused
        assert any("retry budget" in note for note in getattr(info.value, "__notes__", []))
        labels = {"policy": "retry", "name": "pay", "reason": "retry_budget"}
        assert registry.get_sample_value("resilient_rejections_total", labels) == 1
        assert registry.get_sample_value("resilient_retry_attempts_total", {"name": "pay"}) == 2
        refused = [e for e in events if isinstance(e, CallRejected)]
        assert [e.reason for e in refused] == ["retry_budget"]
        assert len([e for e in events if isinstance(e, RetryScheduled)]) == 2
        assert budget.refused == 1
    finally:
        reset_telemetry()


def test_a_refused_retry_on_a_result_raises_retry_exhausted() -> None:
    budget, _ = _budget(ratio=0.0, min_per_second=0.0)
    retry = rs.Retry(attempts=3, wait=0, on_result=lambda r: r == "busy", budget=budget)
    with pytest.raises(rs.RetryExhaustedError) as info:
        retry.call(lambda: "busy")
    assert info.value.attempts == 1 and info.value.last_result == "busy"


def test_the_reserve_lets_light_traffic_retry() -> None:
    budget, clock = _budget(ratio=0.0, min_per_second=1.0, window=10.0)
    retry = rs.Retry(attempts=2, wait=0, on=Down, budget=budget)
    answers: list[Any] = []

    def flaky() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    for _ in range(10):  # ten retries per ten seconds, earned by nothing
        answers[:] = [Down(), "ok"]
        assert retry.call(flaky) == "ok"
    answers[:] = [Down(), "ok"]
    with pytest.raises(Down):
        retry.call(flaky)
    clock.advance(10.0)  # the withdrawals leave the window
    answers[:] = [Down(), "ok"]
    assert retry.call(flaky) == "ok"


def test_one_budget_is_shared_by_several_retries() -> None:
    budget, _ = _budget(ratio=0.5, min_per_second=0.0)
    reads = rs.Retry(attempts=2, wait=0, on=Down, budget=budget)
    writes = rs.Retry(attempts=2, wait=0, on=Down, budget=budget)
    for _ in range(4):
        assert reads.call(lambda: "row") == "row"  # four first attempts: two retries earned
    assert budget.balance == pytest.approx(2.0)
    calls = [0]

    def fail() -> None:
        calls[0] += 1
        raise Down

    for _ in range(3):
        with pytest.raises(Down):
            writes.call(fail)
    # three first attempts of their own (1.5 more) and three retries taken: 0.5 left
    assert calls[0] == 6
    assert budget.balance == pytest.approx(0.5)
    assert reads.budget is writes.budget is budget


def test_inline_attempt_loops_deposit_and_withdraw() -> None:
    budget, _ = _budget(ratio=0.0, min_per_second=0.1, window=10.0)  # one retry
    retry = rs.Retry(attempts=5, wait=0, on=Down, budget=budget)
    tries = 0
    with pytest.raises(Down):
        for attempt in retry.attempts():
            with attempt:
                tries += 1
                raise Down
    assert tries == 2


@pytest.mark.anyio
async def test_async_refusal_propagates_the_last_error() -> None:
    budget, _ = _budget(ratio=0.0, min_per_second=0.0)
    attempts = [0]

    @rs.Retry(attempts=3, wait=0, on=Down, budget=budget)
    async def fail() -> None:
        attempts[0] += 1
        raise Down

    with pytest.raises(Down):
        await fail()
    assert attempts[0] == 1


def test_a_retry_that_would_not_happen_anyway_takes_nothing_from_the_budget() -> None:
    budget, _ = _budget(ratio=0.0, min_per_second=0.1, window=10.0)  # one retry
    retry = rs.Retry(attempts=1, wait=0, on=Down, budget=budget)
    with pytest.raises(Down):
        retry.call(_raise_down)  # out of attempts: the budget is not asked
    assert budget.balance == pytest.approx(1.0)


def _raise_down() -> None:
    raise Down


# -- construction, configuration, registry, health ---------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"ratio": -0.1}, ValueError, ["ratio", "-0.1"]),
        ({"ratio": "0.2"}, TypeError, ["ratio", "'0.2'"]),
        ({"min_per_second": -1}, ValueError, ["min_per_second", "-1"]),
        ({"window": 0}, ValueError, ["window", "0"]),
        ({"window": -5}, ValueError, ["window", "-5"]),
        ({"clock": 1}, TypeError, ["clock", "1"]),
        ({"name": ""}, ValueError, ["name"]),
    ],
)
def test_bad_arguments_name_the_option_and_the_value(
    kwargs: dict[str, Any], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as info:
        rs.RetryBudget(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_retry_refuses_a_budget_that_is_not_one() -> None:
    with pytest.raises(TypeError, match="budget"):
        rs.Retry(budget=0.2)  # type: ignore[arg-type]


def test_defaults_and_read_only_view() -> None:
    budget = rs.RetryBudget("db")
    assert (budget.ratio, budget.min_per_second, budget.window) == (0.2, 10.0, 10.0)
    assert budget.balance == pytest.approx(100.0)  # the reserve: 10 per second for 10 s
    assert budget.name == "db" and rs.RetryBudget().name.startswith("retry_budget-")
    assert "db" in repr(budget) and "ratio=0.2" in repr(budget)
    assert "budget='db'" in repr(rs.Retry(budget=budget))


@pytest.mark.parametrize(
    ("variable", "value"), [("RATIO", "-1"), ("RATIO", "lots"), ("WINDOW", "0s"), ("CLOCK", "x")]
)
def test_bad_environment_values_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(f"RESILIENT__DB__RETRY_BUDGET__{variable}", value)
    with pytest.raises(rs.ConfigError, match=f"RESILIENT__DB__RETRY_BUDGET__{variable}"):
        rs.RetryBudget.from_env("db")


def test_registry_shares_one_budget_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__RETRY_BUDGET__RATIO", "0.5")
    registry = rs.Registry()
    budget = registry.retry_budget("payments")
    assert registry.retry_budget("payments") is budget and budget.ratio == 0.5
    retry = registry.retry("payments", budget=budget)
    assert retry.budget is budget
    pipe = registry.policy("payments", "retry")
    assert pipe.policies[0] is retry
    assert registry.budgets() == [budget]
    with pytest.raises(ValueError, match="retry_budget"):
        registry.policy("payments", "retry_budget")
    registry.clear()
    assert registry.budgets() == []
