"""RateLimiter at the public API: the bucket, waiting in one FIFO queue for threads, asyncio
and trio, cancellation, deadlines, bad input, configuration and telemetry."""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
import trio
from prometheus_client import CollectorRegistry

import resilient as rs
from event_recorder import Recorder
from resilient.telemetry import reset_telemetry
from resilient.telemetry._events import CallRejected, RateLimiterQueued
from resilient.testing import FakeClock

WAIT = 10.0  # real seconds; only reached when something is broken


def _limiter(**kwargs: Any) -> tuple[rs.RateLimiter, FakeClock, Recorder]:
    clock = FakeClock()
    recorder = Recorder()
    kwargs.setdefault("rate", 10.0)
    limiter = rs.RateLimiter(clock=clock, on_event=recorder, **kwargs)
    return limiter, clock, recorder


# -- construction -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"rate": 0}, ValueError, ["rate", "0"]),
        ({"rate": -5}, ValueError, ["rate", "-5"]),
        ({"rate": float("inf")}, ValueError, ["rate"]),
        ({"rate": "10"}, TypeError, ["rate", "'10'"]),
        ({"rate": 1, "per": 0}, ValueError, ["per", "0"]),
        ({"rate": 1, "burst": 0}, ValueError, ["burst", "0"]),
        ({"rate": 1, "burst": -2}, ValueError, ["burst", "-2"]),
        ({"rate": 1, "burst": 1.5}, TypeError, ["burst", "1.5"]),
        ({"rate": 1, "max_wait": -0.1}, ValueError, ["max_wait", "-0.1"]),
        ({"rate": 1, "max_wait": float("nan")}, ValueError, ["max_wait"]),
        ({"rate": 1, "clock": 3}, TypeError, ["clock", "3"]),
        ({"rate": 1, "on_event": "log"}, TypeError, ["on_event", "'log'"]),
        ({"rate": 1e-300, "per": 1e300}, ValueError, ["rate", "per"]),
    ],
)
def test_bad_arguments_name_the_option_and_the_value(
    kwargs: dict[str, Any], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as info:
        rs.RateLimiter(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_rate_is_required() -> None:
    with pytest.raises(TypeError, match="rate"):
        rs.RateLimiter()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RATE", "0"),
        ("RATE", "fast"),
        ("BURST", "0"),
        ("MAX_WAIT", "-1s"),
        ("PER", "0s"),
        ("CLOCK", "time.monotonic"),
    ],
)
def test_bad_environment_values_are_config_errors_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(f"RESILIENT__API__RATE_LIMITER__{variable}", value)
    with pytest.raises(rs.ConfigError, match=f"RESILIENT__API__RATE_LIMITER__{variable}"):
        rs.RateLimiter.from_env("api", rate=5.0)


def test_from_env_reads_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__API__RATE_LIMITER__RATE", "120")
    monkeypatch.setenv("RESILIENT__API__RATE_LIMITER__PER", "1m")
    monkeypatch.setenv("RESILIENT__API__RATE_LIMITER__BURST", "4")
    monkeypatch.setenv("RESILIENT__API__RATE_LIMITER__MAX_WAIT", "250ms")
    limiter = rs.RateLimiter.from_env("api", rate=1.0)
    assert (limiter.rate, limiter.per, limiter.burst, limiter.max_wait) == (120.0, 60.0, 4, 0.25)
    assert limiter.name == "api"


def test_defaults_and_read_only_view() -> None:
    assert rs.RateLimiter(rate=2.5).burst == 3  # ceil(rate)
    assert rs.RateLimiter(rate=0.2).burst == 1
    limiter = rs.RateLimiter("quota", rate=100, per=60, burst=7, max_wait=1.5)
    assert (limiter.rate, limiter.per, limiter.burst, limiter.max_wait) == (100.0, 60.0, 7, 1.5)
    assert limiter.tokens == 7.0 and limiter.queued == 0
    assert limiter.name == "quota" and rs.RateLimiter(rate=1).name.startswith("rate_limiter-")
    assert "quota" in repr(limiter) and "burst=7" in repr(limiter)


