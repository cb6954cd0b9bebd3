"""Bulkhead at the public API: limits, queueing, rejection, cancellation, threads."""

from __future__ import annotations

import inspect
import signal
import sys
import threading
from collections.abc import Iterator
from contextvars import ContextVar

import anyio
import pytest
from prometheus_client import CollectorRegistry

import resilient as rs
from event_recorder import Recorder
from resilient.telemetry import reset_telemetry
from resilient.telemetry._events import (
    BulkheadAdmitted,
    BulkheadQueued,
    BulkheadRejected,
    CallRejected,
)
from resilient.testing import FakeClock

WAIT = 10.0  # only reached when something is broken


class Holder:
    """A thread that takes a bulkhead slot and keeps it until told to let go."""

    def __init__(self, bulkhead: rs.Bulkhead) -> None:
        self.inside = threading.Event()
        self.let_go = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(bulkhead,), daemon=True)
        self.thread.start()
        assert self.inside.wait(WAIT)

    def _run(self, bulkhead: rs.Bulkhead) -> None:
        with bulkhead:
            self.inside.set()
            self.let_go.wait(WAIT)

    def release(self) -> None:
        self.let_go.set()
        self.thread.join(WAIT)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    yield Recorder()


# -- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"max_concurrent": 0}, ValueError, ["max_concurrent", "0"]),
        ({"max_concurrent": -3}, ValueError, ["max_concurrent", "-3"]),
        ({"max_concurrent": 2.5}, TypeError, ["max_concurrent", "2.5"]),
        ({"max_concurrent": "4"}, TypeError, ["max_concurrent", "'4'"]),
        ({"max_concurrent": True}, TypeError, ["max_concurrent", "True"]),
        ({"max_concurrent": 1, "max_queued": -1}, ValueError, ["max_queued", "-1"]),
        ({"max_concurrent": 1, "max_queued": None}, TypeError, ["max_queued", "None"]),
        ({"max_concurrent": 1, "queue_timeout": -0.5}, ValueError, ["queue_timeout", "-0.5"]),
        ({"max_concurrent": 1, "queue_timeout": float("nan")}, ValueError, ["queue_timeout"]),
        ({"max_concurrent": 1, "queue_timeout": "1s"}, TypeError, ["queue_timeout", "'1s'"]),
        ({"max_concurrent": 1, "clock": 3}, TypeError, ["clock", "3"]),
        ({"max_concurrent": 1, "on_event": "log"}, TypeError, ["on_event", "'log'"]),
    ],
)
def test_bad_arguments_name_parameter_and_value(
    kwargs: dict[str, object], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as info:
        rs.Bulkhead(**kwargs)  # type: ignore[arg-type]
    for word in words:
        assert word in str(info.value)


def test_max_concurrent_is_required() -> None:
    with pytest.raises(TypeError, match="max_concurrent"):
        rs.Bulkhead()  # type: ignore[call-arg]


def test_name_is_generated_or_kept_and_settings_are_readable() -> None:
    auto = rs.Bulkhead(max_concurrent=1)
    named = rs.Bulkhead("db", max_concurrent=3, max_queued=5, queue_timeout=2)
    assert auto.name.startswith("bulkhead-")
    assert named.name == "db"
    assert (named.max_concurrent, named.max_queued, named.queue_timeout) == (3, 5, 2.0)
    assert (named.in_flight, named.queued) == (0, 0)
    assert "db" in repr(named) and "0/3" in repr(named)


# -- decorator and context managers -------------------------------------------------------------


def test_decorator_keeps_signature_and_runs_sync_and_async() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1)

    @bulkhead
    def add(a: int, b: int = 2) -> int:
        """Add."""
        return a + b

    @bulkhead
    async def aadd(a: int, *, b: int) -> int:
        return a + b

    assert add(1) == 3 and add.__name__ == "add" and add.__doc__ == "Add."
    assert str(inspect.signature(add)) == "(a: 'int', b: 'int' = 2) -> 'int'"
    assert inspect.iscoroutinefunction(aadd)
    assert str(inspect.signature(aadd)) == "(a: 'int', *, b: 'int') -> 'int'"
    assert anyio.run(lambda: aadd(1, b=4)) == 5
    assert bulkhead.in_flight == 0


