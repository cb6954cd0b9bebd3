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
from ._durability import Durability, memory_durability
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
from ._store import BlockingSagaStore, is_progress, track

__all__ = ["InMemorySagaStore"]

# a summary is a row's fields of that name (the row holds every field of a record)
_SUMMARY_FIELDS = tuple(f.name for f in dataclasses.fields(SagaSummary))


class _Row:
    """One saga, mutable under the store's lock; readers get immutable snapshots."""

    __slots__ = (
        "created_at",
        "deadline",
        "definition",
        "epoch",
        "events",
        "id",
        "input",
        "input_hash",
        "lease_until",
        "next_attempt_at",
        "owner",
        "recoveries",
        "status",
        "steps_hash",
        "trace_context",
        "updated_at",
    )

    def __init__(self, rec: NewSaga) -> None:
        self.id = rec.id
        self.definition = rec.definition
        self.steps_hash = rec.steps_hash
        self.status = SagaStatus.RUNNING
        self.epoch = 1
        self.owner: str | None = rec.owner
        self.lease_until = rec.lease_until
        self.next_attempt_at = 0.0
        self.deadline = rec.deadline
        self.recoveries = 0
        self.input = rec.input
        self.input_hash = rec.input_hash
        self.trace_context = rec.trace_context
        self.created_at = rec.now
        self.updated_at = rec.now
        self.events: list[SagaLogEvent] = []
        self.add(rec.events, rec.now)

    def add(self, events: Sequence[SagaLogEvent], now: float) -> None:
        base = len(self.events)
        self.events.extend(
            SagaLogEvent(ev.kind, ev.step, ev.attempt, ev.payload, ev.at or now, base + i + 1)
            for i, ev in enumerate(events)
        )

    def snapshot(self) -> SagaRecord:
        return SagaRecord(
            id=self.id,
            definition=self.definition,
            steps_hash=self.steps_hash,
            status=self.status,
            epoch=self.epoch,
            owner=self.owner,
            lease_until=self.lease_until,
            next_attempt_at=self.next_attempt_at,
            deadline=self.deadline,
            recoveries=self.recoveries,
            input=self.input,
            input_hash=self.input_hash,
            trace_context=self.trace_context,
            created_at=self.created_at,
            updated_at=self.updated_at,
            events=tuple(self.events),
        )

    def summary(self) -> SagaSummary:
        return SagaSummary(**{name: getattr(self, name) for name in _SUMMARY_FIELDS})


class InMemorySagaStore(BlockingSagaStore):
    """Sagas kept in a dict of this process: lost on exit, so recovery only helps within the
    process (a crashed task, a cancelled caller). Use :class:`SQLiteSagaStore` to survive a
    crash."""

    offload = False  # no I/O: calling inline is cheaper than a thread hop

    def __init__(self) -> None:
        self._sagas: dict[str, _Row] = {}
        self._lock = threading.Lock()
        self.durability: Durability = memory_durability()
        """Nothing survives the process."""
        track(self)

    def __repr__(self) -> str:
        return f"<InMemorySagaStore sagas={len(self._sagas)}>"

    def create_sync(self, rec: NewSaga) -> CreateResult:
        """Insert-if-absent on ``rec.id``."""
        with self._lock:
            found = self._sagas.get(rec.id)
            if found is not None:
                return CreateResult(False, found.snapshot())
            row = self._sagas[rec.id] = _Row(rec)
            return CreateResult(True, row.snapshot())

    def load_sync(self, saga_id: str) -> SagaRecord | None:
        """The saga (an immutable snapshot) or ``None``."""
        with self._lock:
            row = self._sagas.get(saga_id)
            return None if row is None else row.snapshot()

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
            row = self._sagas.get(saga_id)
            if row is None:
                raise KeyError(f"no saga {saga_id!r} in this store")
            if row.epoch != epoch:
                raise StaleEpoch(saga_id, epoch, row.epoch)
            row.add(events, now)
            row.updated_at = now
            if status is not None:
                row.status = SagaStatus(status)
                if row.status.finished:
                    row.owner = None
                    row.lease_until = 0.0
            if next_attempt_at is not None:
                row.next_attempt_at = next_attempt_at
            if is_progress(events):
                row.recoveries = 0

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
            rows = self._sagas.values() if saga_id is None else [self._sagas.get(saga_id)]
            due = [
                row
                for row in rows
                if row is not None
                and row.status in UNFINISHED
                and row.lease_until < now
                and row.next_attempt_at <= now
                and (wanted is None or row.definition in wanted)
            ]
            due.sort(key=lambda r: (r.next_attempt_at, r.created_at))
            out = []
            for row in due[: max(0, limit)]:
                row.owner = owner
                row.lease_until = now + lease_s
                row.epoch += 1
                row.recoveries += 1
                out.append(row.snapshot())
            return out

    def take_sync(self, saga_id: str, owner: str, now: float, lease_s: float) -> SagaRecord | None:
        """Operator takeover of ``saga_id`` (any status, any lease)."""
        with self._lock:
            row = self._sagas.get(saga_id)
            if row is None:
                return None
            row.owner = owner
            row.lease_until = now + lease_s
            row.epoch += 1
            return row.snapshot()

    def renew_sync(self, saga_id: str, owner: str, epoch: int, lease_until: float) -> bool:
        """Extend the lease while ``owner`` holds ``saga_id`` at ``epoch``."""
        with self._lock:
            row = self._sagas.get(saga_id)
            if row is None or row.owner != owner or row.epoch != epoch or row.status.finished:
                return False
            row.lease_until = lease_until
            return True

    def release_sync(self, saga_id: str, owner: str, epoch: int) -> None:
        """Drop the lease (no-op unless ``owner`` holds it at ``epoch``)."""
        with self._lock:
            row = self._sagas.get(saga_id)
            if row is not None and row.owner == owner and row.epoch == epoch:
                row.owner = None
                row.lease_until = 0.0

    def query_sync(self, filt: SagaFilter) -> list[SagaSummary]:
        """Matching sagas, most recently updated first."""
        with self._lock:
            rows = [
                row.summary()
                for row in self._sagas.values()
                if (filt.name is None or row.definition.rpartition("@")[0] == filt.name)
                and (not filt.statuses or row.status in filt.statuses)
                and (filt.saga_id is None or row.id == filt.saga_id)
            ]
        rows.sort(key=lambda r: (r.updated_at, r.created_at, r.id), reverse=True)
        return rows[: max(0, filt.limit)]
