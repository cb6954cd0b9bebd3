"""Timeout at the public API: real async cancellation, sync callers that never wait past the
deadline, nested budgets and ``rs.remaining()``, and who gets blamed when a budget runs out."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar

import anyio
import anyio.lowlevel
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import resilient as rs
from resilient.telemetry import reset_telemetry
from resilient.telemetry._events import Event, TimeoutHit

WAIT = 10.0  # only reached when something is broken
SHORT = 0.05  # the one real timeout these tests need; no assertion depends on its precision


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def hits(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, TimeoutHit)]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    yield Recorder()


# -- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "error", "shown"),
    [
        (0, ValueError, "0"),
        (-1.5, ValueError, "-1.5"),
        (float("nan"), ValueError, "nan"),
        (float("inf"), ValueError, "inf"),
        ("2s", TypeError, "'2s'"),
        (None, TypeError, "None"),
        (True, TypeError, "True"),
    ],
)
def test_bad_seconds_name_parameter_and_value(
    seconds: object, error: type[Exception], shown: str
) -> None:
    with pytest.raises(error) as info:
        rs.Timeout(seconds)  # type: ignore[arg-type]
    assert "seconds" in str(info.value) and shown in str(info.value)


def test_name_and_seconds() -> None:
    assert rs.Timeout(2).seconds == 2.0
    assert rs.Timeout(1, "db").name == "db"
    assert rs.Timeout(1).name.startswith("timeout-")
    with pytest.raises(ValueError, match="name"):
        rs.Timeout(1, "")


def test_decorator_keeps_signature() -> None:
    timeout = rs.Timeout(WAIT)

    @timeout
    def add(a: int, b: int = 2) -> int:
        """Add."""
        return a + b

    @timeout
    async def aadd(a: int, *, b: int) -> int:
        return a + b

    assert add.__name__ == "add" and add.__doc__ == "Add."
    assert inspect.signature(add) == inspect.signature(add.__wrapped__)  # type: ignore[attr-defined]
    assert list(inspect.signature(aadd).parameters) == ["a", "b"]
    assert inspect.iscoroutinefunction(aadd) and not inspect.iscoroutinefunction(add)
    assert add(1) == 3
    assert anyio.run(lambda: aadd(1, b=3)) == 4


# -- sync ---------------------------------------------------------------------------------------


def test_sync_call_returns_result_and_propagates_errors_unchanged() -> None:
    timeout = rs.Timeout(WAIT)
    assert timeout.call(lambda x: x * 2, 21) == 42
    boom = KeyError("boom")

    def fail() -> None:
        raise boom

    with pytest.raises(KeyError) as info:
        timeout.call(fail)
    assert info.value is boom


def test_sync_call_with_a_budget_beyond_what_a_lock_accepts() -> None:
    # 1e10 s is past threading.TIMEOUT_MAX: waiting for the worker must not overflow
    assert rs.Timeout(1e10).call(lambda: "done") == "done"


def test_sync_caller_does_not_wait_for_a_stuck_worker(recorder: Recorder) -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    @rs.Timeout(SHORT, "slow-io", on_event=recorder)
    def stuck() -> str:
        started.set()
        release.wait(WAIT)
        finished.set()
        return "late"

    try:
        with pytest.raises(rs.TimeoutExceeded) as info:
            stuck()
        # we are back while the function is still blocked: the worker was abandoned
        assert started.is_set() and not finished.is_set()
    finally:
        release.set()
    assert finished.wait(WAIT)  # the abandoned worker ran to its end in the background
    err = info.value
    assert isinstance(err, TimeoutError) and isinstance(err, rs.ResilienceError)
    assert (err.name, err.seconds) == ("slow-io", SHORT)
    assert recorder.hits() == ["slow-io"]


_REQUEST: ContextVar[str] = ContextVar("request", default="none")


def test_sync_worker_sees_the_callers_context_and_deadline() -> None:
    seen: dict[str, object] = {}

    @rs.Timeout(30.0)
    def work() -> None:
        seen["request"] = _REQUEST.get()
        seen["remaining"] = rs.remaining()
        seen["thread"] = threading.current_thread().name

    token = _REQUEST.set("req-7")
    try:
        work()
    finally:
        _REQUEST.reset(token)
    remaining = seen["remaining"]
    assert seen["request"] == "req-7"
    assert isinstance(remaining, float) and 0 < remaining <= 30.0
    assert seen["thread"] != threading.current_thread().name
    assert rs.remaining() is None


def test_sync_worker_runs_inside_the_timeout_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rs.configure_telemetry(tracer_provider=provider, tracing=True, registry=CollectorRegistry())
    try:
        seen = rs.Timeout(WAIT, "traced").call(
            lambda: trace.get_current_span().get_span_context().span_id
        )
    finally:
        reset_telemetry()
    [span] = [s for s in exporter.get_finished_spans() if s.name == "timeout traced"]
    assert span.context is not None and seen == span.context.span_id


def test_sync_workers_are_reused() -> None:
    timeout = rs.Timeout(WAIT)
    names = {timeout.call(lambda: threading.current_thread().name) for _ in range(50)}
    assert len(names) <= 3  # sequential calls go to an idle worker, not a new thread each


def test_sync_nested_timeouts_shrink_and_blame_the_one_that_ran_out(
    recorder: Recorder,
) -> None:
    inner_short = rs.Timeout(SHORT, "inner", on_event=recorder)
    outer_long = rs.Timeout(WAIT, "outer", on_event=recorder)
    budgets: list[float | None] = []
    release = threading.Event()

    def block() -> None:
        budgets.append(rs.remaining())
        release.wait(WAIT)

    try:
        with pytest.raises(rs.TimeoutExceeded) as info:
            outer_long.call(inner_short.call, block)
    finally:
        release.set()
    assert info.value.name == "inner"
    assert recorder.hits() == ["inner"]
    budget = budgets[0]
    assert budget is not None and budget <= SHORT

    recorder.events.clear()
    release.clear()
    inner_long = rs.Timeout(WAIT, "inner", on_event=recorder)
    outer_short = rs.Timeout(SHORT, "outer", on_event=recorder)
    budgets.clear()
    try:
        with pytest.raises(rs.TimeoutExceeded) as info:
            outer_short.call(inner_long.call, block)
    finally:
        release.set()
    assert info.value.name == "outer"
    assert "outer" in recorder.hits()
    budget = budgets[0]
    assert budget is not None and budget <= SHORT  # the inner budget shrank to the outer's


def test_sync_with_block_sets_the_deadline_and_flags_an_overrun(recorder: Recorder) -> None:
    with rs.Timeout(WAIT):
        outer = rs.remaining()
        with rs.Timeout(1.0):
            inner = rs.remaining()
        with rs.Timeout(10 * WAIT):
            capped = rs.remaining()
    assert outer is not None and inner is not None and capped is not None
    assert inner <= 1.0 < outer <= WAIT and capped <= WAIT
    assert rs.remaining() is None

    with pytest.raises(rs.TimeoutExceeded) as info, rs.Timeout(1e-6, "block", on_event=recorder):
        sum(range(100_000))  # finishes, but far later than a microsecond
    assert info.value.name == "block" and recorder.hits() == ["block"]

    # a block that fails keeps its own error even when it also overran
    with pytest.raises(ZeroDivisionError), rs.Timeout(1e-6):
        sum(range(100_000))
        _ = 1 / 0
    assert rs.remaining() is None


# -- async --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_timeout_cancels_for_real(recorder: Recorder) -> None:
    cleaned_up: list[bool] = []

    @rs.Timeout(SHORT, "rpc", on_event=recorder)
    async def slow() -> None:
        try:
            await anyio.sleep(WAIT * 10)
        finally:
            cleaned_up.append(True)

    start = time.monotonic()
    with pytest.raises(rs.TimeoutExceeded) as info:
        await slow()
    assert time.monotonic() - start < WAIT  # not the 100 s the function asked for
    assert cleaned_up == [True]
    assert info.value.name == "rpc"
    assert isinstance(info.value.__cause__, anyio.get_cancelled_exc_class())
    assert recorder.hits() == ["rpc"]
    assert rs.remaining() is None


@pytest.mark.anyio
async def test_async_result_and_errors_pass_through() -> None:
    timeout = rs.Timeout(WAIT)

    async def double(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return 2 * x

    async def fail() -> None:
        raise LookupError("nope")

    assert await timeout.acall(double, 21) == 42
    with pytest.raises(LookupError, match="nope"):
        await timeout.acall(fail)


@pytest.mark.anyio
async def test_async_remaining_inside_nested_timeouts() -> None:
    seen: list[float | None] = []

    async def probe() -> None:
        seen.append(rs.remaining())

    await rs.Timeout(WAIT).acall(rs.Timeout(1.0).acall, probe)
    await rs.Timeout(1.0).acall(rs.Timeout(WAIT).acall, probe)
    async with rs.Timeout(2.0):
        await probe()
        async with rs.Timeout(WAIT):
            await probe()
    assert all(s is not None and s > 0 for s in seen)
    assert seen[0] is not None and seen[0] <= 1.0
    assert seen[1] is not None and seen[1] <= 1.0
    assert seen[2] is not None and seen[2] <= 2.0
    assert seen[3] is not None and seen[3] <= 2.0
    assert rs.remaining() is None


@pytest.mark.anyio
async def test_async_nested_timeouts_blame_the_one_that_ran_out() -> None:
    async def forever() -> None:
        await anyio.sleep_forever()

    inner, outer = rs.Timeout(SHORT, "inner"), rs.Timeout(WAIT, "outer")
    with pytest.raises(rs.TimeoutExceeded) as info:
        await outer.acall(inner.acall, forever)
    assert info.value.name == "inner"

    inner, outer = rs.Timeout(WAIT, "inner"), rs.Timeout(SHORT, "outer")
    with pytest.raises(rs.TimeoutExceeded) as info:
        await outer.acall(inner.acall, forever)
    assert info.value.name == "outer"


@pytest.mark.anyio
async def test_outer_cancellation_is_not_turned_into_timeout_exceeded(
    recorder: Recorder,
) -> None:
    timeout = rs.Timeout(WAIT, on_event=recorder)
    reached_end: list[bool] = []

    with anyio.CancelScope() as outer:

        @timeout
        async def work() -> None:
            outer.cancel()
            await anyio.sleep(WAIT)

        await work()
        reached_end.append(True)
    assert outer.cancelled_caught
    assert reached_end == [] and recorder.hits() == []

    with anyio.CancelScope() as outer:
        async with timeout:
            outer.cancel()
            await anyio.sleep(WAIT)
    assert outer.cancelled_caught and recorder.hits() == []


@pytest.mark.anyio
async def test_enclosing_deadline_expiring_together_with_ours_stays_a_cancellation() -> None:
    # both deadlines have passed by the first checkpoint: the enclosing scope must win
    with anyio.CancelScope(deadline=anyio.current_time() - 1) as outer:
        await rs.Timeout(1e-9).acall(anyio.sleep, 1)
    assert outer.cancelled_caught


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_native_asyncio_cancellation_propagates() -> None:
    started = asyncio.Event()

    @rs.Timeout(WAIT)
    async def work() -> None:
        started.set()
        await asyncio.sleep(WAIT)

    task = asyncio.ensure_future(work())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.anyio
async def test_async_with_cancels_the_block(recorder: Recorder) -> None:
    after: list[str] = []
    with pytest.raises(rs.TimeoutExceeded) as info:
        async with rs.Timeout(SHORT, "block", on_event=recorder):
            try:
                await anyio.sleep(WAIT * 10)
            finally:
                after.append("finally")
            after.append("not reached")
    assert after == ["finally"]
    assert info.value.name == "block" and recorder.hits() == ["block"]
    assert rs.remaining() is None

    async with rs.Timeout(WAIT) as t:
        await anyio.lowlevel.checkpoint()
    assert t.seconds == WAIT


def test_timeout_and_bulkhead_in_a_pipeline_release_their_slot() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=1)
    release = threading.Event()

    @rs.pipeline(rs.Timeout(SHORT), bulkhead)
    def stuck() -> None:
        release.wait(WAIT)

    try:
        with pytest.raises(rs.TimeoutExceeded):
            stuck()
        # the abandoned worker still runs and holds its slot (on a loaded machine it may take
        # its slot only after the caller gave up: wait for it, never past WAIT)
        deadline = time.monotonic() + WAIT
        while bulkhead.in_flight != 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert bulkhead.in_flight == 1
        # a new call queues behind it and gets the slot once the worker lets go
        release.set()
        assert bulkhead.call(lambda: "after") == "after"
    finally:
        release.set()
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)
