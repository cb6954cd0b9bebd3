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

import contextlib
import inspect
import math
import sys
import time
import types
from asyncio import _get_running_loop
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, NoReturn

import anyio.lowlevel
from tenacity import Future, RetryCallState, Retrying, stop_after_attempt

from . import _sleeping
from ._deadline import _DEADLINE
from ._no_retry import NO_RETRY
from ._policy import Policy, is_async_callable
from .errors import RetryExhaustedError
from .telemetry._hub import STATE, Listener
from .waits import _FixedWait, _seconds, wait_exponential, wait_fixed

_sniffio: Any
try:  # how trio (and anything but asyncio) says it is running; trio depends on it
    import sniffio as _sniffio
except ImportError:  # pragma: no cover - without sniffio, anyio assumes asyncio too
    _sniffio = None

__all__ = ["DEFAULT_WAIT", "Attempt", "AttemptIterator", "Retry", "WaitStrategy"]

WaitStrategy = Callable[[RetryCallState], float]
"""Anything tenacity accepts as ``wait``: a callable from the retry state to seconds."""

ExceptionFilter = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]
"""Exception types (one or a tuple) or a predicate ``exc -> bool``."""

DEFAULT_WAIT: WaitStrategy = wait_exponential(0.1, 10.0, jitter="full")
"""Exponential backoff with full jitter from 0.1 s up to 10 s: the default ``wait``."""


def _exception_filter(
    param: str, value: object
) -> tuple[tuple[type[Exception], ...], Callable[[Exception], bool] | None]:
    """Validate an ``on=``-style argument into (types, predicate-or-None).

    Only ``Exception`` subclasses are accepted: cancellation and interpreter exits
    (``BaseException`` that are not ``Exception``) are never retried or replaced.
    """
    if isinstance(value, type):
        candidates: tuple[object, ...] = (value,)
    elif isinstance(value, (tuple, list)):
        candidates = tuple(value)
    elif callable(value):
        return (), value
    else:
        raise TypeError(
            f"{param} must be an exception type, a tuple of them or a predicate exc -> bool, "
            f"got {value!r}"
        )
    types: list[type[Exception]] = []
    for item in candidates:
        if not isinstance(item, type) or not issubclass(item, BaseException):
            raise TypeError(f"{param} must contain only exception types, got {value!r}")
        if not issubclass(item, Exception):
            raise ValueError(
                f"{param} may only name Exception subclasses, got {value!r}: "
                f"{item.__name__} is cancellation or an exit and is never handled"
            )
        types.append(item)
    return tuple(types), None


def _optional_callable(param: str, value: object) -> Callable[..., Any] | None:
    if value is not None and not callable(value):
        raise TypeError(f"{param} must be callable or None, got {value!r}")
    return value


