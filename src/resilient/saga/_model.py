"""The saga's data: statuses, log events, stored records, results and the step context.

Everything a store persists is plain data here (strings, numbers, JSON text) so any backend
(memory, SQLite, later PostgreSQL) can hold it without knowing the engine. The engine rebuilds
its whole view of a saga from the ordered log events, so a recovered saga and a live one are
described by exactly the same data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = [
    "CreateResult",
    "LogKind",
    "NewSaga",
    "RecordedError",
    "SagaContext",
    "SagaFilter",
    "SagaLogEvent",
    "SagaRecord",
    "SagaResult",
    "SagaStatus",
    "SagaSummary",
]


class SagaStatus(str, Enum):
    """Where a saga is. RUNNING, COMPENSATING and SUSPENDED are unfinished (recovery picks
    them up); COMPLETED, COMPENSATED and STUCK are final until an operator acts on STUCK."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    STUCK = "stuck"

    @property
    def finished(self) -> bool:
        """True for the statuses no process drives any more (STUCK waits for an operator)."""
        return self in _FINISHED


_FINISHED = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.STUCK})
UNFINISHED = (SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.SUSPENDED)


class LogKind:
    """The kinds of log events (SAGA.md 2.2). Strings, so any store can keep them as text."""

    SAGA_CREATED = "SAGA_CREATED"
    STEP_STARTED = "STEP_STARTED"
    STEP_SUCCEEDED = "STEP_SUCCEEDED"
    STEP_FAILED = "STEP_FAILED"
    STEP_RETRY_SCHEDULED = "STEP_RETRY_SCHEDULED"
    SAGA_COMPENSATING = "SAGA_COMPENSATING"
    COMP_STARTED = "COMP_STARTED"
    COMP_SUCCEEDED = "COMP_SUCCEEDED"
    COMP_FAILED = "COMP_FAILED"
    SAGA_COMPENSATED = "SAGA_COMPENSATED"
    SAGA_COMPLETED = "SAGA_COMPLETED"
    SAGA_STUCK = "SAGA_STUCK"
    SAGA_SUSPENDED = "SAGA_SUSPENDED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    SAGA_RECOVERED = "SAGA_RECOVERED"
    ADMIN = "ADMIN"


# Events that do NOT count as progress: a saga claimed again and again that only ever gets
# as far as (re)starting a step is crash-looping and must end in STUCK(max_recoveries).
NON_PROGRESS_KINDS = frozenset({LogKind.STEP_STARTED, LogKind.COMP_STARTED, LogKind.SAGA_RECOVERED})


@dataclass(frozen=True, slots=True, init=False)
class SagaLogEvent:
    """One entry of a saga's append-only log.

    ``payload`` is JSON object text ("" when empty) so stores keep it verbatim; ``data``
    decodes it. ``seq`` is assigned by the store (0 before the event is stored).
    """

    kind: str
    step: str | None = None
    attempt: int | None = None
    payload: str = ""
    at: float = 0.0
    seq: int = 0

    def __init__(
        self,
        kind: str,
        step: str | None = None,
        attempt: int | None = None,
        payload: str = "",
        at: float = 0.0,
        seq: int = 0,
    ) -> None:
        # Several events are built per step: setting the slots through their descriptors
        # costs about half of the generated frozen ``__init__`` (object.__setattr__ per field).
        _set_kind(self, kind)
        _set_step(self, step)
        _set_attempt(self, attempt)
        _set_payload(self, payload)
        _set_at(self, at)
        _set_seq(self, seq)

    @property
    def data(self) -> dict[str, Any]:
        """The decoded payload (an empty dict when there is none)."""
        if not self.payload:
            return {}
        value = json.loads(self.payload)
        return value if isinstance(value, dict) else {}


_EVENT_SLOTS: Any = SagaLogEvent.__dict__
_set_kind = _EVENT_SLOTS["kind"].__set__
_set_step = _EVENT_SLOTS["step"].__set__
_set_attempt = _EVENT_SLOTS["attempt"].__set__
_set_payload = _EVENT_SLOTS["payload"].__set__
_set_at = _EVENT_SLOTS["at"].__set__
_set_seq = _EVENT_SLOTS["seq"].__set__


