"""Column lists and row mapping shared by the SQL saga stores (SQLite, PostgreSQL).

Both stores keep the same two tables with the same columns; only the SQL dialect differs.
Keeping the column order and the row-to-record mapping in one place means a new column cannot
be added to one backend and silently missed by the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._model import NewSaga, SagaLogEvent, SagaRecord, SagaStatus, SagaSummary

__all__ = [
    "RECORD_COLUMNS",
    "SUMMARY_COLUMNS",
    "insert_params",
    "record_from_row",
    "summary_from_row",
]

RECORD_COLUMNS = (
    "id, definition, steps_hash, status, epoch, owner, lease_until, next_attempt_at, deadline, "
    "recoveries, input, input_hash, trace_context, created_at, updated_at"
)
SUMMARY_COLUMNS = (
    "id, definition, steps_hash, status, epoch, owner, lease_until, "
    "next_attempt_at, recoveries, created_at, updated_at"
)


def insert_params(rec: NewSaga) -> tuple[Any, ...]:
    """Parameters of the saga insert: ``RECORD_COLUMNS`` plus ``last_seq``, where the SQL
    itself supplies ``epoch`` (1), ``next_attempt_at`` (0) and ``recoveries`` (0)."""
    return (
        rec.id,
        rec.definition,
        rec.steps_hash,
        SagaStatus.RUNNING.value,
        rec.owner,
        rec.lease_until,
        rec.deadline,
        rec.input,
        rec.input_hash,
        rec.trace_context,
        rec.now,
        rec.now,
        len(rec.events),
    )


def record_from_row(row: Sequence[Any], events: tuple[SagaLogEvent, ...]) -> SagaRecord:
    """A :class:`SagaRecord` from a row selected with :data:`RECORD_COLUMNS`."""
    return SagaRecord(
        id=row[0],
        definition=row[1],
        steps_hash=row[2],
        status=SagaStatus(row[3]),
        epoch=row[4],
        owner=row[5],
        lease_until=row[6],
        next_attempt_at=row[7],
        deadline=row[8],
        recoveries=row[9],
        input=row[10],
        input_hash=row[11],
        trace_context=row[12],
        created_at=row[13],
        updated_at=row[14],
        events=events,
    )


def summary_from_row(r: Sequence[Any]) -> SagaSummary:
    """A :class:`SagaSummary` from a row selected with :data:`SUMMARY_COLUMNS`."""
    return SagaSummary(
        id=r[0],
        definition=r[1],
        steps_hash=r[2],
        status=SagaStatus(r[3]),
        epoch=r[4],
        owner=r[5],
        lease_until=r[6],
        next_attempt_at=r[7],
        recoveries=r[8],
        created_at=r[9],
        updated_at=r[10],
    )
