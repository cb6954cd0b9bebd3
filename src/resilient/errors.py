"""The exception hierarchy of ``resilient``.

Every error derives from :class:`ResilienceError` so callers can catch "anything the library
decided" in one clause, while still being able to tell a rejection (the protected function was
never called) from a failure of the function itself. Messages name the policy and the numbers
behind the decision, because the message is often all an operator sees in a log line.

Errors keep their constructor arguments as attributes and pickle cleanly (``__reduce__``), so
they survive being sent across processes (sagas, multiprocessing pools).

The tree::

    ResilienceError
    ├── PolicyRejectedError          the protected function was not called
    │   ├── CircuitOpenError
    │   ├── BulkheadFullError
    │   └── RateLimitedError
    ├── TimeoutExceeded              (also builtins.TimeoutError)
    ├── RetryExhaustedError
    ├── ConfigError                  (also ValueError)
    ├── Rejected                     raised by a saga step: a definitive business "no"
    ├── SagaFailed                   rolled back; __cause__ is the step's error
    ├── SagaStuck                    needs an operator (saga.admin)
    ├── IdempotencyConflict          same saga_id, other data
    ├── StaleEpoch                   another process took the saga over
    ├── SagaStoreUnavailable         the store stayed unreachable past its bounded retries;
    │                                the saga is durable and recovery (or run again) finishes it
    └── UnknownSagaVersion           a stored saga names a definition not registered here
"""

from __future__ import annotations

import contextlib
import re
import sys
from typing import TYPE_CHECKING, Any

__all__ = [
    "BulkheadFullError",
    "CircuitOpenError",
    "ConfigError",
    "IdempotencyConflict",
    "PolicyRejectedError",
    "RateLimitedError",
    "Rejected",
    "ResilienceError",
    "RetryExhaustedError",
    "SagaFailed",
    "SagaStoreUnavailable",
    "SagaStuck",
    "StaleEpoch",
    "TimeoutExceeded",
    "UnknownSagaVersion",
]


ORIGIN = "_resilient_origin"
"""Attribute naming the policy (by ``id``) whose own decision an error is (see ``_own``)."""

INJECTED = "_resilient_injected"
"""Attribute set (to ``True``) on an error a chaos policy raised on purpose
(``rs.chaos.is_injected``): every policy records its outcome as ``injected``."""


class _Arg:
    """An error attribute read from the constructor arguments (``_reduce_args[index]``)
    unless the instance holds its own value.

    ``__init__`` stores every attribute as usual (so ``vars()``, pickling and assignment
    behave as always); the fast constructors of the per-call rejections
    (:func:`_circuit_open`, :func:`_bulkhead_full`) store only the arguments and let these
    non-data descriptors answer, which halves what building the error costs.
    """

    __slots__ = ("_index",)

    def __init__(self, index: int) -> None:
        self._index = index

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj._reduce_args[self._index]


