"""Riding out store outages: a database restart must not reach the callers of ``run()``.

Every operation of a server-backed store (SQLite, PostgreSQL) goes through an
:class:`OutageGuard`. The happy path is the plain call: one ``try`` and one clock read, no
policy. The first *transient* failure (the driver says "connection lost", "server starting up",
"database is locked", ...) starts an outage: from then on, until an operation succeeds again,
every operation of that store runs under the library's own policies,

* ``rs.Retry``: capped exponential backoff with full jitter (0.05 s .. 1 s), retrying only
  transient driver errors and the breaker's fast rejections, for at most ``outage_timeout``
  seconds counted from the start of the operation (a wait that would end past it is not
  started: the enclosing deadline of ``rs.remaining()`` is set for the operation, so the
  store's connection attempts are bounded by it too);
* ``rs.CircuitBreaker``: one per database (shared by every store object on it in this
  process): five failed operations in a row open it for a second, so while the server is down
  the waiting operations are held back by one trial call instead of all reconnecting at once.

Past the bound the operation raises :class:`~resilient.SagaStoreUnavailable` carrying the
saga id, the store (password masked) and the last driver error (its ``__cause__``): no raw
driver exception leaves a store. A driver error that is not transient (a dropped table, a
permission) is wrapped the same way at once, without retrying.

The guard logs one warning when an outage starts and one line when it is over; operations in
between log nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from .._deadline import enter_deadline, leave_deadline
from ..breaker import CircuitBreaker
from ..errors import CircuitOpenError, SagaStoreUnavailable, _mask_secrets
from ..pipeline import Pipeline, pipeline
from ..retry import Retry
from ..waits import wait_exponential

__all__ = ["DEFAULT_OUTAGE_TIMEOUT", "OutOfTime", "OutageGuard", "check_outage_timeout"]

_log = logging.getLogger("resilient.saga.store")
T = TypeVar("T")

DEFAULT_OUTAGE_TIMEOUT = 30.0
"""Seconds a store operation keeps retrying through an outage before SagaStoreUnavailable."""

_BREAKERS: weakref.WeakValueDictionary[str, CircuitBreaker] = weakref.WeakValueDictionary()
_BREAKERS_LOCK = threading.Lock()


def _real_time() -> float:
    """``time.monotonic``, under another name: a store outage happens in real time, so the
    store's policies keep real clocks even while a test installs a fake default clock
    (``resilient.testing.fake_clock()``), which would otherwise freeze their backoff."""
    return time.monotonic()


class OutOfTime(Exception):
    """Raised by a store's own code when what is left of ``outage_timeout`` cannot fit one
    more attempt (a PostgreSQL connection attempt needs 2 s): give up now, within the bound."""


def check_outage_timeout(value: object) -> float:
    """``outage_timeout`` checked (a number of seconds > 0), for the stores' constructors."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"outage_timeout must be a number of seconds, got {value!r}")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"outage_timeout must be > 0 and finite, got {value!r}")
    return float(value)


def _shared_breaker(target: str, transient: Callable[[BaseException], bool]) -> CircuitBreaker:
    """The breaker of the database ``target`` (one per database and process)."""
    with _BREAKERS_LOCK:
        breaker = _BREAKERS.get(target)
        if breaker is None:
            breaker = CircuitBreaker(
                name=f"saga-store {target}",
                window_size=5,
                minimum_calls=5,
                failure_rate_threshold=1.0,
                open_duration=1.0,
                half_open_max_calls=1,
                record=transient,
                ignore=(OutOfTime,),
                clock=_real_time,
            )
            _BREAKERS[target] = breaker
        return breaker


