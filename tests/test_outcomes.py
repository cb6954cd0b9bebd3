"""Outcome labels recorded per execution, and what custom tenacity waits see."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from tenacity import RetryCallState

import resilient as rs
from resilient.telemetry import reset_telemetry
from resilient.testing import FakeClock


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    rs.configure_telemetry(registry=reg, metrics=True, tracing=False)
    yield reg
    reset_telemetry()


def _calls(reg: CollectorRegistry, policy: str, name: str, outcome: str) -> float:
    value = reg.get_sample_value(
        "resilient_calls_total", {"policy": policy, "name": name, "outcome": outcome}
    )
    return 0.0 if value is None else value


def _down() -> str:
    raise ConnectionError("down")


def test_fallback_outcome_is_recorded_for_the_fallback_only(registry: CollectorRegistry) -> None:
    pipe = rs.pipeline(rs.Retry("outer", attempts=2, wait=0), rs.Fallback("cached", name="fb"))
    assert pipe.call(_down) == "cached"
    assert pipe.call(lambda: "fresh") == "fresh"
    assert _calls(registry, "fallback", "fb", "fallback") == 1
    assert _calls(registry, "fallback", "fb", "success") == 1
    assert _calls(registry, "retry", "outer", "success") == 2, "the note is not the outer's"
    assert _calls(registry, "retry", "outer", "fallback") == 0


def test_nested_use_of_one_fallback_labels_each_execution(registry: CollectorRegistry) -> None:
    fallback = rs.Fallback("cached", name="twice")

    @fallback
    def outer() -> str:
        return inner() + "!"  # the inner execution falls back, the outer one succeeds

    @fallback
    def inner() -> str:
        return _down()

    assert outer() == "cached!"
    assert _calls(registry, "fallback", "twice", "fallback") == 1
    assert _calls(registry, "fallback", "twice", "success") == 1


@pytest.mark.anyio
async def test_fallback_outcome_async(registry: CollectorRegistry) -> None:
    fallback = rs.Fallback("cached", name="afb")

    async def down() -> str:
        raise ConnectionError("down")

    assert await fallback.acall(down) == "cached"
    assert _calls(registry, "fallback", "afb", "fallback") == 1


def test_breaker_record_result_failure_is_labelled_failure(registry: CollectorRegistry) -> None:
    breaker = rs.CircuitBreaker(
        "results", record_result=lambda r: r is None, minimum_calls=10, clock=FakeClock()
    )
    assert breaker.call(lambda: None) is None
    assert breaker.call(lambda: 1) == 1
    assert _calls(registry, "breaker", "results", "failure") == 1
    assert _calls(registry, "breaker", "results", "success") == 1


class _WaitFromOutcome:
    """A user's tenacity wait that reads the failed attempt's outcome."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []

    def __call__(self, state: RetryCallState) -> float:
        assert state.outcome is not None and state.outcome.failed
        error = state.outcome.exception()
        self.seen.append((state.attempt_number, f"{type(error).__name__}: {error}"))
        return 0.0


def test_custom_tenacity_wait_sees_each_failed_outcome() -> None:
    wait = _WaitFromOutcome()
    errors = iter([ConnectionError("one"), TimeoutError("two")])

    def flaky() -> str:
        for error in errors:
            raise error
        return "ok"

    assert rs.Retry(attempts=3, wait=wait).call(flaky) == "ok"
    assert wait.seen == [(1, "ConnectionError: one"), (2, "TimeoutError: two")]


@pytest.mark.anyio
async def test_custom_tenacity_wait_sees_each_failed_outcome_async() -> None:
    wait = _WaitFromOutcome()
    errors = iter([ConnectionError("one"), TimeoutError("two")])

    async def flaky() -> str:
        for error in errors:
            raise error
        return "ok"

    assert await rs.Retry(attempts=3, wait=wait).acall(flaky) == "ok"
    assert wait.seen == [(1, "ConnectionError: one"), (2, "TimeoutError: two")]