@dataclass(frozen=True, slots=True)
class NewSaga:
    """What ``SagaStore.create`` inserts: a saga owned by ``owner`` at epoch 1, RUNNING."""

    id: str
    definition: str
    steps_hash: str
    input: str
    input_hash: str
    deadline: float | None
    owner: str
    lease_until: float
    now: float
    trace_context: str | None = None
    events: tuple[SagaLogEvent, ...] = ()

    def created_record(self) -> SagaRecord:
        """The record a store holds right after inserting this saga (events numbered from
        1, stamped ``now`` when unstamped), so a store need not read back what it wrote."""
        events = tuple(
            SagaLogEvent(ev.kind, ev.step, ev.attempt, ev.payload, ev.at or self.now, i + 1)
            for i, ev in enumerate(self.events)
        )
        return SagaRecord(
            id=self.id,
            definition=self.definition,
            steps_hash=self.steps_hash,
            status=SagaStatus.RUNNING,
            epoch=1,
            owner=self.owner,
            lease_until=self.lease_until,
            next_attempt_at=0.0,
            deadline=self.deadline,
            recoveries=0,
            input=self.input,
            input_hash=self.input_hash,
            trace_context=self.trace_context,
            created_at=self.now,
            updated_at=self.now,
            events=events,
        )


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """A stored saga: its row plus its whole log (``events``, in ``seq`` order)."""

    id: str
    definition: str
    steps_hash: str
    status: SagaStatus
    epoch: int
    owner: str | None
    lease_until: float
    next_attempt_at: float
    deadline: float | None
    recoveries: int
    input: str
    input_hash: str
    trace_context: str | None
    created_at: float
    updated_at: float
    events: tuple[SagaLogEvent, ...] = ()

    @property
    def key(self) -> str:
        """The saga key (our ``saga_id``), under the name SAGA.md uses."""
        return self.id

    @property
    def name(self) -> str:
        """The saga definition's name (``definition`` without ``@version``)."""
        return self.definition.rpartition("@")[0]

    @property
    def version(self) -> int:
        """The definition version the saga was started under."""
        return int(self.definition.rpartition("@")[2])

    @property
    def data(self) -> Any:
        """The decoded input."""
        return json.loads(self.input)

    @property
    def results(self) -> dict[str, Any]:
        """Step name -> recorded result, for every step recorded SUCCEEDED."""
        out: dict[str, Any] = {}
        for ev in self.events:
            if ev.kind == LogKind.STEP_SUCCEEDED and ev.step is not None:
                out[ev.step] = ev.data.get("result")
        return out

    @property
    def error(self) -> dict[str, Any] | None:
        """The last recorded error (``{"type", "message"}``), or ``None``."""
        for ev in reversed(self.events):
            err = ev.data.get("error") if ev.payload else None
            if isinstance(err, dict):
                return err
        return None


@dataclass(frozen=True, slots=True)
class CreateResult:
    """``created`` is False when the saga id already existed; ``record`` is then the stored
    saga (the caller compares ``input_hash`` to detect an idempotency conflict)."""

    created: bool
    record: SagaRecord


@dataclass(frozen=True, slots=True)
class SagaFilter:
    """What ``SagaStore.query`` selects: by definition name (any version), statuses, id."""

    name: str | None = None
    statuses: tuple[SagaStatus, ...] = ()
    saga_id: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class SagaSummary:
    """One row of ``SagaStore.query``: enough for an operator's list, without the log."""

    id: str
    definition: str
    steps_hash: str
    status: SagaStatus
    epoch: int
    owner: str | None
    lease_until: float
    next_attempt_at: float
    recoveries: int
    created_at: float
    updated_at: float