def test_slot_is_held_exactly_while_the_call_runs() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=2)
    seen: list[int] = []

    def work() -> None:
        seen.append(bulkhead.in_flight)

    bulkhead.call(work)
    with bulkhead:
        seen.append(bulkhead.in_flight)
        with bulkhead:  # re-entering takes a second slot
            seen.append(bulkhead.in_flight)
        seen.append(bulkhead.in_flight)
    assert seen == [1, 1, 2, 1]
    assert bulkhead.in_flight == 0


def test_error_in_the_call_releases_the_slot_and_propagates_unchanged() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1)
    boom = ValueError("boom")

    def fail() -> None:
        raise boom

    with pytest.raises(ValueError) as info:
        bulkhead.call(fail)
    assert info.value is boom
    assert bulkhead.in_flight == 0


def test_keyboard_interrupt_in_a_sync_call_releases_its_slot() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1)

    @bulkhead
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert bulkhead.in_flight == 0
    assert bulkhead.call(lambda: "next") == "next"


# -- rejection ----------------------------------------------------------------------------------


def test_full_bulkhead_rejects_without_calling(recorder: Recorder) -> None:
    bulkhead = rs.Bulkhead("pay", max_concurrent=1, on_event=recorder)
    holder = Holder(bulkhead)
    calls: list[int] = []
    try:
        with pytest.raises(rs.BulkheadFullError) as info:
            bulkhead.call(calls.append, 1)
    finally:
        holder.release()
    err = info.value
    assert calls == []
    assert (err.name, err.reason, err.max_concurrent, err.max_queued) == ("pay", "full", 1, 0)
    assert isinstance(err, rs.PolicyRejectedError)
    assert "pay" in str(err)
    assert [e.reason for e in recorder.of(BulkheadRejected)] == ["full"]  # type: ignore[attr-defined]
    assert [e.reason for e in recorder.of(CallRejected)] == ["full"]  # type: ignore[attr-defined]
    assert bulkhead.in_flight == 0


def test_metrics_count_in_flight_and_rejections() -> None:
    registry = CollectorRegistry()
    rs.configure_telemetry(registry=registry, metrics=True, tracing=False)
    try:
        bulkhead = rs.Bulkhead("metered", max_concurrent=1)
        holder = Holder(bulkhead)
        in_flight = registry.get_sample_value("resilient_bulkhead_in_flight", {"name": "metered"})
        with pytest.raises(rs.BulkheadFullError):
            bulkhead.call(lambda: None)
        holder.release()
        rejected = registry.get_sample_value(
            "resilient_rejections_total",
            {"policy": "bulkhead", "name": "metered", "reason": "full"},
        )
        after = registry.get_sample_value("resilient_bulkhead_in_flight", {"name": "metered"})
    finally:
        reset_telemetry()
    assert (in_flight, rejected, after) == (1.0, 1.0, 0.0)


def test_sync_queue_timeout_rejects_with_reason_and_wait(recorder: Recorder) -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=1, queue_timeout=0.05, on_event=recorder)
    holder = Holder(bulkhead)
    try:
        with pytest.raises(rs.BulkheadFullError) as info:
            bulkhead.call(lambda: None)
    finally:
        holder.release()
    assert info.value.reason == "queue_timeout"
    assert info.value.waited is not None and info.value.waited >= 0.0
    assert recorder.of(BulkheadQueued) and recorder.of(BulkheadRejected)
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


def test_zero_queue_timeout_gives_up_at_once() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=3, queue_timeout=0)
    holder = Holder(bulkhead)
    try:
        with pytest.raises(rs.BulkheadFullError, match="queue timeout"):
            bulkhead.call(lambda: None)
    finally:
        holder.release()
    assert bulkhead.queued == 0


