"""The circuit breaker's state machine: pure, deterministic, driven by the caller's clock.

No locks, no I/O, no telemetry, no sleeping: every method takes the current time ``now`` and
only updates fields. That keeps the logic testable against a reference model (the hypothesis
state machine in ``tests/test_breaker_model.py``) and makes the core the seam where a shared
store (Redis, for a fleet) can later replace local state. The front end
(:class:`resilient.CircuitBreaker`) guards one core with one lock and publishes the
transitions it leaves in :attr:`BreakerCore.changes`.

Rules, in one place:

- CLOSED admits every call and records its outcome in the window. After at least
  ``minimum_calls`` calls in the window, a failure rate ``>= failure_rate_threshold`` or a
  slow-call rate ``>= slow_call_rate_threshold`` opens the breaker.
- OPEN rejects until ``open_until``; the first interaction at or after it moves to HALF_OPEN
  (the caller then becomes the first trial). The open time is ``open_duration(times_opened)``
  stretched by ``1 + open_jitter * random()``; ``times_opened`` counts openings since the
  breaker was last CLOSED (1 for the first), so a callable can back off.
- HALF_OPEN admits at most ``half_open_max_calls`` trials. Any failed (or slow, when slow-call
  detection is on) trial re-opens at once; when all of them have succeeded the breaker
  closes with an empty window. An ignored or cancelled trial gives its slot back.
- A trial still running ``half_open_max_wait`` seconds after it was admitted counts as failed:
  the breaker re-opens as of that deadline (hung calls are the typical symptom of a sick
  dependency). Because the re-opening is dated at the deadline, not at whenever somebody
  looks, the result does not depend on when the core is next consulted.
- Every transition bumps :attr:`BreakerCore.gen`; a permit carries the generation it was
  issued in, and a completion from another generation changes nothing (a call admitted before
  the breaker opened, or a trial from an earlier half-open round, cannot flip it).
- FORCED_OPEN rejects everything, DISABLED admits everything and records nothing,
  METRICS_ONLY records outcomes but never rejects or opens. Only manual calls leave them.
- Every state change starts with an empty window.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from .sliding_windows import FAILED, SLOW, CountWindow, Window

__all__ = [
    "CANCELLED",
    "FAILURE",
    "IGNORED",
    "SUCCESS",
    "UNTRACKED",
    "BreakerCore",
    "BreakerState",
    "Permit",
    "Rejection",
    "Transition",
]


class BreakerState(str, enum.Enum):
    """The states of a :class:`resilient.CircuitBreaker`.

    A ``str`` enum, so ``breaker.state == "open"`` works and the value is what metrics and
    events report.
    """

    CLOSED = "closed"
    """Calls flow; outcomes are recorded and may open the breaker."""
    OPEN = "open"
    """Calls are rejected with :class:`resilient.CircuitOpenError` until the open time ends."""
    HALF_OPEN = "half_open"
    """A few trial calls decide whether to close again or re-open."""
    FORCED_OPEN = "forced_open"
    """Manually opened: every call is rejected until :meth:`CircuitBreaker.reset`."""
    DISABLED = "disabled"
    """Manually switched off: every call is admitted and nothing is recorded."""
    METRICS_ONLY = "metrics_only"
    """Outcomes are recorded (rates are visible) but the breaker never rejects or opens."""


CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN
FORCED_OPEN = BreakerState.FORCED_OPEN
DISABLED = BreakerState.DISABLED
METRICS_ONLY = BreakerState.METRICS_ONLY

# Outcomes reported to ``complete``.
SUCCESS = 0
FAILURE = 1
IGNORED = 2  # neither success nor failure (an ``ignore``d exception)
CANCELLED = 3  # the caller was cancelled: release, record nothing

Permit = tuple[int, float]
"""``(generation, admitted_at)``: what a caller holds while its call runs."""

UNTRACKED: Permit = (-1, 0.0)
"""The permit handed out while DISABLED: it matches no generation, so nothing is recorded."""

Transition = tuple[BreakerState, BreakerState]
"""``(from_state, to_state)``."""


class Rejection:
    """Why a call was refused: ``reason`` ("open", "forced_open", "half_open_full"), the
    ``retry_after`` hint in seconds (``None`` when unknown) and the ``state`` value."""

    __slots__ = ("reason", "retry_after", "state")

    def __init__(self, reason: str, retry_after: float | None, state: str) -> None:
        self.reason = reason
        self.retry_after = retry_after
        self.state = state

    def __repr__(self) -> str:
        return f"Rejection({self.reason!r}, {self.retry_after!r}, {self.state!r})"


class BreakerCore:
    """One breaker's state; see the module docstring for the rules.

    ``open_duration(times_opened)`` must return a finite number ``>= 0`` (the front end
    guarantees it); ``rand()`` returns a float in ``[0, 1)`` and is only called when
    ``open_jitter > 0``.
    """

    __slots__ = (
        "changed_at",
        "changes",
        "check_successes",
        "failure_rate_threshold",
        "fast_ring",
        "gen",
        "half_open_max_calls",
        "half_open_max_wait",
        "minimum_calls",
        "open_duration",
        "open_jitter",
        "open_until",
        "rand",
        "slow_call_duration",
        "slow_call_rate_threshold",
        "state",
        "times_opened",
        "trial_ok",
        "trials",
        "window",
    )

    def __init__(
        self,
        *,
        window: Window,
        failure_rate_threshold: float,
        slow_call_duration: float | None,
        slow_call_rate_threshold: float,
        minimum_calls: int,
        open_duration: Callable[[int], float],
        open_jitter: float,
        rand: Callable[[], float],
        half_open_max_calls: int,
        half_open_max_wait: float | None,
    ) -> None:
        self.window = window
        # the window ``succeed_fast`` may update in place (count window, no slow calls); the
        # per-call templates read it directly, so a core whose successes go elsewhere (the
        # shared core, online) must leave it None and override ``succeed_fast``
        self.fast_ring: CountWindow | None = (
            window if isinstance(window, CountWindow) and slow_call_duration is None else None
        )
        self.check_successes = not window.successes_lower_rates
        self.failure_rate_threshold = failure_rate_threshold
        self.slow_call_duration = slow_call_duration
        self.slow_call_rate_threshold = slow_call_rate_threshold
        self.minimum_calls = minimum_calls
        self.open_duration = open_duration
        self.open_jitter = open_jitter
        self.rand = rand
        self.half_open_max_calls = half_open_max_calls
        self.half_open_max_wait = half_open_max_wait
        self.state = CLOSED
        self.gen = 0
        self.times_opened = 0
        self.open_until = 0.0
        self.trials: list[float] = []  # admission times of the running half-open trials
        self.trial_ok = 0  # half-open trials that succeeded in this round
        self.changes: list[Transition] = []
        self.changed_at: float | None = None
        """When the last transition took effect (``None``: never left CLOSED)."""

    # -- the two hot operations --------------------------------------------------------------
    def acquire(self, now: float) -> Permit | Rejection:
        """Admit a call (return its permit) or refuse it (return a :class:`Rejection`)."""
        state = self.state
        if state is CLOSED:
            return (self.gen, now)
        if state is OPEN or state is HALF_OPEN:
            self._tick(now)
            state = self.state
        if state is HALF_OPEN:
            if len(self.trials) + self.trial_ok < self.half_open_max_calls:
                self.trials.append(now)
                return (self.gen, now)
            return Rejection("half_open_full", None, HALF_OPEN.value)
        if state is OPEN:
            return Rejection("open", self.open_until - now, OPEN.value)
        if state is FORCED_OPEN:
            return Rejection("forced_open", None, FORCED_OPEN.value)
        if state is DISABLED:
            return UNTRACKED
        return (self.gen, now)  # METRICS_ONLY

    def complete(self, permit: Permit, outcome: int, now: float) -> None:
        """Account the end of the call that held ``permit``.

        ``outcome`` is ``SUCCESS``, ``FAILURE``, ``IGNORED`` or ``CANCELLED``; slowness is
        derived from ``now - admitted_at``. Transitions are appended to :attr:`changes`.
        """
        gen, started = permit
        state = self.state
        if state is CLOSED and gen == self.gen:
            if outcome >= IGNORED:
                return
            code = outcome  # FAILURE is the FAILED bit, SUCCESS is 0
            limit = self.slow_call_duration
            if limit is not None and now - started > limit:
                code |= SLOW
            window = self.window
            if code or self.check_successes:
                window.add(code, now)
                self._check_rates(now)
                return
            # A fast success in a count window can only lower the rates, except the one that
            # brings the window up to ``minimum_calls``: the first point a decision is taken.
            calls = window.calls
            window.add(0, now)
            if calls < self.minimum_calls <= window.calls:
                self._check_rates(now)
            return
        if state is OPEN or state is HALF_OPEN:
            self._tick(now)
            state = self.state
        if gen != self.gen:
            return  # admitted in an earlier state or round: it must not decide this one
        if state is HALF_OPEN:
            self._finish_trial(started, outcome, now)
        elif state is METRICS_ONLY:
            self._record(outcome, now - started, now)

    def succeed_fast(self, gen: int) -> bool:
        """Account a success without the clock and without the front end's lock, when that
        is all it takes: CLOSED in generation ``gen``, a count window without slow-call
        detection whose oldest slot holds a fast success (so nothing but the ring's rotation
        changes and no rate can move: :meth:`CountWindow.pass_success`). ``False``: nothing
        was recorded, call :meth:`complete` under the lock.

        Lock-free because this is every call of a healthy service: with the lock, threads
        sharing one breaker queue on it and the per-call cost grows with their number. A
        transition racing with it (it changes ``gen`` and clears the window under the lock)
        can at worst count this success in the new window."""
        return self._succeed_in(self.fast_ring, gen)

    def _succeed_in(self, ring: CountWindow | None, gen: int) -> bool:
        """:meth:`succeed_fast` on ``ring`` (the per-call templates inline this for the local
        core's :attr:`fast_ring`; a shared core keeps its ring apart, see there)."""
        if ring is None or gen != self.gen or self.state is not CLOSED:
            return False
        return ring.pass_success()

    # -- reading and manual control ------------------------------------------------------------
    def poll(self, now: float) -> BreakerState:
        """The state at ``now``, after any transition that is due (OPEN -> HALF_OPEN when the
        open time is over, HALF_OPEN -> OPEN when a trial overran ``half_open_max_wait``)."""
        if self.state is OPEN or self.state is HALF_OPEN:
            self._tick(now)
        return self.state

    def retry_after(self, now: float) -> float | None:
        """Seconds until the breaker lets a trial through (``None`` unless OPEN)."""
        if self.poll(now) is OPEN:
            return self.open_until - now
        return None

    def refresh(self, now: float) -> None:
        """Expire window contents that are older than the window at ``now``."""
        self.window.refresh(now)

    def totals(self, now: float) -> tuple[float, float, float]:
        """``(calls, failures, slow_calls)`` in the window at ``now`` (what the rates are
        computed from; a shared core answers with the fleet's window)."""
        window = self.window
        window.refresh(now)
        return window.calls, window.failures, window.slow_calls

    def set_state(self, state: BreakerState, now: float) -> None:
        """Manual control: move to ``state`` (no-op when already there)."""
        if state is not self.state:
            self._transition(state, now)

    def reset(self, now: float) -> None:
        """Back to CLOSED with an empty window and no opening history; calls still in flight
        from before the reset are not recorded."""
        if self.state is CLOSED:
            self.gen += 1
            self.window.clear()
            self.times_opened = 0
        else:
            self._transition(CLOSED, now)

    def take_pending(self) -> tuple[list[Transition], int]:
        """:meth:`take_changes` and the generation they led to, for the publisher."""
        return self.take_changes(), self.gen

    def take_changes(self) -> list[Transition]:
        """Hand the pending transitions to the caller (who publishes them) and forget them."""
        changes = self.changes
        self.changes = []
        return changes

    # -- internals -------------------------------------------------------------------------------
    def _is_slow(self, duration: float) -> bool:
        limit = self.slow_call_duration
        return limit is not None and duration > limit

    def _record(self, outcome: int, duration: float, now: float) -> None:
        """Add an outcome to the window without deciding anything (METRICS_ONLY)."""
        if outcome >= IGNORED:
            return
        code = FAILED if outcome == FAILURE else 0
        if self._is_slow(duration):
            code |= SLOW
        self.window.add(code, now)

    def _check_rates(self, now: float) -> None:
        window = self.window
        calls = window.calls
        if calls < self.minimum_calls:
            return
        if window.failures / calls >= self.failure_rate_threshold or (
            self.slow_call_duration is not None
            and window.slow_calls / calls >= self.slow_call_rate_threshold
        ):
            self._transition(OPEN, now)

    def _finish_trial(self, started: float, outcome: int, now: float) -> None:
        if outcome >= IGNORED:
            self._drop_trial(started)  # its slot goes back to the next caller
            return
        if outcome == FAILURE or self._is_slow(now - started):
            self._transition(OPEN, now)
            return
        self._drop_trial(started)
        self.trial_ok += 1
        if self.trial_ok >= self.half_open_max_calls:
            self._transition(CLOSED, now)

    def _drop_trial(self, started: float) -> None:
        # Every permit of this round is listed; equal admission times are interchangeable.
        self.trials.remove(started)

    def _tick(self, now: float) -> None:
        while True:
            if self.state is OPEN:
                if now < self.open_until:
                    return
                self._transition(HALF_OPEN, now)
            elif self.state is HALF_OPEN and self.half_open_max_wait is not None and self.trials:
                deadline = min(self.trials) + self.half_open_max_wait
                if now < deadline:
                    return
                self._transition(OPEN, deadline)
            else:
                return

    def _transition(self, to: BreakerState, at: float) -> None:
        self.changes.append((self.state, to))
        self.state = to
        self.changed_at = at
        self.gen += 1
        self.window.clear()
        self.trials.clear()
        self.trial_ok = 0
        if to is OPEN:
            self.times_opened += 1
            duration = self.open_duration(self.times_opened)
            if self.open_jitter:
                duration *= 1.0 + self.open_jitter * self.rand()
            self.open_until = at + duration
        elif to is CLOSED:
            self.times_opened = 0