# -- the bucket ---------------------------------------------------------------------------------
def test_burst_then_one_call_per_interval_and_rejections_do_not_call() -> None:
    limiter, clock, recorder = _limiter(rate=10, burst=3)
    calls: list[int] = []

    @limiter
    def work(i: int) -> int:
        calls.append(i)
        return i

    assert [work(i) for i in range(3)] == [0, 1, 2]
    with pytest.raises(rs.RateLimitedError) as info:
        work(3)
    error = info.value
    assert isinstance(error, rs.PolicyRejectedError)
    assert error.reason == "rate_limited" and error.name == limiter.name
    assert error.retry_after == pytest.approx(0.1)
    assert calls == [0, 1, 2]
    clock.advance(0.05)
    with pytest.raises(rs.RateLimitedError) as info:
        work(4)
    assert info.value.retry_after == pytest.approx(0.05)
    clock.advance(0.05)
    assert work(5) == 5
    rejected = recorder.of(CallRejected)
    assert [e.reason for e in rejected] == ["rate_limited", "rate_limited"]
    assert rejected[0].retry_after == pytest.approx(0.1)


def test_the_bucket_refills_up_to_burst_and_no_further() -> None:
    limiter, clock, _ = _limiter(rate=2, burst=4)
    for _ in range(4):
        assert limiter.try_acquire()
    assert not limiter.try_acquire()
    assert limiter.tokens == 0.0
    clock.advance(0.25)
    assert limiter.tokens == pytest.approx(0.5)
    clock.advance(3600)
    assert limiter.tokens == 4.0
    assert sum(limiter.try_acquire() for _ in range(10)) == 4


def test_per_counts_the_rate_over_a_longer_period() -> None:
    limiter, clock, _ = _limiter(rate=3, per=60, burst=1)
    assert limiter.try_acquire()
    clock.advance(19.9)
    assert not limiter.try_acquire()
    clock.advance(0.1)
    assert limiter.try_acquire()


def test_decorator_keeps_the_signature_sync_and_async() -> None:
    limiter = rs.RateLimiter(rate=1000)

    @limiter
    def add(a: int, b: int = 2) -> int:
        """Adds."""
        return a + b

    @limiter
    async def aadd(a: int, b: int = 2) -> int:
        return a + b

    assert add(1) == 3 and add.__doc__ == "Adds." and add.__name__ == "add"
    assert str(inspect.signature(add)) == "(a: 'int', b: 'int' = 2) -> 'int'"
    assert inspect.iscoroutinefunction(aadd)
    assert asyncio.run(aadd(1, b=5)) == 6


@pytest.mark.anyio
async def test_async_decorator_call_and_context_manager_share_the_bucket() -> None:
    limiter, clock, _ = _limiter(rate=10, burst=3)

    @limiter
    async def work() -> str:
        await anyio.lowlevel.checkpoint()
        return "done"

    async def plain() -> str:
        return "plain"

    assert await work() == "done"
    assert await limiter.acall(plain) == "plain"
    async with limiter:
        pass
    with pytest.raises(rs.RateLimitedError):
        await work()
    with pytest.raises(rs.RateLimitedError):
        async with limiter:
            pytest.fail("entered without a token")  # pragma: no cover
    clock.advance(0.1)
    with limiter:
        assert limiter.tokens < 1.0


def test_errors_and_results_pass_through_and_spend_the_token() -> None:
    limiter, _, _ = _limiter(rate=10, burst=2)
    boom = KeyError("boom")

    def fail() -> None:
        raise boom

    with pytest.raises(KeyError) as info:
        limiter.call(fail)
    assert info.value is boom
    assert limiter.tokens == pytest.approx(1.0)


# -- waiting ------------------------------------------------------------------------------------
def test_a_caller_waits_exactly_until_its_token_is_due() -> None:
    limiter, clock, recorder = _limiter(rate=1, burst=1, max_wait=5.0)
    assert limiter.try_acquire()
    done = threading.Event()
    thread = threading.Thread(target=lambda: limiter.call(done.set), daemon=True)
    thread.start()
    recorder.wait_for(RateLimiterQueued)
    queued = recorder.of(RateLimiterQueued)[0]
    assert (queued.position, queued.wait) == (1, pytest.approx(1.0))
    clock.advance(0.999)
    assert not done.wait(0.05) and limiter.queued == 1  # not a moment early
    clock.advance(0.001)
    assert done.wait(WAIT)
    thread.join(WAIT)
    assert limiter.queued == 0 and limiter.tokens == 0.0