class RecordedError(Exception):
    """An error read back from the saga log: the original exception object is gone (it may
    have been raised in another process), so its type name and message stand in for it."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


@dataclass(frozen=True, slots=True)
class SagaResult:
    """The outcome of a saga run: its id, final status, every step's result and ``value``
    (the last step's result). ``replayed`` is True when the stored outcome of an already
    finished saga was returned without running anything (idempotent start)."""

    saga_id: str
    status: SagaStatus
    results: Mapping[str, Any] = field(default_factory=dict)
    value: Any = None
    replayed: bool = False


class SagaContext:
    """What a step or compensation receives: which saga, which step, which attempt.

    ``idempotency_key`` is ``f"{saga_id}:{step}"`` for a step and ``f"{saga_id}:{step}:undo"``
    for its compensation, the same on every attempt and after a crash, so a participant that
    deduplicates on it turns at-least-once invocation into an exactly-once effect. ``epoch``
    is the fencing token of the process driving this attempt: it grows on every takeover.
    """

    __slots__ = ("_attempt", "_data", "_epoch", "_phase", "_results", "_saga_id", "_step")

    def __init__(
        self,
        saga_id: str,
        data: Any,
        results: Mapping[str, Any],
        step: str,
        attempt: int = 1,
        phase: str = "forward",
        epoch: int = 1,
    ) -> None:
        self._saga_id = saga_id
        self._data = data
        self._results = results
        self._step = step
        self._attempt = attempt
        self._phase = phase
        self._epoch = epoch

    @property
    def saga_id(self) -> str:
        """The saga's id (its idempotency key for starting)."""
        return self._saga_id

    @property
    def data(self) -> Any:
        """The saga's input, as decoded from the log (JSON types)."""
        return self._data

    @property
    def results(self) -> Mapping[str, Any]:
        """Step name -> result of every step that succeeded so far (read-only view)."""
        return self._results

    @property
    def step(self) -> str:
        """The name of the step being run or compensated."""
        return self._step

    @property
    def attempt(self) -> int:
        """1 for the first attempt; counts on across retries, crashes and restarts."""
        return self._attempt

    @property
    def epoch(self) -> int:
        """The saga's epoch as held by the process running this attempt: 1 for the process
        that started the saga, one more for every takeover (recovery, an operator). A
        participant may keep the highest epoch it has seen per saga and refuse calls with a
        lower one: they come from a process that has been fenced out (it was paused or cut
        off, and another process has taken the saga over). Also sent by
        :func:`resilient.saga.participant_headers` as ``Saga-Epoch``."""
        return self._epoch

    @property
    def phase(self) -> str:
        """ "forward" for a step, "compensate" for its compensation."""
        return self._phase

    @property
    def idempotency_key(self) -> str:
        """The key the participant should deduplicate on (see the class docstring)."""
        if self._phase == "compensate":
            return f"{self._saga_id}:{self._step}:undo"
        return f"{self._saga_id}:{self._step}"

    def __repr__(self) -> str:
        return (
            f"SagaContext(saga_id={self._saga_id!r}, step={self._step!r}, "
            f"phase={self._phase!r}, attempt={self._attempt}, epoch={self._epoch})"
        )


# -- codec ---------------------------------------------------------------------------------------
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def encode(value: Any) -> str:
    """JSON text for ``value`` (sorted keys, compact); raises TypeError/ValueError when ``value``
    cannot be encoded."""
    if value is None:
        return "null"
    return _ENCODER.encode(value)


def payload(**fields: Any) -> str:
    """JSON object text for a log event's payload; ``None`` fields are left out."""
    return encode({k: v for k, v in fields.items() if v is not None})


def digest(text: str) -> str:
    """A stable short hash (sha256 hex prefix) of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def steps_hash(names: Sequence[str]) -> str:
    """The hash of an ordered list of step names: detects a changed definition."""
    return digest("\x1f".join(names))


def error_info(error: BaseException) -> dict[str, str]:
    """How an error is recorded in the log."""
    return {"type": type(error).__name__, "message": str(error)}
