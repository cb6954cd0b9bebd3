"""The circuit breaker: stop calling a dependency that keeps failing, then probe it carefully.

A failing (or very slow) dependency costs every caller a timeout and keeps it overloaded. The
breaker watches the failure rate and the slow-call rate over a sliding window (the last N
calls or the last N seconds) and, once either crosses its threshold, *opens*: calls are
rejected at once with :class:`resilient.CircuitOpenError` (carrying ``retry_after``) instead of
waiting on the dependency. After ``open_duration`` a few trial calls (HALF_OPEN) decide whether
to close again or stay open for another, possibly longer, period.

Structure: :class:`CircuitBreaker` is a thin front end over the pure state machine in
:mod:`resilient._core.breaker`. Each call takes one short ``threading.Lock`` section to be
admitted and one to report its outcome; the lock is never held while the protected function
runs or while telemetry is published, so one instance serves threads, asyncio and trio at once.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from . import _hot_paths
from . import _validate as v
from ._core.breaker import (
    CANCELLED,
    FAILURE,
    IGNORED,
    SUCCESS,
    BreakerCore,
    BreakerState,
    Permit,
    Rejection,
    Transition,
)
from ._core.shared_breaker import ASK_FLEET, SharedBreakerCore
from ._core.sliding_windows import CountWindow, TimeWindow, Window
from ._policy import AroundPolicy
from ._state import BreakerLink, StateBackend
from ._types import Fn
from ._validate import is_async_callable
from .errors import CircuitOpenError
from .errors import _circuit_open as _open
from .telemetry._events import BreakerStateChanged, CallIgnored, CallSlow
from .telemetry._hub import STATE, Listener

__all__ = ["BreakerMetrics", "BreakerState", "CircuitBreaker"]

_log = logging.getLogger("resilient.breaker")

_ALL_STATES: tuple[str, ...] = tuple(s.value for s in BreakerState)
_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_NO_RESULT: Any = object()  # ``with breaker:`` blocks have no result to classify


class _HasRandom(Protocol):
    def random(self) -> float: ...


# -- options ---------------------------------------------------------------------------------------
def _check_backoff(name: str, fn: Fn) -> Callable[[int], float]:
    """A backoff ``(times_opened) -> seconds``: called once with 1 to check it, then wrapped
    so that a bad later value can never corrupt the breaker mid-transition."""
    first = fn(1)
    if isinstance(first, bool) or not isinstance(first, numbers.Real):
        raise TypeError(
            f"{name} callable must return seconds, got {first!r} from {name}(1) ({fn!r})"
        )
    if not math.isfinite(first) or first < 0:
        raise ValueError(
            f"{name} callable must return seconds >= 0, got {first!r} from {name}(1) ({fn!r})"
        )
    return _safe_backoff(fn, float(first))


_FAILURE_RATE = v.fraction("failure_rate_threshold")
_SLOW_CALL_DURATION = v.duration("slow_call_duration", optional=True)
_SLOW_CALL_RATE = v.fraction("slow_call_rate_threshold")
_WINDOW_TYPE = v.choice("window_type", ("count", "time"))
_WINDOW_SIZE = v.count("window_size")
_MINIMUM_CALLS = v.count("minimum_calls")
_OPEN_DURATION = v.seconds_or_callable(
    "open_duration",
    callable_is="a callable (times_opened) -> seconds",
    check_callable=_check_backoff,
)
_OPEN_JITTER = v.fraction("open_jitter", zero=True)
_HALF_OPEN_MAX_CALLS = v.count("half_open_max_calls")
_HALF_OPEN_MAX_WAIT = v.duration("half_open_max_wait", optional=True, zero=False)
_RECORD = v.exceptions("record")
_IGNORE = v.exceptions("ignore")
_RECORD_RESULT = v.callback("record_result")
_CLOCK = v.clock()
_RNG = v.random_source()
_STATE = v.state_backend("_bind_breaker")

_OPTIONS = v.Options(
    _FAILURE_RATE,
    _SLOW_CALL_DURATION,
    _SLOW_CALL_RATE,
    _WINDOW_TYPE,
    _WINDOW_SIZE,
    _MINIMUM_CALLS,
    _OPEN_DURATION,
    _OPEN_JITTER,
    _HALF_OPEN_MAX_CALLS,
    _HALF_OPEN_MAX_WAIT,
    _RECORD,
    _IGNORE,
    _RECORD_RESULT,
    _CLOCK,
    v.ON_EVENT,
    _RNG,
    _STATE,
)


def _refuse_async_predicate(option: str, value: object) -> None:
    """The breaker classifies an outcome inside its bookkeeping, which never awaits (it runs
    in ``__exit__`` and in sync code alike): an ``async def`` predicate would be a coroutine
    object there, always true. Refused when the breaker is built."""
    if callable(value) and not isinstance(value, type) and is_async_callable(value):
        raise TypeError(
            f"{option} must be a plain (sync) predicate, got the async function {value!r}: "
            "the circuit breaker classifies outcomes without awaiting; decide from the "
            "exception or result with a regular def"
        )


def _constant(seconds: float) -> Callable[[int], float]:
    return lambda _times: seconds


def _safe_backoff(fn: Callable[[int], float], first: float) -> Callable[[int], float]:
    """Wrap a user backoff so a bad value can never corrupt the breaker mid-transition: it
    falls back to the last good duration and logs the problem."""
    last = [first]

    def duration(times_opened: int) -> float:
        try:
            value = fn(times_opened)
            seconds = float(value)
            if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"expected seconds >= 0, got {value!r}")
        except Exception:
            _log.exception(
                "open_duration(%d) of a circuit breaker failed; using %ss instead",
                times_opened,
                last[0],
            )
            return last[0]
        last[0] = seconds
        return seconds

    return duration


def _matcher(test: v.ExceptionTest) -> Callable[[BaseException], bool]:
    types, predicate = test
    if predicate is not None:
        pred = predicate
        return lambda error: bool(pred(error))
    if not types:
        return _never
    return lambda error: isinstance(error, types)


def _never(error: BaseException) -> bool:
    return False


T = TypeVar("T")


class BreakerMetrics(NamedTuple):
    """A snapshot of the breaker: its state and what its window holds right now.

    Rates are ``0.0`` while the window is empty. While OPEN or HALF_OPEN the window is empty
    (every state change starts a new one).
    """

    state: BreakerState
    calls: int
    failures: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float


def _snapshot(core: BreakerCore, now: float) -> BreakerMetrics:
    state = core.poll(now)
    calls, failures, slow = core.totals(now)
    return BreakerMetrics(
        state,
        round(calls),
        round(failures),
        round(slow),
        failures / calls if calls else 0.0,
        slow / calls if calls else 0.0,
    )


class CircuitBreaker(AroundPolicy):
    """Reject calls to a dependency while it is failing; let trial calls probe its recovery.

    Use it as ``@breaker`` on ``def``/``async def``, as ``with breaker:`` / ``async with
    breaker:``, or through ``breaker.call(fn, ...)`` / ``await breaker.acall(fn, ...)``.

    Parameters (all but ``name`` keyword-only):

    - ``failure_rate_threshold``: fraction of failed calls in the window that opens it,
      ``0 < x <= 1``. "Open after N consecutive failures" is ``window_size=N,
      minimum_calls=N, failure_rate_threshold=1.0``.
    - ``slow_call_duration``: a call taking longer than this many seconds (measured with
      ``clock``) is *slow*; ``None`` switches slow-call detection off.
    - ``slow_call_rate_threshold``: fraction of slow calls that opens it, ``0 < x <= 1``.
    - ``window_type``/``window_size``: ``"count"`` looks at the last ``window_size`` calls,
      ``"time"`` at the calls that finished in the last ``window_size`` seconds (one bucket per
      second, so memory does not grow with traffic).
    - ``minimum_calls``: no decision before this many calls are in the window. For a count
      window a value above ``window_size`` is treated as ``window_size``.
    - ``open_duration``: seconds OPEN before trial calls are let through, or a callable
      ``(times_opened) -> seconds`` for backoff (``times_opened`` is 1 for the first opening
      and counts re-openings until the breaker closes).
    - ``open_jitter``: up to this fraction (``0..1``) of random extra open time, so a fleet of
      instances does not probe a recovering dependency in lockstep. ``rng`` (a
      ``random.Random`` or a zero-argument callable returning ``[0, 1)``) makes it
      reproducible.
    - ``half_open_max_calls``: trial calls admitted in HALF_OPEN; all must succeed to close,
      any failure re-opens; other callers meanwhile get ``CircuitOpenError`` (reason
      ``"half_open_full"``).
    - ``half_open_max_wait``: a trial still running this many seconds after it was admitted
      counts as failed (the breaker re-opens), so a hung trial cannot wedge the breaker in
      HALF_OPEN. ``None``: wait for every trial.
    - ``record``: exception types (or a predicate ``exc -> bool``) that count as failures;
      any other exception counts as a success (the dependency answered).
    - ``ignore``: exception types (or a predicate) that count as neither; checked first.
    - ``record_result``: predicate ``result -> bool``: a returned value that counts as a
      failure (the value is still returned to the caller).
    - ``clock``: monotonic seconds; inject :class:`resilient.testing.FakeClock` in tests.
    - ``on_event``: a listener for this breaker's events only.
    - ``state``: ``None`` (this process alone), or a shared state backend such as
      :class:`resilient.RedisState`: every replica constructing a breaker of this name on
      the same backend then shares one breaker (docs/scaling.md). The happy path stays
      local: outcomes are batched to the fleet, the fleet's state is cached and synced every
      ``sync_interval``; trial calls in HALF_OPEN are admitted by the fleet. When the backend
      is unreachable the breaker carries on with local state.

    Cancellation (``KeyboardInterrupt``, ``asyncio.CancelledError``, trio/anyio cancel scopes:
    anything that is a ``BaseException`` but not an ``Exception``) is never recorded and gives
    a half-open trial slot back. A call admitted before a state change that finishes after it
    is not recorded (every permit is tagged with the state generation that issued it).
    """

    kind = "breaker"
    options = _OPTIONS
    _stateful = True
    _block_result = _NO_RESULT  # ``with breaker:`` has no result for ``record_result``

    def __init__(
        self,
        name: str | None = None,
        *,
        failure_rate_threshold: float = 0.5,
        slow_call_duration: float | None = None,
        slow_call_rate_threshold: float = 1.0,
        window_type: Literal["count", "time"] = "count",
        window_size: int = 100,
        minimum_calls: int = 10,
        open_duration: float | Callable[[int], float] = 30.0,
        open_jitter: float = 0.0,
        half_open_max_calls: int = 1,
        half_open_max_wait: float | None = None,
        record: v.ExceptionFilter = (Exception,),
        ignore: v.ExceptionFilter = (),
        record_result: Callable[[Any], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_event: Listener | None = None,
        rng: _HasRandom | Callable[[], float] | None = None,
        state: StateBackend | None = None,
    ) -> None:
        super().__init__(name, on_event=on_event)
        backend: StateBackend | None = _STATE(state)
        failure_rate_threshold = _FAILURE_RATE(failure_rate_threshold)
        slow = _SLOW_CALL_DURATION(slow_call_duration)
        slow_call_rate_threshold = _SLOW_CALL_RATE(slow_call_rate_threshold)
        window_type = _WINDOW_TYPE(window_type)  # type: ignore[assignment]
        window_size = _WINDOW_SIZE(window_size)
        minimum_calls = _MINIMUM_CALLS(minimum_calls)
        open_time = _OPEN_DURATION(open_duration)
        if not callable(open_time):
            open_time = _constant(open_time)
        open_jitter = _OPEN_JITTER(open_jitter)
        half_open_max_calls = _HALF_OPEN_MAX_CALLS(half_open_max_calls)
        max_wait = _HALF_OPEN_MAX_WAIT(half_open_max_wait)
        for option, value in (("record", record), ("ignore", ignore)):
            _refuse_async_predicate(option, value)
        _refuse_async_predicate("record_result", record_result)
        self._records = _matcher(_RECORD(record))
        self._ignores = _matcher(_IGNORE(ignore))
        self._record_result: Callable[[Any], bool] | None = _RECORD_RESULT(record_result)
        self._notes_outcome = record_result is not None  # a rejected result: "failure"
        self._id = id(self)  # tags our own rejections (``Policy._own``)
        self._clock = _CLOCK(clock)
        rand = _RNG(rng)

        window: Window
        if window_type == "count":
            window = CountWindow(window_size)
            minimum_calls = min(minimum_calls, window_size)
        else:
            window = TimeWindow(window_size)
        self._slow = slow
        self._lock = threading.Lock()
        self._gauge_lock = threading.Lock()
        self._published_gen = -1
        self._core = (BreakerCore if backend is None else SharedBreakerCore)(
            window=window,
            failure_rate_threshold=failure_rate_threshold,
            slow_call_duration=slow,
            slow_call_rate_threshold=slow_call_rate_threshold,
            minimum_calls=minimum_calls,
            open_duration=open_time,
            open_jitter=open_jitter,
            rand=rand,
            half_open_max_calls=half_open_max_calls,
            half_open_max_wait=max_wait,
        )
        self._tel.breaker_state(BreakerState.CLOSED.value, _ALL_STATES)
        self._link: BreakerLink | None = None
        if backend is not None:
            self._bind(backend)
        self._settle(
            failure_rate_threshold=failure_rate_threshold,
            slow_call_duration=slow,
            slow_call_rate_threshold=slow_call_rate_threshold,
            window_type=window_type,
            window_size=window_size,
            minimum_calls=self._core.minimum_calls,
            open_duration=open_duration if callable(open_duration) else open_time(1),
            open_jitter=open_jitter,
            half_open_max_calls=half_open_max_calls,
            half_open_max_wait=max_wait,
            record=record,
            ignore=ignore,
            record_result=record_result,
            clock=self._clock,
            on_event=on_event,
            rng=rng,
            state=backend,
        )

    _repr_settings = ("failure_rate_threshold", "window_type", "window_size", "open_duration")

    def __repr__(self) -> str:
        shown = " ".join(f"{key}={self._settings[key]!r}" for key in self._repr_settings)
        return f"<CircuitBreaker {self.name!r} {self._core.state.value} {shown}>"

    def _renamed(self) -> None:
        with self._gauge_lock:
            self._tel.breaker_state(self._core.state.value, _ALL_STATES)
        if self._link is not None:
            self._link.renamed()

    # -- state ---------------------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """The current state.

        Reading it applies transitions that are due: an OPEN breaker whose open time is over
        reads as HALF_OPEN (and the change is published then), and a HALF_OPEN breaker whose
        trial overran ``half_open_max_wait`` reads as OPEN. So the value is what the next
        caller would meet, never a stale OPEN on a dashboard.
        """
        return self._locked(BreakerCore.poll)

    @property
    def retry_after(self) -> float | None:
        """Seconds until an OPEN breaker admits a trial call; ``None`` in any other state."""
        return self._locked(BreakerCore.retry_after)

    @property
    def metrics(self) -> BreakerMetrics:
        """The state and the window's call, failure and slow-call counts and rates."""
        return self._locked(_snapshot)

    def _health(self) -> dict[str, Any]:
        metrics = self.metrics  # applies (and publishes) due transitions, like ``state``
        retry_after = self.retry_after
        now = self._clock()
        with self._lock:
            changed_at = self._core.changed_at
        return {
            "state": metrics.state.value,
            "calls": metrics.calls,
            "failures": metrics.failures,
            "slow_calls": metrics.slow_calls,
            "failure_rate": metrics.failure_rate,
            "slow_call_rate": metrics.slow_call_rate,
            "retry_after": retry_after,
            # the clock is monotonic (or simulated): date the change by its distance from now
            "last_transition": None if changed_at is None else time.time() - (now - changed_at),
        }

    def force_open(self) -> None:
        """Reject every call until :meth:`reset` (e.g. during maintenance of the dependency)."""
        self._set_state(BreakerState.FORCED_OPEN)

    def disable(self) -> None:
        """Admit every call and record nothing until :meth:`reset` (take the breaker out)."""
        self._set_state(BreakerState.DISABLED)

    def metrics_only(self) -> None:
        """Record outcomes (rates stay visible) but never reject or open, until :meth:`reset`:
        a dry run for new thresholds."""
        self._set_state(BreakerState.METRICS_ONLY)

    def reset(self) -> None:
        """Back to CLOSED with an empty window and no backoff history; calls still running
        from before the reset are not recorded. A shared breaker is reset for the whole
        fleet (locally only while the backend is unreachable), as are the manual states."""
        if self._link is None or not self._link.command("reset"):
            self._locked(BreakerCore.reset)

    def _set_state(self, state: BreakerState) -> None:
        if self._link is None or not self._link.command(state.value):
            self._locked(lambda core, now: core.set_state(state, now))

    def _locked(self, operation: Callable[[BreakerCore, float], T]) -> T:
        """Run ``operation(core, now)`` in one lock section, then publish the transitions it
        (or a transition that was due) made, outside the lock."""
        now = self._clock()
        with self._lock:
            core = self._core
            value = operation(core, now)
            pending = core.take_pending() if core.changes else None
        if pending:
            self._publish(*pending)
        return value

    # -- AroundPolicy: the per-call paths ------------------------------------------------------
    # --- generated from src/resilient/_templates/breaker.tmpl by tools/gen_hotpaths.py ---
    _async_wrapper = _hot_paths.breaker_async_wrapper
    _sync_wrapper = _hot_paths.breaker_sync_wrapper
    _acall = _hot_paths.breaker_acall
    _call = _hot_paths.breaker_call
    _enter = _hot_paths.breaker_enter
    # --- end of generated code ---

    def _admit(self, now: float) -> Permit:
        """Admission through the core, under the lock (any state but CLOSED)."""
        core = self._core
        lock = self._lock
        lock.acquire()
        try:
            decision = core.acquire(now)
            pending = core.take_pending() if core.changes else None
        finally:
            lock.release()
        if pending:
            self._publish(*pending)
        if decision.__class__ is tuple:
            return decision
        raise self._reject(decision)  # type: ignore[arg-type]

    # -- shared state (``state=``) --------------------------------------------------------------
    def _bind(self, backend: StateBackend) -> None:
        """Join the fleet: the backend keeps the core in step from its own thread. Only the
        slow paths change (instance attributes shadow ``_admit`` and ``_complete``), so the
        per-call code of a local breaker is exactly what it was."""
        core = self._core
        assert isinstance(core, SharedBreakerCore)
        self._shared_core = core
        self._admit = self._admit_shared  # type: ignore[method-assign]
        self._complete = self._complete_shared  # type: ignore[method-assign]
        self._link = backend._bind_breaker(self)

    def _admit_shared(self, now: float) -> Permit:
        """``_admit`` of a shared breaker: a trial call is the fleet's to admit."""
        core = self._shared_core
        lock = self._lock
        lock.acquire()
        try:
            decision = core.acquire(now)
            pending = core.take_pending() if core.changes else None
        finally:
            lock.release()
        if pending:
            self._publish(*pending)
        if decision is ASK_FLEET:
            assert self._link is not None
            decision = self._link.admit_trial(now)
        if isinstance(decision, tuple):
            return decision
        raise self._reject(decision)

    def _complete_shared(self, permit: Permit, outcome: int, error: BaseException | None) -> None:
        """``_complete`` of a shared breaker: outcomes go to the batch; a failure asks for an
        early sync, a finished trial is reported to the fleet at once."""
        now = self._clock()
        core = self._shared_core
        lock = self._lock
        lock.acquire()
        try:
            core.complete(permit, outcome, now)
            pending = core.take_pending() if core.changes else None
            reports = core.take_reports() if core.reports else None
            urgent = core.urgent
        finally:
            lock.release()
        if pending:
            self._publish(*pending)
        link = self._link
        assert link is not None
        if reports:
            link.report(reports)
        elif urgent:
            link.wake()
        if outcome or self._slow is not None:
            self._report(permit, outcome, error, now)

    def _exit(self, permit: Permit, error: BaseException | None, result: Any) -> None:
        if permit[0] < 0:
            return  # admitted while DISABLED: nothing to record
        if error is None and self._record_result is None:
            outcome = SUCCESS
        else:
            try:
                outcome = self._classify(error, result)
            except BaseException:
                self._complete(permit, CANCELLED, None)  # a broken predicate must not leak
                raise
        self._complete(permit, outcome, error)

    # -- helpers ---------------------------------------------------------------------------------
    def _classify(self, error: BaseException | None, result: Any) -> int:
        if error is None:
            check = self._record_result
            if check is not None and result is not _NO_RESULT and check(result):
                self._note_outcome("failure")
                return FAILURE
            return SUCCESS
        if not isinstance(error, Exception):
            return CANCELLED
        if self._ignores(error) or self._is_own(error):
            return IGNORED  # our own rejection (nested use) says nothing about the dependency
        return FAILURE if self._records(error) else SUCCESS

    def _complete(self, permit: Permit, outcome: int, error: BaseException | None) -> None:
        now = self._clock()
        core = self._core
        lock = self._lock
        lock.acquire()  # not ``with``: on CPython 3.11 that costs twice the lock round trip
        try:
            core.complete(permit, outcome, now)
            pending = core.take_pending() if core.changes else None
        finally:
            lock.release()
        if pending:
            self._publish(*pending)
        if outcome or self._slow is not None:
            self._report(permit, outcome, error, now)

    def _report(
        self, permit: Permit, outcome: int, error: BaseException | None, now: float
    ) -> None:
        """Events about the call itself: ignored, or slow."""
        if outcome == CANCELLED:
            return
        tel = self._tel
        duration = now - permit[1]
        if outcome == IGNORED:
            if error is not None and tel.wants_events():
                tel.emit(
                    CallIgnored(policy=self.kind, name=self.name, duration=duration, error=error)
                )
        elif self._slow is not None and duration > self._slow and tel.wants_events():
            tel.emit(CallSlow(policy=self.kind, name=self.name, duration=duration))

    def _reject(self, rejection: Rejection) -> CircuitOpenError:
        tel = self._tel
        if not tel.quiet or tel.gen != STATE.generation:
            tel.rejected(rejection.reason, rejection.retry_after)
        error = _open(self._id, self.name, rejection.retry_after, rejection.state)
        if rejection.reason == "half_open_full":
            error.reason = "half_open_full"
            error.args = (
                f"circuit breaker {self.name!r} is half open and all its trial calls are "
                "taken; retry once they have finished",
            )
        return error

    def _publish(self, changes: list[Transition], gen: int) -> None:
        """Publish transitions (outside the breaker lock). The gauge only ever moves forward
        in generations, so concurrent publishers cannot leave it on a stale state."""
        tel = self._tel
        with self._gauge_lock:
            if gen > self._published_gen:
                self._published_gen = gen
                tel.breaker_state(changes[-1][1].value, _ALL_STATES)
        if tel.wants_events():
            for before, after in changes:
                tel.emit(
                    BreakerStateChanged(
                        policy=self.kind,
                        name=self.name,
                        from_state=before.value,
                        to_state=after.value,
                    )
                )