def test_a_token_due_after_max_wait_is_refused_at_once_with_the_wait() -> None:
    limiter, clock, recorder = _limiter(rate=1, burst=1, max_wait=1.5)
    assert limiter.try_acquire()
    first = threading.Thread(target=lambda: limiter.call(lambda: None), daemon=True)
    first.start()
    recorder.wait_for(RateLimiterQueued)  # its token is due in 1 s
    with pytest.raises(rs.RateLimitedError) as info:  # ours in 2 s: more than 1.5
        limiter.call(lambda: pytest.fail("called"))
    assert info.value.retry_after == pytest.approx(2.0)
    assert limiter.queued == 1
    clock.advance(1.0)
    first.join(WAIT)
    assert not first.is_alive()


def test_waiting_reads_the_clock_a_few_times_however_long_the_wait() -> None:
    """No polling: a caller waiting (in real time) for its token reads the clock a bounded
    number of times, not once per tick."""
    reads = [0]

    def clock() -> float:
        reads[0] += 1
        return _monotonic()

    limiter = rs.RateLimiter(rate=20, burst=1, max_wait=1.0, clock=clock)
    assert limiter.try_acquire()
    reads[0] = 0
    limiter.call(lambda: None)  # waits ~50 ms for the next token
    assert reads[0] <= 8


def _monotonic() -> float:
    import time

    return time.monotonic()


def test_threads_are_admitted_in_arrival_order() -> None:
    limiter, clock, recorder = _limiter(rate=10, burst=1, max_wait=10.0)
    assert limiter.try_acquire()
    order: list[int] = []
    threads = []
    for i in range(6):
        t = threading.Thread(target=lambda i=i: limiter.call(order.append, i), daemon=True)
        t.start()
        threads.append(t)
        recorder.wait_for(RateLimiterQueued, i + 1)
    assert [e.position for e in recorder.of(RateLimiterQueued)] == [1, 2, 3, 4, 5, 6]
    assert [e.wait for e in recorder.of(RateLimiterQueued)] == pytest.approx(
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    )
    for i in range(3):
        clock.advance(0.1)  # one token: to the longest waiter
        threads[i].join(WAIT)
        assert order == list(range(i + 1))
    assert limiter.queued == 3
    # Three tokens at once: all three are handed out (in order) in this instant; the threads
    # then race to run, so only the set is certain.
    clock.advance(0.3)
    for t in threads:
        t.join(WAIT)
    assert order[:3] == [0, 1, 2] and sorted(order[3:]) == [3, 4, 5]
    clock.advance(10.0)
    assert limiter.tokens == 1.0  # the bucket refills once the queue is empty


class Loops:
    """An asyncio loop and a trio run, each in a thread of its own, to host tasks."""

    def __init__(self) -> None:
        self.asyncio_loop = asyncio.new_event_loop()
        self._asyncio = threading.Thread(target=self.asyncio_loop.run_forever, daemon=True)
        self._asyncio.start()
        ready = threading.Event()
        self._stop: trio.Event | None = None

        async def trio_main() -> None:
            self.trio_token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

        self._trio = threading.Thread(target=trio.run, args=(trio_main,), daemon=True)
        self._trio.start()
        assert ready.wait(WAIT)

    def spawn(self, kind: str, fn: Callable[[], Any]) -> None:
        if kind == "asyncio":
            asyncio.run_coroutine_threadsafe(fn(), self.asyncio_loop)
        else:
            self.trio_token.run_sync_soon(self.nursery.start_soon, fn)

    def close(self) -> None:
        assert self._stop is not None
        self.trio_token.run_sync_soon(self._stop.set)
        self._trio.join(WAIT)
        self.asyncio_loop.call_soon_threadsafe(self.asyncio_loop.stop)
        self._asyncio.join(WAIT)
        self.asyncio_loop.close()


@pytest.fixture(scope="module")
def loops() -> Iterator[Loops]:
    hosts = Loops()
    yield hosts
    hosts.close()


