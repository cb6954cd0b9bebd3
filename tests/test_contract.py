"""The public API contract of DESIGN.md section 2, tested the way an outside user reads it.

One small test per promise: exact names, parameter names, defaults and semantics, through
``import resilient as rs`` only (plus ``resilient.testing.FakeClock`` for time and the saga
crash hooks of SAGA.md 4.8 for recovery). A test marked ``xfail(strict=True)`` documents a
place where the library deviates from the contract; its reason says exactly how.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import tenacity

import resilient as rs
from resilient.saga.testing import CrashPoint, SimulatedCrash, crash_at
from resilient.testing import FakeClock

# -- helpers ---------------------------------------------------------------------------------


class Boom(Exception):
    """A failure of the protected function."""


def fail() -> None:
    raise Boom("boom")


def ok() -> str:
    return "ok"


def calls_of(policy: rs.Policy, fn: Callable[[], Any], n: int) -> list[Any]:
    """Call ``fn`` through ``policy`` ``n`` times; collect results or exceptions."""
    wrapped = policy(fn)
    out: list[Any] = []
    for _ in range(n):
        try:
            out.append(wrapped())
        except Exception as exc:
            out.append(exc)
    return out


def params(obj: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(obj).parameters)


def check_signature(
    obj: Callable[..., Any],
    positional: list[str],
    keyword: dict[str, Any],
    required_keyword: tuple[str, ...] = (),
) -> None:
    """``positional`` names come first, in order, and may be passed positionally; every name
    in ``keyword`` exists (keyword-only unless also listed in ``positional``) with that
    default; ``required_keyword`` have no default."""
    ps = params(obj)
    names = [n for n in ps if n != "self"]
    assert names[: len(positional)] == positional
    for n in positional:
        assert ps[n].kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.POSITIONAL_ONLY,
        ), n
    for n, default in keyword.items():
        assert n in ps, f"missing parameter {n!r}"
        if n not in positional:
            assert ps[n].kind is inspect.Parameter.KEYWORD_ONLY, n
        assert ps[n].default == default, (n, ps[n].default, default)
    for n in required_keyword:
        assert n in ps, f"missing parameter {n!r}"
        assert ps[n].default is inspect.Parameter.empty, n


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


# -- every policy: decorator on def / async def, types preserved, name -----------------------


def _policies() -> list[rs.Policy]:
    return [
        rs.CircuitBreaker(),
        rs.Bulkhead(max_concurrent=2),
        rs.Retry(wait=0),
        rs.Timeout(5.0),
        rs.Fallback(0),
        rs.pipeline(rs.Retry(wait=0), rs.Timeout(5.0)),
    ]


@pytest.mark.parametrize("policy", _policies(), ids=lambda p: type(p).__name__)
def test_every_policy_has_an_auto_generated_str_name(policy: rs.Policy) -> None:
    assert isinstance(policy.name, str)
    assert policy.name


@pytest.mark.parametrize(
    ("factory", "label"),
    [
        (lambda: rs.CircuitBreaker("payments"), "payments"),
        (lambda: rs.Bulkhead("payments", max_concurrent=1), "payments"),
        (lambda: rs.Retry("payments"), "payments"),
        (lambda: rs.Timeout(1.0, "payments"), "payments"),
    ],
)
def test_name_is_the_first_positional_argument(
    factory: Callable[[], rs.Policy], label: str
) -> None:
    assert factory().name == label


@pytest.mark.parametrize("policy", _policies(), ids=lambda p: type(p).__name__)
def test_decorating_def_keeps_signature_and_behaviour(policy: rs.Policy) -> None:
    def add(a: int, b: int = 2, *, scale: int = 1) -> int:
        """Add."""
        return (a + b) * scale

    wrapped = policy(add)
    assert inspect.signature(wrapped) == inspect.signature(add)
    assert wrapped.__name__ == "add"
    assert wrapped.__doc__ == "Add."
    assert not inspect.iscoroutinefunction(wrapped)
    assert wrapped(1, scale=3) == 9


@pytest.mark.parametrize("policy", _policies(), ids=lambda p: type(p).__name__)
@pytest.mark.anyio
async def test_decorating_async_def_keeps_signature_and_behaviour(policy: rs.Policy) -> None:
    async def add(a: int, b: int = 2, *, scale: int = 1) -> int:
        """Add."""
        await anyio.lowlevel.checkpoint()
        return (a + b) * scale

    wrapped = policy(add)
    assert inspect.signature(wrapped) == inspect.signature(add)
    assert wrapped.__name__ == "add"
    assert inspect.iscoroutinefunction(wrapped)
    assert await wrapped(1, scale=3) == 9


# -- CircuitBreaker --------------------------------------------------------------------------


def test_breaker_signature_names_and_defaults() -> None:
    check_signature(
        rs.CircuitBreaker,
        ["name"],
        {
            "name": None,
            "failure_rate_threshold": 0.5,
            "slow_call_duration": None,
            "slow_call_rate_threshold": 1.0,
            "window_type": "count",
            "window_size": 100,
            "minimum_calls": 10,
            "open_duration": 30.0,
            "open_jitter": 0.0,
            "half_open_max_calls": 1,
            "half_open_max_wait": None,
            "record": (Exception,),
            "ignore": (),
            "record_result": None,
            "clock": time.monotonic,
        },
    )


@pytest.mark.parametrize("bad", [0, -0.1, 1.01])
def test_breaker_thresholds_must_be_fractions_in_0_1(bad: float) -> None:
    with pytest.raises(ValueError, match="failure_rate_threshold"):
        rs.CircuitBreaker(failure_rate_threshold=bad)
    with pytest.raises(ValueError, match="slow_call_rate_threshold"):
        rs.CircuitBreaker(slow_call_rate_threshold=bad)


def test_breaker_threshold_one_is_allowed() -> None:
    assert rs.CircuitBreaker(failure_rate_threshold=1.0).state is rs.BreakerState.CLOSED


def test_breaker_state_has_exactly_the_six_members() -> None:
    assert {s.name for s in rs.BreakerState} == {
        "CLOSED",
        "OPEN",
        "HALF_OPEN",
        "FORCED_OPEN",
        "DISABLED",
        "METRICS_ONLY",
    }


def test_new_breaker_is_closed() -> None:
    assert rs.CircuitBreaker().state is rs.BreakerState.CLOSED


def test_breaker_defaults_no_decision_before_ten_calls_then_half_fail_opens(
    clock: FakeClock,
) -> None:
    breaker = rs.CircuitBreaker(clock=clock)
    calls_of(breaker, fail, 9)
    assert breaker.state is rs.BreakerState.CLOSED  # minimum_calls=10
    calls_of(breaker, fail, 1)
    assert breaker.state is rs.BreakerState.OPEN

    half = rs.CircuitBreaker(clock=clock)
    calls_of(half, ok, 5)
    calls_of(half, fail, 5)  # 5 of 10 failed: rate 0.5 reaches the default threshold
    assert half.state is rs.BreakerState.OPEN


def test_breaker_below_threshold_stays_closed(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(clock=clock)
    calls_of(breaker, ok, 6)
    calls_of(breaker, fail, 4)
    assert breaker.state is rs.BreakerState.CLOSED


def test_open_breaker_raises_circuit_open_error_without_calling(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker("payments", minimum_calls=1, window_size=1, clock=clock)
    calls_of(breaker, fail, 1)
    called = []

    @breaker
    def f() -> None:
        called.append(1)

    with pytest.raises(rs.CircuitOpenError) as info:
        f()
    assert called == []
    assert info.value.name == "payments"
    assert info.value.retry_after == pytest.approx(30.0)  # default open_duration
    assert isinstance(info.value, rs.ResilienceError)
    clock.advance(10)
    with pytest.raises(rs.CircuitOpenError) as info:
        f()
    assert info.value.retry_after == pytest.approx(20.0)


def test_default_open_duration_is_30_seconds_then_half_open(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(minimum_calls=1, window_size=1, clock=clock)
    calls_of(breaker, fail, 1)
    clock.advance(29.9)
    assert breaker.state is rs.BreakerState.OPEN
    clock.advance(0.1)
    assert breaker.state is rs.BreakerState.HALF_OPEN


def test_half_open_admits_one_trial_by_default_and_success_closes(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(minimum_calls=1, window_size=1, open_duration=5, clock=clock)
    calls_of(breaker, fail, 1)
    clock.advance(5)
    # the one trial is admitted; a second caller meanwhile is rejected
    with breaker, pytest.raises(rs.CircuitOpenError), breaker:
        pass
    assert breaker.state is rs.BreakerState.CLOSED


def test_failed_trial_reopens(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(minimum_calls=1, window_size=1, open_duration=5, clock=clock)
    calls_of(breaker, fail, 1)
    clock.advance(5)
    calls_of(breaker, fail, 1)
    assert breaker.state is rs.BreakerState.OPEN


def test_half_open_max_calls_all_must_finish_to_decide(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(
        minimum_calls=1, window_size=1, open_duration=5, half_open_max_calls=2, clock=clock
    )
    calls_of(breaker, fail, 1)
    clock.advance(5)
    with breaker:
        with breaker, pytest.raises(rs.CircuitOpenError), breaker:
            pass
        assert breaker.state is rs.BreakerState.HALF_OPEN  # one trial still running
    assert breaker.state is rs.BreakerState.CLOSED


def test_n_consecutive_failures_recipe(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(
        window_size=3, minimum_calls=3, failure_rate_threshold=1.0, clock=clock
    )
    calls_of(breaker, fail, 2)
    calls_of(breaker, ok, 1)
    calls_of(breaker, fail, 2)
    assert breaker.state is rs.BreakerState.CLOSED  # the success broke the streak
    calls_of(breaker, fail, 1)
    assert breaker.state is rs.BreakerState.OPEN  # 3 consecutive failures


def test_open_duration_callable_backs_off_by_times_opened(clock: FakeClock) -> None:
    seen: list[int] = []

    def backoff(times_opened: int) -> float:
        seen.append(times_opened)
        return 10.0 * times_opened

    breaker = rs.CircuitBreaker(minimum_calls=1, window_size=1, open_duration=backoff, clock=clock)
    calls_of(breaker, fail, 1)
    (err,) = calls_of(breaker, ok, 1)
    assert isinstance(err, rs.CircuitOpenError)
    assert err.retry_after == pytest.approx(10.0)
    clock.advance(10)
    calls_of(breaker, fail, 1)  # the trial fails: opened a second time
    (err,) = calls_of(breaker, ok, 1)
    assert isinstance(err, rs.CircuitOpenError)
    assert err.retry_after == pytest.approx(20.0)
    assert seen[-2:] == [1, 2]


def test_open_jitter_adds_a_random_fraction_of_open_time(clock: FakeClock) -> None:
    hints = []
    for _ in range(20):
        breaker = rs.CircuitBreaker(
            minimum_calls=1, window_size=1, open_duration=10, open_jitter=0.5, clock=clock
        )
        calls_of(breaker, fail, 1)
        (err,) = calls_of(breaker, ok, 1)
        assert isinstance(err, rs.CircuitOpenError)
        assert err.retry_after is not None
        hints.append(err.retry_after)
    assert all(10.0 <= h <= 15.0 + 1e-9 for h in hints)
    assert len(set(hints)) > 1  # random, so a fleet does not re-close in lockstep


def test_slow_calls_open_the_breaker(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(slow_call_duration=1.0, window_size=2, minimum_calls=2, clock=clock)

    @breaker
    def slow() -> str:
        clock.advance(2.0)
        return "late but fine"

    assert slow() == "late but fine"
    assert slow() == "late but fine"
    assert breaker.state is rs.BreakerState.OPEN  # 2 of 2 slow >= slow_call_rate_threshold 1.0


def test_slow_call_duration_none_means_off(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(window_size=2, minimum_calls=2, clock=clock)

    @breaker
    def slow() -> None:
        clock.advance(3600.0)

    slow()
    slow()
    assert breaker.state is rs.BreakerState.CLOSED


def test_time_window_counts_only_recent_calls(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(window_type="time", window_size=10, minimum_calls=2, clock=clock)
    calls_of(breaker, fail, 1)
    clock.advance(11)
    calls_of(breaker, fail, 1)
    assert breaker.state is rs.BreakerState.CLOSED  # the first failure left the window
    calls_of(breaker, fail, 1)
    assert breaker.state is rs.BreakerState.OPEN


def test_half_open_max_wait_reclaims_a_trial_that_never_reports(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(
        minimum_calls=1, window_size=1, open_duration=5, half_open_max_wait=2, clock=clock
    )
    calls_of(breaker, fail, 1)
    clock.advance(5)
    breaker.__enter__()  # a trial that never reports back
    with pytest.raises(rs.CircuitOpenError), breaker:
        pass
    clock.advance(2 + 5)
    with breaker:  # the stuck trial was reclaimed: a new trial gets in
        pass
    assert breaker.state is rs.BreakerState.CLOSED


def test_record_types_other_exceptions_count_as_success(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(
        minimum_calls=1, window_size=1, record=(ConnectionError,), clock=clock
    )

    def value_error() -> None:
        raise ValueError("not a dependency failure")

    (err,) = calls_of(breaker, value_error, 1)
    assert isinstance(err, ValueError)
    assert breaker.state is rs.BreakerState.CLOSED

    def conn() -> None:
        raise ConnectionError("down")

    calls_of(breaker, conn, 1)
    assert breaker.state is rs.BreakerState.OPEN


def test_record_predicate(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(
        minimum_calls=1,
        window_size=1,
        record=lambda exc: "5xx" in str(exc),
        clock=clock,
    )

    def client_error() -> None:
        raise Boom("4xx")

    def server_error() -> None:
        raise Boom("5xx")

    calls_of(breaker, client_error, 1)
    assert breaker.state is rs.BreakerState.CLOSED
    calls_of(breaker, server_error, 1)
    assert breaker.state is rs.BreakerState.OPEN


def test_ignore_counts_as_neither(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(
        minimum_calls=2, window_size=2, failure_rate_threshold=1.0, ignore=(KeyError,), clock=clock
    )

    def missing() -> None:
        raise KeyError("k")

    calls_of(breaker, fail, 1)
    calls_of(breaker, missing, 3)  # ignored: not successes that would dilute the rate
    assert breaker.state is rs.BreakerState.CLOSED
    calls_of(breaker, fail, 1)
    assert breaker.state is rs.BreakerState.OPEN


def test_record_result_counts_a_value_as_failure_but_returns_it(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(
        minimum_calls=1, window_size=1, record_result=lambda r: r == 503, clock=clock
    )

    @breaker
    def status() -> int:
        return 503

    assert status() == 503
    assert breaker.state is rs.BreakerState.OPEN


def test_force_open_disable_metrics_only_and_reset(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(minimum_calls=1, window_size=1, clock=clock)

    breaker.force_open()
    assert breaker.state is rs.BreakerState.FORCED_OPEN
    (err,) = calls_of(breaker, ok, 1)
    assert isinstance(err, rs.CircuitOpenError)
    clock.advance(3600)
    assert breaker.state is rs.BreakerState.FORCED_OPEN  # until reset

    breaker.disable()
    assert breaker.state is rs.BreakerState.DISABLED
    assert calls_of(breaker, fail, 3)[-1].__class__ is Boom
    assert calls_of(breaker, ok, 1) == ["ok"]
    assert breaker.state is rs.BreakerState.DISABLED

    breaker.metrics_only()
    assert breaker.state is rs.BreakerState.METRICS_ONLY
    calls_of(breaker, fail, 5)
    assert calls_of(breaker, ok, 1) == ["ok"]  # never rejects
    assert breaker.state is rs.BreakerState.METRICS_ONLY

    breaker.reset()
    assert breaker.state is rs.BreakerState.CLOSED


def test_reset_empties_the_window(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(window_size=2, minimum_calls=2, clock=clock)
    calls_of(breaker, fail, 1)
    breaker.reset()
    calls_of(breaker, fail, 1)
    assert breaker.state is rs.BreakerState.CLOSED  # 1 call in the window: the other is gone
    calls_of(breaker, fail, 1)
    assert breaker.state is rs.BreakerState.OPEN
    breaker2 = rs.CircuitBreaker(minimum_calls=1, window_size=1, clock=clock)
    calls_of(breaker2, fail, 1)
    breaker2.reset()
    assert breaker2.state is rs.BreakerState.CLOSED
    assert calls_of(breaker2, ok, 1) == ["ok"]


def test_with_breaker_records_failures(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(minimum_calls=1, window_size=1, clock=clock)
    with pytest.raises(Boom), breaker:
        fail()
    assert breaker.state is rs.BreakerState.OPEN
    ran = []
    with pytest.raises(rs.CircuitOpenError), breaker:
        ran.append(1)
    assert ran == []


@pytest.mark.anyio
async def test_async_with_breaker(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(minimum_calls=1, window_size=1, clock=clock)
    async with breaker:
        await anyio.lowlevel.checkpoint()
    assert breaker.state is rs.BreakerState.CLOSED
    with pytest.raises(Boom):
        async with breaker:
            fail()
    with pytest.raises(rs.CircuitOpenError):
        async with breaker:
            pass


def test_circuit_open_error_constructor() -> None:
    err = rs.CircuitOpenError("payments", 1.5)
    assert err.name == "payments"
    assert err.retry_after == 1.5
    assert isinstance(err, rs.ResilienceError)


def test_cancellation_is_not_a_breaker_failure(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(minimum_calls=1, window_size=1, clock=clock)
    with pytest.raises(KeyboardInterrupt), breaker:
        raise KeyboardInterrupt
    assert breaker.state is rs.BreakerState.CLOSED


# -- Bulkhead --------------------------------------------------------------------------------


def test_bulkhead_signature() -> None:
    check_signature(
        rs.Bulkhead,
        ["name"],
        {"name": None, "max_queued": 0, "queue_timeout": None},
        required_keyword=("max_concurrent",),
    )
    with pytest.raises(TypeError):
        rs.Bulkhead()  # type: ignore[call-arg]  # max_concurrent is required


def test_bulkhead_in_flight_and_full() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1)
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)
    called = []
    with bulkhead:
        assert bulkhead.in_flight == 1
        with pytest.raises(rs.BulkheadFullError) as info, bulkhead:  # default max_queued=0
            called.append(1)
        assert isinstance(info.value, rs.ResilienceError)
    assert called == []
    assert bulkhead.in_flight == 0


def test_bulkhead_decorator_rejects_without_calling() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1)
    called = []

    @bulkhead
    def f() -> None:
        called.append(1)

    with bulkhead, pytest.raises(rs.BulkheadFullError):
        f()
    assert called == []
    f()
    assert called == [1]


def test_bulkhead_queue_waits_for_a_slot() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=1)
    got: list[int] = []
    release = threading.Event()

    def waiter() -> None:
        with bulkhead:
            got.append(bulkhead.in_flight)

    with bulkhead:
        t = threading.Thread(target=waiter)
        t.start()
        for _ in range(500):
            if bulkhead.queued == 1:
                break
            time.sleep(0.002)
        assert bulkhead.queued == 1
        with pytest.raises(rs.BulkheadFullError), bulkhead:  # the queue is full too
            pass
        release.set()
    t.join(5)
    assert got == [1]
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


def test_bulkhead_queue_timeout_rejects() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=1, queue_timeout=0.01)
    with bulkhead, pytest.raises(rs.BulkheadFullError), bulkhead:
        pass
    assert bulkhead.queued == 0


@pytest.mark.anyio
async def test_async_with_bulkhead() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1)
    async with bulkhead:
        assert bulkhead.in_flight == 1
        with pytest.raises(rs.BulkheadFullError):
            async with bulkhead:
                pass
    assert bulkhead.in_flight == 0


@pytest.mark.anyio
async def test_async_bulkhead_queue_waits_for_a_slot() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=1)
    release = anyio.Event()
    order: list[str] = []

    @bulkhead
    async def work(tag: str) -> None:
        order.append(tag)
        await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(work, "first")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(work, "second")
        await anyio.wait_all_tasks_blocked()
        assert (bulkhead.in_flight, bulkhead.queued) == (1, 1)
        with pytest.raises(rs.BulkheadFullError):
            await work("third")
        release.set()
    assert order == ["first", "second"]
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


@pytest.mark.anyio
async def test_async_bulkhead_queue_timeout_rejects() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=1, queue_timeout=0.02)
    async with bulkhead:
        with pytest.raises(rs.BulkheadFullError):
            async with bulkhead:
                pass
        assert bulkhead.queued == 0
    assert bulkhead.in_flight == 0


@pytest.mark.parametrize("policy", _policies(), ids=lambda p: type(p).__name__)
def test_decorating_a_method_binds_self(policy: rs.Policy) -> None:
    class Client:
        factor = 3

        @policy
        def get(self, x: int) -> int:
            return x * self.factor

    assert Client().get(2) == 6


# -- Retry -----------------------------------------------------------------------------------


def test_retry_signature() -> None:
    check_signature(
        rs.Retry,
        ["name"],
        {
            "name": None,
            "attempts": 3,
            "on": (Exception,),
            "on_result": None,
            "max_delay": None,
            "sleep": None,
        },
    )
    assert "wait" in params(rs.Retry)
    assert params(rs.Retry)["wait"].kind is inspect.Parameter.KEYWORD_ONLY


def flaky(failures: int, exc: type[Exception] = Boom) -> tuple[Callable[[], str], list[int]]:
    calls: list[int] = []

    def f() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise exc(f"failure {len(calls)}")
        return "done"

    return f, calls


def test_retry_default_three_attempts(clock: FakeClock) -> None:
    f, calls = flaky(10)
    with pytest.raises(Boom):
        rs.Retry(sleep=clock.sleep)(f)()
    assert len(calls) == 3
    assert len(clock.sleeps) == 2


def test_retry_default_wait_is_exponential_full_jitter_between_0_1_and_10_s(
    clock: FakeClock,
) -> None:
    f, _ = flaky(100)
    with pytest.raises(Boom):
        rs.Retry(attempts=12, sleep=clock.sleep)(f)()
    sleeps = clock.sleeps
    assert len(sleeps) == 11
    for n, s in enumerate(sleeps):
        assert 0.0 <= s <= min(10.0, 0.1 * 2**n) + 1e-9
    assert len(set(sleeps)) > 1


def test_retry_number_wait_is_fixed_seconds(clock: FakeClock) -> None:
    f, calls = flaky(2)
    assert rs.Retry(attempts=3, wait=0.5, sleep=clock.sleep)(f)() == "done"
    assert clock.sleeps == [0.5, 0.5]
    assert len(calls) == 3


def test_retry_accepts_a_tenacity_wait_strategy(clock: FakeClock) -> None:
    f, _ = flaky(3)
    retry = rs.Retry(attempts=4, wait=tenacity.wait_incrementing(1, 2), sleep=clock.sleep)
    assert retry(f)() == "done"
    assert clock.sleeps == [1, 3, 5]


def test_retry_on_exception_types(clock: FakeClock) -> None:
    f, calls = flaky(1, KeyError)
    with pytest.raises(KeyError):
        rs.Retry(on=(ValueError,), wait=0, sleep=clock.sleep)(f)()
    assert len(calls) == 1  # not retryable: raised at once
    g, calls = flaky(1, ValueError)
    assert rs.Retry(on=(ValueError,), wait=0, sleep=clock.sleep)(g)() == "done"
    assert len(calls) == 2


def test_retry_on_predicate(clock: FakeClock) -> None:
    retry = rs.Retry(on=lambda exc: "failure 1" in str(exc), wait=0, sleep=clock.sleep)
    f, calls = flaky(5)
    with pytest.raises(Boom, match="failure 2"):
        retry(f)()
    assert len(calls) == 2


def test_retry_exhausted_on_exception_raises_the_last_exception_unchanged(
    clock: FakeClock,
) -> None:
    raised: list[Boom] = []

    def f() -> None:
        raised.append(Boom(f"failure {len(raised) + 1}"))
        raise raised[-1]

    with pytest.raises(Boom) as info:
        rs.Retry(attempts=3, wait=0, sleep=clock.sleep)(f)()
    assert info.value is raised[-1]
    assert type(info.value) is Boom
    assert str(info.value) == "failure 3"
    notes = getattr(info.value, "__notes__", [])
    assert any("3" in note for note in notes)  # attempt count in a note


def test_retry_on_result_exhausted_raises_retry_exhausted_error(clock: FakeClock) -> None:
    answers = iter([503, 502, 500])

    @rs.Retry(attempts=3, wait=0, on_result=lambda r: r >= 500, sleep=clock.sleep)
    def status() -> int:
        return next(answers)

    with pytest.raises(rs.RetryExhaustedError) as info:
        status()
    assert info.value.last_result == 500
    assert isinstance(info.value, rs.ResilienceError)


def test_retry_on_result_retries_until_good(clock: FakeClock) -> None:
    answers = iter([503, 200])

    @rs.Retry(attempts=3, wait=0, on_result=lambda r: r >= 500, sleep=clock.sleep)
    def status() -> int:
        return next(answers)

    assert status() == 200


def test_retry_honours_retry_after_hint(clock: FakeClock) -> None:
    errors = iter([rs.CircuitOpenError("dep", 7.0)])

    def f() -> str:
        for err in errors:
            raise err
        return "done"

    # DESIGN section 5: rejections are only retried when ``on=`` names them explicitly
    retry = rs.Retry(attempts=2, wait=0.1, sleep=clock.sleep, on=(rs.CircuitOpenError,))
    assert retry(f)() == "done"
    assert clock.sleeps == [pytest.approx(7.0)]


def test_retry_honours_retry_after_of_any_error(clock: FakeClock) -> None:
    class TooManyRequests(Exception):
        def __init__(self, retry_after: float) -> None:
            super().__init__(f"429, retry after {retry_after}")
            self.retry_after = retry_after

    errors = iter([TooManyRequests(4.0)])

    def f() -> str:
        for err in errors:
            raise err
        return "done"

    assert rs.Retry(attempts=2, wait=0.1, sleep=clock.sleep)(f)() == "done"
    assert clock.sleeps == [pytest.approx(4.0)]


def test_retry_and_breaker_accept_a_single_exception_type(clock: FakeClock) -> None:
    f, calls = flaky(1, ValueError)
    assert rs.Retry(on=ValueError, wait=0, sleep=clock.sleep)(f)() == "done"
    assert len(calls) == 2
    breaker = rs.CircuitBreaker(minimum_calls=1, window_size=1, record=ConnectionError, clock=clock)
    calls_of(breaker, fail, 1)
    assert breaker.state is rs.BreakerState.CLOSED


def test_retry_max_delay_caps_total_time() -> None:
    f, calls = flaky(1000)
    with pytest.raises(Boom):
        rs.Retry(attempts=1000, wait=0.02, max_delay=0.05)(f)()
    assert 1 <= len(calls) <= 3  # never a wait that would end past 0.05 s


def test_retry_attempts_inline_block(clock: FakeClock) -> None:
    retry = rs.Retry(attempts=3, wait=0, sleep=clock.sleep)
    tries = []
    for attempt in retry.attempts():
        with attempt:
            tries.append(1)
            if len(tries) < 3:
                raise Boom("again")
    assert len(tries) == 3


def test_retry_attempts_inline_block_exhausted_raises_last(clock: FakeClock) -> None:
    retry = rs.Retry(attempts=2, wait=0, sleep=clock.sleep)
    tries = []
    with pytest.raises(Boom, match="try 2"):
        for attempt in retry.attempts():
            with attempt:
                tries.append(1)
                raise Boom(f"try {len(tries)}")


@pytest.mark.anyio
async def test_retry_async_for_attempts(clock: FakeClock) -> None:
    retry = rs.Retry(attempts=3, wait=0.25, sleep=clock.asleep)
    tries = []
    async for attempt in retry.attempts():
        async with attempt:
            tries.append(1)
            if len(tries) < 2:
                raise Boom("again")
    assert len(tries) == 2
    assert clock.sleeps == [0.25]


@pytest.mark.anyio
async def test_retry_async_function(clock: FakeClock) -> None:
    calls = []

    @rs.Retry(attempts=3, wait=1.0, sleep=clock.asleep)
    async def f() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Boom("x")
        return "done"

    assert await f() == "done"
    assert clock.sleeps == [1.0, 1.0]


@pytest.mark.anyio
async def test_retry_async_call_accepts_a_sync_sleep(clock: FakeClock) -> None:
    calls = []

    @rs.Retry(attempts=2, wait=3.0, sleep=clock.sleep)
    async def f() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise Boom("x")
        return "done"

    assert await f() == "done"
    assert clock.sleeps == [3.0]


def test_retry_never_retries_cancellation(clock: FakeClock) -> None:
    calls = []

    @rs.Retry(attempts=3, wait=0, sleep=clock.sleep)
    def f() -> None:
        calls.append(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        f()
    assert calls == [1]


# -- Timeout ---------------------------------------------------------------------------------


def test_timeout_signature() -> None:
    check_signature(rs.Timeout, ["seconds", "name"], {"name": None})
    assert params(rs.Timeout)["seconds"].default is inspect.Parameter.empty


def test_timeout_exceeded_is_resilience_error_and_builtin_timeout_error() -> None:
    assert issubclass(rs.TimeoutExceeded, rs.ResilienceError)
    assert issubclass(rs.TimeoutExceeded, TimeoutError)


def test_sync_timeout_caller_does_not_wait_past_deadline() -> None:
    release = threading.Event()

    @rs.Timeout(0.05)
    def hang() -> None:
        release.wait(10)

    try:
        with pytest.raises(rs.TimeoutExceeded):
            hang()
        assert not release.is_set()  # we got control back while the function still hangs
    finally:
        release.set()


def test_sync_timeout_returns_in_time_result() -> None:
    assert rs.Timeout(5.0)(ok)() == "ok"


@pytest.mark.anyio
async def test_async_timeout_cancels_for_real() -> None:
    after = []

    @rs.Timeout(0.05)
    async def hang() -> None:
        await anyio.sleep(10)
        after.append(1)

    with pytest.raises(rs.TimeoutExceeded):
        await hang()
    with pytest.raises(TimeoutError):
        async with rs.Timeout(0.05):
            await anyio.sleep(10)
            after.append(2)
    assert after == []


def test_remaining_none_outside_any_timeout() -> None:
    assert rs.remaining() is None


def test_remaining_inside_and_nested_timeouts_shrink() -> None:
    seen: dict[str, float | None] = {}

    @rs.Timeout(5.0)
    def outer() -> None:
        seen["outer"] = rs.remaining()
        inner_short()
        inner_long()

    @rs.Timeout(1.0)
    def inner_short() -> None:
        seen["short"] = rs.remaining()

    @rs.Timeout(60.0)
    def inner_long() -> None:
        seen["long"] = rs.remaining()

    outer()
    assert seen["outer"] is not None and 0 < seen["outer"] <= 5.0
    assert seen["short"] is not None and 0 < seen["short"] <= 1.0
    assert seen["long"] is not None and 0 < seen["long"] <= 5.0  # never grows
    assert rs.remaining() is None


@pytest.mark.anyio
async def test_remaining_async() -> None:
    async with rs.Timeout(5.0):
        outer = rs.remaining()
        async with rs.Timeout(1.0):
            inner = rs.remaining()
    assert outer is not None and 0 < outer <= 5.0
    assert inner is not None and 0 < inner <= 1.0
    assert rs.remaining() is None


# -- Fallback --------------------------------------------------------------------------------


def test_fallback_signature() -> None:
    ps = params(rs.Fallback)
    assert next(iter(ps)) == "value"
    assert ps["value"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    check_signature(
        rs.Fallback, ["value"], {"handler": None, "on": (Exception,), "on_result": None}
    )


def test_fallback_positional_value() -> None:
    assert rs.Fallback([])(fail)() == []
    assert rs.Fallback(value="cached")(fail)() == "cached"
    assert rs.Fallback(None)(fail)() is None
    assert rs.Fallback("cached")(ok)() == "ok"


def test_fallback_sync_handler_gets_the_exception() -> None:
    seen = []

    def handler(exc: BaseException | None) -> str:
        seen.append(exc)
        return "degraded"

    assert rs.Fallback(handler=handler)(fail)() == "degraded"
    assert isinstance(seen[0], Boom)


@pytest.mark.anyio
async def test_fallback_async_handler() -> None:
    async def handler(exc: BaseException | None) -> str:
        await anyio.lowlevel.checkpoint()
        return f"degraded: {exc}"

    @rs.Fallback(handler=handler)
    async def f() -> str:
        raise Boom("down")

    assert await f() == "degraded: down"


@pytest.mark.anyio
async def test_fallback_sync_handler_in_async_call() -> None:
    @rs.Fallback(handler=lambda exc: "degraded")
    async def f() -> str:
        raise Boom("down")

    assert await f() == "degraded"


def test_fallback_on_limits_what_is_replaced() -> None:
    fb = rs.Fallback("x", on=(ConnectionError,))
    with pytest.raises(Boom):
        fb(fail)()

    def conn() -> str:
        raise ConnectionError

    assert fb(conn)() == "x"


def test_fallback_on_result() -> None:
    @rs.Fallback("fallback", on_result=lambda r: r is None)
    def f() -> str | None:
        return None

    assert f() == "fallback"


def test_fallback_never_replaces_cancellation() -> None:
    @rs.Fallback("x")
    def f() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        f()


# -- pipeline --------------------------------------------------------------------------------


def test_pipeline_returns_a_pipeline_first_is_outermost(clock: FakeClock) -> None:
    f, calls = flaky(100)
    outer_fallback = rs.pipeline(rs.Fallback("fb"), rs.Retry(attempts=3, wait=0, sleep=clock.sleep))
    assert isinstance(outer_fallback, rs.Pipeline)
    assert outer_fallback(f)() == "fb"
    assert len(calls) == 3  # the retry (inner) ran to exhaustion before the fallback answered

    g, calls = flaky(100)
    inner_fallback = rs.pipeline(rs.Retry(attempts=3, wait=0, sleep=clock.sleep), rs.Fallback("fb"))
    assert inner_fallback(g)() == "fb"
    assert len(calls) == 1  # the retry (outer) saw a success


def test_pipeline_retry_around_breaker_each_attempt_passes_the_breaker(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(minimum_calls=2, window_size=2, clock=clock)
    f, calls = flaky(100)
    slept: list[float] = []
    guarded = rs.pipeline(rs.Retry(attempts=5, wait=0, sleep=slept.append), breaker)(f)
    with pytest.raises(rs.CircuitOpenError):
        guarded()
    assert len(calls) == 2  # then the breaker opened and rejected the next attempt
    # DESIGN section 5: the default ``on`` does not retry a rejection, so no 30 s wait
    assert slept == [0.0, 0.0]
    assert breaker.state is rs.BreakerState.OPEN
    # naming the rejection in ``on=`` retries it, honouring its retry_after
    breaker.reset()
    calls.clear()
    slept.clear()
    retry_open = rs.Retry(attempts=4, wait=0, sleep=slept.append, on=(Exception,))
    with pytest.raises(rs.CircuitOpenError):
        rs.pipeline(retry_open, breaker)(f)()
    assert len(calls) == 2
    assert slept == [0.0, 0.0, pytest.approx(30.0)]


@pytest.mark.anyio
async def test_pipeline_async(clock: FakeClock) -> None:
    calls = []

    @rs.pipeline(rs.Fallback("fb"), rs.Retry(attempts=2, wait=0, sleep=clock.asleep), rs.Timeout(5))
    async def f() -> str:
        calls.append(1)
        raise Boom("x")

    assert await f() == "fb"
    assert len(calls) == 2


# -- errors and listeners --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "CircuitOpenError",
        "BulkheadFullError",
        "TimeoutExceeded",
        "RetryExhaustedError",
        "ConfigError",
        "SagaFailed",
        "SagaStuck",
        "IdempotencyConflict",
        "Rejected",
    ],
)
def test_error_hierarchy(name: str) -> None:
    cls = getattr(rs, name)
    assert issubclass(cls, rs.ResilienceError)
    assert issubclass(rs.ResilienceError, Exception)


def test_add_listener_receives_typed_events(clock: FakeClock) -> None:
    events: list[Any] = []
    rs.add_listener(events.append)
    try:
        breaker = rs.CircuitBreaker("listened", minimum_calls=1, window_size=1, clock=clock)
        calls_of(breaker, fail, 1)
        calls_of(breaker, ok, 1)
    finally:
        rs.remove_listener(events.append)
    mine = [e for e in events if getattr(e, "name", None) == "listened"]
    assert mine
    assert all(type(e) is not dict for e in mine)  # typed objects, not loose dicts
    assert len({type(e) for e in mine}) >= 2  # e.g. a failure, a state change, a rejection


# -- configuration from the environment ------------------------------------------------------


def test_breaker_from_env_wins_over_code_defaults(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION", "15s")
    breaker = rs.CircuitBreaker.from_env(
        "payments", open_duration=60.0, window_size=1, minimum_calls=1, clock=clock
    )
    assert isinstance(breaker, rs.CircuitBreaker)
    assert breaker.name == "payments"
    calls_of(breaker, fail, 1)
    (err,) = calls_of(breaker, ok, 1)
    assert isinstance(err, rs.CircuitOpenError)
    assert err.retry_after == pytest.approx(15.0)


def test_from_env_code_defaults_apply_without_env(clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker.from_env(
        "nothing-set-here", open_duration=42.0, window_size=1, minimum_calls=1, clock=clock
    )
    calls_of(breaker, fail, 1)
    (err,) = calls_of(breaker, ok, 1)
    assert isinstance(err, rs.CircuitOpenError)
    assert err.retry_after == pytest.approx(42.0)


@pytest.mark.parametrize(("text", "seconds"), [("250ms", 0.25), ("2s", 2.0), ("1m", 60.0)])
def test_from_env_durations(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, text: str, seconds: float
) -> None:
    monkeypatch.setenv("RESILIENT__DURATIONS__BREAKER__OPEN_DURATION", text)
    breaker = rs.CircuitBreaker.from_env("durations", window_size=1, minimum_calls=1, clock=clock)
    calls_of(breaker, fail, 1)
    (err,) = calls_of(breaker, ok, 1)
    assert isinstance(err, rs.CircuitOpenError)
    assert err.retry_after == pytest.approx(seconds)


def test_from_env_names_are_upper_cased_and_non_alphanumerics_become_underscores(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS_API_V2__RETRY__ATTEMPTS", "5")
    f, calls = flaky(100)
    retry = rs.Retry.from_env("payments-api.v2", wait=0, sleep=clock.sleep)
    with pytest.raises(Boom):
        retry(f)()
    assert len(calls) == 5


def test_from_env_bad_value_raises_config_error_naming_variable_and_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION", "soonish")
    with pytest.raises(rs.ConfigError) as info:
        rs.CircuitBreaker.from_env("payments")
    message = str(info.value)
    assert "RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION" in message
    assert "soonish" in message


def test_from_env_can_supply_a_required_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__ONLY_ENV__BULKHEAD__MAX_CONCURRENT", "1")
    bulkhead = rs.Bulkhead.from_env("only-env")
    with bulkhead, pytest.raises(rs.BulkheadFullError), bulkhead:
        pass


def test_every_policy_class_has_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__DB__BULKHEAD__MAX_CONCURRENT", "1")
    bulkhead = rs.Bulkhead.from_env("db", max_concurrent=10)
    assert isinstance(bulkhead, rs.Bulkhead)
    with bulkhead, pytest.raises(rs.BulkheadFullError), bulkhead:
        pass

    monkeypatch.setenv("RESILIENT__DB__TIMEOUT__SECONDS", "250ms")
    timeout = rs.Timeout.from_env("db", seconds=30.0)
    assert isinstance(timeout, rs.Timeout)
    with timeout:
        left = rs.remaining()
    assert left is not None and 0 < left <= 0.25

    fallback = rs.Fallback.from_env("db", value="cached")
    assert isinstance(fallback, rs.Fallback)
    assert fallback(fail)() == "cached"

    assert isinstance(rs.Retry.from_env("db"), rs.Retry)
    assert isinstance(rs.CircuitBreaker.from_env("db"), rs.CircuitBreaker)


# -- Saga ------------------------------------------------------------------------------------


def test_saga_signatures() -> None:
    check_signature(
        rs.Saga,
        ["name"],
        {"store": None, "version": 1, "deadline": None, "on_recovery": "resume", "lease": 30.0},
    )
    assert params(rs.Saga)["name"].default is inspect.Parameter.empty
    saga = rs.Saga("sig")
    step_ps = params(saga.step)
    for n, d in {"policy": None, "pivot": False, "retriable": False}.items():
        assert step_ps[n].default == d
    add_ps = params(saga.add_step)
    assert list(add_ps)[:6] == ["name", "fn", "compensate", "policy", "pivot", "retriable"]
    assert [add_ps[n].default for n in ("compensate", "policy", "pivot", "retriable")] == [
        None,
        None,
        False,
        False,
    ]
    run_ps = params(saga.run)
    assert list(run_ps)[:2] == ["data", "saga_id"]
    assert run_ps["saga_id"].default is None
    sync_ps = params(saga.run_sync)
    assert list(sync_ps)[:2] == ["data", "saga_id"]
    assert sync_ps["saga_id"].default is None


def test_saga_default_store_is_in_memory() -> None:
    assert isinstance(rs.Saga("defaults").store, rs.InMemorySagaStore)


class Journal:
    """Records what steps and compensations saw, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def names(self) -> list[str]:
        return [entry[0] for entry in self.log]


