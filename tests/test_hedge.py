"""Hedge at the public API: asyncio, trio and threads, time moved by a FakeClock (no sleeps).

What users rely on: a slow attempt is overtaken by a hedge started after ``delay``; the loser
is cancelled and has finished before the call returns; all attempts failing raises the last
error; a cancelled caller leaves no attempt behind; a call that must not be repeated is never
duplicated; and the hedge composes with Retry, Timeout and ``rs.remaining()``.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import resilient as rs
from resilient._no_retry import NO_RETRY
from resilient.telemetry import HedgeStarted, configure_telemetry, reset_telemetry
from resilient.telemetry._events import Event
from resilient.testing import FakeClock

WAIT = 10.0  # only reached when something is broken


class Boom(Exception):
    pass


class Fatal(Exception):
    pass


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    configure_telemetry(registry=reg, metrics=True, tracing=False)
    try:
        yield reg
    finally:
        reset_telemetry()


def _hedges(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value("resilient_hedge_attempts_total", {"name": name})
    return 0.0 if value is None else value


class Replicas:
    """A fake dependency: attempt ``n`` does what ``plan[n - 1]`` says."""

    def __init__(self, *plan: str) -> None:
        self.plan = plan
        self.started: list[int] = []
        self.ended: list[int] = []
        self.log: list[str] = []

    async def __call__(self) -> str:
        n = len(self.started) + 1
        self.started.append(n)
        what = self.plan[n - 1]
        try:
            if what == "hang":
                await anyio.sleep_forever()
            await anyio.lowlevel.checkpoint()
            if what == "fail":
                raise Boom(f"attempt {n}")
            if what == "fatal":
                raise Fatal(f"attempt {n}")
            self.log.append(f"{n} answers")
            return f"answer {n}"
        finally:
            self.ended.append(n)
            if what == "hang":
                self.log.append(f"{n} cancelled")


async def _run_in_background(
    call: Callable[[], Awaitable[Any]], tg: anyio.abc.TaskGroup, out: dict[str, Any]
) -> None:
    async def runner() -> None:
        try:
            out["result"] = await call()
        except BaseException as exc:
            out["error"] = exc
            raise
        finally:
            out["done"] = True

    tg.start_soon(runner)
    await anyio.wait_all_tasks_blocked()


# -- must hold: a hung first attempt loses to the hedge, and has finished when the call returns --
@pytest.mark.anyio
async def test_hung_first_attempt_is_overtaken_after_delay_and_cancelled_before_return(
    clock: FakeClock,
) -> None:
    hedge = rs.Hedge(delay=0.1, clock=clock)
    replicas = Replicas("hang", "answer")
    out: dict[str, Any] = {}

    async def call() -> str:
        answer = await hedge.acall(replicas)
        replicas.log.append("returned")
        return answer

    async with anyio.create_task_group() as tg:
        await _run_in_background(call, tg, out)
        clock.advance(0.099)
        await anyio.wait_all_tasks_blocked()
        assert replicas.started == [1]  # not before the delay
        clock.advance(0.001)
    assert out["result"] == "answer 2"
    # the loser's finally ran before the call returned
    assert replicas.log == ["2 answers", "1 cancelled", "returned"]
    assert replicas.ended == [2, 1]


def test_sync_hung_first_attempt_is_abandoned_and_the_hedge_answers(clock: FakeClock) -> None:
    hedge = rs.Hedge(delay=0.1, clock=clock)
    release, finished = threading.Event(), threading.Event()
    started: list[int] = []

    def replica() -> str:
        started.append(len(started) + 1)
        if len(started) == 1:
            clock.advance(0.099)
            assert len(started) == 1  # no hedge before the delay
            clock.advance(0.001)
            release.wait(WAIT)
            finished.set()
            return "late"
        return "hedge"

    try:
        assert hedge.call(replica) == "hedge"
        assert not finished.is_set()  # returned while the loser still runs: it is abandoned
    finally:
        release.set()
    assert finished.wait(WAIT)
    assert started == [1, 2]


# -- must hold: every attempt failing --------------------------------------------------------
@pytest.mark.anyio
async def test_all_attempts_failing_runs_exactly_three_and_raises_the_last_error(
    clock: FakeClock,
) -> None:
    hedge = rs.Hedge(delay=0.1, max_hedged=2, clock=clock)
    replicas = Replicas("fail", "fail", "fail")
    with pytest.raises(Boom, match="attempt 3") as info:
        await hedge.acall(replicas)
    assert replicas.started == [1, 2, 3]
    assert clock() == 0.0  # a failure starts the next attempt at once: no delay waited
    assert any("all 3 attempts failed" in n for n in getattr(info.value, "__notes__", []))


def test_sync_all_attempts_failing_runs_exactly_three_and_raises_the_last_error(
    clock: FakeClock,
) -> None:
    hedge = rs.Hedge(delay=0.1, max_hedged=2, clock=clock)
    calls: list[int] = []
    lock = threading.Lock()

    def fail() -> None:
        with lock:
            calls.append(len(calls) + 1)
            n = len(calls)
        raise Boom(f"attempt {n}")

    with pytest.raises(Boom, match="attempt 3"):
        hedge.call(fail)
    assert calls == [1, 2, 3]


@pytest.mark.anyio
async def test_the_last_error_is_the_one_that_failed_last(clock: FakeClock) -> None:
    # attempt 1 hangs, then fails after attempts 2 and 3 failed: its error is the last one
    hedge = rs.Hedge(delay=0.1, max_hedged=2, clock=clock)
    gate = anyio.Event()
    started: list[int] = []

    async def replica() -> str:
        started.append(len(started) + 1)
        n = len(started)
        if n == 1:
            clock.advance(0.1)
            await gate.wait()
        elif n == 3:
            gate.set()
        raise Boom(f"attempt {n}")

    with pytest.raises(Boom, match="attempt 1"):
        await hedge.acall(replica)
    assert started == [1, 2, 3]


# -- must hold: a cancelled caller cancels every attempt ------------------------------------------
@pytest.mark.anyio
async def test_a_cancelled_caller_cancels_every_attempt_before_it_returns(
    clock: FakeClock,
) -> None:
    hedge = rs.Hedge(delay=0.1, max_hedged=2, clock=clock)
    replicas = Replicas("hang", "hang", "hang")
    seen_at_cancel: list[list[int]] = []

    async def call() -> None:
        try:
            await hedge.acall(replicas)
        except anyio.get_cancelled_exc_class():
            seen_at_cancel.append(sorted(replicas.ended))
            raise

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        for _ in range(2):
            clock.advance(0.1)
            await anyio.wait_all_tasks_blocked()
        assert replicas.started == [1, 2, 3]
        tg.cancel_scope.cancel()
    assert seen_at_cancel == [[1, 2, 3]]  # all three had ended when the cancellation came out
    assert clock.pending == 0  # and no timer is left behind


@pytest.mark.anyio
async def test_cancelling_the_caller_before_any_hedge_leaves_no_timer(clock: FakeClock) -> None:
    hedge = rs.Hedge(delay=0.1, clock=clock)
    replicas = Replicas("hang")
    with anyio.move_on_after(0):  # cancelled at its first checkpoint
        await hedge.acall(replicas)
    assert replicas.started == [1] and replicas.ended == [1]
    clock.advance(1.0)
    await anyio.wait_all_tasks_blocked()
    assert replicas.started == [1]


@pytest.mark.anyio
async def test_a_timer_delivered_after_the_answer_starts_nothing(clock: FakeClock) -> None:
    # the clock fires the hedge's timer while the first attempt is answering; the timer only
    # reaches the loop after the call has returned: no attempt may start without a caller
    hedge = rs.Hedge(delay=0.1, clock=clock)
    started: list[int] = []

    async def replica() -> str:
        started.append(len(started) + 1)
        clock.advance(0.1)  # no await after this: the caller sees the answer first
        return "first"

    assert await hedge.acall(replica) == "first"
    await anyio.wait_all_tasks_blocked()
    assert started == [1]


# -- more behaviour -----------------------------------------------------------------------------
@pytest.mark.anyio
async def test_happy_path_starts_no_hedge(clock: FakeClock, registry: CollectorRegistry) -> None:
    events: list[Event] = []
    hedge = rs.Hedge("fast-path", delay=0.1, clock=clock, on_event=events.append)
    replicas = Replicas("answer")
    assert await hedge.acall(replicas) == "answer 1"
    assert clock.pending == 0
    clock.advance(1.0)
    await anyio.wait_all_tasks_blocked()
    assert replicas.started == [1]
    assert _hedges(registry, "fast-path") == 0
    assert not [e for e in events if isinstance(e, HedgeStarted)]


@pytest.mark.anyio
async def test_the_first_answer_wins_even_from_the_first_attempt(clock: FakeClock) -> None:
    hedge = rs.Hedge(delay=0.1, max_hedged=2, clock=clock)
    gate = anyio.Event()
    started: list[int] = []
    ended: list[int] = []

    async def replica() -> str:
        started.append(len(started) + 1)
        n = len(started)
        try:
            if n == 1:
                clock.advance(0.1)
                await gate.wait()  # answers once the hedge is running
                return "first"
            gate.set()
            await anyio.sleep_forever()
            return "never"
        finally:
            ended.append(n)

    assert await hedge.acall(replica) == "first"
    assert started == [1, 2] and sorted(ended) == [1, 2]


@pytest.mark.anyio
async def test_an_error_on_does_not_accept_ends_the_call_at_once(clock: FakeClock) -> None:
    hedge = rs.Hedge(delay=0.1, max_hedged=2, on=(Boom,), clock=clock)
    replicas = Replicas("hang", "fatal", "answer")

    async def first_hangs() -> str:
        if not replicas.started:
            clock.advance(0.1)
        return await replicas()

    with pytest.raises(Fatal, match="attempt 2"):
        await hedge.acall(first_hangs)
    assert replicas.started == [1, 2]
    assert sorted(replicas.ended) == [1, 2]


@pytest.mark.anyio
async def test_a_call_marked_not_repeatable_is_never_hedged(clock: FakeClock) -> None:
    hedge = rs.Hedge(delay=0.1, clock=clock)
    replicas = Replicas("fail")
    token = NO_RETRY.set("POST without Idempotency-Key")
    try:
        with pytest.raises(Boom):
            await hedge.acall(replicas)
    finally:
        NO_RETRY.reset(token)
    assert replicas.started == [1]
    assert clock.pending == 0


def test_sync_call_marked_not_repeatable_is_never_hedged(clock: FakeClock) -> None:
    hedge = rs.Hedge(delay=0.1, clock=clock)
    calls: list[int] = []

    def slow() -> str:
        calls.append(1)
        clock.advance(1.0)
        return "once"

    token = NO_RETRY.set("not idempotent")
    try:
        assert hedge.call(slow) == "once"
    finally:
        NO_RETRY.reset(token)
    assert calls == [1]


@pytest.mark.anyio
async def test_delay_zero_starts_every_attempt_at_once(clock: FakeClock) -> None:
    hedge = rs.Hedge(delay=0, max_hedged=2, clock=clock)
    replicas = Replicas("hang", "hang", "answer")
    assert await hedge.acall(replicas) == "answer 3"
    assert replicas.started == [1, 2, 3] and sorted(replicas.ended) == [1, 2, 3]


@pytest.mark.anyio
async def test_hedged_attempts_run_in_a_copy_of_the_callers_context(clock: FakeClock) -> None:
    request: ContextVar[str] = ContextVar("request", default="none")
    hedge = rs.Hedge(delay=0.1, clock=clock)
    seen: list[str] = []

    async def replica() -> str:
        seen.append(request.get())
        if len(seen) == 1:
            clock.advance(0.1)
            await anyio.sleep_forever()
        request.set("changed by the hedge")
        return "ok"

    request.set("req-42")
    assert await hedge.acall(replica) == "ok"
    assert seen == ["req-42", "req-42"]
    assert request.get() == "req-42"  # an attempt's changes stay in its own context


# -- pipelines and deadlines ------------------------------------------------------------------
@pytest.mark.anyio
async def test_inside_retry_and_outside_the_per_attempt_timeout(clock: FakeClock) -> None:
    budgets: list[float | None] = []
    outcomes = ["fail", "fail", "answer"]

    async def dependency() -> str:
        budgets.append(rs.remaining())
        await anyio.lowlevel.checkpoint()
        if outcomes.pop(0) == "fail":
            raise ConnectionError("replica down")
        return "ok"

    call = rs.pipeline(
        rs.Retry(attempts=2, wait=0),
        rs.Hedge(delay=0.1, clock=clock),
        rs.Timeout(30.0),
    )
    assert await call.acall(dependency) == "ok"
    assert len(budgets) == 3  # 2 hedged attempts failed, the retry's attempt answered
    assert all(b is not None and 0 < b <= 30.0 for b in budgets)  # each its own timeout


@pytest.mark.anyio
async def test_a_hedged_attempt_gets_the_remaining_budget(clock: FakeClock) -> None:
    hedge = rs.Hedge(delay=0.1, clock=clock)
    budgets: list[float | None] = []
    deadlines: list[float] = []

    async def replica() -> str:
        budgets.append(rs.remaining())
        if len(budgets) == 2:
            # enforced too: a hedged attempt is not inside the caller's timeout (the first
            # attempt is, in the caller's own task), so it gets a cancel scope of its own
            deadlines.append(anyio.current_effective_deadline() - anyio.current_time())
        if len(budgets) == 1:
            clock.advance(0.1)
            await anyio.sleep_forever()
        return "hedge"

    async with rs.Timeout(WAIT * 3):
        assert await hedge.acall(replica) == "hedge"
    assert len(budgets) == 2
    assert all(b is not None and 0 < b <= WAIT * 3 for b in budgets)
    assert len(deadlines) == 1 and 0 < deadlines[0] <= WAIT * 3


async def _warm_up(hedge: rs.Hedge, clock: FakeClock, latency: float, calls: int = 20) -> None:
    async def answer_after() -> str:
        clock.advance(latency)
        return "ok"

    for _ in range(calls):
        await hedge.acall(answer_after)


@pytest.mark.anyio
async def test_no_hedge_starts_when_the_deadline_leaves_too_little_time(
    clock: FakeClock,
) -> None:
    hedge = rs.Hedge(delay=0.05, clock=clock)
    await _warm_up(hedge, clock, 0.04)  # not measured: a fixed delay measures calls only
    assert hedge._expected_latency() is None  # made under a deadline (the ones that need it)
    async with rs.Timeout(WAIT):
        await _warm_up(hedge, clock, 0.04)  # typical latency 40 ms (fake), below the delay
    started: list[int] = []

    async def replica() -> str:
        started.append(len(started) + 1)
        clock.advance(0.05)  # the hedge is due...
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        return "first"

    async with rs.Timeout(0.02):  # ...but 20 ms cannot cover a 40 ms attempt: none starts
        assert await hedge.acall(replica) == "first"
    assert started == [1]
    async with rs.Timeout(WAIT):  # with room, the same call is hedged
        started.clear()
        assert await hedge.acall(replica) == "first"
    assert started == [1, 2]


# -- the percentile delay -------------------------------------------------------------------
@pytest.mark.anyio
async def test_percentile_delay_follows_recent_latencies(clock: FakeClock) -> None:
    hedge = rs.Hedge(delay="p95", clock=clock)
    assert hedge.current_delay() is None  # no guess before 20 latencies are known
    await _warm_up(hedge, clock, 0.010, calls=18)
    await _warm_up(hedge, clock, 0.200, calls=1)
    assert hedge.current_delay() is None
    await _warm_up(hedge, clock, 0.200, calls=1)
    delay = hedge.current_delay()
    assert delay is not None and 0.200 <= delay < 0.200 * 1.1  # rank 19 of 20: a slow one
    await _warm_up(hedge, clock, 0.010, calls=40)
    delay = hedge.current_delay()
    assert delay is not None and 0.010 <= delay < 0.011


@pytest.mark.anyio
async def test_percentile_delay_hedges_once_warm(clock: FakeClock) -> None:
    hedge = rs.Hedge(delay="p90", clock=clock)
    await _warm_up(hedge, clock, 0.010)
    replicas = Replicas("hang", "answer")

    async def first_is_slow() -> str:
        if not replicas.started:
            clock.advance(0.0111)  # past the p90 estimate (at most 10 % above 10 ms)
        return await replicas()

    assert await hedge.acall(first_is_slow) == "answer 2"


@pytest.mark.anyio
async def test_before_warm_up_only_a_failure_starts_another_attempt(clock: FakeClock) -> None:
    hedge = rs.Hedge(delay="p99", clock=clock)
    replicas = Replicas("fail", "answer")
    assert await hedge.acall(replicas) == "answer 2"


# -- telemetry --------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_hedged_attempts_are_counted_and_the_winner_is_on_the_span(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    configure_telemetry(tracing=True, tracer_provider=provider)
    events: list[Event] = []
    hedge = rs.Hedge("tail", delay=0.1, max_hedged=2, clock=clock, on_event=events.append)
    replicas = Replicas("hang", "hang", "answer")

    async def first_two_hang() -> str:
        if len(replicas.started) < 2:
            clock.advance(0.1)
        return await replicas()

    assert await hedge.acall(first_two_hang) == "answer 3"
    assert _hedges(registry, "tail") == 2
    assert [e.attempt for e in events if isinstance(e, HedgeStarted)] == [2, 3]
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "hedge tail"]
    assert span.attributes is not None
    assert span.attributes["resilient.hedge.winner"] == 3
    assert span.attributes["resilient.hedge.attempts"] == 3
    assert span.attributes["resilient.outcome"] == "success"


def test_sync_hedges_are_counted(clock: FakeClock, registry: CollectorRegistry) -> None:
    hedge = rs.Hedge("sync-tail", delay=0.1, clock=clock)
    release = threading.Event()
    calls: list[int] = []

    def replica() -> str:
        calls.append(1)
        if len(calls) == 1:
            clock.advance(0.1)
            release.wait(WAIT)
        return f"answer {len(calls)}"

    try:
        assert hedge.call(replica) == "answer 2"
    finally:
        release.set()
    assert _hedges(registry, "sync-tail") == 1


# -- one instance, every mode -----------------------------------------------------------------
def test_one_instance_serves_threads_asyncio_and_trio_at_once(clock: FakeClock) -> None:
    hedge = rs.Hedge("shared", delay=0.1, clock=clock)

    @hedge
    def sync_fn(x: int) -> int:
        return x * 2

    @hedge
    async def async_fn(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x * 3

    results: list[int] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for j in range(50):
            value = sync_fn(j)
            with lock:
                results.append(value - 2 * j)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for backend in ("asyncio", "trio"):

        async def many() -> None:
            async with anyio.create_task_group() as tg:
                for j in range(50):

                    async def one(j: int = j) -> None:
                        value = await async_fn(j)
                        with lock:
                            results.append(value - 3 * j)

                    tg.start_soon(one)

        anyio.run(many, backend=backend)
    for t in threads:
        t.join(WAIT)
    assert len(results) == 300 and set(results) == {0}


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"delay": -0.1}, ValueError, "delay"),
        ({"delay": "p100"}, ValueError, "delay"),
        ({"delay": "p0"}, ValueError, "delay"),
        ({"delay": "x95"}, ValueError, "delay"),
        ({"delay": "95th"}, ValueError, "delay"),
        ({"delay": float("nan")}, ValueError, "delay"),
        ({"delay": None}, TypeError, "delay"),
        ({"max_hedged": 0}, ValueError, "max_hedged"),
        ({"max_hedged": -1}, ValueError, "max_hedged"),
        ({"max_hedged": 1.5}, TypeError, "max_hedged"),
        ({"on": (KeyboardInterrupt,)}, ValueError, "on"),
        ({"clock": 3}, TypeError, "clock"),
    ],
)
def test_bad_input_names_the_option(
    kwargs: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        rs.Hedge(**kwargs)


def test_an_async_predicate_is_refused_and_settings_are_readable() -> None:
    async def transient(error: Exception) -> bool:
        return True

    with pytest.raises(TypeError, match="on must be a plain"):
        rs.Hedge(on=transient)  # type: ignore[arg-type]
    hedge = rs.Hedge(delay="p99", max_hedged=2)
    assert set(hedge.settings) == set(rs.Hedge.options)
    assert (hedge.settings["delay"], hedge.settings["max_hedged"]) == ("p99", 2)


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("RESILIENT__SEARCH__HEDGE__DELAY", "-1s"),
        ("RESILIENT__SEARCH__HEDGE__DELAY", "p100"),
        ("RESILIENT__SEARCH__HEDGE__DELAY", "p95x"),
        ("RESILIENT__SEARCH__HEDGE__MAX_HEDGED", "0"),
    ],
)
def test_bad_environment_is_a_config_error_naming_the_variable(
    variable: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(rs.ConfigError, match=variable):
        rs.Hedge.from_env("search")


def test_from_env_and_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__SEARCH_HEDGE__HEDGE__DELAY", "p99")
    monkeypatch.setenv("RESILIENT__SEARCH_HEDGE__HEDGE__MAX_HEDGED", "2")
    registry = rs.Registry()
    hedge = registry.hedge("search-hedge")
    assert (hedge.delay, hedge.max_hedged) == ("p99", 2)
    pipe = registry.policy("search-hedge", "timeout", "hedge", "retry", timeout={"seconds": 1})
    assert [p.kind for p in pipe.policies] == ["retry", "hedge", "timeout"]
    assert pipe.policies[1] is hedge


# -- the event loops' own timers (no fake clock) -------------------------------------------------
@pytest.mark.anyio
async def test_the_event_loops_timer_queue_starts_hedges() -> None:
    # delay=0: the hedge is due at once, so the loop's timer queue fires on its next turn
    replicas = Replicas("hang", "answer")
    with anyio.fail_after(WAIT):
        assert await rs.Hedge(delay=0).acall(replicas) == "answer 2"
    assert sorted(replicas.ended) == [1, 2]


@pytest.mark.anyio
async def test_an_earlier_timer_moves_the_loops_wake_up() -> None:
    # a hedge due in an hour is queued first; one due now must not wait behind it
    slow_hedge, fast_hedge = rs.Hedge(delay=3600.0), rs.Hedge(delay=0)
    late = Replicas("hang")
    quick = Replicas("hang", "answer")
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow_hedge.acall, late)
            await anyio.wait_all_tasks_blocked()
            assert await fast_hedge.acall(quick) == "answer 2"
            tg.cancel_scope.cancel()
    assert late.started == [1] and late.ended == [1]


def test_trio_timer_service_follows_the_run_clock() -> None:
    import trio
    import trio.testing

    async def main() -> tuple[str, float, list[int]]:
        hedge = rs.Hedge(delay=0.05, max_hedged=2, clock=trio.current_time)
        order: list[int] = []

        async def replica() -> str:
            order.append(len(order) + 1)
            n = len(order)
            await trio.sleep({1: 10.0, 2: 10.0, 3: 0.01}[n])
            return f"answer {n}"

        start = trio.current_time()
        answer = await hedge.acall(replica)
        return answer, trio.current_time() - start, order

    answer, took, order = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert answer == "answer 3" and order == [1, 2, 3]
    assert took == pytest.approx(0.11)  # two delays, then the third attempt's 10 ms


def test_the_timer_queue_drops_cancelled_timers() -> None:
    from resilient._timers import _TimerQueue

    class Queue(_TimerQueue):
        def _arm(self, when: float) -> None:
            self.armed = when

    queue = Queue()
    fired: list[int] = []
    timers = [queue.call_at(float(i), fired.append, (i,)) for i in range(200)]
    for timer in timers[:150]:
        timer.cancel()
        timer.cancel()  # idempotent
    assert len(queue.heap) < 200  # compacted once the cancelled ones were the majority
    assert queue.run_due(160.0) == 161.0
    assert fired == list(range(150, 161))
    assert queue.run_due(1e9) == float("inf") and fired[-1] == 199


@pytest.mark.anyio
async def test_a_hedge_built_inside_fake_clock_waits_on_it() -> None:
    from resilient.testing import fake_clock

    with fake_clock() as fake:
        hedge = rs.Hedge(delay=0.1)  # no clock=: the installed fake one

        async def replica() -> str:
            if fake() == 0.0:
                fake.advance(0.1)
                await anyio.sleep_forever()
            return "hedge"

        assert await hedge.acall(replica) == "hedge"
        assert fake() == 0.1
