"""RateLimiter: admit at most ``rate`` calls per ``per`` seconds (a token bucket), callers
waiting their turn in one FIFO queue shared by threads, asyncio tasks and trio tasks.

The decisions live in :class:`~resilient._core.rate_limit.RateLimitCore`, updated under one
short ``threading.Lock`` that is never held while anyone waits or the protected function runs.
The happy path (a token in the bucket, nobody queued) is one clock read and one lock section.

How waiting works, without polling: a caller that finds no token and may wait (``max_wait``)
queues a wake-up handle from :mod:`resilient._waiters`. Only the caller at the head of the
queue times anything: it sleeps until exactly the moment its token comes due, computed from
the core, then takes it and tells the next caller that it is now first in line; the others
sleep until they are told (or their ``max_wait`` is over, which the admission check makes all
but impossible: a caller only queues when its token is due within ``max_wait``). Whoever
notices that tokens came due (the head on waking, a newcomer, a caller giving up) hands them
to the longest waiters in order, so late wake-ups cost latency but never tokens.

Giving up (a cancel scope, ``asyncio`` cancellation, ``KeyboardInterrupt``) takes the caller
out of the queue; if a token was handed to it in the same instant, it gives the token back to
the next caller (or the bucket) before the exception propagates. No token is lost or made up.
"""

from __future__ import annotations

import functools
import math
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from . import _hot_load
from . import _validate as v
from ._core.rate_limit import ADMITTED, RateLimitCore
from ._deadline import remaining
from ._lazy import module
from ._outcomes import WAIT
from ._policy import AroundPolicy, Policy
from ._waiters import TaskWaiter, ThreadWaiter, Waiter
from .errors import _rate_limited
from .telemetry._events import RateLimiterQueued
from .telemetry._hub import STATE, Listener
from .telemetry._stats import UNLOCKED

if TYPE_CHECKING:
    from ._state import BucketBackend, BucketLink
    from ._timers import TimerClock
    from ._types import Args, AsyncFn, Fn, Kwargs

__all__ = ["RateLimiter"]

_RATE = v.number("rate", above=0)
_PER = v.duration("per", zero=False)
_BURST = v.count("burst", optional=True)
_MAX_WAIT = v.duration("max_wait")
_STATE = v.state_backend("_bind_bucket")
_CLOCK = v.clock()
_OPTIONS = v.Options(_RATE, _PER, _BURST, _MAX_WAIT, _STATE, v.ON_EVENT, _CLOCK)


