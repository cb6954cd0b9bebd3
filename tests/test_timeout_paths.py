"""The fast async timeout (one loop timer per event loop on asyncio, native cancel scopes on
trio) and the sync ``mode="deadline"``: the same rules as every other timeout path."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import anyio
import pytest

import resilient as rs
from resilient import _loop_deadlines

needs_uncancel = pytest.mark.skipif(
    not _loop_deadlines.AVAILABLE, reason="the loop-timer timeouts need Task.uncancel (3.11+)"
)


# -- asyncio: the shared loop timer ----------------------------------------------------------------
@needs_uncancel
def test_a_timeout_that_fires_cancels_the_call_and_runs_its_finally() -> None:
    cleaned = []

    @rs.Timeout(0.05)
    async def stuck() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(1)

    async def main() -> None:
        with pytest.raises(rs.TimeoutExceeded) as info:
            await stuck()
        assert isinstance(info.value.__cause__, asyncio.CancelledError)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # the request was given back

    asyncio.run(main())
    assert cleaned == [1]


@needs_uncancel
def test_an_outside_cancellation_is_never_a_timeout() -> None:
    timeout = rs.Timeout(30)

    async def main() -> None:
        started = asyncio.Event()

        async def guarded() -> None:
            async def inner() -> None:
                started.set()
                await asyncio.sleep(30)

            await timeout.acall(inner)

        task = asyncio.ensure_future(guarded())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


@needs_uncancel
def test_a_timeout_firing_together_with_an_outside_cancel_lets_the_cancel_through() -> None:
    async def main() -> None:
        async def inner() -> None:
            task = asyncio.current_task()
            assert task is not None
            # both happen before the next await: our deadline passes, and someone cancels
            time.sleep(0.06)  # noqa: ASYNC251 - blocks the loop on purpose
            task.cancel()
            await asyncio.sleep(30)

        with pytest.raises(asyncio.CancelledError):
            await rs.Timeout(0.05).acall(inner)

    asyncio.run(main())


@needs_uncancel
def test_nested_timeouts_name_the_one_that_ran_out() -> None:
    outer, inner = rs.Timeout(0.05, name="outer"), rs.Timeout(30, name="inner")

    async def sleeper() -> None:
        await asyncio.sleep(30)

    async def inner_call() -> None:
        await inner.acall(sleeper)

    async def main() -> None:
        with pytest.raises(rs.TimeoutExceeded) as info:
            await outer.acall(inner_call)
        assert info.value.name == "outer"
        short = rs.Timeout(0.05, name="short")

        async def short_call() -> None:
            await short.acall(sleeper)

        with pytest.raises(rs.TimeoutExceeded) as info:
            await rs.Timeout(30, name="long").acall(short_call)
        assert info.value.name == "short"

    asyncio.run(main())


@needs_uncancel
def test_many_concurrent_timeouts_of_several_lengths_fire_exactly_for_the_slow_calls() -> None:
    lengths = [rs.Timeout(s) for s in (0.05, 0.2, 5.0)]

    async def work(delay: float) -> str:
        await asyncio.sleep(delay)
        return "ok"

    async def one(i: int) -> str:
        timeout = lengths[i % 3]
        delay = 0.0 if i % 2 else timeout.seconds + 0.1  # odd calls are fast, even ones late
        if timeout.seconds == 5.0:
            delay = 0.0
        try:
            return await timeout.acall(work, delay)
        except rs.TimeoutExceeded:
            return "timeout"

    async def main() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(300)))

    results = asyncio.run(main())
    for i, result in enumerate(results):
        late = i % 2 == 0 and i % 3 != 2
        assert result == ("timeout" if late else "ok"), i


@needs_uncancel
def test_a_swallowed_cancellation_returns_and_gives_the_request_back() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "swallowed"
        return "slept"

    async def main() -> None:
        assert await rs.Timeout(0.05).acall(stubborn) == "swallowed"
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await asyncio.sleep(0)  # no stray cancellation is pending for us

    asyncio.run(main())


@needs_uncancel
def test_finished_calls_do_not_pile_up_behind_a_long_one() -> None:
    timeout = rs.Timeout(30)

    async def quick() -> None:
        return None

    async def main() -> int:
        release = asyncio.Event()
        long_call = asyncio.ensure_future(timeout.acall(release.wait))
        await asyncio.sleep(0)
        for _ in range(5000):
            await timeout.acall(quick)
        loop = asyncio.get_running_loop()
        queue = _loop_deadlines._deadlines(loop).queues[30.0]
        size = len(queue.entries)
        release.set()
        await long_call
        return size

    assert asyncio.run(main()) <= 2 * _loop_deadlines._COMPACT_AT


# -- trio: native cancel scopes --------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_timeout_on_both_backends_fires_and_keeps_remaining() -> None:
    budgets: list[float | None] = []

    @rs.Timeout(0.05)
    async def stuck() -> None:
        budgets.append(rs.remaining())
        await anyio.sleep(30)

    with pytest.raises(rs.TimeoutExceeded):
        await stuck()
    assert budgets and budgets[0] is not None and 0 < budgets[0] <= 0.05
    async with rs.Timeout(5):
        remaining = rs.remaining()
        assert remaining is not None and 0 < remaining <= 5


# -- sync: mode="deadline" ------------------------------------------------------------------------
def test_deadline_mode_runs_in_the_callers_thread_with_the_budget() -> None:
    seen = []

    @rs.Timeout(5, mode="deadline")
    def work() -> str:
        seen.append((threading.get_ident(), rs.remaining()))
        return "ok"

    assert work() == "ok"
    ((ident, left),) = seen
    assert ident == threading.get_ident()
    assert left is not None and 0 < left <= 5
    assert rs.remaining() is None


def test_deadline_mode_raises_after_a_call_that_overran() -> None:
    calls = []

    @rs.Timeout(0.01, mode="deadline")
    def slow() -> str:
        calls.append(1)
        time.sleep(0.03)
        return "late"

    with pytest.raises(rs.TimeoutExceeded):
        slow()
    assert calls == [1]  # it ran to its end, in this thread

    @rs.Timeout(0.01, mode="deadline")
    def slow_and_failing() -> None:
        time.sleep(0.03)
        raise KeyError("its own error")

    with pytest.raises(KeyError):
        slow_and_failing()


def test_deadline_mode_decorator_counts_every_outcome_and_nests() -> None:
    """The decorator's inlined deadline path (metrics on) counts what ``call()`` counts, and an
    enclosing deadline shortens the inner one."""
    from prometheus_client import CollectorRegistry

    from resilient.telemetry import reset_telemetry

    registry = CollectorRegistry()
    rs.configure_telemetry(registry=registry, metrics=True, tracing=False)
    try:
        timeout = rs.Timeout(5, mode="deadline", name="metered-deadline")
        budgets: list[float | None] = []

        @timeout
        def work(delay: float) -> str:
            budgets.append(rs.remaining())
            time.sleep(delay)
            return "ok"

        @timeout
        def broken() -> None:
            raise KeyError("its own")

        assert work(0) == "ok"
        assert timeout.call(lambda: "ok") == "ok"  # call(): the same counts
        with pytest.raises(KeyError):
            broken()
        # the outer budget wins over the inner 5 s; the inner error passes through unchanged
        with pytest.raises(rs.TimeoutExceeded) as caught, rs.Timeout(0.01, mode="deadline"):
            work(0.03)
        assert caught.value.name == "metered-deadline"
        assert budgets[0] is not None and 4 < budgets[0] <= 5
        assert budgets[-1] is not None and budgets[-1] <= 0.01

        def count(outcome: str) -> float:
            labels = {"policy": "timeout", "name": "metered-deadline", "outcome": outcome}
            return registry.get_sample_value("resilient_calls_total", labels) or 0.0

        assert (count("success"), count("failure"), count("timeout")) == (2, 1, 1)
        assert rs.remaining() is None
    finally:
        reset_telemetry()


def test_deadline_mode_is_configurable_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__FAST_DB__TIMEOUT__MODE", "deadline")
    timeout = rs.Timeout.from_env("fast-db", seconds=1)
    assert timeout.mode == "deadline" and timeout.settings["mode"] == "deadline"
    assert "mode='deadline'" in repr(timeout)
    with pytest.raises(ValueError, match="mode must be one of 'thread', 'deadline', got 'fast'"):
        rs.Timeout(1, mode="fast")  # type: ignore[arg-type]
    monkeypatch.setenv("RESILIENT__FAST_DB__TIMEOUT__MODE", "later")
    with pytest.raises(rs.ConfigError, match="RESILIENT__FAST_DB__TIMEOUT__MODE"):
        rs.Timeout.from_env("fast-db", seconds=1)


def test_python_version_note() -> None:
    """On 3.10 the asyncio path falls back to an anyio cancel scope (no Task.uncancel)."""
    assert (sys.version_info >= (3, 11)) == _loop_deadlines.AVAILABLE
