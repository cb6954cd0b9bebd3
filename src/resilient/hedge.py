"""``Hedge``: when an attempt is slow to answer, start another; the first answer wins.

Why: most of a service's slow calls are not slow because the work is hard but because one
replica, one GC pause or one queue was unlucky. Sending a second copy of a request that has
not answered after about its 95th-percentile latency costs about 5 % extra load and cuts the
tail sharply — Dean and Barroso's "The Tail at Scale" (CACM, 2013) report a 99.9th percentile
going from 1,800 ms to 74 ms with a 10 ms hedge. See ``docs/policies/hedge.md``.

How, for ``async def`` (asyncio and trio):

* **The first attempt runs inline**, in the caller's own task: no task and no task group is
  created for a call that answers within ``delay``. A timer (one shared timer queue per event
  loop, see :mod:`resilient._timers`, or the injected clock's timers) fires after ``delay``.
* When it fires, attempt 2 starts as a *detached* task in a copy of the caller's context; every
  further ``delay`` another, up to ``max_hedged`` extra attempts. An attempt that fails with an
  error ``on`` accepts makes the next one start at once. The first answer wins; every other
  attempt is cancelled and **its end awaited before the call returns** (the inline one by
  interrupting the caller's await), so no attempt outlives the call. All failed: the last
  error propagates (with a note counting the attempts). An error ``on`` does not accept ends
  the call at once, the same way.
* **A cancelled caller cancels every attempt** and awaits them before re-raising.
* **Deadlines**: inside a ``Timeout`` (``rs.remaining()``), an attempt is not started when the
  budget left is smaller than the typical (median) latency of recent calls — it could not
  answer in time and would only add load — and each detached attempt gets the remaining budget
  as its own deadline (it does not run inside the caller's cancel scope).

For ``def``, every attempt runs on a worker thread of the pool the sync ``Timeout`` uses and
the caller waits for the first answer. **Python cannot stop a thread: losing attempts are
abandoned**, they run to their end in the background and their outcome is discarded.

**Never hedged**: a call marked *not repeatable* (the httpx transport marks requests that are
not idempotent and carry no ``Idempotency-Key``) runs as one plain attempt: hedging it would
duplicate its effect. Hedging non-idempotent requests through the transport therefore needs an
explicit opt-in there (an ``Idempotency-Key``, or the method added to ``retry_methods``).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from contextvars import copy_context
from typing import TYPE_CHECKING, Any

from . import _validate as v
from ._core.hedge import LatencyWindow, parse_percentile
from ._deadline import current_deadline
from ._hedging import AsyncRace, ThreadRace, fire
from ._loop_deadlines import cancelled
from ._no_retry import NO_RETRY
from ._policy import Policy
from ._timers import (
    Cancellable,
    TimerClock,
    asyncio_loop,
    asyncio_timers,
    call_later,
    current_task,
    timer_clock,
)
from ._types import Args, AsyncFn, Fn, Kwargs
from .telemetry._events import HedgeStarted
from .telemetry._hub import Listener

if TYPE_CHECKING:
    import asyncio

__all__ = ["Hedge"]

_DELAY = v.delay_or_percentile("delay")
_MAX_HEDGED = v.count("max_hedged")
_ON = v.exceptions("on", exceptions_only=True)
_CLOCK = v.clock()
_OPTIONS = v.Options(_DELAY, _MAX_HEDGED, _ON, v.ON_EVENT, _CLOCK)

_WINDOW = 1000
"""Latencies the ``pNN`` estimate (and the deadline check) look back over."""
_UNSET: Any = object()

_trio: Any = None  # imported on the first trio call


def _trio_module() -> Any:
    global _trio
    if _trio is None:
        import trio

        _trio = trio
    return _trio


class Hedge(Policy):
    """Start another attempt when one has not answered after ``delay``; first answer wins.

    - ``delay``: seconds to wait for an answer before starting the next attempt (``0``: all
      attempts at once), or ``"pNN"`` — that percentile of the latencies of the last 1,000
      calls (exact in rank, at most 10 % high; no timed hedge until 20 calls were seen).
    - ``max_hedged``: extra attempts at most (attempts in all: ``max_hedged + 1``).
    - ``on``: exception types, or a predicate ``exc -> bool``, meaning "this attempt failed,
      another may still answer"; any other error ends the call at once.
    - ``clock``: monotonic seconds for latencies; a clock with timers
      (:class:`resilient.testing.FakeClock`) also decides when hedges start, so tests never
      sleep.

    Telemetry: ``resilient_hedge_attempts_total{name}`` counts attempts after the first; the
    span gets ``resilient.hedge.winner`` (the attempt that answered) and
    ``resilient.hedge.attempts`` (how many started). Only for idempotent work: see the
    module docstring for what is never hedged and why.
    """

    kind = "hedge"
    options = _OPTIONS

    def __init__(
        self,
        name: str | None = None,
        *,
        delay: float | str = 0.1,
        max_hedged: int = 1,
        on: v.HandledFilter = (Exception,),
        clock: Callable[[], float] | None = None,
        on_event: Listener | None = None,
    ) -> None:
        super().__init__(name, on_event=on_event)
        checked = _DELAY(delay)
        self.max_hedged: int = _MAX_HEDGED(max_hedged)
        """Extra attempts at most."""
        self._on_types, self._on_pred = _ON(on)
        if self._on_pred is not None and v.is_async_callable(self._on_pred):
            raise TypeError(
                f"on must be a plain (sync) predicate, got the async function {on!r}: the "
                "hedge classifies an attempt's error as it ends, without awaiting; decide "
                "from the exception with a regular def"
            )
        # the default resolves to the clock installed by resilient.testing.fake_clock(), if any
        self._clock: Callable[[], float] = _CLOCK(clock)
        self._timer_clock: TimerClock | None = timer_clock(self._clock)
        self._percentile: float | None = None
        self._fixed: float | None = None
        if isinstance(checked, str):
            self._percentile = parse_percentile(checked)
        else:
            self._fixed = checked
        self.delay: float | str = checked
        """The configured delay: seconds, or a percentile string such as ``"p95"``."""
        self._lock = threading.Lock()
        self._window = LatencyWindow(_WINDOW)
        self._settle(
            delay=checked,
            max_hedged=self.max_hedged,
            on=on,
            on_event=on_event,
            clock=self._clock,
        )

    def __repr__(self) -> str:
        return f"<Hedge {self.name!r} delay={self.delay!r} max_hedged={self.max_hedged}>"

    # -- the delay and the latencies behind it ----------------------------------------------------
    def current_delay(self) -> float | None:
        """Seconds the next call waits before its first hedge: the fixed ``delay``, or the
        percentile estimate (``None`` while fewer than 20 latencies are known: no timed hedge
        then, only failures start another attempt)."""
        if self._percentile is None:
            return self._fixed
        with self._lock:
            return self._window.percentile(self._percentile)

    def _expected_latency(self) -> float | None:
        """The median recent latency (``None`` until 20 are known): what an attempt started
        now is expected to need, for the deadline check. With a fixed delay only calls made
        under a deadline are measured (the only ones that need it): a call without one
        reads no clock and takes no lock after its answer."""
        with self._lock:
            return self._window.percentile(50.0)

    def _record(self, seconds: float) -> None:
        """The first attempt's latency (its answer, or how long it ran before another
        attempt won: at least that long)."""
        lock = self._lock
        lock.acquire()  # not ``with``: on CPython 3.11 that costs twice the lock round trip
        try:
            self._window.add(seconds)
        finally:
            lock.release()

    def _handled(self, error: BaseException) -> bool:
        if not isinstance(error, Exception):
            return False
        pred = self._on_pred
        return isinstance(error, self._on_types) if pred is None else bool(pred(error))

    # -- telemetry ------------------------------------------------------------------------------
    def _hedge_started(self, attempt: int) -> None:
        tel = self._tel
        tel.hedge_attempt()
        if tel.detail and tel.wants_events():
            tel.emit(HedgeStarted(policy=self.kind, name=self.name, attempt=attempt))

    def _hedge_finished(self, winner: int, attempts: int) -> None:
        if self._tel.active_tracer is not None:
            span = self._tel.otel.get_current_span()
            if span.is_recording():
                if winner:
                    span.set_attribute("resilient.hedge.winner", winner)
                span.set_attribute("resilient.hedge.attempts", attempts)

    # -- sync: worker threads ---------------------------------------------------------------------
    def _call(self, fn: Fn, args: Args, kwargs: Kwargs) -> Any:
        if NO_RETRY.get() is not None:  # not repeatable: never duplicated
            return fn(*args, **kwargs)
        race = ThreadRace(self, fn, args, kwargs, start=self._clock(), delay=self.current_delay())
        return race.run()

    # -- async: the first attempt inline ----------------------------------------------------------
    async def _acall(self, fn: AsyncFn, args: Args, kwargs: Kwargs) -> Any:
        if NO_RETRY.get() is not None:  # not repeatable: never duplicated
            return await fn(*args, **kwargs)
        delay = self._fixed if self._percentile is None else self.current_delay()
        clock = self._clock
        start = clock()
        box: list[AsyncRace] = []
        loop = asyncio_loop()
        if loop is not None:
            task = current_task(loop)
            assert task is not None
            timer: Cancellable | None
            if delay is None:
                timer = None
            elif self._timer_clock is None:
                timer = asyncio_timers(loop).call_at(
                    loop.time() + delay, fire,
                    (self, box, fn, args, kwargs, task, start, delay, copy_context()),
                )  # fmt: skip
            else:
                timer = call_later(
                    delay, fire,
                    (self, box, fn, args, kwargs, task, start, delay, copy_context()),
                    loop=loop, clock=self._timer_clock,
                )  # fmt: skip
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                if timer is not None:
                    timer.cancel()
                if box and box[0].interrupted and cancelled(exc):
                    uncancel = getattr(task, "uncancel", None)
                    if uncancel is None or uncancel() == 0:  # only ours: the race goes on
                        return await self._interrupted(box[0], start)
                return await self._inline_failed(fn, args, kwargs, box, exc, start, delay, loop)
            if timer is not None:
                timer.cancel()
            if not box:
                if self._percentile is not None or current_deadline() is not None:
                    self._record(clock() - start)
                return result
            race = box[0]
            if race.interrupted:  # the attempt swallowed our interruption: take it back
                uncancel = getattr(task, "uncancel", None)
                if uncancel is not None:
                    uncancel()
            return await self._inline_answered(race, result, start)
        # trio: the inline attempt runs in a cancel scope another attempt's answer cancels
        trio = _trio_module()
        scope = trio.CancelScope()
        timer_: Cancellable | None = None
        if delay is not None:
            timer_ = call_later(
                delay, fire,
                (self, box, fn, args, kwargs, scope, start, delay, copy_context()),
                loop=None, clock=self._timer_clock,
            )  # fmt: skip
        result = _UNSET
        try:
            with scope:
                result = await fn(*args, **kwargs)
        except BaseException as exc:
            if timer_ is not None:
                timer_.cancel()
            return await self._inline_failed(fn, args, kwargs, box, exc, start, delay, None)
        if timer_ is not None:
            timer_.cancel()
        if not box:
            if self._percentile is not None or current_deadline() is not None:
                self._record(clock() - start)
            return result
        if result is _UNSET:
            return await self._interrupted(box[0], start)
        return await self._inline_answered(box[0], result, start)

    async def _inline_answered(self, race: AsyncRace, result: Any, start: float) -> Any:
        self._record(self._clock() - start)
        race.inline_ended(True, result, None)
        return await race.finish()

    async def _interrupted(self, race: AsyncRace, start: float) -> Any:
        self._record(self._clock() - start)  # censored: it ran at least this long
        race.inline_ended(False, None, None)
        return await race.finish()

    async def _inline_failed(
        self,
        fn: AsyncFn,
        args: Args,
        kwargs: Kwargs,
        box: list[AsyncRace],
        exc: BaseException,
        start: float,
        delay: float | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> Any:
        if box:
            race = box[0]
            if not isinstance(exc, Exception):  # the caller is cancelled (or exiting)
                await race.cancel_all()
                raise exc
            race.inline_ended(False, None, exc)
            return await race.finish()
        if not self._handled(exc):
            raise exc
        # the first attempt failed before any hedge started: the next one starts at once
        race = AsyncRace(
            self, fn, args, kwargs, start=start, delay=delay, loop=loop,
            context=contextvars.copy_context(), interrupt=None,
        )  # fmt: skip
        race.inline_ended(False, None, exc)
        return await race.finish()