class RateLimiter(AroundPolicy):
    """Admit at most ``rate`` calls per ``per`` seconds; callers beyond that wait up to
    ``max_wait`` seconds for their turn, or are turned away at once.

    Why: a dependency (or your own service) can take only so many requests per second, and a
    quota agreed with a provider is a contract. A token bucket allows short bursts (up to
    ``burst`` calls at once after a quiet spell) and holds the average to the rate.

    * ``rate`` (> 0) calls per ``per`` seconds (> 0, default 1): one token every
      ``per / rate`` seconds.
    * ``burst`` (int >= 1, default ``ceil(rate)``): the bucket's size, i.e. how many calls may
      go at once after a quiet spell. It starts full.
    * ``max_wait`` (seconds >= 0, default 0): how long a caller may wait for its token. A
      caller whose token is due later than that is refused at once (it does not wait in
      vain); callers that wait are admitted strictly first come, first served, threads and
      tasks alike. A caller also never waits past an enclosing ``rs.Timeout`` deadline
      (``rs.remaining()``).
    * ``state``: ``None`` (this process alone), or a shared state backend such as
      ``rs.RedisState(...)``: one bucket for the whole fleet, in Redis. Each replica spends
      tokens from a lease it takes from the fleet (no round trip per call); a caller the fleet
      has no token for waits (up to ``max_wait``) until the fleet says one is due, in no
      particular order across replicas. While the backend is unreachable the local bucket
      decides. See ``docs/scaling.md``.
    * ``clock``: where time comes from (default ``time.monotonic``). A clock with a
      ``call_at(when, callback)`` method, like :class:`resilient.testing.FakeClock`, also
      drives the waiting, so a test waits in simulated time; any other clock is read as
      seconds and waited on in real time.

    Raises :class:`~resilient.RateLimitedError` (``reason="rate_limited"``, ``retry_after``:
    seconds until a token would be free for this caller) without calling the function.
    :meth:`try_acquire` takes a token without waiting or raising. Use it as ``@limiter``,
    ``with limiter:`` or ``async with limiter:`` (a token is used up on entry; nothing is given
    back on exit).
    """

    kind = "rate_limiter"
    options = _OPTIONS
    _stateful = True

    def __init__(
        self,
        name: str | None = None,
        *,
        rate: float,
        per: float = 1.0,
        burst: int | None = None,
        max_wait: float = 0.0,
        state: BucketBackend | None = None,
        on_event: Listener | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        rate = _RATE(rate)
        per = _PER(per)
        burst = _BURST(burst)
        max_wait = _MAX_WAIT(max_wait)
        backend: BucketBackend | None = _STATE(state)
        clock = _CLOCK(clock)
        interval = per / rate
        if not (interval > 0.0 and math.isfinite(interval)):
            raise ValueError(
                f"rate must give a finite, positive time between tokens: rate={rate!r}, "
                f"per={per!r} gives {interval!r} s"
            )
        super().__init__(name, on_event=on_event)
        self._rate = rate
        self._per = per
        self._max_wait = max_wait
        self._clock = clock
        # a simulated clock (``call_at``: ``testing.FakeClock``) drives the waits itself
        self._timers = (
            cast("TimerClock", clock) if callable(getattr(clock, "call_at", None)) else None
        )
        self._lock = threading.Lock()
        # On CPython with a GIL the happy path takes a token without the lock (the core's
        # ``try_acquire`` runs as one step); free-threaded builds always lock.
        self._unlocked = UNLOCKED
        self._core: RateLimitCore[Waiter] = RateLimitCore(
            interval, burst if burst is not None else max(1, math.ceil(rate))
        )
        self._id = id(self)
        # Waiters woken since they last looked (a waiter is woken at most once per wait), and
        # the one last told that it is first in line and must time the next token.
        self._signalled: set[Waiter] = set()
        self._head: Waiter | None = None
        self._tel.gauge_source("resilient_ratelimiter_tokens", _tokens_reader(self))
        self._backend = backend
        self._bucket: BucketLink | None = None
        if backend is not None:
            self._bind()
        self._settle(
            rate=rate,
            per=per,
            burst=self._core.burst,
            max_wait=max_wait,
            state=backend,
            on_event=on_event,
            clock=clock,
        )

    def __repr__(self) -> str:
        return (
            f"<RateLimiter {self.name!r} rate={self._rate:g}/{self._per:g}s "
            f"burst={self._core.burst} max_wait={self._max_wait:g}>"
        )

    # -- read-only view ------------------------------------------------------------------------
    @property
    def rate(self) -> float:
        """Calls admitted per ``per`` seconds, on average."""
        return self._rate

    @property
    def per(self) -> float:
        """The period ``rate`` is counted over, in seconds."""
        return self._per

    @property
    def burst(self) -> int:
        """The bucket's size: calls that may go at once after a quiet spell."""
        return self._core.burst

    @property
    def max_wait(self) -> float:
        """How long a caller may wait for its token, in seconds."""
        return self._max_wait

    @property
    def tokens(self) -> float:
        """Tokens in the bucket right now (between 0 and ``burst``; fractional while one is
        on its way)."""
        now = self._clock()
        with self._lock:
            return self._core.tokens(now)

    @property
    def queued(self) -> int:
        """Callers waiting for a token right now."""
        return self._core.queued

    # -- taking a token without a call ----------------------------------------------------------
    def try_acquire(self) -> bool:
        """Take a token if one is free now and nobody is waiting for it: ``True``, and the
        caller may go ahead; ``False`` otherwise (nothing is taken, nothing raised, no
        rejection counted). Never waits."""
        now = self._clock()
        core = self._core
        if self._unlocked and core.try_acquire(now):
            return True
        with self._lock:
            if core.try_acquire(now):
                return True
            if not core.queued:
                return False
            self._dispatch(now)  # tokens may have come due for the waiters: hand them over
            return core.try_acquire(now)

    # -- admission: the per-call paths ----------------------------------------------------------
    # --- generated from src/resilient/_templates/rate_limiter.tmpl by tools/gen_hotpaths.py ---
    _async_wrapper = _hot_load.rate_limiter_async_wrapper
    _sync_wrapper = _hot_load.rate_limiter_sync_wrapper
    _acall = _hot_load.rate_limiter_acall
    _call = _hot_load.rate_limiter_call
    _aenter = _hot_load.rate_limiter_aenter
    _enter = _hot_load.rate_limiter_enter
    _enter_nowait = _hot_load.rate_limiter_enter_nowait
    # --- end of generated code ---

    def _exit(self, permit: Any, error: BaseException | None, result: Any) -> None:
        return None  # a token is spent on entry; nothing goes back

    def _exit_ok(self, permit: Any, result: Any) -> None:
        return None

    # -- waiting: the slow paths ------------------------------------------------------------------
    def _wait_in_thread(self, now: float) -> None:
        """No token at ``now``: wait for one in the queue (this thread blocks), or raise."""
        max_wait = self._wait_allowed()
        if max_wait <= 0.0:
            return self._take_or_reject(now)
        waiter = ThreadWaiter()
        deadline = self._arrive(waiter, max_wait)
        if deadline is None:
            return None
        try:
            woken = False
            while True:
                until = self._next_wait(waiter, woken, deadline)
                if until is None:
                    return None
                timers = self._timers
                if timers is None:
                    woken = waiter.wait(max(0.0, until - self._clock()))
                else:
                    timer = timers.call_at(until, functools.partial(self._alarm, waiter))
                    try:
                        woken = waiter.wait(None)
                    finally:
                        timer.cancel()
        except BaseException:
            self._abandon(waiter)
            raise

    async def _wait_in_task(self, now: float) -> None:
        """No token at ``now``: wait for one in the queue (this task sleeps), or raise."""
        max_wait = self._wait_allowed()
        if max_wait <= 0.0:
            return self._take_or_reject(now)
        anyio = module("anyio")  # loaded with the first task that waits

        waiter = TaskWaiter()
        deadline = self._arrive(waiter, max_wait)
        if deadline is None:
            return None
        try:
            while True:
                until = self._next_wait(waiter, False, deadline)
                if until is None:
                    return None
                timers = self._timers
                if timers is None:
                    with anyio.move_on_after(max(0.0, until - self._clock())):
                        await waiter.event.wait()
                else:
                    timer = timers.call_at(until, functools.partial(self._alarm, waiter))
                    try:
                        await waiter.event.wait()
                    finally:
                        timer.cancel()
        except BaseException:
            self._abandon(waiter)
            raise

    def _wait_allowed(self) -> float:
        """``max_wait``, shortened to what the enclosing deadline leaves."""
        max_wait = self._max_wait
        left = remaining()
        if left is not None and left < max_wait:
            return left
        return max_wait

    def _take_or_reject(self, now: float) -> None:
        """A caller that may not wait, refused a token at ``now``: the error. (When callers
        are queued, tokens due to them by now are handed over first; one may be left.)"""
        core = self._core
        if not core.queued:
            # Nobody to serve: the refusal taken under the lock at ``now`` stands, and the
            # hint is read without it (one float, as of about now).
            raise self._reject(core.due_in(now))
        with self._lock:
            wait = core.take(now)
            self._dispatch(now)
        if wait != ADMITTED:
            raise self._reject(wait)

    def _arrive(self, waiter: Waiter, max_wait: float) -> float | None:
        """Take a token (returns ``None``) or join the queue (returns the clock time after
        which the caller gives up); raises ``RateLimitedError`` when the token would come too
        late."""
        now = self._clock()
        with self._lock:
            core = self._core
            wait = core.arrive(waiter, now, max_wait)
            queued = core.is_queued(waiter)
            if queued and core.head() is waiter:
                self._head = waiter  # it times its own token: no need to tell it
            self._dispatch(now)
            position = core.queued
        if wait == ADMITTED:
            return None
        if not queued:
            raise self._reject(wait)
        tel = self._tel
        if tel.wants_events():
            try:
                tel.emit(
                    RateLimiterQueued(
                        policy=self.kind, name=self.name, position=position, wait=wait
                    )
                )
            except BaseException:
                self._abandon(waiter)
                raise
        return now + max_wait

    def _next_wait(self, waiter: Waiter, woken: bool, deadline: float) -> float | None:
        """After (or before) a wait: ``None`` when the waiter got its token, else the clock
        time until which it should wait next. Raises ``RateLimitedError`` past ``deadline``.

        The head of the queue waits until its token is due; the others until ``deadline``
        (they are woken when they reach the head)."""
        now = self._clock()
        with self._lock:
            if waiter in self._signalled:
                self._signalled.discard(waiter)
                if not woken:
                    waiter.rearm()  # woken, but the wait had already ended: swallow the wake
            core = self._core
            self._dispatch(now)
            if not core.is_queued(waiter):
                return None  # granted: the token is ours
            if core.head() is waiter:
                self._head = waiter
                until = core.head_wake_at()  # later than now: ``_dispatch`` just served
                if until < deadline:
                    return until
            if now < deadline:
                return deadline
            core.cancel(waiter)
            if self._head is waiter:
                self._head = None
            self._dispatch(now)
            retry_after = core.due_in(now)
        raise self._reject(retry_after)

    def _alarm(self, waiter: Waiter) -> None:
        """The simulated clock reached the moment ``waiter`` waits for: wake it."""
        with self._lock:
            if self._core.is_queued(waiter):  # a granted waiter was woken by the grant
                self._signal(waiter)

    def _signal(self, waiter: Waiter) -> bool:
        """Wake ``waiter`` (lock held) unless it was already woken; ``False`` if its event loop
        is gone (it will never look again)."""
        if waiter in self._signalled:
            return True
        if not waiter.wake():
            return False
        self._signalled.add(waiter)
        return True

    def _dispatch(self, now: float) -> None:
        """Hand the tokens due by ``now`` to the longest waiters and wake them; make sure the
        new head of the queue is timing the next token (lock held). A waiter whose event loop
        is gone gives its token (or its place) to the next one."""
        core = self._core
        while True:
            core.serve(now)
            lost = False
            for waiter in core.take_granted():
                if not self._signal(waiter):
                    core.refund(now)
                    lost = True
            head = core.head()
            if head is not None and head is not self._head:
                if self._signal(head):
                    self._head = head
                else:
                    core.cancel(head)
                    lost = True
            if not lost:
                return

    def _abandon(self, waiter: Waiter) -> None:
        """A queued caller is leaving (cancelled, interrupted): drop its place, or give back
        the token it was handed in the meantime."""
        now = self._clock()
        with self._lock:
            core = self._core
            self._signalled.discard(waiter)
            if not core.cancel(waiter):
                core.refund(now)  # the head's token may now be due earlier: tell it
                self._head = None
            elif self._head is waiter:
                self._head = None
            self._dispatch(now)

    def _reject(self, retry_after: float) -> BaseException:
        tel = self._tel
        if not tel.quiet or tel.gen != STATE.generation:
            tel.rejected("rate_limited", retry_after)
        return _rate_limited(self._id, self.name, retry_after)

    # -- shared state (``state=``) ---------------------------------------------------------------
    def _bind(self) -> None:
        """Join the fleet's bucket. The per-call paths of a local limiter stay exactly what
        they are: a shared one gets the generic wrappers and its own entry points as instance
        attributes (the fleet answers every call, from a lease)."""
        backend = self._backend
        assert backend is not None
        core = self._core
        self._bucket = backend._bind_bucket(self.name, self._rate, self._per, core.burst)
        self._tel.gauge_source("resilient_state_backend_up", _backend_up_reader(backend))
        self._sync_wrapper = Policy._sync_wrapper.__get__(self)  # type: ignore[method-assign]
        self._async_wrapper = AroundPolicy._async_wrapper.__get__(self)  # type: ignore[method-assign]
        self._call = self._shared_call  # type: ignore[method-assign]
        self._acall = self._shared_acall  # type: ignore[method-assign]
        self._enter = self._shared_enter  # type: ignore[method-assign]
        self._aenter = self._shared_aenter  # type: ignore[method-assign]
        self._enter_nowait = self._shared_enter_nowait  # type: ignore[method-assign]

    def _renamed(self) -> None:
        if self._backend is not None:  # the fleet's bucket is kept under the limiter's name
            core = self._core
            self._bucket = self._backend._bind_bucket(self.name, self._rate, self._per, core.burst)

    def _shared_wait(self, started: float) -> float | None:
        """Ask the fleet for a token: ``None`` (it is this caller's, or the backend is down
        and the local bucket gave one), else the seconds to wait before asking again. Raises
        ``RateLimitedError`` when the fleet's next token comes later than this caller may
        wait."""
        assert self._bucket is not None
        answer = self._bucket.take()
        if answer is None:  # the backend is unreachable: the local bucket decides
            now = self._clock()
            with self._lock:
                wait = self._core.take(now)
                self._dispatch(now)
            if wait == ADMITTED:
                return None
            retry_after = wait
        else:
            granted, retry_after = answer
            if granted:
                return None
        spent = self._clock() - started
        if spent + retry_after > self._wait_allowed() + 1e-9:
            raise self._reject(retry_after)
        return retry_after

    def _shared_enter(self) -> None:
        started = self._clock()
        while True:
            wait = self._shared_wait(started)
            if wait is None:
                return None
            timers = self._timers
            if timers is None:
                import time

                time.sleep(wait)
            else:  # a simulated clock: wait until it reaches the moment
                waiter = ThreadWaiter()
                timer = timers.call_at(self._clock() + wait, waiter.wake)
                try:
                    waiter.wait(None)
                finally:
                    timer.cancel()

    async def _shared_aenter(self) -> None:
        anyio = module("anyio")

        started = self._clock()
        while True:
            wait = self._shared_wait(started)
            if wait is None:
                return None
            timers = self._timers
            if timers is None:
                await anyio.sleep(wait)
            else:
                waiter = TaskWaiter()
                timer = timers.call_at(self._clock() + wait, waiter.wake)
                try:
                    await waiter.event.wait()
                finally:
                    timer.cancel()

    def _shared_enter_nowait(self) -> Any:
        return WAIT  # the fleet's answer may take a wait: always through ``_aenter``

    def _shared_call(self, fn: Fn, args: Args, kwargs: Kwargs) -> Any:
        self._shared_enter()
        return fn(*args, **kwargs)

    async def _shared_acall(self, fn: AsyncFn, args: Args, kwargs: Kwargs) -> Any:
        await self._shared_aenter()
        return await fn(*args, **kwargs)

    # -- health --------------------------------------------------------------------------------
    def _health(self) -> dict[str, Any]:
        return {
            "tokens": round(self.tokens, 6),
            "burst": self.burst,
            "rate": self._rate,
            "per": self._per,
            "max_wait": self._max_wait,
            "queued": self.queued,
        }


def _backend_up_reader(backend: object) -> Callable[[], float]:
    """``resilient_state_backend_up``: 1 while the shared backend answers, else 0."""
    ref = weakref.ref(backend)

    def read() -> float:
        live = ref()
        return 1.0 if live is not None and getattr(live, "connected", True) else 0.0

    return read


def _tokens_reader(limiter: RateLimiter) -> Callable[[], float]:
    """Read ``tokens`` at scrape time through a weak reference: no cost per call."""
    ref = weakref.ref(limiter)

    def read() -> float:
        live = ref()
        return 0.0 if live is None else live.tokens

    return read