def shop_saga(journal: Journal, *, fail_charge: Exception | None = None, **kw: Any) -> rs.Saga:
    """reserve -> charge -> notify, with async steps and compensations."""
    saga = rs.Saga("shop", **kw)

    @saga.step
    async def reserve(ctx: rs.SagaContext) -> dict[str, Any]:
        journal.log.append(("reserve", ctx.idempotency_key, ctx.attempt))
        return {"item": ctx.data["item"]}

    @reserve.compensate
    async def release(ctx: rs.SagaContext, done: dict[str, Any] | None) -> None:
        journal.log.append(("undo reserve", ctx.idempotency_key, done))

    @saga.step()
    async def charge(ctx: rs.SagaContext) -> int:
        journal.log.append(("charge", ctx.idempotency_key, dict(ctx.results)))
        if fail_charge is not None:
            raise fail_charge
        return 42

    @charge.compensate()
    async def refund(ctx: rs.SagaContext, done: int | None) -> None:
        journal.log.append(("undo charge", ctx.idempotency_key, done))

    @saga.step
    def notify(ctx: rs.SagaContext) -> str:  # a sync step in an async run
        journal.log.append(("notify", ctx.idempotency_key, ctx.step))
        return "sent"

    return saga


@pytest.mark.anyio
async def test_saga_happy_path_in_definition_order() -> None:
    journal = Journal()
    saga = shop_saga(journal)
    result = await saga.run({"item": "book"}, saga_id="order-1")
    assert isinstance(result, rs.SagaResult)
    assert result.status is rs.SagaStatus.COMPLETED
    assert result.saga_id == "order-1"
    assert journal.log == [
        ("reserve", "order-1:reserve", 1),
        ("charge", "order-1:charge", {"reserve": {"item": "book"}}),
        ("notify", "order-1:notify", "notify"),
    ]


