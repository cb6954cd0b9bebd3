"""The test helpers behind the pytest plugin (``resilient.testing``) and the fixtures themselves,
used here the way a user's suite uses them: sync, and async on asyncio and trio through
anyio's plugin. (pytest-asyncio, and a second test seeing a clean state, are covered by the
subprocess runs in ``test_pytest_plugin.py``.)"""

from __future__ import annotations

import time

import anyio
import pytest
from prometheus_client import REGISTRY, CollectorRegistry

import resilient as rs
from resilient import _clock, _sleeping, _validate
from resilient.telemetry import _hub, _prometheus
from resilient.testing import (
    BreakerControl,
    FakeClock,
    breaker_control,
    fake_clock,
    isolated_registry,
)

SLOW = 3600.0  # a wait no test may really take


def boom() -> None:
    raise ConnectionError("down")


async def aboom() -> None:
    raise ConnectionError("down")


def trip(breaker: rs.CircuitBreaker, times: int = 2) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            breaker.call(boom)


# -- the clock hook ------------------------------------------------------------------------------


def test_the_default_clock_is_resolved_at_construction() -> None:
    option = _validate.clock()
    outside = rs.CircuitBreaker("before")
    with fake_clock() as clock:
        assert option(time.monotonic) is clock
        assert option(None) is clock
        explicit = FakeClock(5.0)
        assert option(explicit) is explicit  # a clock passed explicitly is kept
        inside = rs.CircuitBreaker("inside", window_size=2, minimum_calls=2, open_duration=30)
        trip(outside)  # the breaker built before keeps the real clock...
        assert outside._clock is time.monotonic
    assert inside._clock is clock  # ...and one built inside keeps the fake one
    assert option(time.monotonic) is time.monotonic and option(None) is time.monotonic
    # clock=None means the default clock for every policy, as the round-2 signatures have it
    assert rs.Retry(clock=None)._clock is time.monotonic  # type: ignore[arg-type]


