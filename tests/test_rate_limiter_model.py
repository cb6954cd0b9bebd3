"""Property tests of the rate limiter: the pure core against an exact reference bucket, then
the front end under 8 threads and 1,000 asyncio tasks over a simulated minute.

The reference keeps the bucket in exact fractions and hands tokens to waiters the instant they
come due (continuous time); the core keeps one float and hands them over when asked. After
every step they must agree on every decision, on who got a token and in which order, and on
the tokens in the bucket, which must stay between 0 and ``burst``.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import resilient as rs
from resilient._core.rate_limit import ADMITTED, RateLimitCore
from resilient.testing import FakeClock

TICK = Fraction(1, 64)  # simulated time moves on this grid: exact in floats as well


class Reference:
    """A token bucket in exact arithmetic with a FIFO queue, served in continuous time."""

    def __init__(self, interval: Fraction, burst: int) -> None:
        self.interval = interval
        self.burst = burst
        self.tokens = Fraction(burst)
        self.at = Fraction(0)
        self.queue: list[int] = []
        self.granted: list[int] = []

    def advance(self, now: Fraction) -> None:
        while self.queue:
            if self.tokens >= 1:  # a token came back (a refund): the head takes it at once
                self.tokens -= 1
            else:
                due = self.at + (1 - self.tokens) * self.interval  # the head's token
                if due > now:
                    break
                self.at = due
                self.tokens = Fraction(0)
            self.granted.append(self.queue.pop(0))
        self.tokens += (now - self.at) / self.interval
        self.at = now
        if not self.queue:
            self.tokens = min(self.tokens, Fraction(self.burst))

    def take(self, now: Fraction) -> Fraction | None:
        """``None``: took a token; else the wait until one would be free for a newcomer."""
        self.advance(now)
        if not self.queue and self.tokens >= 1:
            self.tokens -= 1
            return None
        return max(Fraction(0), (len(self.queue) + 1 - self.tokens) * self.interval)

    def refund(self, now: Fraction) -> None:
        self.advance(now)
        self.tokens += 1
        self.advance(now)


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core: RateLimitCore[int] = RateLimitCore(0.1, 1)
        self.ref = Reference(Fraction(1, 10), 1)
        self.now = Fraction(0)
        self.next_id = 0
        self.unresumed: list[int] = []  # granted, not yet "running" (may still give up)

    @initialize(
        interval=st.sampled_from([Fraction(1, 10), Fraction(1, 3), Fraction(2, 7), Fraction(1)]),
        burst=st.integers(1, 4),
    )
    def setup(self, interval: Fraction, burst: int) -> None:
        self.core = RateLimitCore(float(interval), burst)
        self.ref = Reference(interval, burst)

    def _served(self) -> None:
        """Ask the core to serve what is due, and compare who got tokens, in order."""
        self.core.serve(float(self.now))
        self.ref.advance(self.now)
        got = self.core.take_granted()
        assert got == self.ref.granted, f"core granted {got}, the reference {self.ref.granted}"
        self.unresumed.extend(got)
        self.ref.granted = []

    @rule(ticks=st.integers(0, 40))
    def advance(self, ticks: int) -> None:
        self.now += ticks * TICK

    @rule()
    def try_acquire(self) -> None:
        queued = self.core.queued
        ok = self.core.try_acquire(float(self.now))
        if queued:
            assert not ok, "a newcomer overtook the queue"
            return
        self.ref.advance(self.now)
        expected = not self.ref.queue and self.ref.tokens >= 1
        assert ok == expected
        if ok:
            self.ref.tokens -= 1

    @rule()
    def take(self) -> None:
        wait = self.core.take(float(self.now))
        expected = self.ref.take(self.now)
        self._served()
        if expected is None:
            assert wait == ADMITTED
        else:
            assert wait == pytest.approx(float(expected), abs=1e-9)

    @rule(max_wait=st.sampled_from([Fraction(0), TICK, Fraction(1, 2), Fraction(1), Fraction(3)]))
    def arrive(self, max_wait: Fraction) -> None:
        caller = self.next_id
        self.next_id += 1
        wait = self.core.arrive(caller, float(self.now), float(max_wait))
        expected = self.ref.take(self.now)
        self._served()
        if expected is None:
            assert wait == ADMITTED
            return
        assert wait == pytest.approx(float(expected), abs=1e-9)
        if expected <= max_wait:
            self.ref.queue.append(caller)
            assert self.core.is_queued(caller)
        else:
            assert not self.core.is_queued(caller)

    @rule()
    def serve(self) -> None:
        self._served()

    @precondition(lambda self: self.ref.queue)
    @rule(data=st.data())
    def give_up_while_queued(self, data: st.DataObject) -> None:
        self._served()
        if not self.ref.queue:
            return
        caller = data.draw(st.sampled_from(self.ref.queue))
        assert self.core.cancel(caller) is True
        self.ref.queue.remove(caller)

    @precondition(lambda self: self.unresumed)
    @rule(data=st.data(), use=st.booleans())
    def granted_caller_resumes_or_gives_up(self, data: st.DataObject, use: bool) -> None:
        caller = data.draw(st.sampled_from(self.unresumed))
        self.unresumed.remove(caller)
        if use:
            return  # it runs: the token is spent
        # it gave up in the instant its token arrived: cancel says so, and it gives it back
        assert self.core.cancel(caller) is False
        self.core.refund(float(self.now))
        self.ref.refund(self.now)
        self._served()

    @invariant()
    def tokens_stay_between_zero_and_burst(self) -> None:
        tokens = self.core.tokens(float(self.now))
        assert -1e-9 <= tokens <= self.core.burst + 1e-9

    @invariant()
    def same_queue_and_tokens_once_served(self) -> None:
        self._served()
        assert [w for w in self.core._waiting] == self.ref.queue
        assert self.core.tokens(float(self.now)) == pytest.approx(float(self.ref.tokens), abs=1e-6)
        if self.ref.queue:  # the head wakes exactly when its token comes due, and not before
            due = self.ref.at + (1 - self.ref.tokens) * self.ref.interval
            wake = self.core.head_wake_at()
            assert wake > float(self.now)
            assert wake == pytest.approx(float(due), abs=1e-6)

    @invariant()
    def nobody_waits_while_a_token_is_free(self) -> None:
        self._served()
        if self.core.queued:
            assert self.core.tokens(float(self.now)) < 1.0 + 1e-9


TestCoreMachine = CoreMachine.TestCase


def test_core_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="interval"):
        RateLimitCore(0.0, 1)
    with pytest.raises(ValueError, match="burst"):
        RateLimitCore(1.0, 0)


def test_a_waiter_cannot_queue_twice() -> None:
    core: RateLimitCore[str] = RateLimitCore(1.0, 1)
    assert core.arrive("a", 0.0, 0.0) == ADMITTED
    assert core.arrive("b", 0.0, 5.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="already queued"):
        core.arrive("b", 0.0, 5.0)


# -- the front end: a simulated minute under 8 threads and 1,000 asyncio tasks ------------------
RATE = 100
BURST = 10
STEP = Fraction(1, 128)  # seconds of simulated time per step: exact in binary, < 1/RATE
MINUTE = 60
WAIT = 30.0  # real seconds; only reached when something is broken


def test_a_minute_of_threads_and_asyncio_tasks_gets_the_allowed_calls_in_arrival_order() -> None:
    """8 threads and 1,000 asyncio tasks share one 100/s limiter (burst 10) and call it in a
    loop, each waiting for its turn. Every caller arrives once in a known order (the driver
    starts them one by one), then re-arrives the moment its call ran. The simulated clock
    moves a 128th of a second at a time (less than one token); after each step the driver
    waits until the calls due by then have run. Over one minute exactly ``burst + 100 * 60``
    calls get in, and in arrival order: the burst to the first caller, then every caller in
    turn, round after round."""
    clock = FakeClock()
    limiter = rs.RateLimiter("minute", rate=RATE, burst=BURST, max_wait=120.0, clock=clock)
    order: list[int] = []
    order_lock = threading.Lock()
    done = threading.Event()
    me: ContextVar[int] = ContextVar("me")

    def protected() -> None:
        with order_lock:
            order.append(me.get())

    async def aprotected() -> None:
        protected()

    guarded = limiter(protected)
    aguarded = limiter(aprotected)

    def thread_body(ident: int) -> None:
        me.set(ident)
        while not done.is_set():
            try:
                guarded()
            except rs.RateLimitedError:  # pragma: no cover - max_wait outlasts the test
                return

    async def task_body(ident: int) -> None:
        me.set(ident)
        while not done.is_set():
            await aguarded()

    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    kinds = ["thread" if i % 126 == 0 else "task" for i in range(1008)]  # 8 threads
    assert kinds.count("thread") == 8
    threads: list[threading.Thread] = []
    tasks: list[Any] = []

    def wait_until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            assert time.monotonic() < deadline, (
                f"still waiting for {what}: {len(order)} calls, {limiter.queued} queued, "
                f"head {limiter._core.head()!r} (told: {limiter._head!r}), "
                f"signalled {limiter._signalled!r}, alarms {clock._alarms[:3]!r}, "
                f"due {limiter._core.next_due(clock())}"
            )
            time.sleep(0.0002)

    try:
        for ident, kind in enumerate(kinds):
            if kind == "thread":
                t = threading.Thread(target=thread_body, args=(ident,), daemon=True)
                threads.append(t)
                t.start()
            else:
                tasks.append(asyncio.run_coroutine_threadsafe(task_body(ident), loop))
            # the first caller takes the whole burst, then everyone queues, one at a time
            wait_until(lambda n=ident: limiter.queued == n + 1, f"caller {ident} to queue")
        assert order == [0] * BURST
        now = Fraction(0)
        while now < MINUTE:
            now += STEP
            clock.advance(float(STEP))
            due = BURST + int(RATE * now)  # exact: every token due by now was handed out
            wait_until(
                lambda due=due: len(order) == due and limiter.queued == len(kinds),
                f"{due} calls at t={float(now)}",
            )
        assert clock() == 60.0
        assert len(order) == BURST + RATE * MINUTE
        rounds = (len(order) - BURST) // len(kinds) + 1
        expected = [0] * BURST + (list(range(len(kinds))) * rounds)[: RATE * MINUTE]
        assert order == expected, "callers were not admitted in arrival order"
    finally:
        done.set()
        clock.advance(3600.0)  # lets every waiter through (they stop after their call)
        for t in threads:
            t.join(WAIT)
        for fut in tasks:
            fut.result(WAIT)
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(WAIT)
        loop.close()


def test_threads_hammering_without_waiting_take_exactly_the_tokens_that_come_due() -> None:
    """8 threads take tokens as fast as they can (the happy path, lock-free on a GIL build)
    and are refused otherwise, while the simulated clock moves on whenever the bucket is
    empty: over 5 simulated seconds exactly ``burst + rate * 5`` get through."""
    clock = FakeClock()
    limiter = rs.RateLimiter("hammer", rate=RATE, burst=BURST, clock=clock)
    taken = [0] * 8
    refused = [0] * 8
    done = threading.Event()

    @limiter
    def protected() -> None:
        return None

    def hammer(i: int) -> None:
        while not done.is_set():
            try:
                protected()
            except rs.RateLimitedError:
                refused[i] += 1
            else:
                taken[i] += 1

    threads = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(8)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    for t in threads:
        t.start()
    try:
        now = Fraction(0)
        while True:
            deadline = time.monotonic() + WAIT
            while limiter.tokens >= 1.0:  # the hammerers have not taken what is due yet
                assert time.monotonic() < deadline, "the hammerers stopped"
                time.sleep(0.0001)
            if now >= 5:
                break
            now += STEP
            clock.advance(float(STEP))
    finally:
        done.set()
        for t in threads:
            t.join(WAIT)
        sys.setswitchinterval(switch)
    assert sum(taken) == BURST + RATE * 5
    assert sum(refused) > 0 and all(n > 0 for n in taken)
