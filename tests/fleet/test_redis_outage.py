"""Redis stopped mid-test: a redis-server the test starts on a free port (nothing on disk),
then kills. Calls keep flowing on local state, the gauge drops to 0 with one log line, and
everything comes back by itself when the server does.

Skipped when ``redis-server`` is not installed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fleet_helpers import RedisServer, new_prefix, wait_until
from prometheus_client import CollectorRegistry

import resilient as rs
from resilient.telemetry import configure_telemetry, reset_telemetry


@pytest.fixture
def metrics() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    configure_telemetry(registry=registry, metrics=True, tracing=False)
    yield registry
    reset_telemetry()


def up(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value("resilient_state_backend_up", {"name": name})


def fail() -> None:
    raise ConnectionError("dependency down")


@pytest.mark.slow
def test_calls_flow_on_local_state_while_redis_is_down(
    redis_server: RedisServer, metrics: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="resilient.fleet")
    state = rs.RedisState(redis_server.url, prefix=new_prefix(), sync_interval=0.05)
    try:
        breaker = rs.CircuitBreaker(
            "outage", window_size=5, minimum_calls=5, failure_rate_threshold=1.0, state=state
        )
        wait_until(lambda: up(metrics, "outage") == 1.0, what="gauge 1 once connected")
        assert breaker._shared_core.online

        redis_server.stop()
        answered = 0
        while up(metrics, "outage") != 0.0:  # calls made while the outage is being noticed
            assert breaker.call(lambda: 1) == 1
            answered += 1
            assert answered < 1_000_000, "the gauge never dropped"
        assert not breaker._shared_core.online
        for _ in range(100):
            assert breaker.call(lambda: 1) == 1
        for _ in range(5):  # local state still protects the dependency
            with pytest.raises(ConnectionError):
                breaker.call(fail)
        with pytest.raises(rs.CircuitOpenError):
            breaker.call(lambda: 1)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "unreachable" in warnings[0].getMessage()

        redis_server.start()  # same port, empty: the fleet's record was lost with the server
        wait_until(lambda: up(metrics, "outage") == 1.0, timeout=30, what="gauge back to 1")
        wait_until(lambda: breaker._shared_core.online, what="the breaker rejoins the fleet")
        assert breaker.state is rs.BreakerState.CLOSED  # the fleet's state wins
        assert breaker.call(lambda: 1) == 1
        assert any("reachable again" in r.getMessage() for r in caplog.records)
        assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    finally:
        state.close()


def test_a_trial_request_that_finds_redis_gone_is_answered_locally(
    redis_server: RedisServer, metrics: CollectorRegistry
) -> None:
    state = rs.RedisState(redis_server.url, prefix=new_prefix(), sync_interval=0.05)
    try:
        breaker = rs.CircuitBreaker(
            "trial-outage", window_size=1, minimum_calls=1, open_duration=0.0, state=state
        )
        wait_until(lambda: breaker._shared_core.online)
        with pytest.raises(ConnectionError):
            breaker.call(fail)
        wait_until(lambda: breaker.state is rs.BreakerState.HALF_OPEN)
        redis_server.stop()
        # the trial request fails in this caller's thread: the local breaker admits the trial
        assert breaker.call(lambda: 1) == 1
        assert breaker.state is rs.BreakerState.CLOSED
        assert up(metrics, "trial-outage") == 0.0
    finally:
        state.close()


def test_manual_control_while_redis_is_down_is_local(redis_server: RedisServer) -> None:
    state = rs.RedisState(redis_server.url, prefix=new_prefix(), sync_interval=0.05)
    try:
        breaker = rs.CircuitBreaker("manual-outage", state=state)
        wait_until(lambda: state.connected)
        redis_server.stop()
        wait_until(lambda: not state.connected, what="the outage is noticed")
        breaker.force_open()
        with pytest.raises(rs.CircuitOpenError):
            breaker.call(lambda: 1)
        breaker.reset()
        assert breaker.call(lambda: 1) == 1
    finally:
        state.close()