@pytest.mark.anyio
async def test_saga_id_is_generated_when_not_given() -> None:
    journal = Journal()
    result = await shop_saga(journal).run({"item": "book"})
    assert isinstance(result.saga_id, str) and result.saga_id
    assert journal.log[0][1] == f"{result.saga_id}:reserve"


@pytest.mark.anyio
async def test_saga_context_attributes() -> None:
    seen: dict[str, Any] = {}
    saga = rs.Saga("ctx")

    @saga.step
    async def first(ctx: rs.SagaContext) -> int:
        return 1

    @saga.step
    async def second(ctx: rs.SagaContext) -> int:
        seen.update(
            saga_id=ctx.saga_id,
            data=ctx.data,
            results=dict(ctx.results),
            step=ctx.step,
            attempt=ctx.attempt,
            key=ctx.idempotency_key,
        )
        return 2

    await saga.run({"n": 7}, saga_id="c-1")
    assert seen == {
        "saga_id": "c-1",
        "data": {"n": 7},
        "results": {"first": 1},
        "step": "second",
        "attempt": 1,
        "key": "c-1:second",
    }


@pytest.mark.anyio
async def test_saga_step_policy_retries_with_same_key_and_counting_attempts() -> None:
    seen: list[tuple[str, int]] = []
    saga = rs.Saga("retrying")

    @saga.step(policy=rs.Retry(attempts=3, wait=0))
    async def flaky_step(ctx: rs.SagaContext) -> str:
        seen.append((ctx.idempotency_key, ctx.attempt))
        if len(seen) < 3:
            raise ConnectionError("blip")
        return "ok"

    result = await saga.run({}, saga_id="r-1")
    assert result.status is rs.SagaStatus.COMPLETED
    assert seen == [("r-1:flaky_step", 1), ("r-1:flaky_step", 2), ("r-1:flaky_step", 3)]


