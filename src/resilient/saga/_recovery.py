"""Recovery: taking over sagas this process did not start, once their lease expired.

* A recovery pass (``saga.recover()``) queries the unfinished sagas of a saga's name, claims
  each one that is due (lease expired, ``next_attempt_at`` reached; the claim bumps its epoch,
  fencing out any late writer) and drives it with the registered version that defined it, from
  wherever its log says it is. Sagas of unregistered versions (or whose steps changed without a
  version bump) are skipped and left untouched.
* A duplicate start (``saga.run(data, saga_id)`` for an id already in the store) answers with
  the stored outcome, or waits for the saga to finish elsewhere and takes it over if its lease
  expires meanwhile.

Like a run, both are written once, sans I/O (:func:`recovery_pass`, :func:`join`: generators
yielding store operations), and executed by an async and a blocking driver
(:func:`perform_async`, :func:`perform_sync`). The recovery *loop* (``Saga.run_recovery_loop``)
is the saga's: it also hosts detached runs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Generator, Iterable
from typing import Any, Generic, TypeVar, cast

import anyio

from ..errors import StaleEpoch, UnknownSagaVersion
from ._drivers import _AsyncDriver, _SyncDriver
from ._host import SagaHost
from ._model import UNFINISHED, SagaFilter, SagaRecord, SagaStatus
from ._protocol import _Op, _Outcome, _Run

__all__ = [
    "RecoveryReport",
    "join",
    "perform_async",
    "perform_sync",
    "recovery_pass",
]

_log = logging.getLogger("resilient.saga")
R = TypeVar("R")
T = TypeVar("T")


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


async def _drive_claimed_async(saga: SagaHost, rec: SagaRecord, detached: bool = False) -> _Outcome:
    """Drive ``rec`` (just claimed by this process) to its end with ``await``."""
    run = _Run(saga, rec, recovering=True)
    return await _AsyncDriver(run, detached).drive(_recovery_script(saga, run))


def _drive_claimed_sync(saga: SagaHost, rec: SagaRecord) -> _Outcome:
    """Drive ``rec`` (just claimed by this process) to its end with blocking calls."""
    run = _Run(saga, rec, recovering=True)
    return _SyncDriver(run).drive(_recovery_script(saga, run))


# -- the store operations both scripts yield ----------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Claim:
    """Claim ``saga_id`` for ``owner`` at ``now``, for ``lease`` seconds (only if it is one of
    ``definitions``, when given); the reply is the claimed records (empty: not due)."""

    saga_id: str
    definitions: list[str] | None
    owner: str
    now: float
    lease: float

    def call(self, claim: Callable[..., R]) -> R:
        """``claim`` (a store's ``claim`` or ``claim_sync``) called with this claim's arguments."""
        return claim(
            self.owner, self.now, self.lease, 1, definitions=self.definitions, saga_id=self.saga_id
        )


@dataclasses.dataclass(frozen=True)
class _Drive:
    """Drive the claimed ``record`` with ``saga`` (the version that defined it); the reply is
    its outcome. With ``fenced_ok`` a takeover by another process mid-way (StaleEpoch) replies
    ``None`` instead of raising."""

    saga: SagaHost
    record: SagaRecord
    detached: bool = False
    fenced_ok: bool = False


@dataclasses.dataclass(frozen=True)
class _Reload:
    """Wait ``delay`` seconds, then reload ``saga_id``; the reply is its record."""

    saga_id: str
    delay: float


_StoreOp = SagaFilter | _Claim | _Drive | _Reload


@dataclasses.dataclass(frozen=True)
class _Done(Generic[T]):
    value: T


def _advance(script: Generator[_StoreOp, Any, T], reply: Any) -> _StoreOp | _Done[T]:
    """Send ``reply`` in: the script's next operation, or its result once it finished."""
    try:
        return script.send(reply)
    except StopIteration as stop:
        return _Done(cast(T, stop.value))


async def perform_async(saga: SagaHost, script: Generator[_StoreOp, Any, T]) -> T:
    """Run ``script`` to its end with ``await``."""
    step = _advance(script, None)
    while not isinstance(step, _Done):
        step = _advance(script, await _execute_async(saga, step))
    return step.value


def perform_sync(saga: SagaHost, script: Generator[_StoreOp, Any, T]) -> T:
    """Run ``script`` to its end with blocking calls (no event loop needed)."""
    step = _advance(script, None)
    while not isinstance(step, _Done):
        step = _advance(script, _execute_sync(saga, step))
    return step.value


async def _execute_async(saga: SagaHost, op: _StoreOp) -> Any:
    store = saga.store
    if isinstance(op, SagaFilter):
        return await store.query(op)
    if isinstance(op, _Claim):
        return await op.call(store.claim)
    if isinstance(op, _Reload):
        await anyio.sleep(op.delay)
        loaded = await store.load(op.saga_id)
        assert loaded is not None
        return loaded
    try:
        return await _drive_claimed_async(op.saga, op.record, op.detached)
    except StaleEpoch:
        if not op.fenced_ok:
            raise
        return None


def _execute_sync(saga: SagaHost, op: _StoreOp) -> Any:
    store = saga._blocking_store
    if isinstance(op, SagaFilter):
        return store.query_sync(op)
    if isinstance(op, _Claim):
        return op.call(store.claim_sync)
    if isinstance(op, _Reload):
        time.sleep(op.delay)
        return store.load_sync(op.saga_id)
    try:
        return _drive_claimed_sync(op.saga, op.record)
    except StaleEpoch:
        if not op.fenced_ok:
            raise
        return None


# -- a recovery pass -----------------------------------------------------------------------------
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


def recovery_pass(saga: SagaHost) -> Generator[_StoreOp, Any, RecoveryReport]:
    """One recovery pass (see ``Saga.recover``): query (a :class:`SagaFilter`), claim and drive
    every due saga, until a query finds nothing left to claim. The blocking driver needs sync
    steps in every registered version."""
    report = RecoveryReport()
    seen: set[str] = set()
    while True:
        rows = yield SagaFilter(name=saga.name, statuses=UNFINISHED, limit=1000)
        found = False
        for saga_id, owner in _candidates(saga, rows, seen, report):
            got = yield _Claim(saga_id, [owner.definition], saga.node_id, saga._clock(), saga.lease)
            if not got:
                continue
            found = True
            outcome: _Outcome | None = yield _Drive(owner, got[0], fenced_ok=True)
            if outcome is None:
                report.stale.append(saga_id)
            else:
                report.outcomes[saga_id] = outcome.status
        if not found:
            return report


# -- a duplicate start ---------------------------------------------------------------------------
def join(
    saga: SagaHost, rec: SagaRecord, *, detached: bool = False, sync: bool = False
) -> Generator[_StoreOp, Any, _Outcome]:
    """The outcome of ``rec``, a saga some earlier call started (see ``Saga.run``): stored, or
    waited for (polling with backoff), or reached by taking the saga over once its lease
    expired. ``sync``: to run with :func:`perform_sync` (the taking version needs sync steps,
    checked before it claims anything)."""
    delay = 0.005
    while True:
        if _settled(saga, rec):
            return _Run(saga, rec, recovering=False).outcome(replayed=True)
        now = saga._clock()
        if rec.lease_until < now and rec.next_attempt_at <= now:
            owner = saga._check_driveable(rec)
            if sync:
                owner._require_sync("run_sync", "run")
            got = yield _Claim(rec.id, None, saga.node_id, saga._clock(), saga.lease)
            if got:
                outcome: _Outcome = yield _Drive(owner, got[0], detached)
                return outcome
        rec = yield _Reload(rec.id, delay)
        delay = min(delay * 2, 0.25)


def _settled(saga: SagaHost, rec: SagaRecord) -> bool:
    """A duplicate start answers with the stored outcome: the saga finished, or it is
    SUSPENDED and not due yet (reported instead of waiting, possibly hours, for its
    ``next_attempt_at``)."""
    if rec.status.finished:
        return True
    return rec.status is SagaStatus.SUSPENDED and rec.next_attempt_at > saga._clock()
