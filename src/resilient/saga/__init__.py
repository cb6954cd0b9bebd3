"""Saga orchestration with a durable write-ahead log and crash recovery.

A :class:`Saga` runs ordered steps, each with an optional compensation; when a step fails the
started steps are undone in reverse start order. Every step is recorded in a
:class:`SagaStore` before and after it runs, so :meth:`Saga.recover` can finish (or roll back)
a saga whose process died, re-invoking an in-doubt step with the same idempotency key.

Guarantees: steps and compensations are invoked at least once and each outcome is recorded at
most once (epoch-fenced); an effect happens exactly once when the participant honours
``ctx.idempotency_key``, and never after its compensation only when the participant records
that compensation against the step's key (``barrier()`` for SQL participants,
:class:`ParticipantLedger` for any other). See ``docs/saga.md``.
"""

from __future__ import annotations

from ..errors import SagaStoreUnavailable, StaleEpoch, UnknownSagaVersion
from ._admin import SagaAdmin
from ._barrier import barrier
from ._definition import Step
from ._durability import Durability
from ._errors import DeadlineExceeded, SagaInterrupted
from ._memory import InMemorySagaStore
from ._model import (
    CreateResult,
    LogKind,
    NewSaga,
    RecordedError,
    SagaContext,
    SagaFilter,
    SagaLogEvent,
    SagaRecord,
    SagaResult,
    SagaStatus,
    SagaSummary,
)
from ._participant import (
    EPOCH_HEADER,
    IDEMPOTENCY_HEADER,
    LedgerCall,
    LedgerEndpoint,
    LedgerEntry,
    LedgerOutcome,
    ParticipantLedger,
    participant_headers,
)
from ._postgres import PostgresSagaStore
from ._recovery import RecoveryReport
from ._saga import Saga
from ._sqlite import SQLiteSagaStore
from ._store import BlockingSagaStore, SagaStore, store_health
from ._url import store_from_url

__all__ = [
    "EPOCH_HEADER",
    "IDEMPOTENCY_HEADER",
    "BlockingSagaStore",
    "CreateResult",
    "DeadlineExceeded",
    "Durability",
    "InMemorySagaStore",
    "LedgerCall",
    "LedgerEndpoint",
    "LedgerEntry",
    "LedgerOutcome",
    "LogKind",
    "NewSaga",
    "ParticipantLedger",
    "PostgresSagaStore",
    "RecordedError",
    "RecoveryReport",
    "SQLiteSagaStore",
    "Saga",
    "SagaAdmin",
    "SagaContext",
    "SagaFilter",
    "SagaInterrupted",
    "SagaLogEvent",
    "SagaRecord",
    "SagaResult",
    "SagaStatus",
    "SagaStore",
    "SagaStoreUnavailable",
    "SagaSummary",
    "StaleEpoch",
    "Step",
    "UnknownSagaVersion",
    "barrier",
    "participant_headers",
    "store_from_url",
    "store_health",
]