def _add_note(error: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        error.add_note(note)
    else:  # pragma: no cover - exercised on Python 3.10 only
        notes = getattr(error, "__notes__", None)
        if isinstance(notes, list):
            notes.append(note)
        else:
            with contextlib.suppress(AttributeError, TypeError):
                setattr(error, "__notes__", [note])  # noqa: B010 - no such attribute in 3.10


def _retry_after(error: Exception | None) -> float | None:
    hint = getattr(error, "retry_after", None) if error is not None else None
    if isinstance(hint, bool) or not isinstance(hint, (int, float)):
        return None
    if math.isnan(hint) or hint <= 0:
        return None
    return float(hint)


def _reject_awaitable(outcome: object, what: str) -> None:
    if inspect.isawaitable(outcome):
        close = getattr(outcome, "close", None)
        if callable(close):
            close()  # don't leave a never-awaited coroutine behind
        raise TypeError(f"{what} returned an awaitable in a sync call; use an async call")


@types.coroutine
def _sleep0() -> Generator[None, None, None]:
    """asyncio's own zero-length sleep (what ``asyncio.sleep(0)`` awaits): a bare ``yield``
    makes the running task go round the event loop once."""
    yield


# ``_Run.__init__`` sets tenacity's fields itself (one frame and a property call less per
# failed call) only while they are exactly the ones this tenacity's ``RetryCallState`` has.
_INLINE_INIT = set(vars(RetryCallState(Retrying(), None, (), {}))) == {
    "start_time",
    "retry_object",
    "fn",
    "args",
    "kwargs",
    "attempt_number",
    "outcome",
    "outcome_timestamp",
    "idle_for",
    "next_action",
    "upcoming_sleep",
}


class _Run(RetryCallState):
    """The retry state of ONE call (or one ``attempts()`` loop), never shared: a genuine
    ``tenacity.RetryCallState`` (what wait strategies receive) plus the decision logic.

    It records a failed attempt and answers "sleep this long" or gives up by raising; the
    caller does the sleeping (sync or async) and the calling.

    ``outcome`` is built only when read. tenacity records every failed attempt as a
    ``tenacity.Future`` (a ``concurrent.futures.Future``: a ``threading.Condition`` and its
    lock, ~1.6 us), but stop and wait strategies that only look at ``attempt_number`` (all of
    ``resilient.waits``, tenacity's ``wait_fixed``/``wait_exponential``/...) never read it. So a
    recorded attempt keeps its value, and the ``outcome`` property builds the Future on first
    access, with the attempt number it had when recorded: a strategy (or ``repr``) that reads
    it sees exactly what tenacity would have given it.
    """

    def __init__(
        self,
        policy: Retry,
        fn: Callable[..., Any] | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        start: float | None,
    ) -> None:
        self._pending: tuple[Any, bool, int] | None = None
        self._outcome: Future | None = None
        if _INLINE_INIT:  # tenacity's ``__init__`` inlined (its fields checked at import)
            self.start_time = time.monotonic()
            self.retry_object = policy._controller
            self.fn = fn  # type: ignore[assignment]  # tenacity types it as its TypeVar
            self.args = args
            self.kwargs = kwargs
            self.attempt_number = 1
            self.outcome_timestamp = None
            self.idle_for = 0.0
            self.next_action = None
            self.upcoming_sleep = 0.0
        else:  # pragma: no cover - a tenacity whose call state has other fields
            super().__init__(policy._controller, fn, args, kwargs)
        self._policy = policy
        self._start = start

    @property
    def outcome(self) -> Future | None:
        """The last attempt's outcome as a ``tenacity.Future`` (built on first access)."""
        fut = self._outcome
        if fut is None and self._pending is not None:
            value, failed, attempt = self._pending
            fut = self._outcome = Future.construct(attempt, value, failed)
            self._pending = None
        return fut

    @outcome.setter
    def outcome(self, value: Future | None) -> None:
        self._outcome = value
        self._pending = None

    def set_exception(
        self, exc_info: tuple[type[BaseException], BaseException, TracebackType | None]
    ) -> None:
        """Record a failed attempt (its Future is built when read)."""
        self._outcome = None
        self._pending = (exc_info[1], True, self.attempt_number)
        self.outcome_timestamp = time.monotonic()

    def set_result(self, val: Any) -> None:
        """Record an attempt's result (its Future is built when read)."""
        self._outcome = None
        self._pending = (val, False, self.attempt_number)
        self.outcome_timestamp = time.monotonic()

    def prepare_for_next_attempt(self) -> None:
        """tenacity's ``prepare_for_next_attempt``, without going through the property."""
        self._outcome = self._pending = None
        self.outcome_timestamp = None
        self.attempt_number += 1
        self.next_action = None

    def next_delay(self, error: Exception | None, result: Any) -> float:
        """Record the attempt that just failed (``error``, or a ``result`` to retry on) and
        return the seconds to wait before the next one; raise to give up."""
        p = self._policy
        attempt = self.attempt_number
        self._outcome = None  # ``set_exception``/``set_result``, inlined
        self._pending = (result, False, attempt) if error is None else (error, True, attempt)
        self.outcome_timestamp = time.monotonic()
        if attempt >= p.max_attempts:  # ``stop_after_attempt(attempts)``, inlined
            self._give_up(error, result, "no attempts left")
        forbidden = NO_RETRY.get()  # the caller said this call must not be repeated
        if forbidden is not None:
            self._give_up(error, result, forbidden)
        wait = p.wait
        # A number given as ``wait`` is a ``_FixedWait``: read it instead of calling it.
        delay = wait.seconds if type(wait) is _FixedWait else max(0.0, float(wait(self)))
        if error is not None and getattr(error, "retry_after", None) is not None:
            hint = _retry_after(error)
            if hint is not None and hint > delay:
                delay = hint
        if not math.isfinite(delay):
            self._give_up(error, result, f"the next wait would be {delay} s")
        if p.max_delay is not None and self._start is not None:
            spent = p._clock() - self._start
            if spent + delay > p.max_delay:
                self._give_up(
                    error,
                    result,
                    f"waiting {delay:.3f} s more would exceed max_delay={p.max_delay:g} s "
                    f"({spent:.3f} s spent)",
                )
        deadline = _DEADLINE.get()  # ``remaining()``, inlined: None outside any Timeout
        if deadline is not None:
            left = max(0.0, deadline - time.monotonic())
            if delay >= left:
                self._give_up(
                    error,
                    result,
                    f"waiting {delay:.3f} s would pass the enclosing deadline ({left:.3f} s left)",
                )
        self.upcoming_sleep = delay
        self.idle_for += delay
        self.prepare_for_next_attempt()
        tel = p._tel
        if not tel.quiet or tel.gen != STATE.generation:
            tel.retry_scheduled(attempt, delay, error)
        return delay

    def _give_up(self, error: Exception | None, result: Any, reason: str) -> NoReturn:
        p = self._policy
        attempts = self.attempt_number
        if error is not None:
            _add_note(
                error, f"resilient: retry {p.name!r} gave up after {attempts} attempt(s): {reason}"
            )
            raise error
        exhausted = RetryExhaustedError(p.name, attempts, result)
        _add_note(exhausted, f"resilient: {reason}")
        raise exhausted


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
    - ``on_event``: a listener for this policy's events (``RetryScheduled`` per retry).

    Exhausted on an exception, that exception propagates unchanged plus a note; exhausted on a
    result, :class:`resilient.RetryExhaustedError` (``.last_result``, ``.attempts``). For
    inline blocks use :meth:`attempts`.
    """

    kind = "retry"

    def __init__(
        self,
        name: str | None = None,
        *,
        attempts: int = 3,
        wait: float | WaitStrategy = DEFAULT_WAIT,
        on: ExceptionFilter = (Exception,),
        on_result: Callable[[Any], bool] | None = None,
        max_delay: float | None = None,
        sleep: Callable[[float], Any] | None = None,
        on_event: Listener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, on_event=on_event)
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise TypeError(f"attempts must be an int >= 1, got {attempts!r}")
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts!r}")
        if isinstance(wait, (int, float)) and not isinstance(wait, bool):
            strategy: WaitStrategy = wait_fixed(_seconds("wait", wait))
        elif callable(wait) and not isinstance(wait, type):
            strategy = wait
        else:
            raise TypeError(
                f"wait must be a number of seconds >= 0 or a tenacity wait strategy "
                f"(callable taking a RetryCallState), got {wait!r}"
            )
        if max_delay is not None:
            max_delay = _seconds("max_delay", max_delay, positive=True)
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        self._on_types, self._on_pred = _exception_filter("on", on)
        self._on_result: Callable[[Any], bool] | None = _optional_callable("on_result", on_result)
        self._sleep: Callable[[float], Any] | None = _optional_callable("sleep", sleep)
        self._sleep_is_async = sleep is not None and is_async_callable(sleep)
        self._clock = clock
        self.max_attempts: int = attempts
        """Attempts per call, the first included."""
        self.wait: WaitStrategy = strategy
        """The wait strategy (a tenacity-compatible callable)."""
        self.max_delay: float | None = max_delay
        """Seconds one call may take in total, or ``None``."""
        self._stop = stop_after_attempt(attempts)
        # Configuration only (tenacity's RetryCallState needs a controller to point at); the
        # per-call state is a fresh RetryCallState built inside each failing call.
        self._controller = Retrying(stop=self._stop, wait=strategy, reraise=True, name=self.name)

    def __repr__(self) -> str:
        return (
            f"<Retry {self.name!r} attempts={self.max_attempts} wait={self.wait!r} "
            f"max_delay={self.max_delay!r}>"
        )

    # -- classification ----------------------------------------------------------------------
    def _retryable(self, exc: Exception) -> bool:
        pred = self._on_pred
        if pred is None:
            return isinstance(exc, self._on_types)
        return bool(pred(exc))

    def _check_sync_sleep(self) -> None:
        if self._sleep_is_async:
            raise TypeError(
                f"Retry {self.name!r} has an async sleep= ({self._sleep!r}) and cannot wait "
                "in a sync call; pass a sync sleep or call it from async code"
            )

    def _sleep_sync(self, delay: float) -> None:
        sleep = self._sleep
        if sleep is None:
            _sleeping.sync_sleep(delay)
        else:
            _reject_awaitable(sleep(delay), f"Retry {self.name!r} sleep=")

    async def _sleep_async(self, delay: float) -> None:
        sleep = self._sleep
        if sleep is None:
            await _sleeping.async_sleep(delay)
            return
        outcome = sleep(delay)
        if inspect.isawaitable(outcome):
            await outcome

    # -- sync --------------------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._sleep_is_async:
            self._check_sync_sleep()
        start = self._clock() if self.max_delay is not None else None
        error: Exception | None
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            pred = self._on_pred  # ``self._retryable(exc)``, inlined
            if not (isinstance(exc, self._on_types) if pred is None else pred(exc)):
                raise
            error, result = exc, None
        else:
            on_result = self._on_result
            if on_result is None or not on_result(result):
                return result
            error = None
        # Retrying, outside the except block: later attempts must not get this error as
        # __context__. (Inline rather than a helper method: one frame less per failed call.)
        run = _Run(self, fn, args, kwargs, start)
        on_result = self._on_result
        while True:
            self._sleep_sync(run.next_delay(error, result))
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                pred = self._on_pred  # ``self._retryable(exc)``, inlined
                if not (isinstance(exc, self._on_types) if pred is None else pred(exc)):
                    raise
                error, result = exc, None
                continue
            if on_result is None or not on_result(result):
                return result
            error = None

    # -- async -------------------------------------------------------------------------------
    async def _acall(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        start = self._clock() if self.max_delay is not None else None
        error: Exception | None
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            pred = self._on_pred  # ``self._retryable(exc)``, inlined
            if not (isinstance(exc, self._on_types) if pred is None else pred(exc)):
                raise
            error, result = exc, None
        else:
            on_result = self._on_result
            if on_result is None or not on_result(result):
                return result
            error = None
        # Retrying (inline, like the sync loop: one coroutine less per failed call).
        run = _Run(self, fn, args, kwargs, start)
        on_result = self._on_result
        while True:
            delay = run.next_delay(error, result)
            if delay > 0.0 or self._sleep is not None:
                await self._sleep_async(delay)
            elif _get_running_loop() is not None and (
                # On an asyncio task? The checks ``sniffio`` makes, minus its import and task
                # lookup (trio marks its threads in ``sniffio.thread_local``); anything
                # unusual reads as "not asyncio" and takes anyio's generic checkpoint.
                _sniffio is None
                or (
                    _sniffio.thread_local.name is None
                    and _sniffio.current_async_library_cvar.get() is None
                )
            ):
                await _sleep0()  # a zero wait still goes round the loop: no starving it
            else:
                await anyio.lowlevel.checkpoint()
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                pred = self._on_pred  # ``self._retryable(exc)``, inlined
                if not (isinstance(exc, self._on_types) if pred is None else pred(exc)):
                    raise
                error, result = exc, None
                continue
            if on_result is None or not on_result(result):
                return result
            error = None

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
        (and ``RetryExhaustedError.last_result`` is the last value passed here)."""
        self._result = value
        pred = self._loop._policy._on_result
        self._retry_result = pred is not None and bool(pred(value))

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            return False
        if isinstance(exc, Exception) and self._loop._policy._retryable(exc):
            self._error = exc
            return True  # swallowed: the loop decides whether to go round again or re-raise
        self._loop._done = True
        return False

    async def __aenter__(self) -> Attempt:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self.__exit__(exc_type, exc, tb)


class AttemptIterator:
    """What :meth:`Retry.attempts` returns: iterate it with ``for`` or ``async for``."""

    __slots__ = ("_current", "_done", "_policy", "_run", "_start")

    def __init__(self, policy: Retry) -> None:
        self._policy = policy
        self._current: Attempt | None = None
        self._run: _Run | None = None
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
            self._run = _Run(self._policy, None, (), {}, self._start)
        error, result = current._error, current._result
        current._error = None  # the iterator no longer needs it; don't keep tracebacks alive
        try:
            return self._run.next_delay(error, result)
        except BaseException:
            self._done = True
            raise

    def _begin(self) -> Attempt:
        p = self._policy
        self._start = p._clock() if p.max_delay is not None else None
        self._current = Attempt(self, 1)
        return self._current

    def __iter__(self) -> AttemptIterator:
        return self

    def __next__(self) -> Attempt:
        if self._current is None and not self._done:
            self._policy._check_sync_sleep()
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
