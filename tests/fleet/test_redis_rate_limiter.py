"""``rs.RateLimiter(..., state=rs.RedisState(...))``: one bucket for every replica.

Two ``RedisState`` instances on one prefix stand for two replicas. Needs the machine's Redis
(skipped, naming it, otherwise); the unreachable-server case needs none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

import resilient as rs

MakeState = Callable[..., rs.RedisState]


def connected(limiter: rs.RateLimiter) -> rs.RateLimiter:
    """``limiter`` once its state has reached Redis (until then it decides locally; a state
    connects when the first policy binds to it)."""
    state = limiter.settings["state"]
    deadline = time.monotonic() + 10
    while not state.connected:
        assert time.monotonic() < deadline, "Redis never answered"
        time.sleep(0.005)
    return limiter


def test_replicas_share_one_bucket_and_are_told_when_to_come_back(make_state: MakeState) -> None:
    one = connected(rs.RateLimiter("api", rate=1.0, per=60.0, burst=3, state=make_state()))
    two = connected(rs.RateLimiter("api", rate=1.0, per=60.0, burst=3, state=make_state()))
    assert [one.call(lambda i=i: i) for i in range(3)] == [0, 1, 2]  # the whole fleet burst
    with pytest.raises(rs.RateLimitedError) as info:
        two.call(lambda: pytest.fail("called"))
    assert 50.0 < info.value.retry_after <= 60.0  # the fleet's next token: a minute apart
    assert one.settings["state"] is not None


@pytest.mark.anyio
async def test_a_caller_waits_for_the_fleet_token_within_max_wait(make_state: MakeState) -> None:
    limiter = connected(rs.RateLimiter("api", rate=20.0, burst=1, max_wait=1.0, state=make_state()))

    async def work() -> str:
        return "done"

    started = time.monotonic()
    assert [await limiter.acall(work) for _ in range(3)] == ["done"] * 3
    assert time.monotonic() - started >= 0.08  # two tokens 50 ms apart were waited for


def test_sync_callers_wait_too_and_the_fleet_limit_holds(make_state: MakeState) -> None:
    replicas = [
        connected(rs.RateLimiter("api", rate=50.0, burst=5, max_wait=2.0, state=make_state()))
        for _ in range(2)
    ]
    admitted = [0, 0]
    started = time.monotonic()

    def hammer(i: int) -> None:
        while time.monotonic() - started < 0.5:
            replicas[i].call(lambda: None)
            admitted[i] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - started
    assert sum(admitted) <= 5 + 50 * elapsed + 1  # burst + rate x elapsed, for the fleet
    assert all(n > 0 for n in admitted)


def test_an_unreachable_backend_means_a_local_bucket_and_the_gauge_at_0() -> None:
    pytest.importorskip("redis", reason="the redis extra is not installed")
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    rs.configure_telemetry(registry=registry, metrics=True, tracing=False)
    state = rs.RedisState("redis://127.0.0.1:1/0", prefix="unreachable")
    try:
        limiter = rs.RateLimiter("offline-api", rate=1.0, per=60.0, burst=2, state=state)
        assert limiter.call(lambda: 1) == 1 and limiter.call(lambda: 2) == 2
        with pytest.raises(rs.RateLimitedError) as info:  # the local bucket's burst is spent
            limiter.call(lambda: 3)
        assert info.value.retry_after == pytest.approx(60.0, abs=1.0)
        value = registry.get_sample_value("resilient_state_backend_up", {"name": "offline-api"})
        assert value == 0.0
    finally:
        state.close()
        rs.configure_telemetry(registry=None)
        from resilient.telemetry import reset_telemetry

        reset_telemetry()


def test_state_must_be_a_state_backend() -> None:
    with pytest.raises(TypeError, match="state"):
        rs.RateLimiter(rate=1.0, state="redis://localhost")  # type: ignore[arg-type]
