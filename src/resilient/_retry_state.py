"""The retry state of one call: a genuine ``tenacity.RetryCallState`` plus the decision logic.

:class:`RetryRun` records a failed attempt and answers "sleep this long" or gives up by raising;
the caller (``Retry``'s per-call loop, sync or async, or an ``attempts()`` loop) does the
sleeping and the calling. It is built only after the first retryable failure, so a call that
succeeds never pays for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from tenacity import Future, RetryCallState, Retrying

from ._deadline import _DEADLINE
from ._no_retry import NO_RETRY
from ._types import Tb
from .errors import RetryExhaustedError, _add_note
from .telemetry._hub import STATE
from .waits import _FixedWait

if TYPE_CHECKING:
    from ._hot_protocols import RetrySettings

__all__ = ["RetryRun", "retry_after_hint"]


def retry_after_hint(error: Exception | None) -> float | None:
    hint = getattr(error, "retry_after", None) if error is not None else None
    if isinstance(hint, bool) or not isinstance(hint, (int, float)):
        return None
    if math.isnan(hint) or hint <= 0:
        return None
    return float(hint)


# ``RetryRun.__init__`` sets tenacity's fields itself (one frame and a property call less per
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


class RetryRun(RetryCallState):
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
        policy: RetrySettings,
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

    def set_exception(self, exc_info: tuple[type[BaseException], BaseException, Tb]) -> None:
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
            hint = retry_after_hint(error)
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
        budget = p._budget  # last: a retry that will not happen for another reason costs none
        if budget is not None and not budget._try_withdraw():
            tel = p._tel
            if not tel.quiet or tel.gen != STATE.generation:
                tel.rejected("retry_budget")
            self._give_up(error, result, f"retry budget {budget.name!r} has no retry left")
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
