"""Operator actions on sagas: list, timeline, retry, mark_compensated, abort.

A STUCK saga waits for a human (SAGA.md 2.1): after fixing a participant the operator
``retry``s it; if the undo was done by hand, ``mark_compensated`` records that and rolling back
continues with the step before; ``abort`` rolls back a saga that has not passed its pivot.
Every action first *takes* the saga (epoch + 1), so a process still driving it is fenced out
and cannot record anything afterwards.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Generator
from typing import Any

from ._drivers import _AsyncDriver, _SyncDriver
from ._host import SagaHost
from ._model import (
    UNFINISHED,
    LogKind,
    SagaFilter,
    SagaLogEvent,
    SagaRecord,
    SagaResult,
    SagaStatus,
    SagaSummary,
    payload,
)
from ._protocol import _Append, _Op, _Outcome, _result, _Run
from ._replay import replay

__all__ = ["SagaAdmin", "admin_events"]


def _stuck_event(rec: SagaRecord) -> SagaLogEvent | None:
    for ev in reversed(rec.events):
        if ev.kind == LogKind.SAGA_STUCK:
            return ev
    return None


def admin_events(
    rec: SagaRecord, action: str, *, step: str | None = None, note: str | None = None
) -> tuple[tuple[SagaLogEvent, ...], SagaStatus]:
    """The log events and new status for an operator ``action`` on ``rec``; ValueError when
    the action makes no sense for the saga's state. (``abort``'s pivot check needs the
    definition and is done by :class:`SagaAdmin`.)"""
    st = replay(rec.events)
    now = time.time()
    if action == "retry":
        if rec.status != SagaStatus.STUCK:
            raise ValueError(
                f"saga {rec.id!r} is {rec.status.value}, not stuck: only a stuck saga is retried"
            )
        stuck = _stuck_event(rec)
        in_doubt = stuck is not None and stuck.data.get("reason") == "in_doubt"
        body = payload(action="retry", note=note)
        ev = SagaLogEvent(
            LogKind.ADMIN, stuck.step if in_doubt and stuck else None, None, body, now
        )
        status = SagaStatus.COMPENSATING if st.phase == "compensating" else SagaStatus.RUNNING
        return (ev,), status
    if action == "mark_compensated":
        stuck = _stuck_event(rec)
        if rec.status != SagaStatus.STUCK or st.phase != "compensating" or stuck is None:
            raise ValueError(
                f"saga {rec.id!r} is not stuck while compensating: nothing to mark compensated"
            )
        if step != stuck.step:
            raise ValueError(
                f"saga {rec.id!r} is stuck compensating step {stuck.step!r}, not {step!r}"
            )
        body = payload(action="mark_compensated", note=note)
        return (SagaLogEvent(LogKind.ADMIN, step, None, body, now),), SagaStatus.COMPENSATING
    if action == "abort":
        if rec.status not in UNFINISHED and rec.status != SagaStatus.STUCK:
            raise ValueError(f"saga {rec.id!r} is already {rec.status.value}; nothing to abort")
        if st.phase != "forward":
            raise ValueError(f"saga {rec.id!r} is already compensating; retry it instead")
        cause = {"type": "Aborted", "message": note or "aborted by an operator"}
        return (
            SagaLogEvent(LogKind.ADMIN, None, None, payload(action="abort", note=note), now),
            SagaLogEvent(LogKind.SAGA_COMPENSATING, None, None, payload(cause=cause), now),
        ), SagaStatus.COMPENSATING
    raise ValueError(f"unknown admin action {action!r}")


def _check_pivot(run: _Run, action: str) -> None:
    if action == "abort" and run.pivot_done():
        raise ValueError(f"saga {run.id!r} is past its pivot: it can only finish forward")


class SagaAdmin:
    """``saga.admin``: operator tooling for one saga definition (and its other versions).

    The methods are blocking (scripts, the CLI, a REPL); each has an ``a``-prefixed async twin
    for use inside an event loop. ``retry``/``mark_compensated``/``abort`` drive the saga at
    once and return its new :class:`SagaResult` (they do not raise SagaFailed/SagaStuck).
    """

    def __init__(self, saga: SagaHost) -> None:
        self._saga = saga

    # -- reading --------------------------------------------------------------------------------
    def list(
        self, status: SagaStatus | str | None = None, limit: int = 100
    ) -> builtins.list[SagaSummary]:
        """Sagas of this name (any version), newest first, optionally of one status."""
        return list(self._saga._blocking_store.query_sync(self._filter(status, limit)))

    async def alist(
        self, status: SagaStatus | str | None = None, limit: int = 100
    ) -> builtins.list[SagaSummary]:
        """Async twin of :meth:`list`."""
        return await self._saga.store.query(self._filter(status, limit))

    def _filter(self, status: SagaStatus | str | None, limit: int) -> SagaFilter:
        statuses = () if status is None else (SagaStatus(status),)
        return SagaFilter(name=self._saga.name, statuses=statuses, limit=limit)

    def timeline(self, saga_id: str) -> builtins.list[SagaLogEvent]:
        """The saga's whole log, oldest first (KeyError for an unknown id)."""
        store = self._saga._blocking_store
        return list(self._require(store.load_sync(saga_id), saga_id).events)

    async def atimeline(self, saga_id: str) -> builtins.list[SagaLogEvent]:
        """Async twin of :meth:`timeline`."""
        return list(self._require(await self._saga.store.load(saga_id), saga_id).events)

    @staticmethod
    def _require(rec: SagaRecord | None, saga_id: str) -> SagaRecord:
        if rec is None:
            raise KeyError(f"no saga {saga_id!r} in this store")
        return rec

    # -- acting ---------------------------------------------------------------------------------
    def retry(self, saga_id: str, note: str | None = None) -> SagaResult:
        """Drive a STUCK saga again (after fixing what made it stuck)."""
        return self._act_sync(saga_id, "retry", None, note)

    async def aretry(self, saga_id: str, note: str | None = None) -> SagaResult:
        """Async twin of :meth:`retry`."""
        return await self._act_async(saga_id, "retry", None, note)

    def mark_compensated(self, saga_id: str, step: str, note: str | None = None) -> SagaResult:
        """Record that ``step``'s undo was done by hand; rolling back continues before it."""
        return self._act_sync(saga_id, "mark_compensated", step, note)

    async def amark_compensated(
        self, saga_id: str, step: str, note: str | None = None
    ) -> SagaResult:
        """Async twin of :meth:`mark_compensated`."""
        return await self._act_async(saga_id, "mark_compensated", step, note)

    def abort(self, saga_id: str, note: str | None = None) -> SagaResult:
        """Roll back a saga that has not passed its pivot (running, suspended or stuck)."""
        return self._act_sync(saga_id, "abort", None, note)

    async def aabort(self, saga_id: str, note: str | None = None) -> SagaResult:
        """Async twin of :meth:`abort`."""
        return await self._act_async(saga_id, "abort", None, note)

    def _plan(self, rec: SagaRecord, action: str, step: str | None, note: str | None) -> _Append:
        events, status = admin_events(rec, action, step=step, note=note)
        return _Append(events, status)

    def _script(self, run: _Run, op: _Append) -> Generator[_Op, Any, _Outcome]:
        was_stuck = run.state.status == SagaStatus.STUCK
        yield op
        if was_stuck:
            fams = run.saga._tel.metrics()
            if fams is not None:
                fams.stuck.labels(run.saga.name).dec()
        return (yield from run.script())

    def _act_sync(
        self, saga_id: str, action: str, step: str | None, note: str | None
    ) -> SagaResult:
        saga = self._saga
        saga._require_sync(f"admin.{action}", f"admin.a{action}", all_versions=True)
        store = saga._blocking_store
        rec = self._require(store.load_sync(saga_id), saga_id)
        owner = saga._check_driveable(rec)
        self._plan(rec, action, step, note)  # validate before fencing anyone out
        taken = self._require(
            store.take_sync(saga_id, saga.node_id, saga._clock(), saga.lease), saga_id
        )
        try:
            op = self._plan(taken, action, step, note)
            run = _Run(owner, taken, recovering=False)
            _check_pivot(run, action)
            outcome = _SyncDriver(run).drive(self._script(run, op))
        except ValueError:
            store.release_sync(saga_id, saga.node_id, taken.epoch)
            raise
        return _result(outcome, saga_id)

    async def _act_async(
        self, saga_id: str, action: str, step: str | None, note: str | None
    ) -> SagaResult:
        saga = self._saga
        store = saga.store
        rec = self._require(await store.load(saga_id), saga_id)
        owner = saga._check_driveable(rec)
        self._plan(rec, action, step, note)
        taken = self._require(
            await store.take(saga_id, saga.node_id, saga._clock(), saga.lease), saga_id
        )
        try:
            op = self._plan(taken, action, step, note)
            run = _Run(owner, taken, recovering=False)
            _check_pivot(run, action)
            outcome = await _AsyncDriver(run).drive(self._script(run, op))
        except ValueError:
            await store.release(saga_id, saga.node_id, taken.epoch)
            raise
        return _result(outcome, saga_id)