@pytest.mark.anyio
async def test_saga_failure_compensates_started_steps_in_reverse_then_raises() -> None:
    journal = Journal()
    store = rs.InMemorySagaStore()
    saga = shop_saga(journal, fail_charge=ConnectionError("card network down"), store=store)
    with pytest.raises(rs.SagaFailed) as info:
        await saga.run({"item": "book"}, saga_id="f-1")
    assert isinstance(info.value.__cause__, ConnectionError)
    assert journal.names() == ["reserve", "charge", "undo charge", "undo reserve"]
    # the failing step is compensated too, with done=None; the undo key has ":undo"
    assert journal.log[2] == ("undo charge", "f-1:charge:undo", None)
    assert journal.log[3] == ("undo reserve", "f-1:reserve:undo", {"item": "book"})
    record = await store.load("f-1")
    assert record is not None and record.status is rs.SagaStatus.COMPENSATED


@pytest.mark.anyio
async def test_saga_rejected_is_not_retried_and_its_own_compensation_is_skipped() -> None:
    calls = []
    journal = Journal()
    saga = rs.Saga("rejecting")

    @saga.step
    async def reserve(ctx: rs.SagaContext) -> str:
        return "r"

    @reserve.compensate
    async def release(ctx: rs.SagaContext, done: str | None) -> None:
        journal.log.append(("undo reserve", done))

    @saga.step(policy=rs.Retry(attempts=5, wait=0))
    async def charge(ctx: rs.SagaContext) -> None:
        calls.append(1)
        raise rs.Rejected("card declined")

    @charge.compensate
    async def refund(ctx: rs.SagaContext, done: None) -> None:
        journal.log.append(("undo charge", done))

    with pytest.raises(rs.SagaFailed) as info:
        await saga.run({}, saga_id="rej-1")
    assert isinstance(info.value.__cause__, rs.Rejected)
    assert calls == [1]
    assert journal.log == [("undo reserve", "r")]