def test_thread_waits_at_most_the_enclosing_deadline() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=1)  # no queue timeout of its own
    holder = Holder(bulkhead)
    try:
        # the enclosing budget is (nearly) spent: queueing forever would overrun it
        with pytest.raises(rs.BulkheadFullError) as info, rs.Timeout(1e-6):
            bulkhead.call(lambda: None)
    finally:
        holder.release()
    assert info.value.reason == "queue_timeout"
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


def test_thread_queues_with_a_queue_timeout_beyond_what_a_lock_accepts(
    recorder: Recorder,
) -> None:
    # 1e10 s is past threading.TIMEOUT_MAX: the wait must not fail with OverflowError
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=1, queue_timeout=1e10, on_event=recorder)
    holder = Holder(bulkhead)
    outcome: list[object] = []

    def queued_call() -> None:
        try:
            outcome.append(bulkhead.call(lambda: "ran"))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=queued_call, daemon=True)
    thread.start()
    recorder.wait_for(BulkheadQueued)
    holder.release()
    thread.join(WAIT)
    assert outcome == ["ran"]
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


# -- queueing -------------------------------------------------------------------------------------

_WHO: ContextVar[int] = ContextVar("who", default=-1)


def test_threads_are_admitted_first_come_first_served(recorder: Recorder) -> None:
    clock = FakeClock()
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=5, on_event=recorder, clock=clock)
    order: list[int] = []
    holder = Holder(bulkhead)

    def waiter(i: int) -> None:
        with bulkhead:
            order.append(i)

    threads = []
    for i in range(5):
        t = threading.Thread(target=waiter, args=(i,), daemon=True)
        t.start()
        threads.append(t)
        recorder.wait_for(BulkheadQueued, i + 1)  # queued before the next one arrives
    assert bulkhead.queued == 5
    assert [e.position for e in recorder.of(BulkheadQueued)] == [1, 2, 3, 4, 5]  # type: ignore[attr-defined]
    clock.advance(2.5)
    holder.release()
    for t in threads:
        t.join(WAIT)
    assert order == [0, 1, 2, 3, 4]
    waited = [e.waited for e in recorder.of(BulkheadAdmitted)]  # type: ignore[attr-defined]
    assert waited == [0.0, 2.5, 2.5, 2.5, 2.5, 2.5]
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_keyboard_interrupt_while_queued_gives_up_the_place(recorder: Recorder) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=1, on_event=recorder)
    holder = Holder(bulkhead)
    main = threading.main_thread().ident
    assert main is not None

    def interrupt_when_queued() -> None:
        recorder.wait_for(BulkheadQueued)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt_when_queued, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            bulkhead.call(lambda: None)
        assert bulkhead.queued == 0
    finally:
        holder.release()
    assert bulkhead.in_flight == 0
    assert bulkhead.call(lambda: "free") == "free"


# -- async --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_full_and_queue_timeout() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=1, queue_timeout=0.05)
    inside = anyio.Event()
    let_go = anyio.Event()

    async def hold() -> None:
        async with bulkhead:
            inside.set()
            await let_go.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await inside.wait()
        with pytest.raises(rs.BulkheadFullError) as info:
            await bulkhead.acall(anyio.sleep, 0)
        assert info.value.reason == "queue_timeout"
        let_go.set()
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


@pytest.mark.anyio
async def test_cancelling_a_queued_task_leaks_nothing() -> None:
    recorder = Recorder()
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=2, on_event=recorder)
    let_go = anyio.Event()
    inside = anyio.Event()
    ran: list[str] = []

    async def hold() -> None:
        async with bulkhead:
            inside.set()
            await let_go.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await inside.wait()
        with anyio.CancelScope() as scope:

            async def queued() -> None:
                async with bulkhead:
                    ran.append("queued")

            async with anyio.create_task_group() as inner:
                inner.start_soon(queued)
                await recorder.until(BulkheadQueued)
                scope.cancel()
        assert scope.cancelled_caught
        assert bulkhead.queued == 0 and bulkhead.in_flight == 1
        let_go.set()
    assert ran == []
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)
    assert await bulkhead.acall(_answer) == 42  # a fresh caller gets in at once


async def _answer() -> int:
    return 42


