"""An in-process saga store: the default, for tests and for sagas that need no durability.

It keeps the same contract as the durable stores (epoch fencing, leases, claims), so code and
tests written against it behave the same on SQLite. A ``threading.Lock`` guards each operation
(O(number of sagas) at most for claims and queries); it is never held while user code runs.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence

from ..errors import StaleEpoch
from ._model import (
    UNFINISHED,
    CreateResult,
    NewSaga,
    SagaFilter,
    SagaLogEvent,
    SagaRecord,
    SagaStatus,
    SagaSummary,
)
from ._store import BlockingSagaStore, is_progress

__all__ = ["InMemorySagaStore"]


def _summary(rec: SagaRecord) -> SagaSummary:
    return SagaSummary(
        id=rec.id,
        definition=rec.definition,
        steps_hash=rec.steps_hash,
        status=rec.status,
        epoch=rec.epoch,
        owner=rec.owner,
        lease_until=rec.lease_until,
        next_attempt_at=rec.next_attempt_at,
        recoveries=rec.recoveries,
        created_at=rec.created_at,
        updated_at=rec.updated_at,
    )


class InMemorySagaStore(BlockingSagaStore):
    """Sagas kept in a dict of this process: lost on exit, so recovery only helps within the
    process (a crashed task, a cancelled caller). Use :class:`SQLiteSagaStore` to survive a
    crash."""

    offload = False  # no I/O: calling inline is cheaper than a thread hop

    def __init__(self) -> None:
        self._sagas: dict[str, SagaRecord] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<InMemorySagaStore sagas={len(self._sagas)}>"

    def create_sync(self, rec: NewSaga) -> CreateResult:
        """Insert-if-absent on ``rec.id``."""
        with self._lock:
            found = self._sagas.get(rec.id)
            if found is not None:
                return CreateResult(False, found)
            events = tuple(
                dataclasses.replace(ev, seq=i + 1, at=ev.at or rec.now)
                for i, ev in enumerate(rec.events)
            )
            stored = SagaRecord(
                id=rec.id,
                definition=rec.definition,
                steps_hash=rec.steps_hash,
                status=SagaStatus.RUNNING,
                epoch=1,
                owner=rec.owner,
                lease_until=rec.lease_until,
                next_attempt_at=0.0,
                deadline=rec.deadline,
                recoveries=0,
                input=rec.input,
                input_hash=rec.input_hash,
                trace_context=rec.trace_context,
                created_at=rec.now,
                updated_at=rec.now,
                events=events,
            )
            self._sagas[rec.id] = stored
            return CreateResult(True, stored)

    def load_sync(self, saga_id: str) -> SagaRecord | None:
        """The saga (an immutable snapshot) or ``None``."""
        with self._lock:
            return self._sagas.get(saga_id)

    def append_sync(
        self,
        saga_id: str,
        epoch: int,
        events: Sequence[SagaLogEvent],
        status: SagaStatus | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        """Append atomically, fenced by ``epoch``."""
        now = time.time()
        with self._lock:
            rec = self._sagas.get(saga_id)
            if rec is None:
                raise KeyError(f"no saga {saga_id!r} in this store")
            if rec.epoch != epoch:
                raise StaleEpoch(saga_id, epoch, rec.epoch)
            base = len(rec.events)
            added = tuple(
                dataclasses.replace(ev, seq=base + i + 1, at=ev.at or now)
                for i, ev in enumerate(events)
            )
            new_status = rec.status if status is None else SagaStatus(status)
            finished = new_status.finished
            self._sagas[saga_id] = dataclasses.replace(
                rec,
                events=rec.events + added,
                status=new_status,
                next_attempt_at=rec.next_attempt_at if next_attempt_at is None else next_attempt_at,
                recoveries=0 if is_progress(events) else rec.recoveries,
                owner=None if finished else rec.owner,
                lease_until=0.0 if finished else rec.lease_until,
                updated_at=now,
            )

    def claim_sync(
        self,
        owner: str,
        now: float,
        lease_s: float,
        limit: int,
        *,
        definitions: Sequence[str] | None = None,
        saga_id: str | None = None,
    ) -> list[SagaRecord]:
        """Claim due sagas, oldest ``next_attempt_at`` first."""
        wanted = None if definitions is None else frozenset(definitions)
        with self._lock:
            due = [
                rec
                for rec in self._sagas.values()
                if rec.status in UNFINISHED
                and rec.lease_until < now
                and rec.next_attempt_at <= now
                and (wanted is None or rec.definition in wanted)
                and (saga_id is None or rec.id == saga_id)
            ]
            due.sort(key=lambda r: (r.next_attempt_at, r.created_at))
            out = []
            for rec in due[: max(0, limit)]:
                claimed = dataclasses.replace(
                    rec,
                    owner=owner,
                    lease_until=now + lease_s,
                    epoch=rec.epoch + 1,
                    recoveries=rec.recoveries + 1,
                )
                self._sagas[rec.id] = claimed
                out.append(claimed)
            return out

    def take_sync(self, saga_id: str, owner: str, now: float, lease_s: float) -> SagaRecord | None:
        """Operator takeover of ``saga_id`` (any status, any lease)."""
        with self._lock:
            rec = self._sagas.get(saga_id)
            if rec is None:
                return None
            taken = dataclasses.replace(
                rec, owner=owner, lease_until=now + lease_s, epoch=rec.epoch + 1
            )
            self._sagas[saga_id] = taken
            return taken

    def renew_sync(self, saga_id: str, owner: str, epoch: int, lease_until: float) -> bool:
        """Extend the lease while ``owner`` holds ``saga_id`` at ``epoch``."""
        with self._lock:
            rec = self._sagas.get(saga_id)
            if rec is None or rec.owner != owner or rec.epoch != epoch:
                return False
            if rec.status.finished:
                return False
            self._sagas[saga_id] = dataclasses.replace(rec, lease_until=lease_until)
            return True

    def release_sync(self, saga_id: str, owner: str, epoch: int) -> None:
        """Drop the lease (no-op unless ``owner`` holds it at ``epoch``)."""
        with self._lock:
            rec = self._sagas.get(saga_id)
            if rec is not None and rec.owner == owner and rec.epoch == epoch:
                self._sagas[saga_id] = dataclasses.replace(rec, owner=None, lease_until=0.0)

    def query_sync(self, filt: SagaFilter) -> list[SagaSummary]:
        """Matching sagas, most recently updated first."""
        with self._lock:
            rows = [
                rec
                for rec in self._sagas.values()
                if (filt.name is None or rec.name == filt.name)
                and (not filt.statuses or rec.status in filt.statuses)
                and (filt.saga_id is None or rec.id == filt.saga_id)
            ]
        rows.sort(key=lambda r: (r.updated_at, r.created_at, r.id), reverse=True)
        return [_summary(r) for r in rows[: max(0, filt.limit)]]