class ResilienceError(Exception):
    """Base class of every error raised by ``resilient``.

    Messages are built lazily, in ``__str__``: a breaker rejecting thousands of calls per
    second must not pay for formatting text nobody reads.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._reduce_args: tuple[Any, ...] = args

    def __reduce__(self) -> tuple[Any, ...]:
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        return (type(self), self._reduce_args, state)

    def __str__(self) -> str:
        if self.args == self._reduce_args:
            described = self._describe()
            if described is not None:
                return described
        return super().__str__()

    def _describe(self) -> str | None:
        """The message, from the attributes (``None``: use the plain args)."""
        return None


class PolicyRejectedError(ResilienceError):
    """A policy refused to call the protected function at all.

    ``retry_after`` is a hint in seconds (``None`` when the policy cannot tell); :class:`Retry`
    honours it, and ``Fallback(on=(PolicyRejectedError,))`` catches every rejection.
    """

    retry_after: float | None = None
    reason: str = "rejected"


class CircuitOpenError(PolicyRejectedError):
    """The circuit breaker is open (or forced open): the call was not made."""

    reason: str = "open"
    if not TYPE_CHECKING:  # see ``_Arg``; the type checker sees the ``__init__`` attributes
        name = _Arg(0)
        retry_after = _Arg(1)
        state = _Arg(2)

    def __init__(self, name: str, retry_after: float | None, state: str = "open") -> None:
        super().__init__(name, retry_after, state)
        self.name = name
        self.retry_after = retry_after
        self.state = state
        self.reason = "forced_open" if state == "forced_open" else "open"

    def _describe(self) -> str:
        hint = (
            "until it is reset" if self.retry_after is None else f"retry in {self.retry_after:.3f}s"
        )
        return f"circuit breaker {self.name!r} is {self.state.replace('_', ' ')}; {hint}"


def _circuit_open(
    origin: int, name: str, retry_after: float | None, state: str = "open"
) -> CircuitOpenError:
    """The same error as ``CircuitOpenError(name, retry_after, state)``, tagged as policy
    ``origin``'s own rejection, built without the constructor chain (half the cost): an open
    breaker raises one per call."""
    error = CircuitOpenError.__new__(CircuitOpenError, name, retry_after, state)
    error.__dict__ = {"_reduce_args": (name, retry_after, state), ORIGIN: origin}  # see _Arg
    if state != "open":
        error.reason = "forced_open" if state == "forced_open" else "open"
    return error


class BulkheadFullError(PolicyRejectedError):
    """The bulkhead had no free slot and no room (or no time) left in its wait queue."""

    if not TYPE_CHECKING:  # see ``_Arg``; the type checker sees the ``__init__`` attributes
        name = _Arg(0)
        max_concurrent = _Arg(1)
        max_queued = _Arg(2)
        reason = _Arg(3)
        waited = _Arg(4)

    def __init__(
        self,
        name: str,
        max_concurrent: int,
        max_queued: int,
        reason: str = "full",
        waited: float | None = None,
    ) -> None:
        super().__init__(name, max_concurrent, max_queued, reason, waited)
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.reason = reason
        self.waited = waited

    def _describe(self) -> str:
        if self.reason == "queue_timeout":
            return (
                f"bulkhead {self.name!r}: no slot freed within the queue timeout "
                f"({self.waited or 0.0:.3f}s waited; {self.max_concurrent} running)"
            )
        return (
            f"bulkhead {self.name!r} is full: {self.max_concurrent} running and "
            f"{self.max_queued} waiting (max_concurrent={self.max_concurrent}, "
            f"max_queued={self.max_queued})"
        )


def _bulkhead_full(
    origin: int,
    name: str,
    max_concurrent: int,
    max_queued: int,
    reason: str = "full",
    waited: float | None = None,
) -> BulkheadFullError:
    """The same error as ``BulkheadFullError(...)``, tagged as policy ``origin``'s own
    rejection, built without the constructor chain: a full bulkhead raises one per call."""
    args = (name, max_concurrent, max_queued, reason, waited)
    error = BulkheadFullError.__new__(BulkheadFullError, *args)
    error.__dict__ = {"_reduce_args": args, ORIGIN: origin}  # attributes: see ``_Arg``
    return error


class RateLimitedError(PolicyRejectedError):
    """The rate limiter had no token for this call (and no time left to wait for one).

    ``retry_after`` is the number of seconds until the next token is due, so a caller (or
    :class:`Retry`, or an HTTP layer answering 429 with ``Retry-After``) knows when to come back.
    """

    reason: str = "rate_limited"
    if not TYPE_CHECKING:  # see ``_Arg``; the type checker sees the ``__init__`` attributes
        name = _Arg(0)
        retry_after = _Arg(1)

    def __init__(self, name: str, retry_after: float | None) -> None:
        super().__init__(name, retry_after)
        self.name = name
        self.retry_after = retry_after

    def _describe(self) -> str:
        hint = "" if self.retry_after is None else f"; next token in {self.retry_after:.3f}s"
        return f"rate limiter {self.name!r} has no token for this call{hint}"


def _rate_limited(origin: int, name: str, retry_after: float | None) -> RateLimitedError:
    """``RateLimitedError(name, retry_after)`` tagged as policy ``origin``'s own rejection,
    built without the constructor chain (a saturated limiter raises one per call)."""
    error = RateLimitedError.__new__(RateLimitedError, name, retry_after)
    error.__dict__ = {"_reduce_args": (name, retry_after), ORIGIN: origin}  # see ``_Arg``
    return error


class TimeoutExceeded(ResilienceError, TimeoutError):
    """The call did not finish within its time budget.

    Also a :class:`builtins.TimeoutError`, so code that already handles timeouts keeps working.
    """

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(name, seconds)
        self.name = name
        self.seconds = seconds

    def _describe(self) -> str:
        return f"timeout {self.name!r}: call did not finish within {self.seconds:g}s"


class RetryExhaustedError(ResilienceError):
    """Every attempt returned a result the retry policy considers a failure.

    (When attempts end on an exception, that exception propagates unchanged instead.)
    """

    def __init__(self, name: str, attempts: int, last_result: Any) -> None:
        super().__init__(name, attempts, last_result)
        self.name = name
        self.attempts = attempts
        self.last_result = last_result

    def _describe(self) -> str:
        return (
            f"retry {self.name!r} gave up after {self.attempts} attempt(s); "
            f"last result was {self.last_result!r}"
        )


class ConfigError(ResilienceError, ValueError):
    """A policy was configured with a value it cannot use (from code or the environment).

    Also a :class:`ValueError`. Raised when the policy is created, never when it is called.
    """


class Rejected(ResilienceError):
    """Raised by a saga step to say a definitive business "no".

    The step is not retried and its own compensation is skipped (it did nothing to undo);
    every earlier step is compensated.
    """


class SagaFailed(ResilienceError):
    """A saga failed and was rolled back: every started step was compensated.

    ``__cause__`` is the step's error; ``saga_id``, ``step`` and ``result`` tell which.
    """

    def __init__(self, saga_id: str, step: str | None, message: str, result: Any = None) -> None:
        self.saga_id = saga_id
        self.step = step
        self.result = result
        super().__init__(saga_id, step, message, result)
        self.args = (message,)

    @property
    def status(self) -> Any:
        """The saga's final status, ``SagaStatus.COMPENSATED`` (also ``result.status``)."""
        return _final_status(self.result, "compensated")


