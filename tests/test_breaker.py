"""CircuitBreaker at its public API: what a user of the breaker relies on."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from prometheus_client import CollectorRegistry

import resilient as rs
from resilient._core.sliding_windows import FAILED, SLOW, CountWindow, TimeWindow
from resilient.telemetry import (
    BreakerStateChanged,
    CallFailed,
    CallIgnored,
    CallRejected,
    CallSlow,
    Event,
    reset_telemetry,
)
from resilient.testing import FakeClock

S = rs.BreakerState


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom("down")


def ok() -> str:
    return "ok"


def breaker(clock: FakeClock, **kwargs: Any) -> rs.CircuitBreaker:
    """A breaker that opens after 3 consecutive failures and stays open 10 s by default."""
    options: dict[str, Any] = {
        "window_size": 3,
        "minimum_calls": 3,
        "failure_rate_threshold": 1.0,
        "open_duration": 10.0,
        "clock": clock,
    }
    options.update(kwargs)
    return rs.CircuitBreaker("svc", **options)


def trip(b: rs.CircuitBreaker, times: int = 3) -> None:
    for _ in range(times):
        with pytest.raises(Boom):
            b.call(fail)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(100.0)


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    rs.configure_telemetry(registry=reg, metrics=True)
    yield reg
    reset_telemetry()


@pytest.fixture
def events() -> Iterator[list[Event]]:
    seen: list[Event] = []
    rs.add_listener(seen.append)
    yield seen
    rs.remove_listener(seen.append)


# -- opening --------------------------------------------------------------------------------------
def test_consecutive_failures_open_and_rejections_skip_the_function(clock: FakeClock) -> None:
    b = breaker(clock)
    for _ in range(2):
        with pytest.raises(Boom):
            b.call(fail)
    b.call(ok)  # a success in between: not 3 *consecutive* failures yet
    trip(b, 2)
    assert b.state is S.CLOSED
    trip(b, 1)
    assert b.state is S.OPEN

    called: list[int] = []
    clock.advance(4.0)
    with pytest.raises(rs.CircuitOpenError) as info:
        b.call(called.append, 1)
    assert called == []
    err = info.value
    assert err.name == "svc" and err.state == "open" and err.reason == "open"
    assert err.retry_after == pytest.approx(6.0)
    assert isinstance(err, rs.PolicyRejectedError)


def test_failure_rate_needs_minimum_calls(clock: FakeClock) -> None:
    b = breaker(clock, window_size=10, minimum_calls=4, failure_rate_threshold=0.5)
    trip(b, 3)  # 100 % failures, but only 3 calls
    assert b.state is S.CLOSED
    b.call(ok)  # 4 calls, 75 % >= 50 %
    assert b.state is S.OPEN


def test_count_window_forgets_old_outcomes(clock: FakeClock) -> None:
    b = breaker(clock, window_size=4, minimum_calls=4, failure_rate_threshold=0.75)
    trip(b, 2)
    for _ in range(4):
        b.call(ok)  # the two failures leave the window
    assert b.metrics[1:4] == (4, 0, 0)
    trip(b, 2)
    assert b.state is S.CLOSED  # 2 of 4
    trip(b, 1)
    assert b.state is S.OPEN  # 3 of 4


def test_minimum_calls_above_count_window_is_capped(clock: FakeClock) -> None:
    b = breaker(clock, window_size=2, minimum_calls=10)
    trip(b, 2)
    assert b.state is S.OPEN


def test_slow_calls_open_the_breaker_and_are_reported(
    clock: FakeClock, events: list[Event]
) -> None:
    b = breaker(
        clock,
        window_size=4,
        minimum_calls=4,
        slow_call_duration=2.0,
        slow_call_rate_threshold=0.5,
    )

    def slow() -> str:
        clock.advance(2.5)
        return "late"

    def just_in_time() -> str:
        clock.advance(2.0)  # not *longer* than the limit
        return "fine"

    assert b.call(slow) == "late"
    b.call(just_in_time)
    b.call(ok)
    assert b.metrics.slow_calls == 1
    assert b.state is S.CLOSED
    b.call(slow)
    assert b.state is S.OPEN  # 2 of 4 slow
    slow_events = [e for e in events if isinstance(e, CallSlow)]
    assert [e.duration for e in slow_events] == [2.5, 2.5]


def test_slow_calls_count_for_both_rates_when_they_fail(clock: FakeClock) -> None:
    b = breaker(clock, window_size=2, minimum_calls=2, slow_call_duration=1.0)

    def slow_fail() -> None:
        clock.advance(3.0)
        raise Boom("slow and broken")

    with pytest.raises(Boom):
        b.call(slow_fail)
    metrics = b.metrics
    assert (metrics.calls, metrics.failures, metrics.slow_calls) == (1, 1, 1)
    assert metrics.failure_rate == 1.0 and metrics.slow_call_rate == 1.0


# -- time window ----------------------------------------------------------------------------------
def test_time_window_counts_only_the_last_n_seconds(clock: FakeClock) -> None:
    b = breaker(clock, window_type="time", window_size=10, minimum_calls=3)
    trip(b, 2)
    clock.advance(10.0)  # those two are now out of the window
    trip(b, 2)
    assert b.state is S.CLOSED
    assert b.metrics.calls == 2
    clock.advance(9.0)  # still inside
    trip(b, 1)
    assert b.state is S.OPEN


def test_time_window_expiring_successes_can_raise_the_rate(clock: FakeClock) -> None:
    b2 = rs.CircuitBreaker(
        "svc2",
        window_type="time",
        window_size=3,
        minimum_calls=2,
        failure_rate_threshold=0.5,
        clock=clock,
    )
    for _ in range(3):
        b2.call(ok)
    clock.advance(1.0)
    with pytest.raises(Boom):
        b2.call(fail)
    clock.advance(1.0)
    with pytest.raises(Boom):
        b2.call(fail)
    assert b2.state is S.CLOSED  # 2 failures of 5
    clock.advance(1.0)  # the three successes expire
    b2.call(ok)  # 2 failures of 3: a success can be the call that opens a time window
    assert b2.state is S.OPEN


def test_time_window_memory_is_bounded_by_seconds_not_calls() -> None:
    window = TimeWindow(60)
    now = 0.0
    for i in range(50_000):  # 100 calls a second for 500 seconds
        now = i / 100
        window.add(FAILED if i % 10 == 0 else 0, now)
    assert len(window._total) == 60  # one bucket per second, whatever the call rate
    assert (window.calls, window.failures) == (6000, 600)  # seconds 440..499
    window.refresh(now + 30.0)
    assert (window.calls, window.failures) == (3000, 300)  # seconds 470..499 are left
    window.refresh(now + 1000.0)
    assert (window.calls, window.failures, window.slow_calls) == (0, 0, 0)


def test_count_window_ring_keeps_exact_totals() -> None:
    window = CountWindow(3)
    for code in (FAILED, SLOW, FAILED | SLOW, 0, 0):
        window.add(code, 0.0)
    assert (window.calls, window.failures, window.slow_calls) == (3, 1, 1)
    window.clear()
    assert (window.calls, window.failures, window.slow_calls) == (0, 0, 0)


# -- open -> half-open -> closed/open -------------------------------------------------------------
def test_half_open_trial_success_closes_with_an_empty_window(
    clock: FakeClock, events: list[Event]
) -> None:
    b = breaker(clock)
    trip(b)
    clock.advance(10.0)
    assert b.state is S.HALF_OPEN  # reading the state applies the due transition
    assert b.call(ok) == "ok"
    assert b.state is S.CLOSED
    assert b.metrics.calls == 0
    changes = [(e.from_state, e.to_state) for e in events if isinstance(e, BreakerStateChanged)]
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_next_caller_after_open_duration_is_the_trial(clock: FakeClock) -> None:
    b = breaker(clock)
    trip(b)
    clock.advance(10.0)
    with pytest.raises(Boom):
        b.call(fail)  # the trial fails: open again, without waiting for anything else
    assert b.state is S.OPEN
    assert b.retry_after == pytest.approx(10.0)


def test_half_open_admits_exactly_max_calls_and_all_must_succeed(clock: FakeClock) -> None:
    b = breaker(clock, half_open_max_calls=2)
    trip(b)
    clock.advance(10.0)
    with b:
        with b:
            with pytest.raises(rs.CircuitOpenError) as info:
                b.call(ok)
            assert info.value.reason == "half_open_full"
            assert info.value.retry_after is None
            assert "trial" in str(info.value)
        assert b.state is S.HALF_OPEN  # one of two trials done
        with pytest.raises(rs.CircuitOpenError):
            b.call(ok)  # a finished trial does not free a slot: the round is 2 trials
    assert b.state is S.CLOSED


def test_one_failed_trial_reopens_while_others_still_run(clock: FakeClock) -> None:
    b = breaker(clock, half_open_max_calls=2)
    trip(b)
    clock.advance(10.0)
    with b:
        with pytest.raises(Boom), b:
            raise Boom("trial failed")
        assert b.state is S.OPEN
    assert b.state is S.OPEN  # the other trial's success belongs to a finished round


def test_slow_trial_counts_as_failed_when_slow_detection_is_on(clock: FakeClock) -> None:
    b = breaker(clock, slow_call_duration=1.0)
    trip(b)
    clock.advance(10.0)

    def slow_but_fine() -> str:
        clock.advance(1.5)
        return "ok"

    assert b.call(slow_but_fine) == "ok"
    assert b.state is S.OPEN  # a recovering dependency must also be fast again


def test_backoff_callable_gets_times_opened_and_resets_on_close(clock: FakeClock) -> None:
    seen: list[int] = []

    def backoff(times_opened: int) -> float:
        seen.append(times_opened)
        return 10.0 * 2 ** (times_opened - 1)

    b = breaker(clock, open_duration=backoff)
    seen.clear()  # the constructor probes the callable once
    trip(b)
    assert b.retry_after == pytest.approx(10.0)
    clock.advance(10.0)
    trip(b, 1)  # failed trial
    assert b.retry_after == pytest.approx(20.0)
    clock.advance(20.0)
    trip(b, 1)
    assert b.retry_after == pytest.approx(40.0)
    clock.advance(40.0)
    b.call(ok)  # closes: the backoff starts over
    trip(b)
    assert seen == [1, 2, 3, 1]
    assert b.retry_after == pytest.approx(10.0)


def test_jitter_stretches_open_time_with_the_injected_rng(clock: FakeClock) -> None:
    b = breaker(clock, open_jitter=0.5, rng=lambda: 0.5)
    trip(b)
    assert b.retry_after == pytest.approx(12.5)  # 10 s * (1 + 0.5 * 0.5)
    clock.advance(12.4)
    assert b.state is S.OPEN
    clock.advance(0.1)
    assert b.state is S.HALF_OPEN

    seeded = [breaker(clock, open_jitter=1.0, rng=random.Random(7)) for _ in range(2)]
    for each in seeded:
        trip(each)
    hints = [each.retry_after for each in seeded]
    assert hints[0] == hints[1]
    assert hints[0] is not None and 10.0 <= hints[0] < 20.0


def test_broken_backoff_falls_back_to_the_last_good_duration(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    b = breaker(clock, open_duration=lambda n: 5.0 if n == 1 else -1.0)
    trip(b)
    clock.advance(5.0)
    trip(b, 1)
    assert b.state is S.OPEN
    assert b.retry_after == pytest.approx(5.0)
    assert "open_duration(2)" in caplog.text


def test_zero_open_duration_goes_straight_to_half_open(clock: FakeClock) -> None:
    b = breaker(clock, open_duration=0)
    trip(b)
    assert b.state is S.HALF_OPEN


# -- trials that never come back, late completions ------------------------------------------------
def test_hung_trial_is_reclaimed_after_half_open_max_wait(clock: FakeClock) -> None:
    b = breaker(clock, half_open_max_wait=5.0)
    trip(b)
    clock.advance(10.0)
    hung = b._enter()  # a trial that never reports back (its task was lost)
    clock.advance(4.0)
    with pytest.raises(rs.CircuitOpenError) as info:
        b.call(ok)
    assert info.value.reason == "half_open_full"
    clock.advance(3.0)  # 7 s after admission: the trial counts as failed since 5 s
    assert b.state is S.OPEN
    assert b.retry_after == pytest.approx(8.0)  # reopened at the deadline: 5 + 10 - 7
    clock.advance(8.0)
    assert b.call(ok) == "ok"  # the slot was not leaked: a new trial runs and closes it
    assert b.state is S.CLOSED
    b._exit(hung, Boom("very late"), None)
    assert b.state is S.CLOSED
    assert b.metrics.calls == 0


def test_reclaim_deadline_follows_the_oldest_trial(clock: FakeClock) -> None:
    b = breaker(clock, half_open_max_calls=2, half_open_max_wait=5.0)
    trip(b)
    clock.advance(10.0)
    first = b._enter()
    clock.advance(3.0)
    second = b._enter()
    clock.advance(2.0)  # the first trial is 5 s old, the second 2 s
    assert b.state is S.OPEN
    b._exit(second, None, "ok")
    b._exit(first, None, "ok")
    assert b.state is S.OPEN


def test_call_admitted_before_opening_cannot_flip_it_later(clock: FakeClock) -> None:
    b = breaker(clock)
    early = b._enter()  # admitted while CLOSED, still running
    trip(b)
    clock.advance(10.0)
    b.call(ok)  # trial closes it
    b._exit(early, Boom("finished late"), None)
    assert b.state is S.CLOSED
    assert b.metrics.calls == 0

    trip(b)
    clock.advance(10.0)
    trial = b._enter()  # a trial of this round...
    b.reset()
    trip(b)
    clock.advance(10.0)
    b._exit(trial, None, "ok")  # ...finishing in another round decides nothing
    assert b.state is S.HALF_OPEN


# -- manual control -------------------------------------------------------------------------------
def test_forced_open_rejects_everything_without_retry_after(clock: FakeClock) -> None:
    b = breaker(clock)
    b.force_open()
    clock.advance(1_000.0)
    with pytest.raises(rs.CircuitOpenError) as info:
        b.call(ok)
    assert info.value.state == "forced_open" and info.value.reason == "forced_open"
    assert info.value.retry_after is None
    assert b.state is S.FORCED_OPEN
    b.reset()
    assert b.call(ok) == "ok"


def test_disabled_admits_everything_and_records_nothing(clock: FakeClock) -> None:
    b = breaker(clock)
    b.disable()
    trip(b, 10)
    assert b.state is S.DISABLED
    assert b.metrics.calls == 0
    b.reset()
    assert b.state is S.CLOSED


def test_metrics_only_records_but_never_rejects(clock: FakeClock) -> None:
    b = breaker(clock)
    b.metrics_only()
    trip(b, 10)
    b.call(ok)
    metrics = b.metrics
    assert metrics.state is S.METRICS_ONLY
    assert (metrics.calls, metrics.failures) == (3, 2)
    b.reset()
    assert b.state is S.CLOSED
    assert b.metrics.calls == 0


def test_reset_closes_with_an_empty_window_and_ignores_older_calls(clock: FakeClock) -> None:
    b = breaker(clock)
    running = b._enter()
    trip(b, 2)
    b.reset()
    assert b.metrics.calls == 0
    b._exit(running, Boom("from before the reset"), None)
    trip(b, 2)
    assert b.state is S.CLOSED  # the pre-reset failure was not counted
    trip(b, 1)
    assert b.state is S.OPEN
    b.reset()
    assert b.state is S.CLOSED
    assert b.call(ok) == "ok"


# -- classification -------------------------------------------------------------------------------
def test_record_types_ignore_types_and_other_exceptions(
    clock: FakeClock, events: list[Event]
) -> None:
    b = breaker(clock, record=(Boom, OSError), ignore=(ConnectionResetError,))

    def raise_(exc: Exception) -> None:
        raise exc

    for _ in range(5):
        with pytest.raises(ConnectionResetError):
            b.call(raise_, ConnectionResetError())  # an OSError, but ignore wins
    assert b.metrics.calls == 0
    assert sum(isinstance(e, CallIgnored) for e in events) == 5
    with pytest.raises(KeyError):
        b.call(raise_, KeyError("not ours"))  # not recorded: counts as a success
    assert b.metrics[1:3] == (1, 0)
    trip(b, 2)
    with pytest.raises(OSError):
        b.call(raise_, OSError("io"))
    assert b.state is S.OPEN


def test_record_and_ignore_accept_predicates_and_single_types(clock: FakeClock) -> None:
    b = breaker(
        clock,
        record=lambda exc: "fatal" in str(exc),
        ignore=KeyError,
        window_size=1,
        minimum_calls=1,
    )
    with pytest.raises(Boom):
        b.call(lambda: (_ for _ in ()).throw(Boom("harmless")))
    with pytest.raises(KeyError):
        b.call(lambda: {}["missing"])
    assert b.state is S.CLOSED
    with pytest.raises(Boom):
        b.call(lambda: (_ for _ in ()).throw(Boom("fatal")))
    assert b.state is S.OPEN


def test_record_result_marks_returned_values_as_failures(
    clock: FakeClock, events: list[Event]
) -> None:
    b = breaker(clock, record_result=lambda r: r == 503)
    assert b.call(lambda: 503) == 503  # the caller still gets the value
    assert b.call(lambda: 200) == 200
    assert b.metrics[1:3] == (2, 1)
    failed = [e for e in events if isinstance(e, CallFailed)]
    assert len(failed) == 1 and failed[0].error is None
    b.call(lambda: 503)
    b.call(lambda: 503)
    assert b.state is S.CLOSED
    b.call(lambda: 503)
    assert b.state is S.OPEN


def test_record_result_is_not_applied_to_with_blocks(clock: FakeClock) -> None:
    b = breaker(clock, record_result=lambda r: r is None, window_size=1, minimum_calls=1)
    with b:
        pass
    assert b.state is S.CLOSED
    assert b.metrics[1:3] == (1, 0)


def test_own_rejection_inside_a_call_is_not_a_failure(clock: FakeClock) -> None:
    b = breaker(clock, half_open_max_calls=1)
    trip(b)
    clock.advance(10.0)

    @b
    def outer() -> str:
        return inner()

    @b
    def inner() -> str:
        return "never"

    with pytest.raises(rs.CircuitOpenError, match="trial"):
        outer()  # the outer trial is refused its nested call by the same breaker
    assert b.state is S.HALF_OPEN  # not re-opened: the dependency did not fail
    assert b.call(ok) == "ok"
    assert b.state is S.CLOSED


def test_a_raising_predicate_propagates_and_frees_the_trial(clock: FakeClock) -> None:
    def broken(result: object) -> bool:
        raise RuntimeError("predicate bug")

    b = breaker(clock, record_result=broken)
    trip(b)
    clock.advance(10.0)
    with pytest.raises(RuntimeError, match="predicate bug"):
        b.call(ok)
    assert b.state is S.HALF_OPEN
    with pytest.raises(RuntimeError):
        b.call(ok)  # admitted again: the first trial's slot was given back


# -- cancellation ---------------------------------------------------------------------------------
def test_keyboard_interrupt_frees_the_trial_and_is_not_a_failure(clock: FakeClock) -> None:
    b = breaker(clock)

    def interrupted() -> None:
        raise KeyboardInterrupt

    for _ in range(5):
        with pytest.raises(KeyboardInterrupt):
            b.call(interrupted)
    assert b.metrics.calls == 0
    trip(b)
    clock.advance(10.0)
    with pytest.raises(KeyboardInterrupt):
        b.call(interrupted)
    assert b.state is S.HALF_OPEN
    assert b.call(ok) == "ok"  # the slot came back
    assert b.state is S.CLOSED


@pytest.mark.anyio
async def test_cancel_scope_during_a_trial_frees_it(clock: FakeClock) -> None:
    b = breaker(clock)
    trip(b)
    clock.advance(10.0)

    with anyio.CancelScope() as scope:

        async def trial() -> None:
            scope.cancel()
            await anyio.lowlevel.checkpoint()  # the cancellation arrives here

        await b.acall(trial)
    assert scope.cancelled_caught
    assert b.state is S.HALF_OPEN

    with anyio.move_on_after(0):
        await b.acall(anyio.sleep_forever)
    assert b.state is S.HALF_OPEN

    async def healthy() -> str:
        await anyio.lowlevel.checkpoint()
        return "ok"

    assert await b.acall(healthy) == "ok"
    assert b.state is S.CLOSED


@pytest.mark.anyio
async def test_cancelled_calls_are_not_recorded_while_closed(clock: FakeClock) -> None:
    b = breaker(clock, window_size=10, minimum_calls=1)
    for _ in range(3):
        with anyio.move_on_after(0):
            async with b:
                await anyio.sleep_forever()
    assert b.metrics.calls == 0
    assert b.state is S.CLOSED


# -- front end ------------------------------------------------------------------------------------
def test_decorator_keeps_signature_and_return_value(clock: FakeClock) -> None:
    b = breaker(clock)

    def plain(x: int, y: int = 2) -> int:
        """Adds."""
        return x + y

    add = b(plain)
    assert add(1) == 3 and add(1, y=5) == 6
    assert add.__name__ == "plain" and add.__doc__ == "Adds."
    assert inspect.signature(add) == inspect.signature(plain)
    assert not inspect.iscoroutinefunction(add)


@pytest.mark.anyio
async def test_async_decorator_and_async_with(clock: FakeClock) -> None:
    b = breaker(clock)

    async def raw(key: str) -> str:
        await anyio.lowlevel.checkpoint()
        if key == "bad":
            raise Boom(key)
        return key.upper()

    fetch = b(raw)
    assert inspect.iscoroutinefunction(fetch)
    assert inspect.signature(fetch) == inspect.signature(raw)
    assert await fetch("a") == "A"
    for _ in range(3):
        with pytest.raises(Boom):
            await fetch("bad")
    with pytest.raises(rs.CircuitOpenError):
        await fetch("a")
    with pytest.raises(rs.CircuitOpenError):
        async with b:
            pass
    clock.advance(10.0)
    async with b:
        await anyio.lowlevel.checkpoint()
    assert b.state is S.CLOSED


def test_with_block_records_exceptions(clock: FakeClock) -> None:
    b = breaker(clock)
    for _ in range(3):
        with pytest.raises(Boom), b:
            raise Boom("in block")
    with pytest.raises(rs.CircuitOpenError), b:
        pytest.fail("the block must not run while open")


def test_telemetry_gauge_rejections_and_events(
    clock: FakeClock, registry: CollectorRegistry, events: list[Event]
) -> None:
    b = breaker(clock)

    def gauge(state: str) -> float | None:
        return registry.get_sample_value("resilient_breaker_state", {"name": "svc", "state": state})

    assert gauge("closed") == 1.0 and gauge("open") == 0.0
    trip(b)
    assert gauge("closed") == 0.0 and gauge("open") == 1.0
    with pytest.raises(rs.CircuitOpenError):
        b.call(ok)
    rejected = [e for e in events if isinstance(e, CallRejected)]
    assert len(rejected) == 1
    assert rejected[0].reason == "open" and rejected[0].retry_after == pytest.approx(10.0)
    labels = {"policy": "breaker", "name": "svc", "reason": "open"}
    assert registry.get_sample_value("resilient_rejections_total", labels) == 1.0
    outcome = {"policy": "breaker", "name": "svc", "outcome": "rejected"}
    assert registry.get_sample_value("resilient_calls_total", outcome) == 1.0
    b.force_open()
    assert gauge("forced_open") == 1.0 and gauge("open") == 0.0


def test_per_breaker_listener(clock: FakeClock) -> None:
    seen: list[Event] = []
    b = rs.CircuitBreaker("own", window_size=1, minimum_calls=1, clock=clock, on_event=seen.append)
    with pytest.raises(Boom):
        b.call(fail)
    assert any(isinstance(e, BreakerStateChanged) and e.to_state == "open" for e in seen)


def test_defaults_and_names(clock: FakeClock) -> None:
    b = rs.CircuitBreaker(clock=clock)
    assert b.name.startswith("breaker-")
    assert b.state is S.CLOSED and b.state == "closed"
    assert repr(b) == (
        f"<CircuitBreaker {b.name!r} closed failure_rate_threshold=0.5 window_type='count' "
        "window_size=100 open_duration=30.0>"
    )
    for _ in range(9):
        with pytest.raises(Boom):
            b.call(fail)
    assert b.state is S.CLOSED  # minimum_calls=10
    with pytest.raises(Boom):
        b.call(fail)
    assert b.state is S.OPEN
    assert b.retry_after == pytest.approx(30.0)
    assert {s.value for s in S} == {
        "closed",
        "open",
        "half_open",
        "forced_open",
        "disabled",
        "metrics_only",
    }


# -- validation -----------------------------------------------------------------------------------
BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"failure_rate_threshold": 0}, ValueError, "failure_rate_threshold"),
    ({"failure_rate_threshold": 1.5}, ValueError, "failure_rate_threshold"),
    ({"failure_rate_threshold": "half"}, TypeError, "failure_rate_threshold"),
    ({"failure_rate_threshold": float("nan")}, ValueError, "failure_rate_threshold"),
    ({"slow_call_duration": -1}, ValueError, "slow_call_duration"),
    ({"slow_call_duration": "1s"}, TypeError, "slow_call_duration"),
    ({"slow_call_rate_threshold": 0.0}, ValueError, "slow_call_rate_threshold"),
    ({"slow_call_rate_threshold": True}, TypeError, "slow_call_rate_threshold"),
    ({"window_type": "sliding"}, ValueError, "window_type"),
    ({"window_size": 0}, ValueError, "window_size"),
    ({"window_size": 2.5}, TypeError, "window_size"),
    ({"minimum_calls": 0}, ValueError, "minimum_calls"),
    ({"minimum_calls": None}, TypeError, "minimum_calls"),
    ({"open_duration": -1}, ValueError, "open_duration"),
    ({"open_duration": float("inf")}, ValueError, "open_duration"),
    ({"open_duration": "30s"}, TypeError, "open_duration"),
    ({"open_duration": lambda n: "soon"}, TypeError, "open_duration"),
    ({"open_duration": lambda n: -5}, ValueError, "open_duration"),
    ({"open_jitter": -0.1}, ValueError, "open_jitter"),
    ({"open_jitter": 2}, ValueError, "open_jitter"),
    ({"half_open_max_calls": 0}, ValueError, "half_open_max_calls"),
    ({"half_open_max_calls": 1.0}, TypeError, "half_open_max_calls"),
    ({"half_open_max_wait": 0}, ValueError, "half_open_max_wait"),
    ({"half_open_max_wait": -2}, ValueError, "half_open_max_wait"),
    ({"record": "ValueError"}, TypeError, "record"),
    ({"record": (ValueError, int)}, TypeError, "record"),
    ({"ignore": [42]}, TypeError, "ignore"),
    ({"record_result": True}, TypeError, "record_result"),
    ({"clock": 12.0}, TypeError, "clock"),
    ({"clock": lambda: "now"}, TypeError, "clock"),
    ({"rng": 3}, TypeError, "rng"),
    ({"rng": random.Random}, TypeError, "rng"),
    ({"on_event": "print"}, TypeError, "on_event"),
    ({"name": ""}, ValueError, "name"),
]


@pytest.mark.parametrize(("kwargs", "error", "param"), BAD, ids=[str(b[0]) for b in BAD])
def test_bad_constructor_arguments_name_parameter_and_value(
    kwargs: dict[str, Any], error: type[Exception], param: str
) -> None:
    with pytest.raises(error) as info:
        rs.CircuitBreaker(**kwargs)
    message = str(info.value)
    assert param in message
    value = next(iter(kwargs.values()))
    if not callable(value):
        assert repr(value) in message


def test_good_edge_values_are_accepted() -> None:
    clock: Callable[[], float] = FakeClock()
    rs.CircuitBreaker(
        failure_rate_threshold=1,
        slow_call_duration=0,
        slow_call_rate_threshold=1.0,
        window_type="time",
        window_size=1,
        minimum_calls=1,
        open_duration=0,
        open_jitter=1,
        half_open_max_calls=1,
        half_open_max_wait=0.5,
        record=(),
        ignore=[KeyError],
        record_result=bool,
        clock=clock,
        rng=random.Random(1),
    )
