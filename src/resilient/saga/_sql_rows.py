"""Column lists and row mapping shared by the SQL saga stores (SQLite, PostgreSQL).

Both stores keep the same two tables with the same columns; only the SQL dialect differs.
Keeping the column order and the row-to-record mapping in one place means a new column cannot
be added to one backend and silently missed by the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ._model import NewSaga, SagaLogEvent, SagaRecord, SagaStatus, SagaSummary
from ._store import is_progress

__all__ = [
    "RECORD_COLUMNS",
    "SCHEMA_VERSION",
    "UNFINISHED_SQL",
    "newer_schema",
    "SUMMARY_COLUMNS",
    "AppendShape",
    "append_sets",
    "append_update",
    "insert_params",
    "inserted_by",
    "record_from_row",
    "summary_from_row",
]

# The columns are the dataclasses' fields, in their order: a row selected with them maps to a
# record or a summary by name, and a field added to one cannot be missed by the other.
_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(SagaRecord) if f.name != "events")
_SUMMARY_FIELDS = tuple(f.name for f in dataclasses.fields(SagaSummary))
RECORD_COLUMNS = ", ".join(_RECORD_FIELDS)
SUMMARY_COLUMNS = ", ".join(_SUMMARY_FIELDS)

# The layout of the tables, kept in the table ``saga_schema`` (one row). 1 (no such table):
# the first layout, an index on (status, next_attempt_at) over every saga. 2: that index is
# replaced by one over unfinished sagas only (``sagas_unfinished``: what a claim can take;
# finished sagas, the bulk of an old log, leave it), and the version is recorded. A store
# opened on a layout-1 database upgrades it in place (logs themselves are unchanged: a
# schema-2 engine commits a step's outcome with the next record, but every record is still
# one row, so older logs read the same way).
SCHEMA_VERSION = 2
# the unfinished statuses as SQL literals: a partial index is only used by a query whose
# WHERE names the same literals (a bound parameter could be anything)
UNFINISHED_SQL = "('running', 'compensating', 'suspended')"


def newer_schema(where: str, version: int) -> RuntimeError:
    """The error for a database whose layout is newer than this code knows."""
    return RuntimeError(
        f"the saga tables in {where} have layout version {version}, newer than this version "
        f"of resilient understands ({SCHEMA_VERSION}); upgrade resilient to use them"
    )


# What an append's UPDATE of the saga row sets besides last_seq and updated_at: status,
# finished (the lease is released), next attempt, progress (the recovery count is reset).
AppendShape = tuple[bool, bool, bool, bool]


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


def inserted_by(rec: NewSaga, existing: SagaRecord) -> bool:
    """True when ``existing`` is exactly what inserting ``rec`` wrote, untouched since: the
    insert committed although its connection broke before saying so. Only asked when a
    create is retried after such a failure (a second ``run()`` of the same id by the same
    process at the same instant would look alike, which is why it is not asked otherwise)."""
    return (
        existing.owner == rec.owner
        and existing.created_at == rec.now
        and existing.updated_at == rec.now
        and existing.epoch == 1
        and existing.input_hash == rec.input_hash
        and len(existing.events) == len(rec.events)
    )


def record_from_row(row: Sequence[Any], events: tuple[SagaLogEvent, ...]) -> SagaRecord:
    """A :class:`SagaRecord` from a row selected with :data:`RECORD_COLUMNS`."""
    return SagaRecord(**_fields(_RECORD_FIELDS, row), events=events)


def summary_from_row(row: Sequence[Any]) -> SagaSummary:
    """A :class:`SagaSummary` from a row selected with :data:`SUMMARY_COLUMNS`."""
    return SagaSummary(**_fields(_SUMMARY_FIELDS, row))


def _fields(names: tuple[str, ...], row: Sequence[Any]) -> dict[str, Any]:
    values = dict(zip(names, row, strict=True))
    values["status"] = SagaStatus(values["status"])
    return values


def append_update(
    events: Sequence[SagaLogEvent], status: SagaStatus | None, next_attempt_at: float | None
) -> tuple[AppendShape, list[Any]]:
    """What appending ``events`` changes in the saga row: the shape of the UPDATE (its SQL is
    built once per shape, with :func:`append_sets`) and the parameters its SET clauses take."""
    shape = (
        status is not None,
        status is not None and status.finished,
        next_attempt_at is not None,
        is_progress(events),
    )
    params: list[Any] = []
    if status is not None:
        params.append(status.value)
    if next_attempt_at is not None:
        params.append(next_attempt_at)
    return shape, params


def append_sets(shape: AppendShape, param: str) -> list[str]:
    """The SET clauses of an append's UPDATE of ``shape`` (after ``last_seq`` and
    ``updated_at``); ``param`` is the dialect's placeholder."""
    status, finished, next_attempt, progress = shape
    sets = []
    if status:
        sets.append(f"status = {param}")
    if finished:
        sets.append("owner = NULL, lease_until = 0")
    if next_attempt:
        sets.append(f"next_attempt_at = {param}")
    if progress:
        sets.append("recoveries = 0")
    return sets
