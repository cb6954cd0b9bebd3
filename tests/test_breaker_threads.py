"""One CircuitBreaker shared by many threads (and event loops): exact accounting, bounded
half-open concurrency, no deadlock, no leaked trial."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Iterator

import anyio
import anyio.lowlevel
import pytest
import trio

import resilient as rs
from resilient.telemetry import reset_telemetry

THREADS = 8
CALLS = 20_000


class Boom(Exception):
    pass


@pytest.fixture(autouse=True)
def _quiet_and_interleaved() -> Iterator[None]:
    """No metrics/spans (we measure the breaker, not prometheus) and a short GIL switch
    interval, so threads really interleave inside the breaker's critical sections."""
    rs.configure_telemetry(metrics=False, tracing=False)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(interval)
    reset_telemetry()


def run_threads(work: Callable[[int], None]) -> None:
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            start.wait()
            work(index)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a thread is stuck: deadlock in the breaker?"
    assert errors == []


def test_every_outcome_is_recorded_exactly_once() -> None:
    total = THREADS * CALLS
    b = rs.CircuitBreaker(
        "threads",
        window_size=total,
        minimum_calls=total,
        failure_rate_threshold=1.0,
    )

    def call(i: int) -> None:
        if i % 10 == 0:
            raise Boom(i)

    def work(index: int) -> None:
        for i in range(CALLS):
            with contextlib.suppress(Boom):
                b.call(call, i)

    run_threads(work)
    metrics = b.metrics
    assert metrics.state is rs.BreakerState.CLOSED
    assert (metrics.calls, metrics.failures) == (total, total // 10)


def test_half_open_never_runs_more_trials_than_allowed() -> None:
    limit = 3
    b = rs.CircuitBreaker(
        "trials",
        window_size=1,
        minimum_calls=1,
        open_duration=0,  # OPEN -> HALF_OPEN at once: every admitted call is a trial
        half_open_max_calls=limit,
    )
    guard = threading.Lock()
    running = 0
    peak = 0
    admitted = [0] * THREADS
    rejected = [0] * THREADS

    def always_fails() -> None:
        nonlocal running, peak
        with guard:
            running += 1
            peak = max(peak, running)
        for _ in range(20):  # a little work, so other threads get in meanwhile
            pass
        with guard:
            running -= 1
        raise Boom("still down")

    with pytest.raises(Boom):
        b.call(always_fails)
    assert b.state is rs.BreakerState.HALF_OPEN
    peak = 0

    def work(index: int) -> None:
        for _ in range(CALLS):
            try:
                b.call(always_fails)
            except Boom:
                admitted[index] += 1
            except rs.CircuitOpenError as err:
                assert err.reason in ("half_open_full", "open")
                rejected[index] += 1

    run_threads(work)
    assert 1 <= peak <= limit
    assert sum(admitted) + sum(rejected) == THREADS * CALLS
    assert sum(admitted) > 0


def test_mixed_outcomes_no_deadlock_and_no_leaked_trial() -> None:
    b = rs.CircuitBreaker(
        "mixed",
        window_size=20,
        minimum_calls=5,
        failure_rate_threshold=0.5,
        open_duration=0,
        half_open_max_calls=2,
    )
    outcomes = [0] * THREADS
    calls_per_thread = CALLS // 4

    def maybe_fails(i: int) -> int:
        if i % 3 == 0:
            raise Boom(i)
        return i

    def work(index: int) -> None:
        for i in range(calls_per_thread):
            with contextlib.suppress(Boom, rs.CircuitOpenError):
                b.call(maybe_fails, i + index)
            outcomes[index] += 1

    run_threads(work)
    assert sum(outcomes) == THREADS * calls_per_thread
    # every trial reported back: whatever state the race left, the next caller gets in
    assert b.state in (rs.BreakerState.CLOSED, rs.BreakerState.HALF_OPEN)
    assert b.call(lambda: "ok") == "ok"


def test_threads_asyncio_and_trio_share_one_breaker() -> None:
    per_runner = 3_000
    b = rs.CircuitBreaker(
        "everyone",
        window_size=3 * per_runner,
        minimum_calls=3 * per_runner,
        failure_rate_threshold=1.0,
    )

    async def work(i: int) -> int:
        await anyio.lowlevel.checkpoint()
        if i % 4 == 0:
            raise Boom(i)
        return i

    async def many() -> None:
        for i in range(per_runner):
            with contextlib.suppress(Boom):
                await b.acall(work, i)

    def sync_calls() -> None:
        for i in range(per_runner):
            try:
                with b:
                    if i % 4 == 0:
                        raise Boom(i)
            except Boom:
                pass

    threads = [
        threading.Thread(target=asyncio.run, args=(many(),)),
        threading.Thread(target=trio.run, args=(many,)),
        threading.Thread(target=sync_calls),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    metrics = b.metrics
    assert (metrics.calls, metrics.failures) == (3 * per_runner, 3 * per_runner // 4)
