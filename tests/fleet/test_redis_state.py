"""``rs.RedisState`` with its sync thread: construction and bad input, the clients it accepts,
the gauge, replicas in one process finding each other, sync and async callers (asyncio and
trio), renamed breakers, script reloading and closing.

Waits here are for background work (the sync thread) with generous bounds, never timing
claims; those are in ``test_fleet_processes.py``, where the issue sets them.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio as aioredis
from fleet_helpers import fleet_state, wait_until
from prometheus_client import CollectorRegistry

import resilient as rs
from resilient.telemetry import configure_telemetry, reset_telemetry

MakeState = Callable[..., rs.RedisState]


def fail() -> None:
    raise ConnectionError("dependency down")


def online(breaker: rs.CircuitBreaker) -> bool:
    return breaker._shared_core.online


def gauge(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value("resilient_state_backend_up", {"name": name})


@pytest.fixture
def metrics() -> Any:
    registry = CollectorRegistry()
    configure_telemetry(registry=registry, metrics=True, tracing=False)
    yield registry
    reset_telemetry()


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://cache:6379/0", "scheme"),
        ("redis://cache:notaport/0", "Port could not be cast"),
        ("redis://cache:6379/zero", "database 'zero' is not a number"),
        ("redis:///0", "names no host"),
        ("redis://cache:6379/0?socket_timout=1", "unknown option 'socket_timout'"),
        ("unix://", "socket's path"),
        ("cache:6379", "scheme"),
    ],
)
def test_a_malformed_url_is_a_config_error_naming_it(url: str, why: str) -> None:
    with pytest.raises(rs.ConfigError) as info:
        rs.RedisState(url)
    assert repr(url) in str(info.value)
    assert why in str(info.value)
    assert "url_or_client" in str(info.value)


def test_other_bad_input_names_the_option() -> None:
    with pytest.raises(TypeError, match="url_or_client must be a Redis URL"):
        rs.RedisState(6379)
    with pytest.raises(ValueError, match="sync_interval"):
        rs.RedisState("redis://127.0.0.1:6379/0", sync_interval=0)
    with pytest.raises(ValueError, match="prefix"):
        rs.RedisState("redis://127.0.0.1:6379/0", prefix="")
    with pytest.raises(TypeError, match="state must be a state backend"):
        rs.CircuitBreaker("bad-state", state="redis://127.0.0.1:6379/0")  # type: ignore[arg-type]


def test_an_unreachable_server_is_not_an_error(
    metrics: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="resilient.fleet")
    state = rs.RedisState("redis://127.0.0.1:1/0", prefix="nowhere")  # nothing listens on 1
    try:
        breaker = rs.CircuitBreaker("unreachable", window_size=2, minimum_calls=2, state=state)
        assert breaker.call(lambda: 7) == 7
        wait_until(lambda: bool(caplog.records), what="the outage is logged")
        assert gauge(metrics, "unreachable") == 0.0
        assert not state.connected
        for _ in range(2):  # local state: the breaker still protects
            with pytest.raises(ConnectionError):
                breaker.call(fail)
        with pytest.raises(rs.CircuitOpenError):
            breaker.call(lambda: 7)
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 1, messages  # one line for the outage, not one per retry
        assert "redis://127.0.0.1:1/0 is unreachable" in messages[0]
        assert "local state" in messages[0]
    finally:
        state.close()


def test_a_password_never_reaches_the_log_or_repr() -> None:
    state = rs.RedisState("redis://user:s3cret@127.0.0.1:1/0")
    try:
        assert "s3cret" not in repr(state)
        assert "redis://127.0.0.1:1/0" in repr(state)
    finally:
        state.close()


def test_import_resilient_does_not_import_redis() -> None:
    code = (
        "import sys, resilient\n"
        "assert 'redis' not in sys.modules, 'import resilient imported redis'\n"
        "resilient.RedisState\n"
        "assert 'redis' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# -- replicas finding each other -----------------------------------------------------------
def test_an_opening_reaches_every_replica(
    make_state: MakeState, metrics: CollectorRegistry
) -> None:
    one, two = make_state(), make_state()
    options = {"window_size": 4, "minimum_calls": 4, "failure_rate_threshold": 1.0}
    a = rs.CircuitBreaker("orders", state=one, **options)
    b = rs.CircuitBreaker("orders", state=two, **options)
    wait_until(lambda: online(a) and online(b), what="both replicas online")
    assert gauge(metrics, "orders") == 1.0
    assert one.connected and two.connected
    for _ in range(4):
        with pytest.raises(ConnectionError):
            a.call(fail)
    wait_until(lambda: b.state is rs.BreakerState.OPEN, what="b sees a's opening")
    with pytest.raises(rs.CircuitOpenError):
        b.call(lambda: 1)


def test_a_failure_is_sent_before_the_next_sync_is_due(
    make_state: MakeState, client: Any, prefix: str
) -> None:
    state = make_state(sync_interval=3600.0)  # the periodic sync never comes in this test
    breaker = rs.CircuitBreaker("early", window_size=1, minimum_calls=1, state=state)
    wait_until(lambda: online(breaker), what="online")
    with pytest.raises(ConnectionError):
        breaker.call(fail)
    wait_until(
        lambda: fleet_state(client, prefix, "early") is rs.BreakerState.OPEN,
        what="the failure's early sync opened the fleet breaker",
    )
    wait_until(lambda: breaker.state is rs.BreakerState.OPEN)


def test_one_state_serves_many_policies_and_clients_of_every_kind(
    make_state: MakeState, redis_url: str, prefix: str, client: Any
) -> None:
    decoded = redis.Redis.from_url(redis_url, decode_responses=True)
    async_client = aioredis.Redis.from_url(redis_url)
    try:
        states = [
            make_state(),
            make_state(decoded),
            make_state(async_client),
        ]
        breakers = [
            rs.CircuitBreaker(f"kind-{i}", window_size=1, minimum_calls=1, state=state)
            for i, state in enumerate(states)
        ]
        extra = rs.CircuitBreaker("kind-extra", state=states[0])
        wait_until(lambda: all(online(b) for b in [*breakers, extra]), what="all online")
        for breaker in breakers:
            with pytest.raises(ConnectionError):
                breaker.call(fail)
        for i in range(len(breakers)):
            wait_until(lambda i=i: fleet_state(client, prefix, f"kind-{i}").value == "open")
        assert fleet_state(client, prefix, "kind-extra") is rs.BreakerState.CLOSED
    finally:
        decoded.close()


def test_settings_and_repr_show_the_backend(make_state: MakeState) -> None:
    state = make_state(sync_interval=0.2)
    breaker = rs.CircuitBreaker("shown", state=state)
    assert breaker.settings["state"] is state
    assert state.sync_interval == 0.2
    assert state.prefix.startswith("rstest-")
    wait_until(lambda: state.connected)
    assert "connected" in repr(state) and "sync_interval=0.2" in repr(state)


@pytest.mark.anyio
async def test_async_callers_share_the_breaker(make_state: MakeState) -> None:
    one, two = make_state(), make_state()
    options = {"window_size": 3, "minimum_calls": 3, "open_duration": 3600.0}
    a = rs.CircuitBreaker("async-dep", state=one, **options)
    b = rs.CircuitBreaker("async-dep", state=two, **options)
    wait_until(lambda: online(a) and online(b))

    @a
    async def failing() -> None:
        await anyio.lowlevel.checkpoint()
        raise ConnectionError("down")

    async def fine() -> int:
        await anyio.lowlevel.checkpoint()
        return 1

    for _ in range(3):
        with pytest.raises(ConnectionError):
            await failing()
    wait_until(lambda: b.state is rs.BreakerState.OPEN, what="b sees the opening")
    with pytest.raises(rs.CircuitOpenError):
        await b.acall(fine)
    with pytest.raises(rs.CircuitOpenError):
        async with b:
            pass


@pytest.mark.anyio
async def test_async_trial_calls_are_admitted_by_the_fleet(make_state: MakeState) -> None:
    one, two = make_state(), make_state()
    options = {"window_size": 1, "minimum_calls": 1, "open_duration": 0.0}
    a = rs.CircuitBreaker("async-trial", state=one, **options)
    b = rs.CircuitBreaker("async-trial", state=two, **options)
    wait_until(lambda: online(a) and online(b))
    with pytest.raises(ConnectionError):
        a.call(fail)
    wait_until(lambda: b.state is rs.BreakerState.HALF_OPEN)
    started, release = anyio.Event(), anyio.Event()

    async def trial() -> int:
        started.set()
        await release.wait()
        return 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(b.acall, trial)  # b's trial holds the fleet's only slot
        await started.wait()
        with pytest.raises(rs.CircuitOpenError) as full:
            a.call(lambda: 1)
        assert full.value.reason == "half_open_full"
        release.set()
    wait_until(lambda: a.state is rs.BreakerState.CLOSED, what="a hears the fleet closed")


def test_an_unnamed_breaker_shares_the_name_it_takes_from_its_function(
    make_state: MakeState, client: Any, prefix: str
) -> None:
    def charge() -> None:
        raise ConnectionError("down")

    replicas = []
    for state in (make_state(), make_state()):
        breaker = rs.CircuitBreaker(window_size=2, minimum_calls=2, state=state)
        replicas.append((breaker, breaker(charge)))
    first, second = replicas
    assert first[0].name == second[0].name == charge.__qualname__
    wait_until(lambda: online(first[0]) and online(second[0]))
    for _, decorated in replicas:
        with pytest.raises(ConnectionError):
            decorated()
    wait_until(lambda: fleet_state(client, prefix, charge.__qualname__).value == "open")
    wait_until(lambda: all(b.state is rs.BreakerState.OPEN for b, _ in replicas))


def test_scripts_are_loaded_again_after_a_flush(
    make_state: MakeState, client: Any, prefix: str
) -> None:
    state = make_state()
    breaker = rs.CircuitBreaker("flushed", window_size=1, minimum_calls=1, state=state)
    wait_until(lambda: online(breaker))
    client.script_flush()  # as after a restart: the server no longer knows the scripts
    with pytest.raises(ConnectionError):
        breaker.call(fail)
    wait_until(lambda: fleet_state(client, prefix, "flushed") is rs.BreakerState.OPEN)
    assert state.connected


def test_close_stops_syncing_and_the_breaker_goes_on_locally(
    make_state: MakeState, metrics: CollectorRegistry, client: Any, prefix: str
) -> None:
    state = make_state()
    breaker = rs.CircuitBreaker("closing", window_size=1, minimum_calls=1, state=state)
    wait_until(lambda: online(breaker))
    state.close()
    assert not online(breaker)
    assert gauge(metrics, "closing") == 0.0
    with pytest.raises(ConnectionError):
        breaker.call(fail)
    assert breaker.state is rs.BreakerState.OPEN  # decided locally...
    assert fleet_state(client, prefix, "closing") is rs.BreakerState.CLOSED  # ...not sent


@pytest.mark.anyio
async def test_a_cancelled_trial_gives_its_slot_back_to_the_fleet(make_state: MakeState) -> None:
    one, two = make_state(), make_state()
    options = {"window_size": 1, "minimum_calls": 1, "open_duration": 0.0}
    a = rs.CircuitBreaker("cancelled-trial", state=one, **options)
    b = rs.CircuitBreaker("cancelled-trial", state=two, **options)
    wait_until(lambda: online(a) and online(b))
    with pytest.raises(ConnectionError):
        a.call(fail)
    wait_until(lambda: b.state is rs.BreakerState.HALF_OPEN)
    started = anyio.Event()

    async def hangs() -> None:
        started.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(b.acall, hangs)  # b holds the fleet's only trial...
        await started.wait()
        with pytest.raises(rs.CircuitOpenError):
            a.call(lambda: 1)
        tg.cancel_scope.cancel()  # ...until its caller is cancelled: never a failure
    # a was told the round is full; it asks the fleet again after its next sync
    wait_until(lambda: not a._shared_core.trials_full, what="a's next sync")
    assert a.call(lambda: 1) == 1  # the slot came back: a's trial closes the breaker
    wait_until(lambda: b.state is rs.BreakerState.CLOSED)


def test_from_env_and_the_registry_take_a_state(
    make_state: MakeState, isolated_registry: Any
) -> None:
    state = make_state()
    from_env = rs.CircuitBreaker.from_env("env-shared", state=state, window_size=7)
    named = rs.registry.breaker("registry-shared", state=state)
    assert from_env.settings["state"] is state and named.settings["state"] is state
    wait_until(lambda: online(from_env) and online(named))