@pytest.mark.anyio
async def test_saga_idempotent_on_saga_id_and_conflict_on_different_data() -> None:
    journal = Journal()
    saga = shop_saga(journal)
    first = await saga.run({"item": "book"}, saga_id="same")
    n = len(journal.log)
    again = await saga.run({"item": "book"}, saga_id="same")
    assert len(journal.log) == n  # stored outcome, no step ran
    assert again.status is rs.SagaStatus.COMPLETED
    assert again.saga_id == first.saga_id
    with pytest.raises(rs.IdempotencyConflict):
        await saga.run({"item": "pen"}, saga_id="same")
    assert len(journal.log) == n


@pytest.mark.anyio
async def test_saga_failed_outcome_is_replayed_for_the_same_id() -> None:
    journal = Journal()
    saga = shop_saga(journal, fail_charge=Boom("x"))
    with pytest.raises(rs.SagaFailed):
        await saga.run({"item": "book"}, saga_id="f-2")
    n = len(journal.log)
    with pytest.raises(rs.SagaFailed):
        await saga.run({"item": "book"}, saga_id="f-2")
    assert len(journal.log) == n


@pytest.mark.anyio
async def test_saga_after_pivot_only_forward_retriable_retried_until_success(
    clock: FakeClock,
) -> None:
    journal = Journal()
    saga = rs.Saga("pivoting", clock=clock)

    @saga.step
    async def reserve(ctx: rs.SagaContext) -> str:
        return "r"

    @reserve.compensate
    async def release(ctx: rs.SagaContext, done: str | None) -> None:
        journal.log.append(("undo reserve",))

    @saga.step(pivot=True)
    async def charge(ctx: rs.SagaContext) -> str:
        return "c"

    @charge.compensate
    async def refund(ctx: rs.SagaContext, done: str | None) -> None:
        journal.log.append(("undo charge",))

    @saga.step(retriable=True)
    async def ship(ctx: rs.SagaContext) -> str:
        journal.log.append(("ship", ctx.idempotency_key))
        if len(journal.log) < 4:
            raise ConnectionError("courier down")
        return "shipped"

    result = await saga.run({}, saga_id="p-1")
    assert result.status is rs.SagaStatus.COMPLETED
    assert journal.log == [("ship", "p-1:ship")] * 4  # retried, never compensated


