"""The saga protocol, sans I/O: what is written before and after each step, and what a
recovery does with what it finds (SAGA.md 2.2), written exactly once.

:meth:`_Run.script` is a generator that decides what to do next from the saga's log and yields
operations (:class:`_Append`, :class:`_Invoke`, :class:`_Sleep`); it does no I/O and never
sleeps. The drivers (``_drivers.py``) execute those operations, one with ``await`` and one with
plain blocking calls, and send each result back in; they apply an appended event to the run's
state only after the store accepted it, so the live state is always what replaying the log
(``_replay.py``) would give. :class:`_Run` also holds the per-attempt helpers both drivers share
(numbering an attempt, the records to write around it, spans, metrics, deadlines).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from types import MappingProxyType
from typing import Any, NoReturn, cast

from .._policy import Policy
from ..errors import Rejected, SagaFailed, SagaStoreUnavailable, SagaStuck, StaleEpoch
from ._crash import ARMED, ENV_ARMED, CrashPoint, armed, maybe_crash
from ._definition import _StepDef
from ._errors import DeadlineExceeded
from ._host import SagaHost
from ._model import (
    LogKind,
    RecordedError,
    SagaContext,
    SagaLogEvent,
    SagaRecord,
    SagaResult,
    SagaStatus,
    encode,
    error_info,
    payload,
)
from ._replay import _NOVALUE, replay
from ._telemetry import SagaTelemetry

# JSON round-trips these unchanged, so a value the engine just encoded needs no decoding
_SCALARS = (type(None), bool, int, float, str)
_STUCK_IN_DOUBT = "in_doubt"
_STUCK_COMPENSATION = "compensation_failed"
_STUCK_MAX_RECOVERIES = "max_recoveries"
_STUCK_UNENCODABLE = "unencodable"
_NO_SPAN = contextlib.nullcontext()


# -- operations the core yields -----------------------------------------------------------------
class _Append:
    """Write ``events`` (and ``status``/``next_attempt_at``) in one transaction. ``value`` is
    the already decoded result a single STEP_SUCCEEDED/SAGA_COMPLETED event carries.

    ``defer``: the record may ride with the next write instead of being committed on its own
    (a step's outcome, written with the next step's STARTED). The drivers then hold it and
    commit it in the same transaction as the next record, and on their own before anything
    that is not a write (a sleep, the end of the drive): nothing outside the engine happens
    between the two, so only a crash in between can tell, and it only makes recovery invoke
    the step again with the same key, which is what ``in_doubt="retry"`` means. No other
    record is ever deferred, so a STARTED is still durable before its step runs.
    """

    __slots__ = ("defer", "events", "next_attempt_at", "status", "value")

    def __init__(
        self,
        events: tuple[SagaLogEvent, ...],
        status: SagaStatus | None = None,
        next_attempt_at: float | None = None,
        value: Any = _NOVALUE,
        defer: bool = False,
    ) -> None:
        self.events = events
        self.status = status
        self.next_attempt_at = next_attempt_at
        self.value = value
        self.defer = defer


def _rec(
    *events: SagaLogEvent, status: SagaStatus | None = None, next_attempt_at: float | None = None
) -> _Append:
    return _Append(events, status, next_attempt_at)


class _Invoke:
    """Invoke ``step`` (its forward function or its compensation) under its policy."""

    __slots__ = ("idx", "phase", "step")

    def __init__(self, step: _StepDef, phase: str, idx: int) -> None:
        self.step = step
        self.phase = phase  # forward | compensate
        self.idx = idx


class _Sleep:
    """Wait until ``until`` (the saga clock's time)."""

    __slots__ = ("until",)

    def __init__(self, until: float) -> None:
        self.until = until


_Op = _Append | _Invoke | _Sleep


class _StepOutcome:
    """How an invocation ended, as the core sees it."""

    __slots__ = ("error", "kind", "value")

    def __init__(self, kind: str, value: Any = None, error: BaseException | None = None) -> None:
        self.kind = kind  # ok | failed | rejected | deadline
        self.value = value
        self.error = error


class _RejectedSignal(BaseException):
    """Carries a step's ``Rejected`` through its policy untouched (a "no" is never retried)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class _HaltSignal(BaseException):
    """Carries a ``StaleEpoch`` or a ``SagaStoreUnavailable`` met while logging an attempt out
    through the step's policy: a fenced-out run, or one whose store stayed unreachable past its
    own bounded retries, must stop at once: not be retried (and slept on) by a ``Retry``, and
    never be taken for a failure of the step (which would start a rollback)."""

    def __init__(self, error: StaleEpoch | SagaStoreUnavailable) -> None:
        super().__init__(error)
        self.error = error


class _DeadlineSignal(BaseException):
    """Stops a pre-pivot step's retries when the saga deadline passes during backoff."""


@dataclasses.dataclass
class _Outcome:
    status: SagaStatus | None  # None: the run stopped without finishing (lease released)
    results: dict[str, Any]
    value: Any = None
    step: str | None = None
    reason: str | None = None
    error: BaseException | None = None
    message: str = ""
    replayed: bool = False


# -- the core ------------------------------------------------------------------------------------
class _Run:
    """One drive of one saga by this process (a fresh start, a recovery or an admin action)."""

    def __init__(
        self, saga: SagaHost, record: SagaRecord, *, recovering: bool, data: Any = _NOVALUE
    ) -> None:
        self.saga = saga
        self.defn = saga._definition()
        self.id = record.id
        self.epoch = record.epoch
        self.record = record
        self.recovering = recovering
        # ``data``: the input the caller just gave, when JSON would return it unchanged
        self.data = record.data if data is _NOVALUE else data
        self.deadline = record.deadline
        self._clock = saga._clock
        self.state = replay(record.events)
        self.results_view = MappingProxyType(self.state.results)
        self.cause_error: BaseException | None = None
        self.reporting = saga._tel.active()
        self._texts: dict[str, str] = {}  # step -> its result as encoded in this run
        # a step whose first STARTED was written with SAGA_CREATED (set by ``Saga`` when it
        # created the saga that way): its first attempt writes no STARTED of its own
        self.announced: str | None = None

    # -- helpers shared by both drivers ---------------------------------------------------------
    def now(self) -> float:
        return self._clock()

    @staticmethod
    def crash(point: CrashPoint, step: str | None) -> None:
        if ARMED or ENV_ARMED:
            maybe_crash(point, step)

    def applied(self, op: _Append) -> None:
        """The store accepted ``op``: update the state and report it."""
        self.held(op)
        if self.reporting:
            self.released(op)

    def held(self, op: _Append) -> None:
        """A deferred ``op`` is held by the driver: the script goes on from the state it
        gives (the next step sees the result); it is reported once it is durable."""
        apply = self.state.apply
        events = op.events
        if len(events) == 1:
            apply(events[0], op.value)
        else:
            for ev in events:
                apply(ev)

    def released(self, op: _Append) -> None:
        """A held ``op`` is durable: report it."""
        if self.reporting:
            tel = self.saga._tel
            for ev in op.events:
                self._report(tel, ev)

    def _report(self, tel: SagaTelemetry, ev: SagaLogEvent) -> None:
        kind = ev.kind
        sid = self.id
        if kind == LogKind.STEP_STARTED:
            tel.emit("step_started", sid, ev.step, ev.attempt)
        elif kind == LogKind.STEP_SUCCEEDED:
            tel.emit("step_succeeded", sid, ev.step, self.state.step(cast(str, ev.step)).attempts)
        elif kind == LogKind.STEP_FAILED:
            tel.emit("step_failed", sid, ev.step, ev.attempt, detail=ev.payload)
        elif kind == LogKind.COMP_STARTED:
            tel.emit("compensation_started", sid, ev.step, ev.attempt)
        elif kind == LogKind.COMP_SUCCEEDED:
            tel.emit("step_compensated", sid, ev.step)
        elif kind == LogKind.COMP_FAILED:
            fams = tel.metrics()
            if fams is not None:
                fams.compensation_failures.labels(tel.name, cast(str, ev.step)).inc()
        elif kind == LogKind.SAGA_COMPLETED:
            tel.finished("completed")
            tel.emit("saga_completed", sid)
        elif kind == LogKind.SAGA_COMPENSATED:
            tel.finished("compensated")
            tel.emit("saga_compensated", sid)
        elif kind == LogKind.SAGA_STUCK:
            tel.finished("stuck")
            tel.emit("saga_stuck", sid, ev.step, detail=ev.data.get("reason"))
        elif kind == LogKind.DEADLINE_EXCEEDED:
            tel.emit("deadline_exceeded", sid, ev.step)
        elif kind == LogKind.SAGA_SUSPENDED:
            tel.emit("saga_suspended", sid, ev.step)
        elif kind == LogKind.SAGA_RECOVERED:
            fams = tel.metrics()
            if fams is not None:
                fams.recovered.labels(tel.name).inc()
            tel.emit("recovered", sid)

    def in_flight(self) -> Any:
        """The in-flight gauge a drive counts itself in (None: metrics are off)."""
        if not self.reporting:
            return None
        tel = self.saga._tel
        fams = tel.metrics()
        return None if fams is None else fams.in_flight.labels(tel.name)

    def root_span(self) -> AbstractContextManager[Any]:
        """The saga's span around one drive (a recovery links it to the starting trace)."""
        if not self.reporting:
            return _NO_SPAN
        trace_context = self.record.trace_context if self.recovering else None
        return self.saga._tel.root_span(self.id, trace_context)

    # -- one attempt, as both drivers run it ----------------------------------------------------
    def begin_attempt(self, op: _Invoke, ctx: SagaContext) -> _Append | None:
        """Before an attempt: number it, stop on a passed deadline, and return the STARTED
        record to write (the crash point before it fires here); None for the first attempt
        of a step whose STARTED was written with SAGA_CREATED."""
        name = op.step.name
        st = self.state.step(name)
        if self.announced is not None and self.announced == name and op.phase == "forward":
            self.announced = None
            ctx._attempt = st.attempts
            return None
        if self.deadline is not None:
            self.check_deadline(op)
        if op.phase == "forward":
            n = st.attempts + 1
            if ARMED or ENV_ARMED:
                maybe_crash(CrashPoint.BEFORE_STEP_STARTED, name)
            kind = LogKind.STEP_STARTED
        else:
            n = st.comp_attempts + 1
            kind = LogKind.COMP_STARTED
        ctx._attempt = n
        return _Append((SagaLogEvent(kind, name, n, "", self._clock()),))

    def attempt_started(self, op: _Invoke) -> None:
        """The STARTED record is durable; the user function runs next."""
        if ARMED or ENV_ARMED:
            point = (
                CrashPoint.AFTER_STEP_STARTED
                if op.phase == "forward"
                else CrashPoint.AFTER_COMP_STARTED
            )
            maybe_crash(point, op.step.name)

    def span(self, op: _Invoke, ctx: SagaContext) -> AbstractContextManager[Any]:
        if not self.reporting:
            return _NO_SPAN
        return self.saga._tel.step_span(self.id, op.step.name, op.phase, ctx.attempt)

    def observe(self, op: _Invoke, outcome: str, t0: float) -> None:
        if self.reporting:
            fams = self.saga._tel.metrics()
            if fams is not None:
                fams.step_seconds.labels(self.saga.name, op.step.name, op.phase, outcome).observe(
                    time.perf_counter() - t0
                )

    def attempt_failed(self, op: _Invoke, ctx: SagaContext, error: Exception, t0: float) -> _Append:
        """The attempt raised: account it and return the FAILED record to write."""
        self.observe(op, "failure", t0)
        return self.failed(op.step, op.phase, ctx.attempt, error)

    @staticmethod
    def reraise(op: _Invoke, error: Exception) -> NoReturn:
        """Re-raise an attempt's ``error`` (being handled) through the step's policy: as it
        is, or a step's "no" as a signal no policy retries."""
        if op.phase == "forward" and isinstance(error, Rejected):
            raise _RejectedSignal(error) from error
        raise  # we are called from the attempt's ``except`` block: this re-raises ``error``

    def failed(self, step: _StepDef, phase: str, attempt: int, error: BaseException) -> _Append:
        if phase == "forward":
            outcome = "REJECTED" if isinstance(error, Rejected) else "UNKNOWN"
            body = payload(error=error_info(error), outcome=outcome)
            ev = SagaLogEvent(LogKind.STEP_FAILED, step.name, attempt, body, self.now())
        else:
            body = payload(error=error_info(error))
            ev = SagaLogEvent(LogKind.COMP_FAILED, step.name, attempt, body, self.now())
        return _Append((ev,))

    def context(self, step: _StepDef, phase: str) -> SagaContext:
        return SagaContext(self.id, self.data, self.results_view, step.name, 1, phase, self.epoch)

    def call_args(self, step: _StepDef, phase: str, ctx: SagaContext) -> tuple[Any, ...]:
        if phase == "forward":
            return (ctx,)
        st = self.state.step(step.name)
        return (ctx, st.result if st.status == "succeeded" else None)

    def function(self, step: _StepDef, phase: str) -> Callable[..., Any]:
        return step.fn if phase == "forward" else cast(Callable[..., Any], step.compensate)

    def policy(self, step: _StepDef, phase: str) -> Policy | None:
        if phase == "forward":
            return step.policy
        return step.compensate_policy or self.saga._compensation_policy

    def deadline_guard(self, op: _Invoke) -> float | None:
        """Seconds left before the deadline for a step it applies to (pre-pivot), else None."""
        if self.deadline is None or op.phase != "forward" or self.defn.forward_only(op.idx):
            return None
        return self.deadline - self.now()

    def check_deadline(self, op: _Invoke) -> None:
        left = self.deadline_guard(op)
        if left is not None and left <= 0:
            raise _DeadlineSignal()

    # -- the script ---------------------------------------------------------------------------
    def pivot_done(self) -> bool:
        p = self.defn.pivot_idx
        if p is None:
            return False
        if p < 0:
            return True
        return self.state.step(self.defn.steps[p].name).status == "succeeded"

    def _ev(self, kind: str, step: str | None = None, body: str = "") -> SagaLogEvent:
        return SagaLogEvent(kind, step, None, body, self.now())

    def script(self) -> Generator[_Op, Any, _Outcome]:
        """Drive the saga from wherever its log says it is to a final status."""
        st = self.state
        if st.status.finished:
            return self.outcome(replayed=True)
        if self.recovering:
            resumed = SagaStatus.RUNNING if st.status is SagaStatus.SUSPENDED else None
            yield _rec(self._ev(LogKind.SAGA_RECOVERED), status=resumed)
            if (
                st.phase == "forward"
                and self.saga.on_recovery == "compensate"
                and not self.pivot_done()
            ):
                yield from self._flip({"type": "Recovery", "message": "on_recovery=compensate"})
        if st.phase == "forward":
            done = yield from self._forward()
            if done is not None:
                return done
        return (yield from self._compensate())

    def abort_script(self, cancelled: BaseException) -> Generator[_Op, Any, _Outcome]:
        """After the caller was cancelled: roll back if still allowed, else stop."""
        st = self.state
        if st.status.finished:
            return self.outcome()
        if st.phase == "forward":
            if self.pivot_done():
                return _Outcome(None, dict(st.results))
            self.cause_error = cancelled
            yield from self._flip({"type": "Cancelled", "message": "the caller was cancelled"})
        return (yield from self._compensate())

    def _flip(
        self, cause: dict[str, Any], step: str | None = None, *, deadline: bool = False
    ) -> Generator[_Op, Any, None]:
        events = []
        if deadline:
            events.append(self._ev(LogKind.DEADLINE_EXCEEDED, step))
        events.append(self._ev(LogKind.SAGA_COMPENSATING, step, payload(cause=cause, step=step)))
        yield _rec(*events, status=SagaStatus.COMPENSATING)
        self.crash(CrashPoint.AFTER_COMPENSATING_FLIP, step)

    def _forward(self) -> Generator[_Op, Any, _Outcome | None]:
        st = self.state
        defn = self.defn
        pivot = defn.pivot_idx
        for idx, step in enumerate(defn.steps):
            ss = st.step(step.name)
            if ss.status == "succeeded":
                continue
            forward_only = pivot is not None and idx > pivot
            if self.deadline is not None and self.now() >= self.deadline:
                if not forward_only and not self.pivot_done():
                    self.cause_error = self._deadline_error()
                    cause = error_info(self.cause_error)
                    yield from self._flip(cause, step.name, deadline=True)
                    return None
                if not st.deadline_noted:
                    yield _rec(self._ev(LogKind.DEADLINE_EXCEEDED, step.name))
            if ss.status == "rejected":  # crashed between the "no" and the flip
                self.cause_error = RecordedError("Rejected", "recorded before a crash")
                yield from self._flip({"type": "Rejected", "message": "recorded"}, step.name)
                return None
            if ss.status == "started" and not ss.cleared and not forward_only:
                if step.in_doubt == "escalate":
                    return (
                        yield from self._stuck(
                            step.name,
                            _STUCK_IN_DOUBT,
                            None,
                            f"step {step.name!r} may or may not have run (in doubt) and its "
                            "in_doubt policy is 'escalate'",
                        )
                    )
                if step.in_doubt == "compensate":
                    self.cause_error = RecordedError("InDoubt", f"step {step.name!r} in doubt")
                    yield from self._flip(error_info(self.cause_error), step.name)
                    return None
            if ss.retry_at is not None and ss.retry_at > self.now():
                if ss.retry_at - self.now() > self.saga.suspend_after:
                    return (yield from self._suspend(step.name, ss.retry_at))
                yield _Sleep(ss.retry_at)
            while True:
                out: _StepOutcome = yield _Invoke(step, "forward", idx)
                if out.kind == "ok":
                    value = out.value
                    if ARMED or ENV_ARMED:
                        maybe_crash(CrashPoint.AFTER_STEP_EFFECT, step.name)
                    if value is None:
                        text = "null"
                    else:
                        try:
                            text = encode(value)
                        except (TypeError, ValueError) as exc:
                            return (yield from self._unencodable(step, value, exc))
                        if type(value) not in _SCALARS:
                            value = json.loads(text)
                    self._texts[step.name] = text
                    # the outcome rides with the next record (the next step's STARTED, or
                    # SAGA_COMPLETED) unless losing it in a crash would be more than "invoke
                    # it again with the same key", or a test armed the moment it is durable
                    defer = step.in_doubt == "retry"
                    if defer and (ARMED or ENV_ARMED):
                        defer = not armed(CrashPoint.AFTER_STEP_RECORDED, step.name)
                    yield _Append(
                        (
                            SagaLogEvent(
                                LogKind.STEP_SUCCEEDED,
                                step.name,
                                ss.attempts,
                                '{"result":' + text + "}",
                                self._clock(),
                            ),
                        ),
                        None,
                        None,
                        value,
                        defer,
                    )
                    if ARMED or ENV_ARMED:
                        maybe_crash(CrashPoint.AFTER_STEP_RECORDED, step.name)
                    break
                if forward_only:
                    delay = self.saga._forward_delay(ss.rounds)
                    retry_at = self.now() + delay
                    body = payload(retry_at=retry_at, error=_info(out.error))
                    scheduled = self._ev(LogKind.STEP_RETRY_SCHEDULED, step.name, body)
                    if delay > self.saga.suspend_after:
                        return (yield from self._suspend(step.name, retry_at, scheduled))
                    yield _rec(scheduled, next_attempt_at=retry_at)
                    yield _Sleep(retry_at)
                    continue
                if out.kind == "deadline":
                    self.cause_error = self._deadline_error()
                    yield from self._flip(error_info(self.cause_error), step.name, deadline=True)
                    return None
                self.cause_error = out.error
                yield from self._flip(_info(out.error) or {}, step.name)
                return None
        last = defn.steps[-1].name
        value = st.results.get(last)
        final = self._texts.get(last)
        if final is None:
            final = encode(value)
        completed = self._ev(LogKind.SAGA_COMPLETED, body='{"value":' + final + "}")
        yield _Append((completed,), SagaStatus.COMPLETED, None, value)
        return self.outcome()

    def _suspend(
        self, step: str, until: float, *before: SagaLogEvent
    ) -> Generator[_Op, Any, _Outcome]:
        """A wait longer than ``suspend_after``: persist SUSPENDED with ``next_attempt_at`` and
        stop (the driver releases the lease); the recovery loop resumes the saga when due."""
        body = payload(until=until)
        yield _rec(
            *before,
            self._ev(LogKind.SAGA_SUSPENDED, step, body),
            status=SagaStatus.SUSPENDED,
            next_attempt_at=until,
        )
        return self.outcome()

    def _unencodable(
        self, step: _StepDef, value: Any, exc: Exception
    ) -> Generator[_Op, Any, _Outcome]:
        """The step ran but its result cannot be stored: record that it ran (it must never
        run again) and go STUCK."""
        attempt = self.state.step(step.name).attempts
        marker = payload(unencodable=f"{type(value).__name__}: {exc}")
        yield _rec(SagaLogEvent(LogKind.STEP_SUCCEEDED, step.name, attempt, marker, self.now()))
        return (
            yield from self._stuck(
                step.name,
                _STUCK_UNENCODABLE,
                exc,
                f"step {step.name!r} returned a result that cannot be stored as JSON "
                f"({type(value).__name__}); it ran and will not be re-run",
            )
        )

    def _compensate(self) -> Generator[_Op, Any, _Outcome]:
        st = self.state
        started = sorted(
            (s for s in self.defn.steps if st.step(s.name).order),
            key=lambda s: st.step(s.name).order,
            reverse=True,
        )
        failures: list[tuple[_StepDef, BaseException | None]] = []
        for step in started:
            ss = st.step(step.name)
            if step.compensate is None:
                continue
            if ss.status == "rejected" and ss.rejections >= ss.attempts:
                continue  # every attempt was a definitive "no": nothing to undo
            if ss.comp_status == "succeeded":
                continue
            out: _StepOutcome = yield _Invoke(step, "compensate", self.defn.index[step.name])
            if out.kind != "ok":
                failures.append((step, out.error))
                if self.saga.continue_on_compensation_error:
                    continue  # best-effort cleanup: undo the rest, still end STUCK
                break
            self.crash(CrashPoint.AFTER_COMP_EFFECT, step.name)
            yield _rec(
                SagaLogEvent(LogKind.COMP_SUCCEEDED, step.name, ss.comp_attempts, "", self.now())
            )
            self.crash(CrashPoint.AFTER_COMP_RECORDED, step.name)
        if failures:
            first, error = failures[0]
            message = "; ".join(
                f"compensation of step {s.name!r} still fails after "
                f"{st.step(s.name).comp_attempts} attempt(s): {_describe(e)}"
                for s, e in failures
            )
            return (
                yield from self._stuck(
                    first.name,
                    _STUCK_COMPENSATION,
                    error,
                    message,
                    failed_steps=[s.name for s, _ in failures] if len(failures) > 1 else None,
                )
            )
        yield _rec(self._ev(LogKind.SAGA_COMPENSATED), status=SagaStatus.COMPENSATED)
        return self.outcome()

    def _stuck(
        self,
        step: str | None,
        reason: str,
        error: BaseException | None,
        message: str,
        *,
        failed_steps: list[str] | None = None,
    ) -> Generator[_Op, Any, _Outcome]:
        ss = self.state.step(step) if step is not None else None
        body = payload(
            reason=reason,
            message=message,
            error=_info(error) if error is not None else None,
            attempts=ss.comp_attempts if ss is not None and reason == _STUCK_COMPENSATION else None,
            failed_steps=failed_steps,
        )
        self.cause_error = error
        yield _rec(self._ev(LogKind.SAGA_STUCK, step, body), status=SagaStatus.STUCK)
        return self.outcome()

    def stuck_max_recoveries(self) -> Generator[_Op, Any, _Outcome]:
        """The poison-pill cap: claimed too often without progress."""
        msg = (
            f"saga {self.id!r} was recovered {self.record.recoveries - 1} times without making "
            f"progress (max_recoveries={self.saga.max_recoveries}); it may crash its process"
        )
        return (yield from self._stuck(None, _STUCK_MAX_RECOVERIES, None, msg))

    def _deadline_error(self) -> DeadlineExceeded:
        total = (self.deadline or 0.0) - self.record.created_at
        return DeadlineExceeded(self.saga.name, max(0.0, total))

    # -- outcome ---------------------------------------------------------------------------------
    def outcome(self, *, replayed: bool = False) -> _Outcome:
        st = self.state
        results = dict(st.results)
        if st.status == SagaStatus.COMPLETED:
            return _Outcome(st.status, results, st.value, replayed=replayed)
        if st.status == SagaStatus.SUSPENDED:
            return _Outcome(st.status, results, replayed=replayed)
        if st.status == SagaStatus.STUCK:
            info = st.stuck
            err = self.cause_error
            if err is None and isinstance(info.get("error"), dict):
                err = RecordedError(info["error"]["type"], info["error"]["message"])
            return _Outcome(
                st.status,
                results,
                step=info.get("step"),
                reason=info.get("reason"),
                error=err,
                message=str(info.get("message", "saga is stuck")),
                replayed=replayed,
            )
        cause = st.cause
        err = self.cause_error
        if err is None:
            c = cause.get("cause") or {}
            err = RecordedError(str(c.get("type", "Error")), str(c.get("message", "")))
        step = cause.get("step")
        return _Outcome(
            st.status,
            results,
            step=step,
            error=err,
            message=f"saga {self.id!r} was rolled back: "
            + (f"step {step!r} failed: " if step else "")
            + _describe(err),
            replayed=replayed,
        )


def _info(error: BaseException | None) -> dict[str, str] | None:
    return None if error is None else error_info(error)


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    if isinstance(error, RecordedError):
        return f"{error.type_name}: {error.message}"
    return f"{type(error).__name__}: {error}"


def _result(outcome: _Outcome, saga_id: str) -> SagaResult:
    return SagaResult(
        saga_id=saga_id,
        status=outcome.status or SagaStatus.RUNNING,
        results=MappingProxyType(outcome.results),
        value=outcome.value,
        replayed=outcome.replayed,
    )


def _unwrap(outcome: _Outcome, saga_id: str) -> SagaResult:
    """A run's outcome as the caller sees it: a result, or SagaFailed / SagaStuck."""
    result = _result(outcome, saga_id)
    if outcome.status == SagaStatus.COMPENSATED:
        raise SagaFailed(saga_id, outcome.step, outcome.message, result) from outcome.error
    if outcome.status == SagaStatus.STUCK:
        raise SagaStuck(
            saga_id,
            outcome.step,
            outcome.reason or "stuck",
            f"saga {saga_id!r} is stuck ({outcome.reason}): {outcome.message}",
            result,
        ) from outcome.error
    return result
