"""``Retry``: call again after a transient failure, with backoff, on top of tenacity.

Why not just tenacity? tenacity decides *when* to retry very well, and ``Retry`` reuses its
pieces: every wait strategy is a tenacity wait (any ``tenacity.wait_*`` works, and
:mod:`resilient.waits` strategies work in tenacity), the per-call state is a genuine
``tenacity.RetryCallState``, and the attempt limit is ``tenacity.stop_after_attempt``. What
``Retry`` adds is what a policy in a pipeline needs:

- **a free happy path**: the function is called once, directly; tenacity state is only built
  after a retryable failure, so a call that succeeds costs a few attribute reads;
- **errors stay themselves**: when attempts run out on an exception, that very exception
  propagates (with a PEP 678 note saying how many attempts were made), not a wrapper;
  running out on a *result* (``on_result``) raises :class:`resilient.RetryExhaustedError`;
- **time budgets**: ``max_delay`` (measured with the injected ``clock``) and the enclosing
  ``Timeout`` deadline (``resilient.remaining()``) are never overslept: when the next wait
  would end past either, ``Retry`` gives up at once instead of sleeping in vain;
- **server hints**: an error with a numeric ``retry_after`` attribute (``CircuitOpenError``,
  or your own HTTP 429/503 error) makes the wait at least that long;
- **cancellation is never retried**: only ``Exception`` subclasses are considered;
- **one code path for sync, asyncio and trio**, sleeping through ``resilient._sleeping`` so
  ``resilient.testing.instant_retries()`` removes waiting from test suites.

The loop is written here rather than handed to ``tenacity.Retrying.__call__`` because that
would enter tenacity on every call, evaluate user predicates twice for the first failure,
measure ``max_delay`` with the real clock and re-raise through ``concurrent.futures``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import _hot_drivers, _sleeping
from . import _validate as v
from ._lazy import module
from ._policy import Policy
from ._types import Exc, ExcType, Fn, Tb
from ._validate import is_async_callable
from .errors import PolicyRejectedError
from .retry_budget import RetryBudget
from .telemetry._hub import Listener
from .waits import wait_exponential, wait_fixed

if TYPE_CHECKING:
    from tenacity import RetryCallState, Retrying

    from ._retry_state import RetryRun

__all__ = ["DEFAULT_WAIT", "RETRY_ON", "Attempt", "AttemptIterator", "Retry", "WaitStrategy"]

WaitStrategy = Callable[["RetryCallState"], float]
"""Anything tenacity accepts as ``wait``: a callable from the retry state to seconds."""


DEFAULT_WAIT: WaitStrategy = wait_exponential(0.1, 10.0, jitter="full")
"""Exponential backoff with full jitter from 0.1 s up to 10 s: the default ``wait``."""


def _wait_strategy(name: str, fn: Fn) -> WaitStrategy:
    return fn


_ATTEMPTS = v.count("attempts")
_WAIT = v.seconds_or_callable(
    "wait",
    callable_is="a tenacity wait strategy (callable taking a RetryCallState)",
    check_callable=_wait_strategy,
)
_ON = v.exceptions("on", exceptions_only=True)

RETRY_ON = v.AllExcept(PolicyRejectedError)
"""Retry's default ``on``: every ``Exception`` except policy rejections (circuit open, bulkhead
full, rate limited), which answer fast on purpose; retrying them would only wait out (or
hammer) the policy that refused. Pass ``on=`` to retry exactly what you name."""
_ON_RESULT = v.callback("on_result")
_MAX_DELAY = v.duration("max_delay", optional=True, zero=False)
_SLEEP = v.callback("sleep")
_BUDGET = v.instance("budget", RetryBudget, "a rs.RetryBudget")
_CLOCK = v.clock()
_OPTIONS = v.Options(
    _ATTEMPTS, _WAIT, _ON, _ON_RESULT, _MAX_DELAY, _SLEEP, _BUDGET, v.ON_EVENT, _CLOCK
)


class Retry(Policy):
    """Run a call again after a transient failure, waiting between attempts.

    Use it for operations that fail now and then and are safe to repeat (idempotent reads,
    writes with idempotency keys). ``attempts`` counts every call including the first.

    - ``wait``: seconds between attempts (a number) or any tenacity wait strategy, e.g.
      :func:`resilient.wait_exponential` (the default: full jitter, 0.1 s .. 10 s).
    - ``on``: exception types, or a predicate ``exc -> bool``, that deserve a retry.
    - ``on_result``: predicate ``result -> bool``; ``True`` means "this result is a failure,
      try again" (e.g. an HTTP 503 response).
    - ``max_delay``: seconds the whole call (attempts and waits) may take, measured with
      ``clock``; a wait that would end past it is not started.
    - ``sleep``: how to wait; a sync callable, or an async one for async calls only. Default:
      ``time.sleep`` / ``anyio.sleep`` (asyncio and trio), switched off by
      ``resilient.testing.instant_retries()``.
    - ``budget``: a :class:`resilient.RetryBudget` shared with other retries: each first
      attempt earns it a fraction of a retry, each retry spends one, and a retry it cannot pay
      for is not taken (the last error propagates at once).
    - ``on_event``: a listener for this policy's events (``RetryScheduled`` per retry).

    Exhausted on an exception, that exception propagates unchanged plus a note; exhausted on a
    result, :class:`resilient.RetryExhaustedError` (``.last_result``, ``.attempts``). For
    inline blocks use :meth:`attempts`.
    """

    kind = "retry"
    options = _OPTIONS

    def __init__(
        self,
        name: str | None = None,
        *,
        attempts: int = 3,
        wait: float | WaitStrategy = DEFAULT_WAIT,
        on: v.HandledFilter = RETRY_ON,
        on_result: Callable[[Any], bool] | None = None,
        max_delay: float | None = None,
        sleep: Callable[[float], Any] | None = None,
        budget: RetryBudget | None = None,
        on_event: Listener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, on_event=on_event)
        self._budget: RetryBudget | None = _BUDGET(budget)
        self._deposits: Iterator[int] | None = (
            None if self._budget is None else self._budget._counter
        )
        attempts = _ATTEMPTS(attempts)
        strategy = _WAIT(wait)
        if not callable(strategy):
            strategy = wait_fixed(strategy)
        max_delay = _MAX_DELAY(max_delay)
        clock = _CLOCK(clock)
        self._on_types, self._on_pred = _ON(on)
        # the default ``on`` leaves rejections alone: retrying a fast failure defeats it
        self._on_exclude: tuple[type[BaseException], ...] = (
            on.excluded if isinstance(on, v.AllExcept) else ()
        )
        self._on_pred_async = self._on_pred is not None and is_async_callable(self._on_pred)
        self._on_result: Callable[[Any], bool] | None = _ON_RESULT(on_result)
        self._on_result_async = on_result is not None and is_async_callable(on_result)
        self._sleep: Callable[[float], Any] | None = _SLEEP(sleep)
        self._sleep_is_async = sleep is not None and is_async_callable(sleep)
        self._refuse_sync_calls_if_async(sleep=sleep, on=on, on_result=on_result)
        self._clock = clock
        self.max_attempts: int = attempts
        """Attempts per call, the first included."""
        self.wait: WaitStrategy = strategy
        """The wait strategy (a tenacity-compatible callable)."""
        self.max_delay: float | None = max_delay
        """Seconds one call may take in total, or ``None``."""
        self._tenacity: Retrying | None = None
        self._settle(
            attempts=attempts,
            wait=strategy,
            on=on,
            on_result=on_result,
            max_delay=max_delay,
            sleep=sleep,
            budget=self._budget,
            on_event=on_event,
            clock=clock,
        )

    @property
    def _controller(self) -> Retrying:
        """tenacity's configuration object, which every ``RetryCallState`` points at: built
        with the first retry (tenacity is imported then, not with the package)."""
        controller = self._tenacity
        if controller is None:
            from tenacity import Retrying, stop_after_attempt

            controller = self._tenacity = Retrying(
                stop=stop_after_attempt(self.max_attempts),
                wait=self.wait,
                reraise=True,
                name=self.name,
            )
        return controller

    def __repr__(self) -> str:
        budget = "" if self._budget is None else f" budget={self._budget.name!r}"
        return (
            f"<Retry {self.name!r} attempts={self.max_attempts} wait={self.wait!r} "
            f"max_delay={self.max_delay!r} on={self._settings['on']!r}{budget}>"
        )

    @property
    def budget(self) -> RetryBudget | None:
        """The retry budget this retry spends from, or ``None``."""
        return self._budget

    def _health(self) -> dict[str, Any]:
        return {
            "attempts": self.max_attempts,
            "max_delay": self.max_delay,
            "budget": None if self._budget is None else self._budget.name,
        }

    # -- classification ----------------------------------------------------------------------
    def _retryable(self, exc: Exception) -> bool:
        pred = self._on_pred
        if pred is None:
            return isinstance(exc, self._on_types) and not isinstance(exc, self._on_exclude)
        return bool(pred(exc))

    async def _aretryable(self, exc: Exception) -> bool:
        pred = self._on_pred
        if pred is None or not self._on_pred_async:
            return self._retryable(exc)
        return bool(await pred(exc))

    def _sleep_sync(self, delay: float) -> None:
        sleep = self._sleep
        if sleep is None:
            _sleeping.sync_sleep(delay)
        else:
            v.refuse_awaitable(sleep(delay), f"Retry {self.name!r} sleep=")

    async def _sleep_async(self, delay: float) -> None:
        sleep = self._sleep
        if sleep is None:
            await _sleeping.async_sleep(delay)
            return
        outcome = sleep(delay)
        if v.isawaitable(outcome):
            await outcome

    # -- the per-call loop ----------------------------------------------------------------------
    # --- generated from src/resilient/_templates/retry.tmpl by tools/gen_hotpaths.py ---
    _async_wrapper = _hot_drivers.retry_async_wrapper
    _sync_wrapper = _hot_drivers.retry_sync_wrapper
    _acall = _hot_drivers.retry_acall
    _call = _hot_drivers.retry_call
    # --- end of generated code ---

    # -- inline blocks -------------------------------------------------------------------------
    def attempts(self) -> AttemptIterator:
        """Retry an inline block instead of a function, sync or async::

            for attempt in retry.attempts():          # or: async for attempt in ...
                with attempt:                         # or: async with attempt:
                    response = client.get(url)
                    attempt.set_result(response)      # only needed with on_result=

        A retryable exception inside ``with attempt:`` is swallowed and the loop goes round
        again after the wait; anything else propagates at once. When attempts (or time) run
        out, the last exception is raised from the ``for`` statement; with ``on_result``, a
        result passed to ``attempt.set_result`` that the predicate rejects is retried and
        finally raises :class:`resilient.RetryExhaustedError`. The loop ends after the first
        attempt that neither raised nor had its result rejected. ``attempt.number`` counts
        from 1. Every loop has its own state; ``RetryScheduled`` events are emitted, but no
        per-call metrics or spans (there is no call to wrap: put the block in a function and
        decorate it for those).
        """
        return AttemptIterator(self)


class Attempt:
    """One attempt of a :meth:`Retry.attempts` loop: a (sync or async) context manager."""

    __slots__ = ("_error", "_loop", "_result", "_retry_result", "number")

    def __init__(self, loop: AttemptIterator, number: int) -> None:
        self._loop = loop
        self.number = number
        """1 for the first attempt, 2 for the first retry, ..."""
        self._error: Exception | None = None
        self._result: Any = None
        self._retry_result = False

    def __repr__(self) -> str:
        return f"<Attempt {self.number} of {self._loop._policy.name!r}>"

    def set_result(self, value: Any) -> None:
        """Hand the block's result to ``on_result``: if it says "failure", the loop retries
        (and ``RetryExhaustedError.last_result`` is the last value passed here). With an
        ``async def`` ``on_result``, use ``await attempt.aset_result(value)`` instead."""
        policy = self._loop._policy
        if policy._on_result_async:
            raise TypeError(
                f"Retry {policy.name!r} has an async on_result=: use "
                "`await attempt.aset_result(value)`, which can await it"
            )
        self._result = value
        pred = policy._on_result
        self._retry_result = pred is not None and bool(pred(value))

    async def aset_result(self, value: Any) -> None:
        """:meth:`set_result` for ``async for`` loops: awaits an ``async def`` ``on_result``."""
        self._result = value
        pred = self._loop._policy._on_result
        if pred is None:
            self._retry_result = False
            return
        verdict = pred(value)
        if v.isawaitable(verdict):
            verdict = await verdict
        self._retry_result = bool(verdict)

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, exc_type: ExcType, exc: Exc, tb: Tb) -> bool:
        if exc is None:
            return False
        if isinstance(exc, Exception) and self._loop._policy._retryable(exc):
            self._error = exc
            return True  # swallowed: the loop decides whether to go round again or re-raise
        self._loop._done = True
        return False

    async def __aenter__(self) -> Attempt:
        return self

    async def __aexit__(self, exc_type: ExcType, exc: Exc, tb: Tb) -> bool:
        if exc is None:
            return False
        if isinstance(exc, Exception) and await self._loop._policy._aretryable(exc):
            self._error = exc
            return True
        self._loop._done = True
        return False


class AttemptIterator:
    """What :meth:`Retry.attempts` returns: iterate it with ``for`` or ``async for``."""

    __slots__ = ("_current", "_done", "_policy", "_run", "_start")

    def __init__(self, policy: Retry) -> None:
        self._policy = policy
        self._current: Attempt | None = None
        self._run: RetryRun | None = None
        self._done = False
        self._start: float | None = None

    def _next_delay(self) -> float | None:
        """``None`` when the loop is over; else the wait before the next attempt. Raises
        the last error (or ``RetryExhaustedError``) when giving up."""
        current = self._current
        if self._done or current is None:
            return None
        if current._error is None and not current._retry_result:
            self._done = True
            return None
        if self._run is None:
            # tenacity's state, imported with the first retry
            self._run = module("resilient._retry_state").RetryRun(
                self._policy, None, (), {}, self._start
            )
        error, result = current._error, current._result
        current._error = None  # the iterator no longer needs it; don't keep tracebacks alive
        try:
            return self._run.next_delay(error, result)
        except BaseException:
            self._done = True
            raise

    def _begin(self) -> Attempt:
        p = self._policy
        if p._deposits is not None:
            next(p._deposits)
        self._start = p._clock() if p.max_delay is not None else None
        self._current = Attempt(self, 1)
        return self._current

    def __iter__(self) -> AttemptIterator:
        return self

    def __next__(self) -> Attempt:
        if self._current is None and not self._done:
            self._policy._refuse_sync()
            return self._begin()
        delay = self._next_delay()
        if delay is None:
            raise StopIteration
        self._policy._sleep_sync(delay)
        assert self._current is not None
        self._current = Attempt(self, self._current.number + 1)
        return self._current

    def __aiter__(self) -> AttemptIterator:
        return self

    async def __anext__(self) -> Attempt:
        if self._current is None and not self._done:
            return self._begin()
        delay = self._next_delay()
        if delay is None:
            raise StopAsyncIteration
        await self._policy._sleep_async(delay)
        assert self._current is not None
        self._current = Attempt(self, self._current.number + 1)
        return self._current