class SagaStuck(ResilienceError):
    """A saga could not be finished without a human: a compensation kept failing, an in-doubt
    step may not be retried, or recovery crashed too often. See ``saga.admin``."""

    def __init__(
        self, saga_id: str, step: str | None, reason: str, message: str, result: Any = None
    ) -> None:
        self.saga_id = saga_id
        self.step = step
        self.reason = reason
        self.result = result
        super().__init__(saga_id, step, reason, message, result)
        self.args = (message,)

    @property
    def status(self) -> Any:
        """The saga's status, ``SagaStatus.STUCK`` (also ``result.status``)."""
        return _final_status(self.result, "stuck")


class IdempotencyConflict(ResilienceError):
    """A saga id was reused with different input data."""

    def __init__(self, saga_id: str, message: str | None = None) -> None:
        self.saga_id = saga_id
        super().__init__(saga_id, message)
        self.args = (
            message
            or f"saga id {saga_id!r} was already started with different input data; "
            "use a new saga id or the same input",
        )


class StaleEpoch(ResilienceError):
    """A saga log write was refused because another process took the saga over (its epoch
    moved on). The writer must stop driving the saga: the new owner records the outcomes.

    ``epoch`` is the epoch this process held; ``current`` the one the saga is at now (the
    epoch it lost to), ``None`` only when the takeover was noticed by the lease heartbeat and
    the store could not be read to learn it (``heartbeat`` is then True).
    """

    def __init__(
        self, saga_id: str, epoch: int, current: int | None = None, heartbeat: bool = False
    ) -> None:
        self.saga_id = saga_id
        self.epoch = epoch
        self.current = current
        self.heartbeat = heartbeat
        super().__init__(saga_id, epoch, current, heartbeat)
        found = "; the lease heartbeat found the takeover" if heartbeat else ""
        if current is not None:
            message = (
                f"saga {saga_id!r}: write with epoch {epoch} refused, the saga is now at epoch "
                f"{current} (another process took it over{found})"
            )
        elif heartbeat:
            message = (
                f"saga {saga_id!r}: the lease heartbeat found the saga taken over by another "
                f"process (this process held epoch {epoch}; the store could not be read to "
                "tell the new epoch)"
            )
        else:
            message = (
                f"saga {saga_id!r}: write with epoch {epoch} refused: another process took "
                "the saga over (its epoch moved past this one)"
            )
        self.args = (message,)