@pytest.mark.anyio
async def test_saga_failure_before_pivot_still_compensates() -> None:
    journal = Journal()
    saga = rs.Saga("prepivot")

    @saga.step
    async def reserve(ctx: rs.SagaContext) -> str:
        return "r"

    @reserve.compensate
    async def release(ctx: rs.SagaContext, done: str | None) -> None:
        journal.log.append(("undo reserve", done))

    @saga.step(pivot=True)
    async def charge(ctx: rs.SagaContext) -> str:
        raise Boom("declined")

    with pytest.raises(rs.SagaFailed):
        await saga.run({}, saga_id="pp-1")
    assert journal.log == [("undo reserve", "r")]


def _build_stuck(journal: Journal, broken: list[bool]) -> rs.Saga:
    saga = rs.Saga("stuck-comp")

    @saga.step
    def reserve(ctx: rs.SagaContext) -> str:
        return "r"

    @reserve.compensate
    def release(ctx: rs.SagaContext, done: str | None) -> None:
        journal.log.append(("undo reserve", done))

    @saga.step
    def charge(ctx: rs.SagaContext) -> str:
        return "c"

    @charge.compensate(policy=rs.Retry(attempts=2, wait=0))
    def refund(ctx: rs.SagaContext, done: str | None) -> None:
        journal.log.append(("refund attempt", ctx.idempotency_key))
        if broken[0]:
            raise ConnectionError("refund service down")
        journal.log.append(("refunded", done))

    @saga.step
    def notify(ctx: rs.SagaContext) -> None:
        raise rs.Rejected("no address")

    return saga


