"""Recovery: finishing the sagas whose process died (their lease expired).

A recovery pass queries the unfinished sagas of a saga's name, claims each one that is due
(lease expired, ``next_attempt_at`` reached; the claim bumps its epoch, fencing out any late
writer) and drives it with the registered version that defined it, from wherever its log says
it is. Sagas of unregistered versions (or whose steps changed without a version bump) are
skipped and left untouched. Like a run, the pass is written once, sans I/O (:func:`_pass`),
and executed by an async driver (:func:`recovery_pass`) and a blocking one
(:func:`recovery_pass_sync`).

The recovery *loop* (``Saga.run_recovery_loop``) is the saga's: it also hosts detached runs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Generator, Iterable
from typing import Any, cast

from ..errors import StaleEpoch, UnknownSagaVersion
from ._drivers import _AsyncDriver, _SyncDriver
from ._host import SagaHost
from ._model import UNFINISHED, SagaFilter, SagaRecord, SagaStatus
from ._protocol import _Op, _Outcome, _Run

__all__ = [
    "RecoveryReport",
    "drive_claimed_async",
    "drive_claimed_sync",
    "recovery_pass",
    "recovery_pass_sync",
]

_log = logging.getLogger("resilient.saga")


@dataclasses.dataclass
class RecoveryReport:
    """What one ``recover()`` pass did: final status per saga it drove (``None`` when the run
    stopped without finishing, e.g. a retriable step waits for ``next_attempt_at``), the sagas
    it skipped and why, and the sagas another process took over mid-way (stale epoch)."""

    outcomes: dict[str, SagaStatus | None] = dataclasses.field(default_factory=dict)
    skipped: dict[str, BaseException] = dataclasses.field(default_factory=dict)
    stale: list[str] = dataclasses.field(default_factory=list)


# -- driving one claimed saga --------------------------------------------------------------------
def _recovery_script(saga: SagaHost, run: _Run) -> Generator[_Op, Any, _Outcome]:
    if run.record.recoveries > saga.max_recoveries and not run.state.status.finished:
        return run.stuck_max_recoveries()
    return run.script()


async def drive_claimed_async(saga: SagaHost, rec: SagaRecord, detached: bool = False) -> _Outcome:
    """Drive ``rec`` (just claimed by this process) to its end with ``await``."""
    run = _Run(saga, rec, recovering=True)
    return await _AsyncDriver(run, detached).drive(_recovery_script(saga, run))


def drive_claimed_sync(saga: SagaHost, rec: SagaRecord) -> _Outcome:
    """Drive ``rec`` (just claimed by this process) to its end with blocking calls."""
    run = _Run(saga, rec, recovering=True)
    return _SyncDriver(run).drive(_recovery_script(saga, run))


# -- one pass ------------------------------------------------------------------------------------
def _candidates(
    saga: SagaHost, rows: Iterable[Any], seen: set[str], report: RecoveryReport
) -> list[tuple[str, SagaHost]]:
    out = []
    versions: dict[str, SagaHost] = {}
    for s in saga._versions():  # this object first: it wins over older registrations
        versions.setdefault(s.definition, s)
    now = saga._clock()
    for row in rows:
        if row.id in seen or row.lease_until >= now or row.next_attempt_at > now:
            continue
        seen.add(row.id)
        owner = versions.get(row.definition)
        if owner is None:
            err: UnknownSagaVersion = UnknownSagaVersion(row.id, row.definition)
        elif owner._definition().hash != row.steps_hash:
            err = UnknownSagaVersion(
                row.id,
                row.definition,
                f"saga {row.id!r} was started under {row.definition!r} with other steps "
                f"than the registered {owner.steps}; bump the version when changing steps",
            )
        else:
            out.append((row.id, owner))
            continue
        report.skipped[row.id] = err
        _log.warning("saga recovery skipped: %s", err)
        fams = saga._tel.metrics()
        if fams is not None:
            fams.unknown_version.labels(saga.name).inc()
    return out


@dataclasses.dataclass(frozen=True)
class _Claim:
    """Claim ``saga_id`` (of ``definition``) for this process, at ``now``."""

    saga_id: str
    definition: str
    now: float


@dataclasses.dataclass(frozen=True)
class _Drive:
    """Drive the claimed ``record`` with ``saga`` (the version that defined it); the reply is
    its outcome, or ``None`` when another process took it over mid-way (stale epoch)."""

    saga: SagaHost
    record: SagaRecord


def _pass(saga: SagaHost) -> Generator[SagaFilter | _Claim | _Drive, Any, RecoveryReport]:
    """Query (a :class:`SagaFilter`), claim and drive every due saga, until a query finds
    nothing left to claim."""
    report = RecoveryReport()
    seen: set[str] = set()
    while True:
        rows = yield SagaFilter(name=saga.name, statuses=UNFINISHED, limit=1000)
        found = False
        for saga_id, owner in _candidates(saga, rows, seen, report):
            got = yield _Claim(saga_id, owner.definition, saga._clock())
            if not got:
                continue
            found = True
            outcome: _Outcome | None = yield _Drive(owner, got[0])
            if outcome is None:
                report.stale.append(saga_id)
            else:
                report.outcomes[saga_id] = outcome.status
        if not found:
            return report


async def recovery_pass(saga: SagaHost) -> RecoveryReport:
    """One recovery pass with ``await`` (see ``Saga.recover``)."""
    script = _pass(saga)
    store = saga.store
    reply: Any = None
    while True:
        try:
            op = script.send(reply)
        except StopIteration as stop:
            return cast(RecoveryReport, stop.value)
        if isinstance(op, SagaFilter):
            reply = await store.query(op)
        elif isinstance(op, _Claim):
            reply = await store.claim(
                saga.node_id, op.now, saga.lease, 1, definitions=[op.definition], saga_id=op.saga_id
            )
        else:
            try:
                reply = await drive_claimed_async(op.saga, op.record)
            except StaleEpoch:
                reply = None


def recovery_pass_sync(saga: SagaHost) -> RecoveryReport:
    """One recovery pass with blocking calls (see ``Saga.recover_sync``)."""
    saga._require_sync("recover_sync", "recover", all_versions=True)
    script = _pass(saga)
    store = saga._blocking_store
    reply: Any = None
    while True:
        try:
            op = script.send(reply)
        except StopIteration as stop:
            return cast(RecoveryReport, stop.value)
        if isinstance(op, SagaFilter):
            reply = store.query_sync(op)
        elif isinstance(op, _Claim):
            reply = store.claim_sync(
                saga.node_id, op.now, saga.lease, 1, definitions=[op.definition], saga_id=op.saga_id
            )
        else:
            try:
                reply = drive_claimed_sync(op.saga, op.record)
            except StaleEpoch:
                reply = None
