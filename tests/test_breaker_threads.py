"""One CircuitBreaker shared by many threads (and event loops): exact accounting, bounded
half-open concurrency, no deadlock, no leaked trial."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator

import anyio
import anyio.lowlevel
import pytest
import trio

import resilient as rs
from resilient.telemetry import reset_telemetry
from resilient.testing import FakeClock

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


def test_lock_free_successes_keep_the_window_consistent() -> None:
    """A full ring of successes is where successes skip the lock (they only rotate it):
    with eight threads racing failures through the locked path, the totals must still equal
    the ring's contents, and the ring must still move."""
    size = 50
    b = rs.CircuitBreaker(
        "lock-free", window_size=size, minimum_calls=size, failure_rate_threshold=1.0
    )

    def call(i: int) -> None:
        if i % 7 == 0:
            raise Boom(i)

    def work(index: int) -> None:
        for i in range(CALLS // 4):
            with contextlib.suppress(Boom):
                b.call(call, i + index)

    run_threads(work)
    slots = list(b._core.window.slots)  # type: ignore[attr-defined]
    metrics = b.metrics
    assert metrics.state is rs.BreakerState.CLOSED
    assert metrics.calls == size == len(slots)
    assert metrics.failures == sum(slot & 1 for slot in slots) > 0
    for _ in range(size):  # one lap of successes replaces every outcome in the ring
        b.call(lambda: None)
    assert (b.metrics.calls, b.metrics.failures) == (size, 0)


def test_half_open_never_runs_more_trials_than_allowed() -> None:
    """Round after round, all threads race for the trial slots of one half-open period while
    the admitted trials are held inside the breaker: exactly ``limit`` get in, every other
    caller is turned away, and the failed round re-opens the breaker."""
    limit = 3
    clock = FakeClock()
    b = rs.CircuitBreaker(
        "trials",
        window_size=1,
        minimum_calls=1,
        open_duration=10.0,
        half_open_max_calls=limit,
        clock=clock,
    )
    with pytest.raises(Boom):
        b.call(_raise_boom)
    assert b.state is rs.BreakerState.OPEN

    guard = threading.Lock()
    gate = threading.Event()
    running = 0
    peak = 0
    outcomes: list[str] = []

    def trial() -> None:
        nonlocal running, peak
        with guard:
            running += 1
            peak = max(peak, running)
        gate.wait(10)
        with guard:
            running -= 1
        raise Boom("still down")

    def attempt() -> None:
        try:
            b.call(trial)
        except Boom:
            outcome = "trial"
        except rs.CircuitOpenError as err:
            outcome = err.reason
        with guard:
            outcomes.append(outcome)

    for _ in range(20):
        clock.advance(10.0)
        gate.clear()
        outcomes.clear()
        peak = 0
        threads = [threading.Thread(target=attempt) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for _ in range(10_000):  # wait (bounded) until every non-trial caller was answered
            with guard:
                if len(outcomes) == THREADS - limit:
                    break
            time.sleep(0.001)
        with guard:
            assert running == limit, "exactly half_open_max_calls trials run at once"
            assert outcomes == ["half_open_full"] * (THREADS - limit)
        gate.set()
        for t in threads:
            t.join(10)
        assert peak == limit
        assert sorted(outcomes) == sorted(
            ["trial"] * limit + ["half_open_full"] * (THREADS - limit)
        )
        assert b.state is rs.BreakerState.OPEN, "a failed round re-opens the breaker"


def _raise_boom() -> None:
    raise Boom("down")


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