def test_saga_stuck_then_admin_retry_compensates() -> None:
    journal = Journal()
    broken = [True]
    saga = _build_stuck(journal, broken)
    with pytest.raises(rs.SagaStuck):
        saga.run_sync({}, saga_id="s-1")
    assert journal.log == [("refund attempt", "s-1:charge:undo")] * 2  # policy gave up
    assert ("undo reserve", "r") not in journal.log  # nothing after it until an operator acts
    broken[0] = False
    result = saga.admin.retry("s-1")
    assert result.status is rs.SagaStatus.COMPENSATED
    assert journal.log[-2:] == [("refunded", "c"), ("undo reserve", "r")]


def test_saga_stuck_then_admin_mark_compensated_continues_before_it() -> None:
    journal = Journal()
    saga = _build_stuck(journal, [True])
    with pytest.raises(rs.SagaStuck):
        saga.run_sync({}, saga_id="s-2")
    result = saga.admin.mark_compensated("s-2", "charge")
    assert result.status is rs.SagaStatus.COMPENSATED
    assert journal.log[-1] == ("undo reserve", "r")
    assert ("refunded", "c") not in journal.log


def test_saga_add_step_builder_form_and_run_sync() -> None:
    journal = Journal()
    saga = rs.Saga("builder")

    def reserve(ctx: rs.SagaContext) -> str:
        journal.log.append(("reserve", ctx.idempotency_key))
        return "r"

    def release(ctx: rs.SagaContext, done: str | None) -> None:
        journal.log.append(("undo reserve", ctx.idempotency_key, done))

    def charge(ctx: rs.SagaContext) -> None:
        raise Boom("declined")

    saga.add_step("reserve", reserve, release)  # positional compensate
    saga.add_step("charge", charge, compensate=None, policy=rs.Retry(attempts=2, wait=0))
    with pytest.raises(rs.SagaFailed) as info:
        saga.run_sync({"x": 1}, saga_id="b-1")
    assert isinstance(info.value.__cause__, Boom)
    assert journal.log == [("reserve", "b-1:reserve"), ("undo reserve", "b-1:reserve:undo", "r")]


def test_saga_run_sync_happy_path() -> None:
    saga = rs.Saga("syncrun")
    saga.add_step("a", lambda ctx: 1)
    saga.add_step("b", lambda ctx: ctx.results["a"] + 1)
    result = saga.run_sync({}, saga_id="sr-1")
    assert isinstance(result, rs.SagaResult)
    assert result.status is rs.SagaStatus.COMPLETED


@pytest.mark.anyio
async def test_saga_cancelling_the_caller_compensates_then_reraises() -> None:
    journal = Journal()
    saga = rs.Saga("cancelled")
    scope = anyio.CancelScope()

    @saga.step
    async def reserve(ctx: rs.SagaContext) -> str:
        return "r"

    @reserve.compensate
    async def release(ctx: rs.SagaContext, done: str | None) -> None:
        await anyio.lowlevel.checkpoint()
        journal.log.append(("undo reserve", done))

    @saga.step
    async def charge(ctx: rs.SagaContext) -> str:
        scope.cancel()
        await anyio.sleep_forever()
        return "never"

    @charge.compensate
    async def refund(ctx: rs.SagaContext, done: str | None) -> None:
        await anyio.lowlevel.checkpoint()
        journal.log.append(("undo charge", done))

    with scope:
        await saga.run({}, saga_id="cx-1")
    assert scope.cancelled_caught
    assert journal.log == [("undo charge", None), ("undo reserve", "r")]


@pytest.mark.anyio
async def test_saga_deadline_before_pivot_compensates(clock: FakeClock) -> None:
    journal = Journal()
    saga = rs.Saga("deadline", deadline=5.0, clock=clock)

    @saga.step
    async def reserve(ctx: rs.SagaContext) -> str:
        clock.advance(10)
        return "r"

    @reserve.compensate
    async def release(ctx: rs.SagaContext, done: str | None) -> None:
        journal.log.append(("undo reserve", done))

    @saga.step
    async def charge(ctx: rs.SagaContext) -> str:
        journal.log.append(("charge",))
        return "c"

    with pytest.raises(rs.SagaFailed):
        await saga.run({}, saga_id="d-1")
    assert journal.log == [("undo reserve", "r")]


def _recoverable(store: rs.SagaStore, journal: Journal, clock: FakeClock, **kw: Any) -> rs.Saga:
    saga = rs.Saga("recoverable", store=store, clock=clock, **kw)

    @saga.step
    async def reserve(ctx: rs.SagaContext) -> str:
        journal.log.append(("reserve", ctx.idempotency_key))
        return "r"

    @reserve.compensate
    async def release(ctx: rs.SagaContext, done: str | None) -> None:
        journal.log.append(("undo reserve", ctx.idempotency_key, done))

    @saga.step
    async def charge(ctx: rs.SagaContext) -> str:
        journal.log.append(("charge", ctx.idempotency_key))
        return "c"

    @charge.compensate
    async def refund(ctx: rs.SagaContext, done: str | None) -> None:
        journal.log.append(("undo charge", ctx.idempotency_key, done))

    return saga