def test_resilient_clock_drives_the_policies_the_test_builds(resilient_clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker(window_size=2, minimum_calls=2, open_duration=30)
    trip(breaker)
    assert breaker.state is rs.BreakerState.OPEN
    resilient_clock.advance(29.9)
    assert breaker.state is rs.BreakerState.OPEN
    resilient_clock.advance(0.2)
    assert breaker.state is rs.BreakerState.HALF_OPEN


def test_library_waits_advance_the_fake_clock(resilient_clock: FakeClock) -> None:
    retry = rs.Retry(attempts=4, wait=rs.wait_exponential(initial=1, jitter=None))
    with pytest.raises(ConnectionError):
        retry.call(boom)
    assert resilient_clock.sleeps == [1, 2, 4]
    assert resilient_clock() == 7


def test_max_delay_is_measured_in_fake_seconds(resilient_clock: FakeClock) -> None:
    calls = 0

    def failing() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError

    retry = rs.Retry(attempts=10, wait=SLOW, max_delay=2.5 * SLOW)
    with pytest.raises(ConnectionError):
        retry.call(failing)
    assert resilient_clock.sleeps == [SLOW, SLOW]  # a third wait would end past max_delay
    assert calls == 3


@pytest.mark.anyio
async def test_async_waits_advance_the_fake_clock(resilient_clock: FakeClock) -> None:
    retry = rs.Retry(attempts=3, wait=SLOW)
    with anyio.fail_after(60):  # a broken hook fails here instead of sleeping an hour
        with pytest.raises(ConnectionError):
            await retry.acall(aboom)
    assert resilient_clock.sleeps == [SLOW, SLOW]


@pytest.mark.anyio
async def test_async_fake_waits_are_checkpoints(resilient_clock: FakeClock) -> None:
    calls = 0

    async def failing() -> None:  # never yields itself
        nonlocal calls
        calls += 1
        raise ConnectionError

    retry = rs.Retry(attempts=6, wait=SLOW)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await retry.acall(failing)
    # the first wait noticed the cancellation: a fake wait still goes round the loop
    assert scope.cancelled_caught and calls == 1


def test_instant_retries_wins_over_the_fake_clock(
    resilient_clock: FakeClock, instant_retries: None
) -> None:
    with pytest.raises(ConnectionError):
        rs.Retry(attempts=3, wait=SLOW).call(boom)
    assert resilient_clock.sleeps == [] and resilient_clock() == 0.0


def test_fake_clock_nests_and_forgets_what_it_registered() -> None:
    with fake_clock() as outer:
        with fake_clock(FakeClock(100.0)) as inner:
            assert _clock.fake is inner and rs.Bulkhead(max_concurrent=1)._clock is inner
            rs.registry.breaker("made-with-a-fake-clock")
        assert _clock.fake is outer
        assert ("made-with-a-fake-clock", "breaker") not in rs.registry
    assert _clock.fake is None


# -- instant retries -----------------------------------------------------------------------------


def test_instant_retries_fixture(instant_retries: None) -> None:
    assert _sleeping.instant()
    with pytest.raises(ConnectionError):
        rs.Retry(attempts=3, wait=SLOW).call(boom)


@pytest.mark.anyio
async def test_instant_retries_fixture_async(instant_retries: None) -> None:
    with anyio.fail_after(60), pytest.raises(ConnectionError):
        await rs.Retry(attempts=3, wait=SLOW).acall(aboom)


# -- breaker control -----------------------------------------------------------------------------


def test_breaker_control_forces_named_breakers(
    breaker_control: BreakerControl, isolated_registry: rs.Registry
) -> None:
    @rs.policy("payments", "fallback", "breaker", fallback={"value": "degraded"})
    def charge() -> str:
        return "charged"

    breaker = breaker_control.force_open("payments")
    assert breaker is rs.registry.breaker("payments")
    assert charge() == "degraded"
    breaker_control.force_closed("payments")
    assert breaker.state is rs.BreakerState.DISABLED
    assert charge() == "charged"
    breaker_control.reset("payments")
    assert breaker.state is rs.BreakerState.CLOSED


@pytest.mark.anyio
async def test_breaker_control_in_async_tests(
    breaker_control: BreakerControl, isolated_registry: rs.Registry
) -> None:
    @rs.policy("inventory", "breaker")
    async def reserve() -> str:
        return "reserved"

    breaker_control.force_open("inventory")
    with pytest.raises(rs.CircuitOpenError):
        await reserve()
    breaker_control.reset("inventory")
    assert await reserve() == "reserved"


def test_breaker_control_restores_what_it_touched() -> None:
    own = rs.CircuitBreaker(window_size=2, minimum_calls=2)
    untouched = rs.CircuitBreaker()
    untouched.force_open()
    with breaker_control() as control:
        control.force_open(own)
        assert own.state is rs.BreakerState.FORCED_OPEN
        assert "BreakerControl" in repr(control)
    assert own.state is rs.BreakerState.CLOSED
    assert untouched.state is rs.BreakerState.FORCED_OPEN  # not ours to reset


def test_breaker_control_refuses_unknown_names_and_bad_targets() -> None:
    control = BreakerControl(rs.Registry())
    with pytest.raises(LookupError, match=r"no breaker named 'nope'.*registered breakers: none"):
        control.force_open("nope")
    with pytest.raises(TypeError, match="breaker name or a CircuitBreaker, got 42"):
        control.force_open(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got <Retry"):
        control.reset(rs.Retry())  # type: ignore[arg-type]


def test_breaker_control_uses_the_registry_it_was_given() -> None:
    own = rs.Registry()
    breaker = own.breaker("local")
    with breaker_control(own) as control:
        assert control.force_open("local") is breaker
        assert ("local", "breaker") not in rs.registry
    assert breaker.state is rs.BreakerState.CLOSED


# -- isolated registry ---------------------------------------------------------------------------


def test_isolated_registry_keeps_earlier_policies_clean_and_forgets_new_ones() -> None:
    earlier = rs.registry.breaker("iso-earlier", window_size=2, minimum_calls=2)
    trip(earlier)
    assert earlier.state is rs.BreakerState.OPEN
    try:
        with isolated_registry() as registry:
            assert registry is rs.registry
            assert earlier.state is rs.BreakerState.CLOSED  # reset when the block starts
            assert rs.registry.breaker("iso-earlier") is earlier  # the instance code holds
            made = rs.policy("iso-new", "retry", "breaker")
            assert ("iso-new", "breaker") in rs.registry and len(made.policies) == 2
            trip(earlier)
            rs.registry.clear()  # undone on exit, like everything else
            assert len(rs.registry) == 0
        assert ("iso-new", "breaker") not in rs.registry
        assert ("iso-new", "retry") not in rs.registry
        assert rs.registry.get("iso-earlier", "breaker") is earlier
        assert earlier.state is rs.BreakerState.CLOSED  # reset when the block ends
        # created again with other defaults: a new test is not bound by the old one's
        with isolated_registry():
            rs.registry.breaker("iso-new", window_size=7)
    finally:
        rs.registry._restore(rs.Registry()._snapshot())  # empty


def test_isolated_registry_gives_fresh_telemetry_and_puts_it_back() -> None:
    def listener(event: object) -> None:
        pass

    mine = CollectorRegistry()
    rs.add_listener(listener)
    try:
        before = _hub.save_state()
        with isolated_registry():
            listeners, metrics, tracing, registry, provider = _hub.save_state()
            assert listeners == () and registry is not before[3]
            assert (metrics, tracing, provider) == (*before[1:3], before[4])
            breaker = rs.CircuitBreaker("iso-metrics")
            trip(breaker, 1)
            assert (
                registry.get_sample_value(
                    "resilient_calls_total",
                    {"policy": "breaker", "name": "iso-metrics", "outcome": "failure"},
                )
                == 1
            )
            rs.configure_telemetry(registry=mine, tracing=False)
            rs.add_listener(print)
        assert _hub.save_state() == before
        assert id(registry) not in _prometheus._cache  # the throw-away registry is let go
        assert (
            REGISTRY.get_sample_value(
                "resilient_calls_total",
                {"policy": "breaker", "name": "iso-metrics", "outcome": "failure"},
            )
            is None
        )  # nothing reached the global metrics
    finally:
        rs.remove_listener(listener)


def test_isolated_registry_on_a_registry_of_your_own() -> None:
    own = rs.Registry()
    kept = own.retry("kept")
    with isolated_registry(own) as registry:
        assert registry is own
        own.retry("dropped")
    assert list(own) == [kept]


def test_isolated_registry_fixture_with_the_fake_clock(
    isolated_registry: rs.Registry, resilient_clock: FakeClock
) -> None:
    breaker = isolated_registry.breaker("fixture-iso", window_size=2, minimum_calls=2)
    trip(breaker)
    resilient_clock.advance(30)
    assert breaker.state is rs.BreakerState.HALF_OPEN


@pytest.mark.anyio
async def test_isolated_registry_fixture_async(isolated_registry: rs.Registry) -> None:
    @rs.policy("fixture-iso-async", "timeout", timeout={"seconds": 5})
    async def call() -> str:
        await anyio.lowlevel.checkpoint()
        return "ok"

    assert await call() == "ok"
    assert ("fixture-iso-async", "timeout") in isolated_registry