class SagaStoreUnavailable(ResilienceError):
    """The saga store could not be reached (or kept failing) for longer than its bounded
    retries allow (``outage_timeout``), so the saga could not go on *here and now*.

    Nothing is lost: the saga is durable up to its last record. Recovery (``saga.recover()``,
    ``run_recovery_loop()``, in this or any process) finishes it once the store is back, or
    call ``run(data, saga_id)`` again with the same id. ``saga_id`` is ``None`` for store
    operations that concern no single saga (a recovery pass's query). ``store`` describes the
    store (passwords masked), ``operation`` is the store operation that gave up, ``waited``
    how long it kept trying (seconds) and ``reason`` the last driver error (masked too); the
    driver's exception itself is the ``__cause__``.
    """

    def __init__(
        self,
        saga_id: str | None,
        store: str = "the saga store",
        operation: str = "",
        waited: float = 0.0,
        reason: str = "",
    ) -> None:
        store, reason = _mask_secrets(store), _mask_secrets(reason)
        self.saga_id = saga_id
        self.store = store
        self.operation = operation
        self.waited = waited
        self.reason = reason
        super().__init__(saga_id, store, operation, waited, reason)
        what = f" ({operation}: {reason})" if operation and reason else f" ({reason or operation})"
        if what == " ()":
            what = ""
        if saga_id is not None and operation == "create":
            after = (
                "the saga may or may not have been started; calling "
                f"run(data, saga_id={saga_id!r}) again starts it or finishes it"
            )
        elif saga_id is None:
            after = (
                "every saga in it is durable up to its last record; the next recovery pass "
                "(saga.recover() or run_recovery_loop()) carries on once the store is back"
            )
        else:
            after = (
                "the saga is durable up to its last record and will be finished by recovery "
                "(saga.recover() or run_recovery_loop(), in any process) or by calling "
                f"run(data, saga_id={saga_id!r}) again"
            )
        subject = "saga store" if saga_id is None else f"saga {saga_id!r}: the saga store"
        self.args = (f"{subject} {store} was unavailable for {waited:.1f}s{what}; {after}",)


class UnknownSagaVersion(ResilienceError):
    """A stored saga names a definition (``name@version`` plus a hash of its step names) that
    is not registered in this process, so it is left untouched instead of being guessed at."""

    def __init__(self, saga_id: str, definition: str, message: str | None = None) -> None:
        self.saga_id = saga_id
        self.definition = definition
        super().__init__(saga_id, definition, message)
        self.args = (
            message
            or f"saga {saga_id!r} was started under {definition!r}, which is not registered "
            "here; register that version to finish it",
        )


_SECRET_URL = re.compile(r"(?i)(://[^:/@?#\s]*):[^@/?#\s]*@")
_SECRET_PAIR = re.compile(
    r"(?i)\b(password|passwd|pwd|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]+)"
)


def _mask_secrets(text: str) -> str:
    """``text`` with every password replaced by ``***``: in URLs (``scheme://user:pw@host``)
    and in libpq ``key=value`` strings (``password=pw``). Used for every message that may
    quote a store URL, because messages end up in logs."""
    text = _SECRET_URL.sub(r"\1:***@", text)
    return _SECRET_PAIR.sub(r"\1=***", text)


def _final_status(result: Any, default: str) -> Any:
    status = getattr(result, "status", None)
    if status is not None:
        return status
    from .saga._model import SagaStatus  # imported late: the saga package imports this module

    return SagaStatus(default)


def _add_note(error: BaseException, note: str) -> None:
    """``error.add_note(note)``, also on Python 3.10 (which has ``__notes__`` in tracebacks
    only through backports, but where tests and handlers can still read the list)."""
    if sys.version_info >= (3, 11):
        error.add_note(note)
        return
    notes = getattr(error, "__notes__", None)  # pragma: no cover - Python 3.10 only
    if isinstance(notes, list):
        notes.append(note)
    else:
        with contextlib.suppress(AttributeError, TypeError):
            setattr(error, "__notes__", [note])  # noqa: B010 - no such attribute in 3.10
