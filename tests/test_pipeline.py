"""Composition: order of policies, signatures, and cancellation through a whole pipeline."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import anyio
import pytest

import resilient as rs
from resilient.testing import FakeClock


def _usual_pipeline(clock: FakeClock) -> tuple[rs.Pipeline, rs.CircuitBreaker, rs.Bulkhead]:
    breaker = rs.CircuitBreaker(
        minimum_calls=2, window_size=2, failure_rate_threshold=1.0, clock=clock
    )
    bulkhead = rs.Bulkhead(max_concurrent=2)
    pipe = rs.pipeline(
        rs.Fallback("fallback"),
        rs.Retry(attempts=3, wait=0),
        breaker,
        rs.Timeout(30.0),
        bulkhead,
    )
    return pipe, breaker, bulkhead


def test_first_policy_is_outermost() -> None:
    calls = 0

    def failing() -> str:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    clock = FakeClock()
    pipe, breaker, bulkhead = _usual_pipeline(clock)
    # Retry is inside the fallback: 3 attempts, the breaker opens after two and rejects the
    # third, and the fallback answers the final verdict.
    assert pipe.call(failing) == "fallback"
    assert calls == 2
    assert breaker.state is rs.BreakerState.OPEN
    assert bulkhead.in_flight == 0

    # Reversed: the fallback innermost answers every attempt, so retry never sees a failure.
    calls = 0
    inner_fallback = rs.pipeline(rs.Retry(attempts=3, wait=0), rs.Fallback("inner"))
    assert inner_fallback.call(failing) == "inner"
    assert calls == 1


def test_decorated_functions_keep_signature_sync_and_async() -> None:
    clock = FakeClock()
    pipe, _, _ = _usual_pipeline(clock)

    @pipe
    def add(a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b

    @pipe
    async def aadd(a: int, *, b: int = 2) -> int:
        return a + b

    assert add(1) == 3
    assert add.__name__ == "add" and add.__doc__ == "Add two numbers."
    assert str(inspect.signature(add)) == "(a: 'int', b: 'int' = 2) -> 'int'"
    assert inspect.iscoroutinefunction(aadd)
    assert str(inspect.signature(aadd)) == "(a: 'int', *, b: 'int' = 2) -> 'int'"
    assert anyio.run(aadd, 40) == 42  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kind", ["breaker", "bulkhead", "retry", "timeout", "fallback", "pipeline"]
)
def test_decorating_a_non_callable_names_it(kind: str) -> None:
    policies: dict[str, Any] = {
        "breaker": rs.CircuitBreaker(),
        "bulkhead": rs.Bulkhead(max_concurrent=1),
        "retry": rs.Retry(),
        "timeout": rs.Timeout(1.0),
        "fallback": rs.Fallback(None),
        "pipeline": rs.pipeline(rs.Retry()),
    }
    with pytest.raises(TypeError, match="42"):
        policies[kind](42)


@pytest.mark.anyio
async def test_cancelling_inside_a_pipeline_leaks_nothing_and_is_not_a_failure() -> None:
    clock = FakeClock()
    breaker = rs.CircuitBreaker(
        minimum_calls=1, window_size=1, failure_rate_threshold=1.0, clock=clock
    )
    bulkhead = rs.Bulkhead(max_concurrent=1)
    pipe = rs.pipeline(rs.Retry(attempts=5, wait=0), breaker, rs.Timeout(60.0), bulkhead)
    started = anyio.Event()
    attempts = 0

    async def hang() -> None:
        nonlocal attempts
        attempts += 1
        started.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(pipe.acall, hang)
        await started.wait()
        assert bulkhead.in_flight == 1
        tg.cancel_scope.cancel()

    assert attempts == 1, "cancellation must not be retried"
    assert bulkhead.in_flight == 0
    assert breaker.state is rs.BreakerState.CLOSED, "cancellation is not a failure"

    async def ok() -> str:
        return "ok"

    assert await pipe.acall(ok) == "ok"


def test_keyboard_interrupt_inside_a_pipeline_leaks_nothing() -> None:
    clock = FakeClock()
    breaker = rs.CircuitBreaker(
        minimum_calls=1, window_size=1, failure_rate_threshold=1.0, clock=clock
    )
    bulkhead = rs.Bulkhead(max_concurrent=1)
    pipe = rs.pipeline(rs.Fallback("fallback"), rs.Retry(attempts=5, wait=0), breaker, bulkhead)
    attempts = 0

    def interrupted() -> None:
        nonlocal attempts
        attempts += 1
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipe.call(interrupted)
    assert attempts == 1
    assert bulkhead.in_flight == 0
    assert breaker.state is rs.BreakerState.CLOSED
    assert pipe.call(lambda: "ok") == "ok"


def test_threads_share_one_pipeline_state() -> None:
    clock = FakeClock()
    bulkhead = rs.Bulkhead(max_concurrent=3)
    breaker = rs.CircuitBreaker(clock=clock)
    pipe = rs.pipeline(rs.Retry(attempts=2, wait=0), breaker, bulkhead)
    lock = threading.Lock()
    running = 0
    peak = 0
    total = 0

    def work() -> None:
        nonlocal running, peak, total
        with lock:
            running += 1
            peak = max(peak, running)
            total += 1
        with lock:
            running -= 1

    outcomes: list[str] = []

    def worker() -> None:
        mine: list[str] = []
        for _ in range(500):
            try:
                pipe.call(work)
                mine.append("ok")
            except rs.PolicyRejectedError:
                # bulkhead full, or (under heavy contention) the breaker opened on those
                # rejections: either way the call was refused without running
                mine.append("rejected")
        with lock:
            outcomes.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak <= 3
    assert bulkhead.in_flight == 0
    assert len(outcomes) == 8 * 500
    assert total == outcomes.count("ok"), "every admitted call ran exactly once"