@pytest.mark.anyio
async def test_cancelling_a_running_task_releases_its_slot() -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1)
    finally_ran: list[bool] = []

    @bulkhead
    async def slow() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            finally_ran.append(True)

    with anyio.move_on_after(0.01) as scope:
        await slow()
    assert scope.cancelled_caught and finally_ran == [True]
    assert bulkhead.in_flight == 0
    async with bulkhead:
        assert bulkhead.in_flight == 1
    assert bulkhead.in_flight == 0


@pytest.mark.anyio
async def test_waiter_cancelled_right_after_being_handed_a_slot_passes_it_on() -> None:
    recorder = Recorder()
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=2, on_event=recorder)
    order: list[str] = []
    scopes: dict[str, anyio.CancelScope] = {}

    async def waiter(tag: str) -> None:
        with anyio.CancelScope() as scope:
            scopes[tag] = scope
            async with bulkhead:
                order.append(tag)
        if scope.cancelled_caught:
            order.append(f"{tag} cancelled")

    with anyio.fail_after(WAIT):  # a leaked slot would leave "c" waiting forever
        async with anyio.create_task_group() as tg:
            async with bulkhead:
                tg.start_soon(waiter, "b")
                await recorder.until(BulkheadQueued, 1)
                tg.start_soon(waiter, "c")
                await recorder.until(BulkheadQueued, 2)
            # the slot was just handed to "b", which has not resumed yet: cancel it now
            scopes["b"].cancel()
    assert order == ["b cancelled", "c"]
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


@pytest.mark.anyio
async def test_task_and_thread_share_one_fifo_queue() -> None:
    recorder = Recorder()
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=2)
    bulkhead.on_event = recorder  # listeners can also be attached later
    order: list[str] = []
    holder = Holder(bulkhead)

    def thread_waiter() -> None:
        with bulkhead:
            order.append("thread")

    async def task_waiter() -> None:
        async with bulkhead:
            order.append("task")

    async with anyio.create_task_group() as tg:
        tg.start_soon(task_waiter)  # queued first
        await recorder.until(BulkheadQueued, 1)
        t = threading.Thread(target=thread_waiter, daemon=True)
        t.start()
        await recorder.until(BulkheadQueued, 2)
        await anyio.to_thread.run_sync(holder.release)  # freed by a foreign thread
    await anyio.to_thread.run_sync(t.join, WAIT)
    assert order == ["task", "thread"]
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


# -- many threads -------------------------------------------------------------------------------


def test_threads_hammering_one_bulkhead_never_exceed_the_limit() -> None:
    limit, workers, calls_each = 3, 8, 20_000
    bulkhead = rs.Bulkhead("hammer", max_concurrent=limit, max_queued=workers)
    lock = threading.Lock()
    state = {"now": 0, "peak": 0, "done": 0}

    @bulkhead
    def protected() -> None:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        with lock:
            state["now"] -= 1
            state["done"] += 1

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(calls_each):
                protected()
        except BaseException as exc:  # reported below
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so they really contend
    try:
        threads = [threading.Thread(target=worker) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert state["done"] == workers * calls_each
    assert 1 <= state["peak"] <= limit
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


def test_a_bulkhead_without_a_queue_takes_no_lock_and_stays_exact_under_threads() -> None:
    """``max_queued=0``: the bulkhead is a counter updated without a lock (exact under the
    GIL). Eight threads switching every microsecond never get more than ``max_concurrent``
    calls in at once, and every slot comes back."""
    bulkhead = rs.Bulkhead(max_concurrent=3)
    guard = threading.Lock()
    inside = peak = 0
    outcomes = {"ran": 0, "full": 0}

    def work() -> None:
        nonlocal inside, peak
        with guard:
            inside += 1
            peak = max(peak, inside)
        with guard:
            inside -= 1

    def caller() -> None:
        for _ in range(3000):
            try:
                bulkhead.call(work)
                key = "ran"
            except rs.BulkheadFullError:
                key = "full"
            with guard:
                outcomes[key] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=caller) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert peak <= 3
    assert outcomes["ran"] + outcomes["full"] == 8 * 3000
    assert bulkhead.in_flight == 0