def test_threads_asyncio_and_trio_tasks_share_one_fifo_queue(loops: Loops) -> None:
    limiter, clock, recorder = _limiter(rate=10, burst=1, max_wait=10.0)
    assert limiter.try_acquire()
    order: list[str] = []
    finished = threading.Semaphore(0)
    kinds = ["trio", "thread", "asyncio", "thread", "trio", "asyncio"]

    def thread_caller(tag: str) -> None:
        with limiter:
            order.append(tag)
        finished.release()

    async def task_caller(tag: str) -> None:
        async with limiter:
            order.append(tag)
        finished.release()

    for i, kind in enumerate(kinds):
        tag = f"{kind}-{i}"
        if kind == "thread":
            threading.Thread(target=thread_caller, args=(tag,), daemon=True).start()
        else:
            loops.spawn(kind, lambda tag=tag: task_caller(tag))
        recorder.wait_for(RateLimiterQueued, i + 1)
    for i in range(len(kinds)):
        clock.advance(0.1)  # one token, handed to the longest waiter, whatever it runs on
        assert finished.acquire(timeout=WAIT)
        assert order == [f"{k}-{j}" for j, k in enumerate(kinds)][: i + 1]
    assert limiter.queued == 0


# -- cancellation and deadlines ------------------------------------------------------------------
@pytest.mark.anyio
async def test_a_cancelled_waiter_leaves_the_queue_and_loses_no_token() -> None:
    limiter, clock, recorder = _limiter(rate=10, burst=1, max_wait=10.0)
    assert limiter.try_acquire()
    order: list[str] = []

    async def caller(tag: str) -> None:
        async with limiter:
            order.append(tag)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as doomed:
                tg.start_soon(caller, "a")
                await recorder.until(RateLimiterQueued, 1)
            tg.start_soon(caller, "b")
            await recorder.until(RateLimiterQueued, 2)
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as inner:
                    inner.start_soon(caller, "c")
                    await recorder.until(RateLimiterQueued, 3)
                    scope.cancel()
            assert scope.cancelled_caught and limiter.queued == 2
            await anyio.to_thread.run_sync(clock.advance, 0.2)
    assert doomed is not None
    assert order == ["a", "b"]  # two tokens for the two that stayed; "c" took none
    assert limiter.queued == 0 and limiter.tokens == 0.0
    clock.advance(0.1)
    assert limiter.try_acquire()


@pytest.mark.anyio
async def test_a_waiter_cancelled_as_its_token_arrives_passes_the_token_on() -> None:
    limiter, clock, recorder = _limiter(rate=10, burst=1, max_wait=10.0)
    assert limiter.try_acquire()
    order: list[str] = []
    scopes: dict[str, anyio.CancelScope] = {}

    async def caller(tag: str) -> None:
        with anyio.CancelScope() as scope:
            scopes[tag] = scope
            async with limiter:
                order.append(tag)
        if scope.cancelled_caught:
            order.append(f"{tag} cancelled")

    with anyio.fail_after(WAIT):  # a lost token would leave "b" waiting forever
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller, "a")
            await recorder.until(RateLimiterQueued, 1)
            tg.start_soon(caller, "b")
            await recorder.until(RateLimiterQueued, 2)
            clock.advance(0.1)  # "a"'s token: handed over here, "a" has not resumed yet
            scopes["a"].cancel()
    assert order == ["a cancelled", "b"]
    assert limiter.queued == 0 and limiter.tokens == 0.0  # one token came, one was used


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_keyboard_interrupt_while_waiting_gives_up_the_place() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    # The real clock: a signal that lands just before the thread blocks (CPython cannot see it
    # then) is noticed when the 10 s wait for the token ends, never lost. (A FakeClock wait
    # blocks until the clock moves, so such a signal would wait for that.)
    recorder = Recorder()
    limiter = rs.RateLimiter(rate=0.1, burst=1, max_wait=30.0, on_event=recorder)
    assert limiter.try_acquire()
    main = threading.main_thread().ident
    assert main is not None

    def interrupt_when_queued() -> None:
        recorder.wait_for(RateLimiterQueued)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt_when_queued, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        limiter.call(lambda: pytest.fail("called"))
    assert limiter.queued == 0
    assert limiter.tokens <= 1.0  # nothing was made up (the token may be due by now)


