"""Retry: counts, exact delays, give-up rules, budgets, hints, inline blocks, sync and async."""

from __future__ import annotations

import inspect
import random
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import anyio
import pytest
import tenacity
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

import resilient as rs
from resilient import _deadline
from resilient.retry import DEFAULT_WAIT
from resilient.telemetry import Event, RetryScheduled, reset_telemetry
from resilient.testing import FakeClock, instant_retries


@pytest.fixture(autouse=True)
def _isolated_registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    rs.configure_telemetry(registry=reg, metrics=True, tracing=False)
    yield reg
    reset_telemetry()


class Transient(Exception):
    """A failure worth retrying."""


class Flaky:
    """Raises ``Transient(n)`` for the first ``failures`` calls, then returns ``"ok"``.

    Keeps every raised error so tests can check WHICH one propagated.
    """

    def __init__(self, failures: int, clock: FakeClock | None = None, cost: float = 0.0) -> None:
        self.failures = failures
        self.calls = 0
        self.raised: list[Exception] = []
        self._clock = clock
        self._cost = cost

    def __call__(self) -> str:
        self.calls += 1
        if self._clock is not None:
            self._clock.advance(self._cost)
        if self.calls <= self.failures:
            err = Transient(self.calls)
            self.raised.append(err)
            raise err
        return "ok"

    async def acall(self) -> str:
        await anyio.lowlevel.checkpoint()
        return self()


def _notes(error: BaseException) -> list[str]:
    """PEP 678 notes (``__notes__`` is unknown to type checkers targeting 3.10)."""
    return list(getattr(error, "__notes__", []))


def _state(attempt_number: int, upcoming_sleep: float = 0.0) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = attempt_number
    state.upcoming_sleep = upcoming_sleep
    return state


# -- counts and exact delays -----------------------------------------------------------------
def test_fixed_wait_retries_then_succeeds_with_exact_delays() -> None:
    clock = FakeClock()
    flaky = Flaky(2)
    retry = rs.Retry(attempts=3, wait=0.5, sleep=clock.sleep)
    assert retry.call(flaky) == "ok"
    assert flaky.calls == 3
    assert clock.sleeps == [0.5, 0.5]


def test_exponential_wait_without_jitter_doubles_and_caps() -> None:
    clock = FakeClock()
    flaky = Flaky(10)
    wait = rs.wait_exponential(0.1, 1.0, jitter=None)
    retry = rs.Retry(attempts=6, wait=wait, sleep=clock.sleep)
    with pytest.raises(Transient):
        retry.call(flaky)
    assert flaky.calls == 6
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])


def test_full_jitter_delays_are_exact_for_a_seeded_random() -> None:
    clock = FakeClock()
    wait = rs.wait_exponential(1.0, 5.0, jitter="full", rng=random.Random(42))
    retry = rs.Retry(attempts=5, wait=wait, sleep=clock.sleep)
    with pytest.raises(Transient):
        retry.call(Flaky(10))
    expected_rng = random.Random(42)
    expected = [expected_rng.uniform(0, d) for d in (1.0, 2.0, 4.0, 5.0)]
    assert clock.sleeps == pytest.approx(expected)


def test_equal_jitter_stays_in_the_upper_half() -> None:
    rng = random.Random(3)
    wait = rs.wait_exponential(2.0, 100.0, multiplier=3.0, jitter="equal", rng=rng)
    expected_rng = random.Random(3)
    for n, d in ((1, 2.0), (2, 6.0), (3, 18.0), (4, 54.0), (5, 100.0)):
        got = wait(_state(n))
        assert d / 2 <= got <= d
        assert got == pytest.approx(d / 2 + expected_rng.uniform(0, d / 2))


def test_decorrelated_jitter_grows_from_the_previous_sleep_and_is_capped() -> None:
    clock = FakeClock()
    wait = rs.wait_exponential(1.0, 8.0, jitter="decorrelated", rng=random.Random(5))
    retry = rs.Retry(attempts=8, wait=wait, sleep=clock.sleep)
    with pytest.raises(Transient):
        retry.call(Flaky(20))
    expected_rng = random.Random(5)
    previous = 1.0
    expected = []
    for _ in range(7):
        previous = min(8.0, expected_rng.uniform(1.0, min(8.0, previous * 3)))
        expected.append(previous)
    assert clock.sleeps == pytest.approx(expected)
    assert all(1.0 <= s <= 8.0 for s in clock.sleeps)


