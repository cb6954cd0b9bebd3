"""AdaptiveBulkhead at the public API: the limit finds a dependency's capacity, grows while
latency is flat, ignores what says nothing about capacity, and the slots behave like a
bulkhead's for threads, asyncio and trio."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

import resilient as rs
from resilient.telemetry import reset_telemetry
from resilient.telemetry._events import AdaptiveLimitChanged, BulkheadQueued, Event
from resilient.testing import FakeClock

WAIT = 10.0  # real seconds; only reached when something is broken
BASE = 0.01  # the simulated dependency's latency when it is not overloaded (seconds)


def simulate(
    algorithm: str,
    latency: Callable[[int], float],
    *,
    calls: int,
    clients: int = 100,
    seed: int = 1,
    **settings: Any,
) -> tuple[rs.AdaptiveBulkhead, list[int]]:
    """``clients`` trio tasks call the dependency through one adaptive bulkhead, back to back,
    on trio's simulated clock (no real waiting); a call takes ``latency(calls in flight)``
    seconds, +-10%. Returns the bulkhead and its limit after each call."""
    settings.setdefault("max_queued", clients)  # callers wait for a slot instead of spinning
    rng = random.Random(seed)
    limits: list[int] = []
    box: list[rs.AdaptiveBulkhead] = []

    async def main() -> None:
        bulkhead = rs.AdaptiveBulkhead(algorithm=algorithm, clock=trio.current_time, **settings)
        box.append(bulkhead)

        async def client() -> None:
            while len(limits) < calls:
                async with bulkhead:
                    await trio.sleep(latency(bulkhead.in_flight) * rng.uniform(0.9, 1.1))
                limits.append(bulkhead.limit)

        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(client)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return box[0], limits[:calls]


def overloaded_past_30(in_flight: int) -> float:
    """Flat up to 30 calls at once; every 10 more add one base latency (it queues and
    thrashes)."""
    return BASE * (1 + max(0, in_flight - 30) / 10)


# -- the limit follows latency (acceptance) -----------------------------------------------------
@pytest.mark.parametrize("algorithm", ["gradient2", "aimd"])
def test_the_limit_settles_near_the_capacity_of_a_dependency(algorithm: str) -> None:
    """Latency rises past 30 calls at once: within 2,000 calls the limit settles between 20
    and 40 (starting from 20, with 100 callers pushing)."""
    bulkhead, limits = simulate(algorithm, overloaded_past_30, calls=2_000)
    settled = limits[1_000:]
    assert min(settled) >= 20 and max(settled) <= 40, (min(settled), max(settled))
    assert 20 <= bulkhead.limit <= 40
    assert max(limits) > 20  # it did move: up to the knee, then back


@pytest.mark.parametrize("algorithm", ["gradient2", "aimd"])
def test_with_flat_latency_the_limit_grows_to_max_limit(algorithm: str) -> None:
    bulkhead, limits = simulate(
        algorithm, lambda in_flight: BASE, calls=3_000, max_limit=60, initial=20
    )
    assert limits[-1] == 60 == bulkhead.limit
    assert max(limits) == 60  # and never past it
    assert limits == sorted(limits)  # flat latency never pushes it down


def test_gradient2_settles_on_a_dependency_that_shares_30_workers() -> None:
    """Processor sharing: latency grows linearly past 30 calls at once (no thrashing)."""
    _, limits = simulate(
        "gradient2", lambda in_flight: BASE * max(1.0, in_flight / 30), calls=2_000
    )
    assert min(limits[1_000:]) >= 20 and max(limits[1_000:]) <= 40


# -- what never moves it ------------------------------------------------------------------------
def _feed(bulkhead: rs.AdaptiveBulkhead, clock: FakeClock, rtt: float, count: int) -> None:
    """``count`` completed calls of ``rtt`` seconds each, one after the other."""
    for _ in range(count):
        with bulkhead:
            clock.advance(rtt)


def test_rejections_cancellations_and_inner_rejections_never_move_the_limit() -> None:
    """Two bulkheads get the same completed calls; one also sees rejections, cancelled calls
    and calls refused further in. Their limits must move identically."""
    clocks = [FakeClock(), FakeClock()]
    plain, noisy = (
        rs.AdaptiveBulkhead(initial=2, max_limit=50, algorithm="aimd", clock=c) for c in clocks
    )

    def noise() -> None:
        held = noisy.limit
        for _ in range(held):  # take every slot, so the next calls are rejected
            noisy.__enter__()
        for _ in range(5):
            with pytest.raises(rs.BulkheadFullError):
                noisy.call(lambda: None)
        cancelled = asyncio.CancelledError()
        for _ in range(held):  # ... and let go of them as cancelled calls
            noisy.__exit__(type(cancelled), cancelled, None)
        for error in (KeyboardInterrupt(), rs.CircuitOpenError("inner", 1.0)):
            with pytest.raises(type(error)), noisy:
                clocks[1].advance(5.0)  # a huge latency that must not count
                raise error

    for round_ in range(20):
        _feed(plain, clocks[0], 0.01 if round_ % 4 else 0.05, 7)
        _feed(noisy, clocks[1], 0.01 if round_ % 4 else 0.05, 7)
        noise()
        clocks[0].advance(10.0)
        clocks[1].advance(0.0)
        assert noisy.limit == plain.limit
        assert noisy.in_flight == 0
    assert plain.limit != 2  # the fed calls did move it


@pytest.mark.anyio
async def test_a_cancelled_async_call_is_no_sample_and_frees_its_slot() -> None:
    clock = FakeClock()
    bulkhead = rs.AdaptiveBulkhead(initial=1, max_limit=5, algorithm="aimd", clock=clock)
    for _ in range(9):
        async with bulkhead:
            clock.advance(0.01)
    # one more sample closes the window (+1): a cancelled call must not be that sample
    with anyio.CancelScope() as scope:
        async with bulkhead:
            clock.advance(0.01)
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert (bulkhead.limit, bulkhead.in_flight) == (1, 0)
    async with bulkhead:
        clock.advance(0.01)
    assert bulkhead.limit == 2


def test_timeouts_are_drops_that_lower_the_limit() -> None:
    clock = FakeClock()
    bulkhead = rs.AdaptiveBulkhead(initial=20, algorithm="aimd", clock=clock)

    def slow() -> None:
        clock.advance(0.01)
        raise rs.TimeoutExceeded("inner", 0.01)

    for _ in range(10):
        with pytest.raises(rs.TimeoutExceeded):
            bulkhead.call(slow)
    assert bulkhead.limit == 18  # one window with a drop: x0.9
    for _ in range(10):
        with pytest.raises(TimeoutError):
            bulkhead.call(lambda: _raise(TimeoutError("socket")))
    assert bulkhead.limit == 16


def _raise(error: BaseException) -> None:
    raise error


def test_ordinary_failures_are_samples_like_successes() -> None:
    clock = FakeClock()
    bulkhead = rs.AdaptiveBulkhead(initial=2, algorithm="aimd", clock=clock)
    for _ in range(10):
        with pytest.raises(KeyError), bulkhead:
            clock.advance(0.01)
            raise KeyError("missing")
    assert bulkhead.limit == 3  # one call at a time uses half of 2: +1


def test_a_lower_limit_interrupts_nothing_and_waits_for_calls_to_finish() -> None:
    clock = FakeClock()
    bulkhead = rs.AdaptiveBulkhead(initial=4, min_limit=1, algorithm="aimd", clock=clock)
    holders = [bulkhead.__enter__() for _ in range(3)]  # three calls in flight (nested)
    assert len(holders) == 3 and bulkhead.in_flight == 3
    for _ in range(10):  # a window of timeouts: 4 -> 3
        with pytest.raises(rs.TimeoutExceeded), bulkhead:
            clock.advance(0.01)
            raise rs.TimeoutExceeded("t", 0.01)
    assert bulkhead.limit == 3 and bulkhead.in_flight == 3
    with pytest.raises(rs.BulkheadFullError) as info:
        bulkhead.call(lambda: None)
    assert info.value.max_concurrent == 3
    bulkhead.__exit__(None, None, None)
    assert bulkhead.call(lambda: "in") == "in"
    bulkhead.__exit__(None, None, None)
    bulkhead.__exit__(None, None, None)
    assert bulkhead.in_flight == 0


# -- a bulkhead for threads, asyncio and trio ---------------------------------------------------
@pytest.mark.anyio
async def test_task_and_thread_share_one_fifo_queue() -> None:
    events: list[Event] = []
    seen = threading.Condition()

    def record(event: Event) -> None:
        with seen:
            events.append(event)
            seen.notify_all()

    bulkhead = rs.AdaptiveBulkhead(initial=1, max_limit=1, max_queued=2, on_event=record)
    order: list[str] = []

    def wait_queued(count: int) -> None:
        with seen:
            assert seen.wait_for(
                lambda: sum(isinstance(e, BulkheadQueued) for e in events) >= count, WAIT
            )

    async def until_queued(count: int) -> None:
        await anyio.to_thread.run_sync(wait_queued, count)

    def thread_waiter() -> None:
        with bulkhead:
            order.append("thread")

    async def task_waiter() -> None:
        async with bulkhead:
            order.append("task")

    inside = anyio.Event()
    let_go = anyio.Event()

    async def holder() -> None:
        async with bulkhead:
            inside.set()
            await let_go.wait()

    thread = threading.Thread(target=thread_waiter, daemon=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await inside.wait()
        tg.start_soon(task_waiter)  # queued first
        await until_queued(1)
        thread.start()
        await until_queued(2)
        assert bulkhead.queued == 2
        let_go.set()
    await anyio.to_thread.run_sync(thread.join, WAIT)
    assert order == ["task", "thread"]
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


# -- construction, configuration, telemetry ------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"min_limit": 50, "max_limit": 10}, ValueError, ["min_limit", "max_limit", "50", "10"]),
        ({"algorithm": "vegas"}, ValueError, ["algorithm", "'vegas'"]),
        ({"initial": 500}, ValueError, ["initial", "500"]),
        ({"initial": 0}, ValueError, ["initial", "0"]),
        ({"min_limit": 0}, ValueError, ["min_limit", "0"]),
        ({"max_limit": 2.5}, TypeError, ["max_limit", "2.5"]),
        ({"max_queued": -1}, ValueError, ["max_queued", "-1"]),
        ({"queue_timeout": -1}, ValueError, ["queue_timeout", "-1"]),
        ({"clock": "now"}, TypeError, ["clock", "'now'"]),
    ],
)
def test_bad_arguments_name_the_option_and_the_value(
    kwargs: dict[str, Any], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as info:
        rs.AdaptiveBulkhead(**kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("env", "culprit"),
    [
        ({"ALGORITHM": "vegas"}, "ALGORITHM"),
        ({"MIN_LIMIT": "50", "MAX_LIMIT": "10"}, "MIN_LIMIT"),
        ({"INITIAL": "many"}, "INITIAL"),
        ({"QUEUE_TIMEOUT": "-2s"}, "QUEUE_TIMEOUT"),
    ],
)
def test_bad_environment_values_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], culprit: str
) -> None:
    for field, value in env.items():
        monkeypatch.setenv(f"RESILIENT__DB__ADAPTIVE_BULKHEAD__{field}", value)
    with pytest.raises(rs.ConfigError, match=f"RESILIENT__DB__ADAPTIVE_BULKHEAD__{culprit}"):
        rs.AdaptiveBulkhead.from_env("db")


def test_defaults_read_only_view_and_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    bulkhead = rs.AdaptiveBulkhead("db")
    assert (bulkhead.limit, bulkhead.min_limit, bulkhead.max_limit) == (20, 1, 200)
    assert (bulkhead.algorithm, bulkhead.max_queued, bulkhead.queue_timeout) == (
        "gradient2",
        0,
        None,
    )
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)
    assert "gradient2" in repr(bulkhead) and "0/20" in repr(bulkhead)
    assert rs.AdaptiveBulkhead().name.startswith("adaptive_bulkhead-")
    monkeypatch.setenv("RESILIENT__SEARCH__ADAPTIVE_BULKHEAD__ALGORITHM", "aimd")
    registry = rs.Registry()
    found = registry.adaptive_bulkhead("search", max_limit=80)
    assert registry.adaptive_bulkhead("search") is found
    assert (found.algorithm, found.max_limit) == ("aimd", 80)
    pipe = registry.policy("search", "adaptive_bulkhead", "timeout", timeout={"seconds": 1.0})
    assert [p.kind for p in pipe.policies] == ["timeout", "adaptive_bulkhead"]


def test_gauges_read_limit_and_in_flight_and_changes_are_events() -> None:
    registry = CollectorRegistry()
    rs.configure_telemetry(registry=registry, metrics=True, tracing=False)
    events: list[Event] = []
    try:
        clock = FakeClock()
        bulkhead = rs.AdaptiveBulkhead(
            "metered", initial=2, algorithm="aimd", clock=clock, on_event=events.append
        )
        assert registry.get_sample_value("resilient_bulkhead_limit", {"name": "metered"}) == 2
        with bulkhead:
            value = registry.get_sample_value("resilient_bulkhead_in_flight", {"name": "metered"})
            assert value == 1
        _feed(bulkhead, clock, 0.01, 9)
        assert registry.get_sample_value("resilient_bulkhead_limit", {"name": "metered"}) == 3
        (changed,) = [e for e in events if isinstance(e, AdaptiveLimitChanged)]
        assert (changed.from_limit, changed.to_limit) == (2, 3)
        assert changed.rtt == pytest.approx(0.009)  # nine calls of 10 ms, one of 0
        assert bulkhead.call(lambda: "counted") == "counted"  # (``with`` blocks are not calls)
        calls = {"policy": "adaptive_bulkhead", "name": "metered", "outcome": "success"}
        assert registry.get_sample_value("resilient_calls_total", calls) == 1
    finally:
        reset_telemetry()