def test_a_thread_waits_no_longer_than_the_enclosing_deadline() -> None:
    limiter, _, _ = _limiter(rate=1, burst=1, max_wait=30.0)
    assert limiter.try_acquire()
    with rs.Timeout(0.5), pytest.raises(rs.RateLimitedError) as info:
        limiter.call(lambda: pytest.fail("called"))  # its token is 1 s away: refused at once
    assert info.value.retry_after == pytest.approx(1.0)
    assert limiter.queued == 0


@pytest.mark.anyio
async def test_a_task_waits_no_longer_than_the_enclosing_deadline() -> None:
    limiter, _, _ = _limiter(rate=1, burst=1, max_wait=30.0)
    assert limiter.try_acquire()
    with pytest.raises(rs.RateLimitedError):
        await rs.Timeout(0.5).acall(limiter.acall, anyio.sleep, 0)
    assert limiter.queued == 0


def test_a_caller_past_its_max_wait_gives_up_and_the_next_moves_up() -> None:
    # max_wait counts on the limiter's clock: the queue moves on when the clock passes it
    limiter, clock, recorder = _limiter(rate=1, burst=1, max_wait=2.0)
    assert limiter.try_acquire()
    outcomes: list[str] = []

    def caller() -> None:
        try:
            limiter.call(lambda: outcomes.append("in"))
        except rs.RateLimitedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(2)]
    for i, t in enumerate(threads):
        t.start()
        recorder.wait_for(RateLimiterQueued, i + 1)
    clock.advance(2.0)  # both tokens due (at 1 s and 2 s): nobody is past its wait
    for t in threads:
        t.join(WAIT)
    assert outcomes == ["in", "in"]


# -- telemetry and the registry -----------------------------------------------------------------
def test_metrics_count_rejections_and_read_tokens_at_scrape_time() -> None:
    registry = CollectorRegistry()
    rs.configure_telemetry(registry=registry, metrics=True, tracing=False)
    try:
        clock = FakeClock()
        limiter = rs.RateLimiter("metered", rate=4, burst=2, clock=clock)
        assert registry.get_sample_value("resilient_ratelimiter_tokens", {"name": "metered"}) == 2
        limiter.call(lambda: None)
        assert registry.get_sample_value("resilient_ratelimiter_tokens", {"name": "metered"}) == 1
        limiter.call(lambda: None)
        with pytest.raises(rs.RateLimitedError):
            limiter.call(lambda: None)
        labels = {"policy": "rate_limiter", "name": "metered", "reason": "rate_limited"}
        assert registry.get_sample_value("resilient_rejections_total", labels) == 1
        calls = {"policy": "rate_limiter", "name": "metered", "outcome": "rejected"}
        assert registry.get_sample_value("resilient_calls_total", calls) == 1
        clock.advance(0.125)
        assert registry.get_sample_value(
            "resilient_ratelimiter_tokens", {"name": "metered"}
        ) == pytest.approx(0.5)
    finally:
        reset_telemetry()


def test_registry_and_named_pipelines_know_the_rate_limiter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = rs.Registry()
    limiter = registry.rate_limiter("search", rate=50)
    assert registry.rate_limiter("search") is limiter
    pipe = registry.policy("search", "timeout", "rate_limiter", "breaker", timeout={"seconds": 1.0})
    assert [p.kind for p in pipe.policies] == ["breaker", "rate_limiter", "timeout"]
    assert pipe.policies[1] is limiter
    monkeypatch.setenv("RESILIENT__OTHER__RATE_LIMITER__RATE", "5")
    assert registry.rate_limiter("other").rate == 5.0


def test_a_pipeline_maps_a_retry_after_hint_for_a_retry_outside() -> None:
    limiter, clock, _ = _limiter(rate=10, burst=1)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    retry = rs.Retry(attempts=2, wait=0, on=rs.RateLimitedError, sleep=sleep)
    pipe = rs.pipeline(retry, limiter)
    assert pipe.call(lambda: 1) == 1
    assert pipe.call(lambda: 2) == 2  # refused, slept the hint, admitted
    assert sleeps == [pytest.approx(0.1)]
