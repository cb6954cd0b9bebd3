"""Property tests of the bulkhead: the pure core against a model, then the real front end.

The core is driven by a hypothesis state machine through every interleaving of arrive /
finish / resume / cancel / time-out. The front end is driven by a generated schedule executed
by real threads, asyncio tasks and trio tasks sharing ONE bulkhead: after every step the
driver checks that exactly the expected callers started (FIFO), that the counts match the
model, and at the end that every slot came back.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import resilient as rs
from resilient._core.bulkhead import ADMITTED, FULL, BulkheadCore
from resilient.telemetry._events import BulkheadQueued, Event

# -- the pure core ------------------------------------------------------------------------------


class CoreMachine(RuleBasedStateMachine):
    """Model: ``started`` run, ``granted`` own a slot but have not resumed yet, ``queue`` waits
    in arrival order. Every grant must go to the head of ``queue``."""

    def __init__(self) -> None:
        super().__init__()
        self.core: BulkheadCore[int] = BulkheadCore(1, 0)
        self.next_id = 0
        self.started: list[int] = []
        self.granted: list[int] = []
        self.queue: list[int] = []
        self.released: set[int] = set()
        self.admitted: list[int] = []

    @initialize(max_concurrent=st.integers(1, 4), max_queued=st.integers(0, 4))
    def setup(self, max_concurrent: int, max_queued: int) -> None:
        self.core = BulkheadCore(max_concurrent, max_queued)

    def _holders(self) -> int:
        return len(self.started) + len(self.granted)

    def _hand_on(self) -> None:
        """A slot owner gave it back: the head of the queue must get it, or it is freed."""
        got = self.core.release()
        if self.queue:
            head = self.queue.pop(0)
            assert got == head, f"slot went to {got}, the longest waiter is {head}"
            self.granted.append(head)
            self.admitted.append(head)
        else:
            assert got is None

    @rule()
    def arrive(self) -> None:
        caller = self.next_id
        self.next_id += 1
        result = self.core.arrive(caller)
        if self._holders() < self.core.max_concurrent and not self.queue:
            assert result == ADMITTED
            self.started.append(caller)
            self.admitted.append(caller)
        elif len(self.queue) >= self.core.max_queued:
            assert result == FULL
        else:
            self.queue.append(caller)
            assert result == len(self.queue)

    @precondition(lambda self: self.started)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        caller = data.draw(st.sampled_from(self.started))
        assert caller not in self.released, "a caller released twice"
        self.started.remove(caller)
        self.released.add(caller)
        self._hand_on()

    @precondition(lambda self: self.granted)
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        caller = data.draw(st.sampled_from(self.granted))
        self.granted.remove(caller)
        self.started.append(caller)

    @precondition(lambda self: self.queue)
    @rule(data=st.data(), why=st.sampled_from(["cancel", "timeout"]))
    def give_up_while_queued(self, data: st.DataObject, why: str) -> None:
        caller = data.draw(st.sampled_from(self.queue))
        assert self.core.cancel(caller) is True
        self.queue.remove(caller)

    @precondition(lambda self: self.granted)
    @rule(data=st.data(), why=st.sampled_from(["cancel", "timeout"]))
    def give_up_after_grant(self, data: st.DataObject, why: str) -> None:
        # the slot was handed over in the same instant the waiter gave up: cancel() must say
        # so, and the waiter passes the slot on (exactly one release for that grant)
        caller = data.draw(st.sampled_from(self.granted))
        assert self.core.cancel(caller) is False
        self.granted.remove(caller)
        self.released.add(caller)
        self._hand_on()

    @invariant()
    def counts_match_and_stay_bounded(self) -> None:
        assert self.core.running == self._holders() <= self.core.max_concurrent
        assert self.core.queued == len(self.queue) <= self.core.max_queued

    @invariant()
    def nobody_waits_while_a_slot_is_free(self) -> None:
        if self.queue:
            assert self.core.running == self.core.max_concurrent

    @invariant()
    def admission_is_first_come_first_served_among_waiters(self) -> None:
        # callers only ever get in in increasing arrival order, except that a caller admitted
        # at once can be younger than none of the still-queued ones
        for waiting in self.queue:
            assert all(a < waiting for a in self.admitted)

    def teardown(self) -> None:
        while self.granted:
            self.started.append(self.granted.pop())
        while self.started:
            self.started.pop()
            self._hand_on()
            self.started.extend(self.granted)
            self.granted.clear()
        assert self.core.running == 0 and self.core.queued == 0


TestCoreMachine = CoreMachine.TestCase


def test_core_refuses_to_release_more_than_it_admitted() -> None:
    core: BulkheadCore[int] = BulkheadCore(1, 0)
    assert core.arrive(1) == ADMITTED
    assert core.release() is None
    with pytest.raises(RuntimeError, match="released more often"):
        core.release()


# -- the front end, with real threads and tasks ------------------------------------------------

WAIT = 10.0  # seconds; only reached when something is broken


@dataclass
class Caller:
    """One generated caller and the handles the driver needs to steer it."""

    ident: int
    kind: str  # "thread", "asyncio", "trio"
    finish: Callable[[], object] = lambda: None
    cancel: Callable[[], object] = lambda: None
    extra: dict[str, Any] = field(default_factory=dict)


_ME: ContextVar[Caller | None] = ContextVar("caller", default=None)


class Loops:
    """An asyncio loop and a trio run, each in its own thread, to host async callers."""

    def __init__(self) -> None:
        self.asyncio_loop = asyncio.new_event_loop()
        self._asyncio_thread = threading.Thread(
            target=self.asyncio_loop.run_forever, name="test-asyncio", daemon=True
        )
        self._asyncio_thread.start()
        self._trio_ready = threading.Event()
        self._trio_thread = threading.Thread(target=trio.run, args=(self._trio_main,), daemon=True)
        self._trio_thread.start()
        assert self._trio_ready.wait(WAIT)

    async def _trio_main(self) -> None:
        self.trio_token = trio.lowlevel.current_trio_token()
        self._trio_stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.trio_nursery = nursery
            self._trio_ready.set()
            await self._trio_stop.wait()
            nursery.cancel_scope.cancel()

    def spawn(self, kind: str, fn: Callable[[], Any]) -> None:
        if kind == "asyncio":
            asyncio.run_coroutine_threadsafe(fn(), self.asyncio_loop)
        else:
            self.trio_token.run_sync_soon(self.trio_nursery.start_soon, fn)

    def close(self) -> None:
        self.trio_token.run_sync_soon(self._trio_stop.set)
        self._trio_thread.join(WAIT)
        self.asyncio_loop.call_soon_threadsafe(self.asyncio_loop.stop)
        self._asyncio_thread.join(WAIT)
        self.asyncio_loop.close()


@pytest.fixture(scope="module")
def loops() -> Iterator[Loops]:
    hosts = Loops()
    yield hosts
    hosts.close()


class Driver:
    """Runs a schedule against one shared bulkhead and the model, step by step."""

    def __init__(self, loops: Loops, max_concurrent: int, max_queued: int) -> None:
        self.loops = loops
        self.notes: queue.Queue[tuple[int, str]] = queue.Queue()
        self.bulkhead = rs.Bulkhead(
            max_concurrent=max_concurrent, max_queued=max_queued, on_event=self._on_event
        )
        self.callers: dict[int, Caller] = {}
        self.running: list[int] = []  # started, in start order
        self.queue: list[int] = []  # waiting, in arrival order
        self.threads: list[threading.Thread] = []

    def _on_event(self, event: Event) -> None:
        me = _ME.get()
        if isinstance(event, BulkheadQueued) and me is not None:
            self.notes.put((me.ident, "queued"))

    # -- what each caller does -------------------------------------------------------------
    def _thread_body(self, me: Caller) -> None:
        _ME.set(me)
        go = threading.Event()
        me.finish = go.set
        try:
            with self.bulkhead:
                self.notes.put((me.ident, "started"))
                go.wait()
        except rs.BulkheadFullError:
            self.notes.put((me.ident, "rejected"))
            return
        self.notes.put((me.ident, "finished"))

    async def _task_body(self, me: Caller) -> None:
        _ME.set(me)
        go = anyio.Event()
        schedule = (
            self.loops.asyncio_loop.call_soon_threadsafe
            if me.kind == "asyncio"
            else self.loops.trio_token.run_sync_soon
        )
        with anyio.CancelScope() as scope:
            me.finish = lambda: schedule(go.set)
            me.cancel = lambda: schedule(scope.cancel)
            try:
                async with self.bulkhead:
                    self.notes.put((me.ident, "started"))
                    await go.wait()
            except rs.BulkheadFullError:
                self.notes.put((me.ident, "rejected"))
                return
        self.notes.put((me.ident, "cancelled" if scope.cancelled_caught else "finished"))

    # -- steps -----------------------------------------------------------------------------
    def expect(self, *notes: tuple[int, str]) -> None:
        wanted = set(notes)
        while wanted:
            try:
                note = self.notes.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"still waiting for {wanted}") from None
            assert note in wanted, f"unexpected {note}, expected {wanted}"
            wanted.discard(note)

    def check_counts(self) -> None:
        assert self.bulkhead.in_flight == len(self.running) <= self.bulkhead.max_concurrent
        assert self.bulkhead.queued == len(self.queue) <= self.bulkhead.max_queued

    def arrive(self, kind: str) -> None:
        me = Caller(len(self.callers), kind)
        self.callers[me.ident] = me
        if kind == "thread":
            t = threading.Thread(target=self._thread_body, args=(me,), daemon=True)
            self.threads.append(t)
            t.start()
        else:
            self.loops.spawn(kind, lambda: self._task_body(me))
        if len(self.running) < self.bulkhead.max_concurrent and not self.queue:
            self.running.append(me.ident)
            self.expect((me.ident, "started"))
        elif len(self.queue) >= self.bulkhead.max_queued:
            self.expect((me.ident, "rejected"))
        else:
            self.queue.append(me.ident)
            self.expect((me.ident, "queued"))

    def _freed_slot(self, *notes: tuple[int, str]) -> None:
        if self.queue:
            head = self.queue.pop(0)
            self.running.append(head)
            notes = (*notes, (head, "started"))
        self.expect(*notes)

    def finish(self, ident: int) -> None:
        self.running.remove(ident)
        self.callers[ident].finish()
        self._freed_slot((ident, "finished"))

    def cancel(self, ident: int) -> None:
        self.callers[ident].cancel()
        if ident in self.queue:
            self.queue.remove(ident)
            self.expect((ident, "cancelled"))
        else:
            self.running.remove(ident)
            self._freed_slot((ident, "cancelled"))

    def drain(self) -> None:
        while self.running:
            self.finish(self.running[0])
        assert not self.queue
        for t in self.threads:
            t.join(WAIT)
            assert not t.is_alive()
        assert self.notes.empty()


_steps = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.sampled_from(["thread", "asyncio", "trio"])),
        st.tuples(st.just("finish"), st.integers(0, 7)),
        st.tuples(st.just("cancel"), st.integers(0, 7)),
    ),
    max_size=25,
)


@settings(max_examples=60)
@given(max_concurrent=st.integers(1, 3), max_queued=st.integers(0, 3), steps=_steps)
def test_shared_bulkhead_schedule_with_threads_asyncio_and_trio(
    loops: Loops, max_concurrent: int, max_queued: int, steps: list[tuple[str, Any]]
) -> None:
    driver = Driver(loops, max_concurrent, max_queued)
    for op, arg in steps:
        if op == "arrive":
            driver.arrive(arg)
        elif op == "finish" and driver.running:
            driver.finish(driver.running[arg % len(driver.running)])
        elif op == "cancel":
            # threads cannot be cancelled from outside; tasks can, queued or running
            targets = [
                i for i in driver.queue + driver.running if driver.callers[i].kind != "thread"
            ]
            if targets:
                driver.cancel(targets[arg % len(targets)])
        driver.check_counts()
    driver.drain()
    assert driver.bulkhead.in_flight == 0 and driver.bulkhead.queued == 0