def test_linear_and_fixed_waits() -> None:
    linear = rs.wait_linear(start=1.0, step=0.5, max=2.2)
    assert [linear(_state(n)) for n in (1, 2, 3, 4)] == [1.0, 1.5, 2.0, 2.2]
    assert rs.wait_fixed(0.25)(_state(7)) == 0.25
    assert "0.25" in repr(rs.wait_fixed(0.25))


def test_exponential_survives_huge_attempt_numbers() -> None:
    wait = rs.wait_exponential(0.5, 30.0, multiplier=10.0, jitter=None)
    assert wait(_state(100_000)) == 30.0


def test_default_wait_is_full_jitter_from_a_tenth_of_a_second_to_ten() -> None:
    assert isinstance(rs.Retry().wait, type(DEFAULT_WAIT))
    assert rs.Retry().wait is DEFAULT_WAIT
    for n in (1, 2, 10, 50):
        ceiling = min(10.0, 0.1 * 2 ** (n - 1))
        assert 0.0 <= DEFAULT_WAIT(_state(n)) <= ceiling


def test_any_tenacity_wait_strategy_works_and_ours_work_in_tenacity() -> None:
    clock = FakeClock()
    retry = rs.Retry(attempts=3, wait=tenacity.wait_fixed(0.3), sleep=clock.sleep)
    assert retry.call(Flaky(2)) == "ok"
    assert clock.sleeps == [0.3, 0.3]

    combined = rs.wait_fixed(1.0) + tenacity.wait_fixed(0.5)
    assert combined(_state(1)) == 1.5

    sleeps: list[float] = []
    plain = tenacity.Retrying(
        wait=rs.wait_linear(start=0.1, step=0.1, max=1.0),
        stop=tenacity.stop_after_attempt(3),
        sleep=sleeps.append,
    )
    assert plain(Flaky(2)) == "ok"
    assert sleeps == pytest.approx([0.1, 0.2])


# -- what propagates ---------------------------------------------------------------------------
def test_last_exception_propagates_unchanged_with_a_note() -> None:
    flaky = Flaky(10)
    retry = rs.Retry("fetch", attempts=3, wait=0, sleep=FakeClock().sleep)
    with pytest.raises(Transient) as info:
        retry.call(flaky)
    assert info.value is flaky.raised[-1]
    assert info.value.args == (3,)
    assert _notes(info.value) == [
        "resilient: retry 'fetch' gave up after 3 attempt(s): no attempts left"
    ]
    # earlier attempts are not chained onto the error that propagates
    assert info.value.__context__ is None and info.value.__cause__ is None


def test_attempts_one_means_no_retry() -> None:
    flaky = Flaky(1)
    clock = FakeClock()
    with pytest.raises(Transient):
        rs.Retry(attempts=1, sleep=clock.sleep).call(flaky)
    assert flaky.calls == 1 and clock.sleeps == []


def test_exhausted_on_results_raises_retry_exhausted_error() -> None:
    results = iter([None, None, None, "late"])
    clock = FakeClock()
    retry = rs.Retry("poll", attempts=3, wait=1, on_result=lambda r: r is None, sleep=clock.sleep)
    with pytest.raises(rs.RetryExhaustedError) as info:
        retry.call(lambda: next(results))
    assert info.value.attempts == 3
    assert info.value.last_result is None
    assert info.value.name == "poll"
    assert clock.sleeps == [1, 1]


def test_a_rejected_result_is_retried_until_a_good_one() -> None:
    results = iter([503, 503, 200])
    retry = rs.Retry(attempts=5, wait=0, on_result=lambda r: r >= 500, sleep=FakeClock().sleep)
    assert retry.call(lambda: next(results)) == 200


def test_last_result_is_the_last_rejected_value() -> None:
    results = iter([1, 2, 3])
    retry = rs.Retry(attempts=3, wait=0, on_result=lambda r: r < 10, sleep=FakeClock().sleep)
    with pytest.raises(rs.RetryExhaustedError) as info:
        retry.call(lambda: next(results))
    assert info.value.last_result == 3


# -- classification ----------------------------------------------------------------------------
def test_on_types_retry_only_those() -> None:
    calls = []

    def boom() -> None:
        calls.append(1)
        raise ValueError("not transient")

    retry = rs.Retry(attempts=5, wait=0, on=(KeyError, Transient), sleep=FakeClock().sleep)
    with pytest.raises(ValueError, match="not transient") as info:
        retry.call(boom)
    assert len(calls) == 1
    assert not _notes(info.value)
    single = rs.Retry(attempts=3, wait=0, on=Transient, sleep=FakeClock().sleep)
    assert single.call(Flaky(2)) == "ok"