class OutageGuard:
    """Runs a store's operations: directly while the store answers, under Retry and
    CircuitBreaker for at most ``timeout`` seconds per operation while it does not.

    ``describe`` names the store in messages (no password); ``target`` identifies its
    database (the breaker's key); ``transient`` tells a connection-level failure from any
    other error; ``driver_errors`` are the driver's exception types, never let out raw.
    """

    def __init__(
        self,
        describe: str,
        target: str,
        timeout: float,
        transient: Callable[[BaseException], bool],
        driver_errors: tuple[type[BaseException], ...],
    ) -> None:
        self.describe = _mask_secrets(describe)
        self.timeout = timeout
        self._transient = transient
        self._driver_errors = driver_errors
        self._give_up: tuple[type[BaseException], ...] = (
            CircuitOpenError,
            OutOfTime,
            *driver_errors,
        )
        self._open_or_driver: tuple[type[BaseException], ...] = (CircuitOpenError, *driver_errors)
        self.breaker = _shared_breaker(target, transient)
        self.retry = Retry(
            name=f"saga-store {target}",
            attempts=1_000_000,  # bounded by time (max_delay and the deadline), not by count
            wait=wait_exponential(0.05, 1.0, jitter="full"),
            on=self._retryable,
            max_delay=timeout,
            sleep=time.sleep,  # a real outage: never made instant by testing.instant_retries
            clock=_real_time,
        )
        self._policy: Pipeline = pipeline(self.retry, self.breaker)
        self._lock = threading.Lock()
        self._outage = False  # an outage is under way: operations go through the policies
        self.outage_since: float | None = None  # wall-clock start of the current outage
        self.last_error: str | None = None  # the last transient failure seen (masked)

    def _retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, CircuitOpenError) or self._transient(exc)

    @property
    def available(self) -> bool:
        """False while an outage is under way (since a transient failure, until the next
        operation that succeeds)."""
        return not self._outage

    def call(self, operation: str, saga_id: str | None, fn: Callable[..., T], *args: Any) -> T:
        """``fn(retried, *args)``, riding out transient failures. ``retried`` tells ``fn``
        that an earlier attempt of this operation failed: it may have committed before the
        connection broke, so a write must check before applying itself again."""
        start = time.monotonic()
        first: BaseException | None = None
        if not self._outage:
            try:
                return fn(False, *args)
            except self._driver_errors as exc:
                if not self._transient(exc):
                    raise self._unavailable(operation, saga_id, start, exc) from exc
                self._begin(exc)
                first = exc
        return self._ride_out(operation, saga_id, fn, args, start, first)

    def call_once(self, operation: str, saga_id: str | None, fn: Callable[..., T], *args: Any) -> T:
        """``fn(False, *args)`` once (through the breaker while an outage is under way): for
        operations whose caller retries by itself, such as a lease renewal made again at the
        heartbeat's next tick, which must not hold the heartbeat (or the one thread renewing
        every sync run's lease) for a whole ``outage_timeout``."""
        start = time.monotonic()
        try:
            if not self._outage:
                return fn(False, *args)
            result = self.breaker.call(fn, False, *args)
        except self._open_or_driver as exc:
            if self._transient(exc):
                self._begin(exc)
            raise self._unavailable(operation, saga_id, start, exc) from exc
        self._end()
        return result

    def _ride_out(
        self,
        operation: str,
        saga_id: str | None,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        start: float,
        first: BaseException | None,
    ) -> T:
        left = self.timeout - (time.monotonic() - start)
        if left <= 0:
            raise self._unavailable(operation, saga_id, start, first) from first
        retried = [first is not None]
        last: list[BaseException] = [] if first is None else [first]  # the last driver error

        def attempt() -> T:
            again = retried[0]
            retried[0] = True
            try:
                return fn(again, *args)
            except self._driver_errors as exc:
                last[:] = [exc]
                if self._transient(exc):
                    self._begin(exc)
                raise

        _, token = enter_deadline(left)
        try:
            result = self._policy.call(attempt)
        except self._give_up as exc:
            # the cause is what the database said, not the breaker's or the clock's verdict
            cause = exc if isinstance(exc, self._driver_errors) or not last else last[0]
            raise self._unavailable(operation, saga_id, start, exc) from cause
        finally:
            leave_deadline(token)
        self._end()
        return result

    # -- outage bookkeeping -------------------------------------------------------------------
    def _begin(self, exc: BaseException) -> None:
        reason = _reason(exc)
        with self._lock:
            self.last_error = reason
            if self._outage:
                return
            self._outage = True
            self.outage_since = time.time()
        _log.warning(
            "%s: %s; retrying each operation for up to %gs", self.describe, reason, self.timeout
        )

    def _end(self) -> None:
        with self._lock:
            if not self._outage:
                return
            self._outage = False
            since, self.outage_since = self.outage_since, None
        lasted = time.time() - since if since is not None else 0.0
        _log.warning("%s: reachable again after %.1fs", self.describe, lasted)

    def _unavailable(
        self, operation: str, saga_id: str | None, start: float, exc: BaseException | None
    ) -> SagaStoreUnavailable:
        if exc is None or isinstance(exc, (CircuitOpenError, OutOfTime)):
            last = self.last_error or "no answer"
            reason = (
                f"{last} (the circuit breaker is holding operations back)"
                if isinstance(exc, CircuitOpenError)
                else last
            )
        else:
            reason = _reason(exc)
        return SagaStoreUnavailable(
            saga_id, self.describe, operation, time.monotonic() - start, reason
        )

    def health(self) -> dict[str, Any]:
        """The guard's part of ``store.health()``."""
        return {
            "available": not self._outage,
            "outage_since": self.outage_since,
            "last_error": self.last_error,
            "breaker": self.breaker.state.value,
            "outage_timeout": self.timeout,
        }


def _reason(exc: BaseException) -> str:
    """The first line of a driver error, masked, prefixed by its type."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    name = type(exc).__name__
    return _mask_secrets(f"{name}: {first}" if first else name)
