"""Replaying a saga's log: the state a saga is in is a fold of its log events, nothing else.

:class:`_State` is rebuilt event by event, both when a saga is loaded (recovery, admin actions,
a duplicate start) and live: the drivers apply each event to the run's state only after the
store accepted it, so the live state always equals a replay of the log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, cast

from ._model import LogKind, SagaLogEvent, SagaStatus

__all__ = ["replay"]

# "no value given": a result already decoded by the caller may itself be None
_NOVALUE: Any = object()


@dataclasses.dataclass
class _StepState:
    order: int = 0  # start order (1-based); 0 = never started
    attempts: int = 0
    status: str | None = None  # started | succeeded | failed | rejected
    result: Any = None
    unencodable: bool = False
    retry_at: float | None = None
    rounds: int = 0
    rejections: int = 0  # attempts that ended in a definitive "no" (no effect)
    cleared: bool = False  # an operator allowed re-invoking an in-doubt step
    comp_attempts: int = 0
    comp_status: str | None = None  # started | succeeded | failed


_STEP_STARTED = LogKind.STEP_STARTED
_STEP_SUCCEEDED = LogKind.STEP_SUCCEEDED


class _State:
    """What the log says, rebuilt event by event (live runs apply the same events)."""

    def __init__(self) -> None:
        self.steps: dict[str, _StepState] = {}
        self.results: dict[str, Any] = {}
        self.phase = "forward"
        self.status = SagaStatus.RUNNING
        self.cause: dict[str, Any] = {}
        self.stuck: dict[str, Any] = {}
        self.deadline_noted = False
        self.value: Any = None
        self._order = 0

    def step(self, name: str) -> _StepState:
        st = self.steps.get(name)
        if st is None:
            st = self.steps[name] = _StepState()
        return st

    def apply(self, ev: SagaLogEvent, value: Any = _NOVALUE) -> None:
        """Fold one log event into the state (``value``: its payload, already decoded)."""
        kind = ev.kind
        name: Any = ev.step
        if kind == _STEP_STARTED:
            st = self.steps.get(name) or self.step(name)
            if not st.order:
                self._order += 1
                st.order = self._order
            st.attempts = max(st.attempts, ev.attempt or 0)
            st.status = "started"
            st.cleared = False
        elif kind == _STEP_SUCCEEDED:
            st = self.steps.get(name) or self.step(name)
            st.status = "succeeded"
            if value is _NOVALUE:
                data = ev.data
                st.unencodable = "unencodable" in data
                value = data.get("result")
            st.result = value
            self.results[name] = value
        elif kind == LogKind.STEP_FAILED:
            st = self.step(cast(str, ev.step))
            if ev.data.get("outcome") == "REJECTED":
                st.status = "rejected"
                st.rejections += 1
            else:
                st.status = "failed"
        elif kind == LogKind.STEP_RETRY_SCHEDULED:
            st = self.step(cast(str, ev.step))
            st.retry_at = float(ev.data["retry_at"])
            st.rounds += 1
        elif kind == LogKind.SAGA_COMPENSATING:
            self.phase = "compensating"
            self.status = SagaStatus.COMPENSATING
            self.cause = ev.data
        elif kind == LogKind.COMP_STARTED:
            st = self.step(cast(str, ev.step))
            st.comp_attempts = max(st.comp_attempts, ev.attempt or 0)
            st.comp_status = "started"
        elif kind == LogKind.COMP_SUCCEEDED:
            self.step(cast(str, ev.step)).comp_status = "succeeded"
        elif kind == LogKind.COMP_FAILED:
            self.step(cast(str, ev.step)).comp_status = "failed"
        elif kind == LogKind.SAGA_COMPLETED:
            self.status = SagaStatus.COMPLETED
            self.phase = "done"
            self.value = ev.data.get("value") if value is _NOVALUE else value
        elif kind == LogKind.SAGA_COMPENSATED:
            self.status = SagaStatus.COMPENSATED
            self.phase = "done"
        elif kind == LogKind.SAGA_STUCK:
            self.status = SagaStatus.STUCK
            self.stuck = {**ev.data, "step": ev.step}
        elif kind == LogKind.DEADLINE_EXCEEDED:
            self.deadline_noted = True
        elif kind == LogKind.SAGA_SUSPENDED:
            self.status = SagaStatus.SUSPENDED
        elif kind == LogKind.SAGA_RECOVERED:
            if self.status is SagaStatus.SUSPENDED:
                self.status = SagaStatus.RUNNING
        elif kind == LogKind.ADMIN:
            self._admin(ev)

    def _admin(self, ev: SagaLogEvent) -> None:
        data = ev.data
        action = data.get("action")
        if action in ("retry", "mark_compensated"):
            self.stuck = {}
            self.status = (
                SagaStatus.COMPENSATING if self.phase == "compensating" else SagaStatus.RUNNING
            )
        if action == "retry" and ev.step is not None:
            self.step(ev.step).cleared = True
        if action == "mark_compensated" and ev.step is not None:
            self.step(ev.step).comp_status = "succeeded"


def replay(events: Iterable[SagaLogEvent]) -> _State:
    """The state ``events`` (a saga's log, oldest first) leave the saga in."""
    state = _State()
    apply = state.apply
    for ev in events:
        apply(ev)
    return state