def test_on_predicate_decides_per_exception() -> None:
    errors = iter([OSError("503 busy"), OSError("503 busy"), OSError("404 gone")])

    def call() -> None:
        raise next(errors)

    seen: list[Exception] = []

    def transient(exc: Exception) -> bool:
        seen.append(exc)
        return "503" in str(exc)

    retry = rs.Retry(attempts=10, wait=0, on=transient, sleep=FakeClock().sleep)
    with pytest.raises(OSError, match="404"):
        retry.call(call)
    assert len(seen) == 3  # the predicate runs once per failure, no more


def test_keyboard_interrupt_is_never_retried() -> None:
    calls = []

    def interrupted() -> None:
        calls.append(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rs.Retry(attempts=5, wait=0, sleep=FakeClock().sleep).call(interrupted)
    assert calls == [1]


# -- time budgets --------------------------------------------------------------------------------
def test_max_delay_never_starts_a_sleep_that_would_end_past_it() -> None:
    clock = FakeClock()
    flaky = Flaky(100, clock, cost=0.2)
    retry = rs.Retry(attempts=100, wait=1.0, max_delay=3.0, sleep=clock.sleep, clock=clock)
    with pytest.raises(Transient) as info:
        retry.call(flaky)
    # t=0.2 fail, sleep -> 1.2, 1.4 fail, sleep -> 2.4, 2.6 fail: 2.6 + 1 > 3 -> give up
    assert flaky.calls == 3
    assert clock.sleeps == [1.0, 1.0]
    assert clock() <= 3.0
    assert "max_delay=3" in _notes(info.value)[0]


def test_max_delay_on_results_raises_retry_exhausted() -> None:
    clock = FakeClock()
    retry = rs.Retry(
        attempts=10, wait=2.0, max_delay=3.0, on_result=bool, sleep=clock.sleep, clock=clock
    )
    with pytest.raises(rs.RetryExhaustedError) as info:
        retry.call(lambda: "bad")
    assert info.value.attempts == 2
    assert any("max_delay" in n for n in _notes(info.value))


def test_never_sleeps_past_the_enclosing_deadline() -> None:
    clock = FakeClock()
    flaky = Flaky(5)
    _, token = _deadline.enter_deadline(30.0)
    try:
        with pytest.raises(Transient) as info:
            rs.Retry(attempts=5, wait=60.0, sleep=clock.sleep).call(flaky)
        assert flaky.calls == 1 and clock.sleeps == []
        assert "deadline" in _notes(info.value)[0]
        # a wait that fits is taken
        assert rs.Retry(attempts=6, wait=1.0, sleep=clock.sleep).call(Flaky(2)) == "ok"
        assert clock.sleeps == [1.0, 1.0]
    finally:
        _deadline.leave_deadline(token)


def test_retry_after_hint_lengthens_the_wait() -> None:
    clock = FakeClock()
    calls = []

    def open_breaker() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise rs.CircuitOpenError("payments", 2.0)
        return "ok"

    on = (rs.CircuitOpenError,)  # rejections are retried only when ``on=`` names them
    retry = rs.Retry(attempts=3, wait=0.1, sleep=clock.sleep, on=on)
    assert retry.call(open_breaker) == "ok"
    assert clock.sleeps == [2.0, 2.0]
    # a longer strategy delay wins over a shorter hint
    clock2 = FakeClock()
    calls.clear()
    assert rs.Retry(attempts=3, wait=5.0, sleep=clock2.sleep, on=on).call(open_breaker) == "ok"
    assert clock2.sleeps == [5.0, 5.0]


def test_retry_after_beyond_max_delay_gives_up_at_once() -> None:
    clock = FakeClock()

    def open_breaker() -> None:
        raise rs.CircuitOpenError("payments", 20.0)

    retry = rs.Retry(attempts=5, wait=0.1, max_delay=10.0, sleep=clock.sleep, clock=clock)
    with pytest.raises(rs.CircuitOpenError):
        retry.call(open_breaker)
    assert clock.sleeps == []


def test_non_numeric_retry_after_is_ignored() -> None:
    clock = FakeClock()

    class Hinted(Exception):
        retry_after = "soon"

    calls = []

    def fn() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise Hinted
        return "ok"

    assert rs.Retry(attempts=2, wait=0.5, sleep=clock.sleep).call(fn) == "ok"
    assert clock.sleeps == [0.5]


# -- events ------------------------------------------------------------------------------------
def test_retry_scheduled_events_and_metric(_isolated_registry: CollectorRegistry) -> None:
    events: list[Event] = []
    retry = rs.Retry("ev", attempts=3, wait=0.25, sleep=FakeClock().sleep, on_event=events.append)
    assert retry.call(Flaky(2)) == "ok"
    scheduled = [e for e in events if isinstance(e, RetryScheduled)]
    assert [(e.attempt, e.delay) for e in scheduled] == [(1, 0.25), (2, 0.25)]
    assert all(isinstance(e.error, Transient) for e in scheduled)
    assert all(e.policy == "retry" and e.name == "ev" for e in scheduled)
    value = _isolated_registry.get_sample_value("resilient_retry_attempts_total", {"name": "ev"})
    assert value == 2.0


# -- concurrency: state is per call --------------------------------------------------------------
def test_concurrent_threads_do_not_share_attempt_counters() -> None:
    barrier = threading.Barrier(2, timeout=10)
    local = threading.local()

    def sleep(_: float) -> None:
        barrier.wait()  # both threads are mid-retry at the same moments

    retry = rs.Retry(attempts=3, wait=0.1, sleep=sleep)

    @retry
    def work() -> str:
        local.calls = getattr(local, "calls", 0) + 1
        if local.calls <= 2:
            raise Transient(local.calls)
        return f"ok after {local.calls}"

    results: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(work())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert results == ["ok after 3", "ok after 3"]


@pytest.mark.anyio
async def test_concurrent_tasks_do_not_share_attempt_counters() -> None:
    clock = FakeClock()
    retry = rs.Retry(attempts=3, wait=0.1, sleep=clock.asleep)
    calls: dict[str, int] = {"a": 0, "b": 0}

    @retry
    async def work(key: str) -> str:
        calls[key] += 1
        await anyio.lowlevel.checkpoint()  # let the other task interleave
        if calls[key] <= 2:
            raise Transient(key)
        return key

    results: list[str] = []

    async def run(key: str) -> None:
        results.append(await work(key))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "a")
        tg.start_soon(run, "b")
    assert sorted(results) == ["a", "b"]
    assert calls == {"a": 3, "b": 3}
    assert clock.sleeps == [0.1] * 4