@pytest.mark.anyio
async def test_saga_recover_resumes_forward_by_default(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    journal = Journal()
    saga = _recoverable(store, journal, clock)
    with crash_at(CrashPoint.AFTER_STEP_RECORDED, "reserve"), pytest.raises(SimulatedCrash):
        await saga.run({}, saga_id="rec-1")
    clock.advance(31)  # the default lease (30 s) of the dead process expired
    again = Journal()
    await _recoverable(store, again, clock).recover()
    record = await store.load("rec-1")
    assert record is not None and record.status is rs.SagaStatus.COMPLETED
    assert journal.log == [("reserve", "rec-1:reserve")]
    assert again.log == [("charge", "rec-1:charge")]  # only the next step, once


@pytest.mark.anyio
async def test_saga_recover_reinvokes_in_doubt_step_with_same_key(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    journal = Journal()
    saga = _recoverable(store, journal, clock)
    with crash_at(CrashPoint.AFTER_STEP_EFFECT, "charge"), pytest.raises(SimulatedCrash):
        await saga.run({}, saga_id="rec-2")
    clock.advance(31)
    again = Journal()
    await _recoverable(store, again, clock).recover()
    assert journal.log[-1] == ("charge", "rec-2:charge")
    assert again.log == [("charge", "rec-2:charge")]  # the SAME idempotency key


@pytest.mark.anyio
async def test_saga_recover_compensate_mode_rolls_back(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    journal = Journal()
    saga = _recoverable(store, journal, clock)
    with crash_at(CrashPoint.AFTER_STEP_RECORDED, "reserve"), pytest.raises(SimulatedCrash):
        await saga.run({}, saga_id="rec-3")
    clock.advance(31)
    again = Journal()
    await _recoverable(store, again, clock, on_recovery="compensate").recover()
    assert again.log == [("undo reserve", "rec-3:reserve:undo", "r")]
    record = await store.load("rec-3")
    assert record is not None and record.status is rs.SagaStatus.COMPENSATED


def test_saga_recover_sync_and_sqlite_store_is_durable(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "sagas.db"

    def build(journal: Journal) -> rs.Saga:
        def step(name: str) -> Callable[[rs.SagaContext], str]:
            def run(ctx: rs.SagaContext) -> str:
                journal.log.append((name,))
                return name.upper()

            return run

        saga = rs.Saga("durable", store=rs.SQLiteSagaStore(str(path)), clock=clock)
        saga.add_step("a", step("a"))
        saga.add_step("b", step("b"))
        return saga

    first = Journal()
    with crash_at(CrashPoint.AFTER_STEP_RECORDED, "a"), pytest.raises(SimulatedCrash):
        build(first).run_sync({}, saga_id="dur-1")
    clock.advance(31)
    second = Journal()
    build(second).recover_sync()  # a new store object on the same file: a restart
    assert second.log == [("b",)]
    third = Journal()
    result = build(third).run_sync({}, saga_id="dur-1")
    assert result.status is rs.SagaStatus.COMPLETED
    assert third.log == []  # the stored outcome, nothing re-run


@pytest.mark.anyio
async def test_saga_lease_is_honoured_by_recovery(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    journal = Journal()
    saga = _recoverable(store, journal, clock, lease=60.0)
    with crash_at(CrashPoint.AFTER_STEP_RECORDED, "reserve"), pytest.raises(SimulatedCrash):
        await saga.run({}, saga_id="lease-1")
    clock.advance(31)
    again = Journal()
    await _recoverable(store, again, clock, lease=60.0).recover()
    assert again.log == []  # lease of 60 s not yet expired: not taken over
    clock.advance(30)
    await _recoverable(store, again, clock, lease=60.0).recover()
    assert again.log == [("charge", "lease-1:charge")]


@pytest.mark.parametrize(
    "name", ["InMemorySagaStore", "SQLiteSagaStore", "SagaContext", "SagaResult", "Saga"]
)
def test_saga_names_are_exported(name: str) -> None:
    assert hasattr(rs, name)


def test_postgres_saga_store_is_exported() -> None:
    store_class = rs.PostgresSagaStore
    assert isinstance(store_class, type)
    assert "dsn" in params(store_class)


@pytest.mark.anyio
async def test_saga_timeout_is_an_unknown_outcome_and_compensates_with_none() -> None:
    journal = Journal()
    saga = rs.Saga("timing-out")

    @saga.step
    async def reserve(ctx: rs.SagaContext) -> str:
        return "r"

    @reserve.compensate
    async def release(ctx: rs.SagaContext, done: str | None) -> None:
        journal.log.append(("undo reserve", done))

    @saga.step(policy=rs.pipeline(rs.Retry(attempts=2, wait=0), rs.Timeout(0.02)))
    async def charge(ctx: rs.SagaContext) -> str:
        journal.log.append(("charge", ctx.attempt))
        await anyio.sleep(10)
        return "never"

    @charge.compensate
    async def refund(ctx: rs.SagaContext, done: str | None) -> None:
        journal.log.append(("undo charge", done))

    with pytest.raises(rs.SagaFailed) as info:
        await saga.run({}, saga_id="t-1")
    assert isinstance(info.value.__cause__, rs.TimeoutExceeded)
    assert journal.log == [
        ("charge", 1),
        ("charge", 2),
        ("undo charge", None),
        ("undo reserve", "r"),
    ]


@pytest.mark.anyio
async def test_saga_deadline_cause_is_a_timeout(clock: FakeClock) -> None:
    saga = rs.Saga("deadline-cause", deadline=5.0, clock=clock)

    @saga.step
    async def a(ctx: rs.SagaContext) -> None:
        clock.advance(6)

    @saga.step
    async def b(ctx: rs.SagaContext) -> None:
        pass

    with pytest.raises(rs.SagaFailed) as info:
        await saga.run({}, saga_id="dc-1")
    assert isinstance(info.value.__cause__, rs.TimeoutExceeded)
    assert type(info.value.__cause__).__name__ == "DeadlineExceeded"


@pytest.mark.anyio
async def test_saga_deadline_after_pivot_goes_forward(clock: FakeClock) -> None:
    journal = Journal()
    saga = rs.Saga("late-pivot", deadline=5.0, clock=clock)

    @saga.step
    async def reserve(ctx: rs.SagaContext) -> str:
        return "r"

    @reserve.compensate
    async def release(ctx: rs.SagaContext, done: str | None) -> None:
        journal.log.append(("undo reserve",))

    @saga.step(pivot=True)
    async def charge(ctx: rs.SagaContext) -> str:
        clock.advance(10)
        return "c"

    @saga.step(retriable=True)
    async def ship(ctx: rs.SagaContext) -> str:
        journal.log.append(("ship",))
        return "s"

    result = await saga.run({}, saga_id="lp-1")
    assert result.status is rs.SagaStatus.COMPLETED
    assert journal.log == [("ship",)]


@pytest.mark.anyio
async def test_saga_duplicate_start_while_running_executes_once() -> None:
    saga = rs.Saga("dup")
    gate = anyio.Event()
    calls = []

    @saga.step
    async def slow(ctx: rs.SagaContext) -> str:
        calls.append(1)
        await gate.wait()
        return "v"

    results: list[rs.SagaResult] = []

    async def start() -> None:
        results.append(await saga.run({"k": 1}, saga_id="dup-1"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(start)
        tg.start_soon(start)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert calls == [1]
    assert [r.status for r in results] == [rs.SagaStatus.COMPLETED] * 2


@pytest.mark.anyio
async def test_saga_in_doubt_escalate_goes_stuck_on_recovery(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    calls = []

    def build() -> rs.Saga:
        saga = rs.Saga("escalating", store=store, clock=clock)

        @saga.step(in_doubt="escalate")
        async def charge(ctx: rs.SagaContext) -> str:
            calls.append(ctx.idempotency_key)
            return "c"

        return saga

    with crash_at(CrashPoint.AFTER_STEP_EFFECT, "charge"), pytest.raises(SimulatedCrash):
        await build().run({}, saga_id="esc-1")
    clock.advance(31)
    again = build()
    await again.recover()
    assert calls == ["esc-1:charge"]  # not re-invoked
    with pytest.raises(rs.SagaStuck) as info:
        await again.run({}, saga_id="esc-1")
    assert info.value.reason == "in_doubt"


@pytest.mark.anyio
async def test_saga_lease_is_renewed_while_it_runs() -> None:
    store = rs.InMemorySagaStore()
    gate = anyio.Event()
    calls = []

    def build() -> rs.Saga:
        saga = rs.Saga("renewed", store=store, lease=0.3)

        @saga.step
        async def slow(ctx: rs.SagaContext) -> str:
            calls.append(1)
            await gate.wait()
            return "v"

        return saga

    results: list[rs.SagaResult] = []

    async def start() -> None:
        results.append(await build().run({}, saga_id="renew-1"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(start)
        await anyio.sleep(0.5)  # longer than the lease: only renewal keeps it ours
        with anyio.move_on_after(2):  # a takeover would block on the gate: don't hang
            await build().recover()  # "another process" finds it leased, leaves it alone
        assert calls == [1]
        gate.set()
    assert calls == [1]
    assert results[0].status is rs.SagaStatus.COMPLETED


@pytest.mark.anyio
async def test_saga_recover_compensate_mode_does_not_roll_back_after_the_pivot(
    clock: FakeClock,
) -> None:
    store = rs.InMemorySagaStore()
    journal = Journal()

    def build(**kw: Any) -> rs.Saga:
        saga = rs.Saga("post-pivot", store=store, clock=clock, **kw)

        @saga.step
        async def reserve(ctx: rs.SagaContext) -> str:
            return "r"

        @reserve.compensate
        async def release(ctx: rs.SagaContext, done: str | None) -> None:
            journal.log.append(("undo reserve",))

        @saga.step(pivot=True)
        async def charge(ctx: rs.SagaContext) -> str:
            return "c"

        @saga.step(retriable=True)
        async def ship(ctx: rs.SagaContext) -> str:
            journal.log.append(("ship",))
            return "s"

        return saga

    with crash_at(CrashPoint.AFTER_STEP_RECORDED, "charge"), pytest.raises(SimulatedCrash):
        await build().run({}, saga_id="pp-2")
    clock.advance(31)
    await build(on_recovery="compensate").recover()
    assert journal.log == [("ship",)]
    record = await store.load("pp-2")
    assert record is not None and record.status is rs.SagaStatus.COMPLETED
