"""Typed, immutable events: one class for each decision a policy makes.

Listeners receive these objects (never dicts) so a type checker can tell them apart with
``isinstance``/``match``. They are frozen and slotted: cheap to build, safe to share across
threads, and impossible for one listener to corrupt for the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import time

__all__ = [
    "AdaptiveLimitChanged",
    "BreakerStateChanged",
    "BulkheadAdmitted",
    "BulkheadQueued",
    "BulkheadRejected",
    "CallFailed",
    "CallIgnored",
    "CallRejected",
    "CallSlow",
    "CallSucceeded",
    "ChaosInjected",
    "Event",
    "FallbackUsed",
    "HedgeStarted",
    "RateLimiterQueued",
    "RetryScheduled",
    "SagaEvent",
    "TimeoutHit",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event. ``policy`` is the kind ("breaker", "retry", ...), ``name`` the
    policy's name, ``at`` the wall-clock time (``time.time()``) the event was created."""

    policy: str
    name: str
    at: float = field(default_factory=time)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSucceeded(Event):
    """The protected call returned normally (and its result was not classified a failure)."""

    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CallFailed(Event):
    """The protected call raised (or returned a result classified as a failure)."""

    duration: float
    error: BaseException | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallIgnored(Event):
    """The call raised an exception the policy was told to ignore (neither success nor failure)."""

    duration: float
    error: BaseException


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSlow(Event):
    """The call took longer than the breaker's ``slow_call_duration``."""

    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRejected(Event):
    """The policy refused the call without running it. ``reason`` is a short stable word
    ("open", "forced_open", "half_open_full", "full", "queue_timeout", "rate_limited"; a
    retry refused by its budget: "retry_budget")."""

    reason: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerStateChanged(Event):
    """The breaker moved from one state to another (values of ``BreakerState``)."""

    from_state: str
    to_state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Event):
    """Attempt ``attempt`` failed; the next one starts after ``delay`` seconds."""

    attempt: int
    delay: float
    error: BaseException | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutHit(Event):
    """The call ran out of its ``seconds`` budget."""

    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackUsed(Event):
    """The fallback answered instead of the protected call; ``error`` is what it replaced
    (``None`` when a result, not an exception, triggered it)."""

    error: BaseException | None


@dataclass(frozen=True, slots=True, kw_only=True)
class HedgeStarted(Event):
    """The hedge started attempt number ``attempt`` (2 for the first hedge) because the
    earlier ones had not answered in time, or one of them failed."""

    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosInjected(Event):
    """A chaos policy tampered with a call on purpose: ``injection`` is ``"fault"`` (it
    raised ``error``), ``"latency"`` (it waited ``seconds`` first) or ``"result"`` (it answered
    instead of the function)."""

    injection: str
    error: BaseException | None = None
    seconds: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkheadAdmitted(Event):
    """A caller got a bulkhead slot after ``waited`` seconds in the queue (0 when none)."""

    waited: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkheadQueued(Event):
    """A caller found every slot taken and joined the wait queue at ``position``."""

    position: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkheadRejected(Event):
    """A caller was turned away by the bulkhead ("full" or "queue_timeout")."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimiterQueued(Event):
    """A caller found no token and waits for one at ``position`` in the queue; its token is
    due in ``wait`` seconds."""

    position: int
    wait: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveLimitChanged(Event):
    """An adaptive bulkhead moved its limit from ``from_limit`` to ``to_limit`` after a window
    of samples whose average latency was ``rtt`` seconds."""

    from_limit: int
    to_limit: int
    rtt: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaEvent(Event):
    """A saga lifecycle event. ``kind`` is one of the listener hooks of the saga protocol
    ("saga_started", "step_started", "step_succeeded", "step_failed", "compensation_started",
    "step_compensated", "saga_completed", "saga_compensated", "saga_stuck", "recovered",
    "deadline_exceeded"); ``policy`` is always "saga"."""

    kind: str
    saga_id: str
    step: str | None = None
    attempt: int | None = None
    error: BaseException | None = None
    detail: str | None = None