# -- async -------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_retry_with_async_and_sync_sleep() -> None:
    clock = FakeClock()
    flaky = Flaky(2)
    retry = rs.Retry(attempts=3, wait=0.5, sleep=clock.asleep)
    assert await retry.acall(flaky.acall) == "ok"
    assert clock.sleeps == [0.5, 0.5]

    clock2 = FakeClock()
    flaky2 = Flaky(5)
    retry2 = rs.Retry(attempts=2, wait=0.5, sleep=clock2.sleep)
    with pytest.raises(Transient) as info:
        await retry2.acall(flaky2.acall)
    assert info.value is flaky2.raised[-1]
    assert clock2.sleeps == [0.5]


@pytest.mark.anyio
async def test_async_result_retry_and_exhaustion() -> None:
    results = iter([None, None, 7])

    async def poll() -> int | None:
        await anyio.lowlevel.checkpoint()
        return next(results)

    retry = rs.Retry(attempts=3, wait=0, on_result=lambda r: r is None)
    assert await retry.acall(poll) == 7
    results = iter([None, None, None])
    with pytest.raises(rs.RetryExhaustedError):
        await retry.acall(poll)


@pytest.mark.anyio
async def test_async_default_sleep_is_anyio_and_respects_instant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []

    async def spy(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(anyio, "sleep", spy)  # _sleeping imports anyio when it first sleeps
    retry = rs.Retry(attempts=3, wait=4.0)
    assert await retry.acall(Flaky(2).acall) == "ok"
    assert slept == [4.0, 4.0]
    slept.clear()
    with instant_retries():
        assert await retry.acall(Flaky(2).acall) == "ok"
    assert slept == [0, 0]


@pytest.mark.anyio
async def test_cancellation_is_not_retried() -> None:
    calls = []
    retry = rs.Retry(attempts=5, wait=0)

    @retry
    async def slow() -> None:
        calls.append(1)
        await anyio.sleep(3600)

    with anyio.CancelScope() as scope:
        scope.cancel()
        await slow()
    assert scope.cancelled_caught
    assert calls == [1]


@pytest.mark.anyio
async def test_cancellation_during_backoff_propagates() -> None:
    calls = []

    with anyio.CancelScope() as scope:

        async def cancelling_sleep(seconds: float) -> None:
            scope.cancel()
            await anyio.sleep(seconds)

        retry = rs.Retry(attempts=5, wait=3600, sleep=cancelling_sleep)

        async def failing() -> None:
            calls.append(1)
            raise Transient

        await retry.acall(failing)
    assert scope.cancelled_caught
    assert calls == [1]


# -- instant_retries -----------------------------------------------------------------------------
def test_instant_retries_makes_default_waits_instant(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    retry = rs.Retry(attempts=3, wait=30.0)
    with instant_retries():
        assert retry.call(Flaky(2)) == "ok"
    assert slept == []
    assert retry.call(Flaky(2)) == "ok"  # outside the block the default sleep really waits
    assert slept == [30.0, 30.0]


# -- inline blocks -------------------------------------------------------------------------------
def test_attempts_loop_retries_an_inline_block() -> None:
    clock = FakeClock()
    flaky = Flaky(2)
    numbers = []
    for attempt in rs.Retry(attempts=3, wait=0.5, sleep=clock.sleep).attempts():
        with attempt:
            numbers.append(attempt.number)
            value = flaky()
    assert value == "ok"
    assert numbers == [1, 2, 3]
    assert clock.sleeps == [0.5, 0.5]


def test_attempts_loop_raises_the_last_error_when_exhausted() -> None:
    flaky = Flaky(10)
    retry = rs.Retry("inline", attempts=2, wait=0, sleep=FakeClock().sleep)
    with pytest.raises(Transient) as info:
        for attempt in retry.attempts():
            with attempt:
                flaky()
    assert info.value is flaky.raised[-1]
    assert flaky.calls == 2
    assert "gave up after 2 attempt(s)" in _notes(info.value)[0]


def test_attempts_loop_does_not_swallow_unretryable_errors() -> None:
    seen = []
    with pytest.raises(ValueError):
        for attempt in rs.Retry(attempts=5, wait=0, on=(Transient,)).attempts():
            with attempt:
                seen.append(attempt.number)
                raise ValueError("no")
    assert seen == [1]


def test_attempts_loop_retries_on_result() -> None:
    results = iter([500, 500, 200])
    statuses = []
    retry = rs.Retry(attempts=3, wait=0, on_result=lambda s: s >= 500, sleep=FakeClock().sleep)
    for attempt in retry.attempts():
        with attempt:
            status = next(results)
            statuses.append(status)
            attempt.set_result(status)
    assert statuses == [500, 500, 200]

    with pytest.raises(rs.RetryExhaustedError) as info:
        for attempt in retry.attempts():
            with attempt:
                attempt.set_result(503)
    assert info.value.last_result == 503 and info.value.attempts == 3


def test_attempts_loops_have_independent_state() -> None:
    retry = rs.Retry(attempts=2, wait=0, sleep=FakeClock().sleep)
    first = retry.attempts()
    second = retry.attempts()
    a1 = next(first)
    b1 = next(second)
    with a1:
        raise Transient
    assert next(first).number == 2
    with b1:
        pass
    assert list(second) == []
    assert list(first) == []  # attempt 2 of `first` was never failed: the loop is over


@pytest.mark.anyio
async def test_async_attempts_loop() -> None:
    clock = FakeClock()
    flaky = Flaky(2)
    numbers = []
    async for attempt in rs.Retry(attempts=3, wait=0.25, sleep=clock.asleep).attempts():
        with attempt:
            numbers.append(attempt.number)
            value = await flaky.acall()
    assert value == "ok" and numbers == [1, 2, 3]
    assert clock.sleeps == [0.25, 0.25]

    flaky = Flaky(10)
    with pytest.raises(Transient) as info:
        async for attempt in rs.Retry(attempts=2, wait=0, sleep=clock.asleep).attempts():
            async with attempt:
                await flaky.acall()
    assert info.value is flaky.raised[-1]


@pytest.mark.anyio
async def test_async_attempts_loop_lets_cancellation_through() -> None:
    numbers = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        async for attempt in rs.Retry(attempts=5, wait=0).attempts():
            with attempt:
                numbers.append(attempt.number)
                await anyio.sleep(3600)
    assert scope.cancelled_caught
    assert numbers == [1]


# -- decorator ---------------------------------------------------------------------------------
def test_decorator_keeps_signature_name_and_async_nature() -> None:
    retry = rs.Retry(attempts=2, wait=0)

    def fetch(url: str, *, limit: float = 1.0) -> str:
        """Fetch a URL."""
        return url

    async def afetch(url: str, *, limit: float = 1.0) -> str:
        return url

    wrapped = retry(fetch)
    awrapped = retry(afetch)
    assert inspect.signature(wrapped) == inspect.signature(fetch)
    assert wrapped.__name__ == "fetch" and wrapped.__doc__ == "Fetch a URL."
    assert inspect.iscoroutinefunction(awrapped)
    assert inspect.signature(awrapped) == inspect.signature(afetch)
    assert wrapped("u", limit=2.0) == "u"


def test_async_sleep_cannot_serve_a_sync_call() -> None:
    retry = rs.Retry(attempts=2, wait=0, sleep=FakeClock().asleep)
    calls = []
    with pytest.raises(TypeError, match="async sleep"):
        retry.call(lambda: calls.append(1))
    assert calls == []
    with pytest.raises(TypeError, match="async sleep"):
        next(iter(retry.attempts()))


def test_repr_names_the_configuration() -> None:
    text = repr(rs.Retry("db", attempts=4, wait=0.5, max_delay=9))
    assert "'db'" in text and "attempts=4" in text and "wait_fixed(0.5)" in text


# -- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attempts": 0}, ValueError, "attempts must be >= 1, got 0"),
        ({"attempts": 2.5}, TypeError, "attempts must be an int >= 1, got 2.5"),
        ({"attempts": True}, TypeError, "attempts .* got True"),
        ({"wait": -1}, ValueError, "wait must be >= 0, got -1"),
        ({"wait": "1s"}, TypeError, "wait must be .* got '1s'"),
        ({"wait": float("nan")}, ValueError, "wait must be a finite"),
        ({"wait": ValueError}, TypeError, "wait must be"),
        ({"max_delay": 0}, ValueError, "max_delay must be > 0, got 0"),
        ({"max_delay": -2.0}, ValueError, "max_delay must be > 0, got -2.0"),
        ({"max_delay": "soon"}, TypeError, "max_delay must be a number.*'soon'"),
        ({"on": "ValueError"}, TypeError, "on must be an exception type.*'ValueError'"),
        ({"on": (ValueError, 3)}, TypeError, "on must contain only exception types"),
        ({"on": (KeyboardInterrupt,)}, ValueError, "on may only name Exception subclasses"),
        ({"on": BaseException}, ValueError, "BaseException is cancellation"),
        ({"on_result": 5}, TypeError, "on_result must be callable or None, got 5"),
        ({"sleep": 0.5}, TypeError, "sleep must be callable or None, got 0.5"),
        ({"clock": 1.0}, TypeError, "clock must be a callable.*1.0"),
        ({"on_event": "log"}, TypeError, "on_event must be callable"),
        ({"name": ""}, ValueError, "name must be a non-empty string"),
    ],
)
def test_bad_arguments_name_the_parameter_and_value(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        rs.Retry(**kwargs)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: rs.wait_fixed(-1), "seconds must be >= 0, got -1"),
        (lambda: rs.wait_linear(start=-0.1), "start must be >= 0"),
        (lambda: rs.wait_linear(start=2, max=1), "max must be >= start"),
        (lambda: rs.wait_exponential(0), "initial must be > 0, got 0"),
        (lambda: rs.wait_exponential(1, 0.5), "max must be >= initial"),
        (lambda: rs.wait_exponential(multiplier=0.5), "multiplier must be >= 1, got 0.5"),
        (lambda: rs.wait_exponential(jitter=cast(Any, "half")), "jitter must be .* got 'half'"),
        (lambda: rs.wait_exponential(rng=cast(Any, 42)), "rng must be a random.Random"),
    ],
)
def test_bad_wait_arguments(factory: Any, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        factory()


# -- property ----------------------------------------------------------------------------------
@given(k=st.integers(min_value=0, max_value=8), attempts=st.integers(min_value=1, max_value=10))
def test_k_failures_then_success(k: int, attempts: int) -> None:
    flaky = Flaky(k)
    retry = rs.Retry(attempts=attempts, wait=0.01, sleep=FakeClock().sleep)
    if attempts >= k + 1:
        assert retry.call(flaky) == "ok"
        assert flaky.calls == k + 1
    else:
        with pytest.raises(Transient) as info:
            retry.call(flaky)
        assert flaky.calls == attempts
        assert info.value is flaky.raised[-1]
