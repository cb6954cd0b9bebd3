"""A circuit breaker's line to its fleet record in Redis (the ``BREAKER`` script).

The breaker's :class:`~resilient._core.shared_breaker.SharedBreakerCore` does the bookkeeping;
this link moves data between it and Redis:

* from the sync thread, every ``sync_interval`` (or early, after a failure): the batch out, a
  snapshot of the fleet's state back (:meth:`RedisBreakerLink.sync_command`, ``synced``);
* from a caller, the rare requests that must be answered before the caller goes on: a trial
  call in HALF_OPEN, a finished trial, a manual state change. One round trip each, in the
  caller's thread (an async caller's event loop waits that long: well under a millisecond
  on a LAN, at most the client's socket timeout when Redis hangs).

Any failure marks the backend down (see ``RedisState._lost``); the caller's request is then
answered by the local core, so the call itself never fails because of Redis.
"""

from __future__ import annotations

import itertools
import math
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .._core.breaker import BreakerState, Permit, Rejection, Transition
from .._core.shared_breaker import FleetSnapshot, SharedBreakerCore, TrialReport
from .._core.sliding_windows import CountWindow
from .._state import BreakerHost
from ._link import Backend, Command, text
from ._scripts import BREAKER, breaker_keys

__all__ = ["RedisBreakerLink"]

_GAUGE = "resilient_state_backend_up"


def _micros(seconds: float) -> int:
    return math.ceil(seconds * 1_000_000)


def _snapshot(reply: Any) -> tuple[FleetSnapshot, bool]:
    inc, epoch, state, left, opened, calls, failures, slow, granted = reply
    snapshot = FleetSnapshot(
        text(inc),
        int(epoch),
        BreakerState(text(state)),
        int(left) / 1_000_000,
        int(opened),
        float(text(calls)),
        float(text(failures)),
        float(text(slow)),
    )
    return snapshot, bool(int(granted))


class RedisBreakerLink:
    """One shared breaker's link; see the module docstring."""

    def __init__(self, backend: Backend, breaker: BreakerHost) -> None:
        self._backend = backend
        core = breaker._shared_core
        self._core: SharedBreakerCore = core
        self._lock: threading.Lock = breaker._lock
        self._clock: Callable[[], float] = breaker._clock
        self._publisher = weakref.WeakMethod(breaker._publish)
        self._breaker = weakref.ref(breaker)
        self._ids = itertools.count(1)
        self._version = 0  # bumped on rename: replies for the old keys are dropped
        self._sent_version = 0
        self._keys = breaker_keys(backend.prefix, breaker.name)
        window = core.window
        self._settings: list[Any] = [
            "count" if isinstance(window, CountWindow) else "time",
            window.size,  # type: ignore[attr-defined]
            core.minimum_calls,
            repr(core.failure_rate_threshold),
            repr(core.slow_call_rate_threshold) if core.slow_call_duration is not None else -1,
            core.half_open_max_calls,
            _micros(core.half_open_max_wait) if core.half_open_max_wait is not None else -1,
            _micros(backend._lease_seconds),
        ]
        breaker._tel.gauge_source(_GAUGE, backend._up_value)

    def _args(self, op: str, next_open: float, *extra: Any) -> list[Any]:
        return [
            op,
            self._backend._replica_id,
            *self._settings,
            _micros(next_open),
            self._backend._key_ttl_ms,
            *extra,
        ]

    # -- the sync thread ------------------------------------------------------------------------
    def sync_command(self) -> Command | None:
        if self._breaker() is None:
            return None
        with self._lock:
            batch = self._core.take_batch()
            next_open = self._core.fleet_open_seconds()
            self._sent_version = self._version
            keys = self._keys
        extra: tuple[Any, ...] = ("", -1, 0, 0, 0) if batch is None else tuple(batch)
        return BREAKER, keys, self._args("sync", next_open, *extra)

    def synced(self, reply: Any) -> None:
        # (the sync thread calls sync_command and then synced, one link at a time)
        self._apply(_snapshot(reply)[0], self._sent_version)

    def offline(self) -> None:
        with self._lock:
            self._core.go_offline()

    # -- the callers' requests ------------------------------------------------------------------
    def admit_trial(self, now: float) -> Permit | Rejection:
        trial_id = f"{self._backend._replica_id}/{next(self._ids)}"
        with self._lock:
            next_open = self._core.fleet_open_seconds()
            keys = self._keys
        try:
            reply = self._backend._call(BREAKER, keys, self._args("trial", next_open, trial_id))
        except Exception:
            return self._locally(lambda core: core.acquire(self._clock()))
        snapshot, granted = _snapshot(reply)
        now = self._clock()
        with self._lock:
            decision = self._core.trial_answer(snapshot, granted, trial_id, now)
            pending = self._core.take_pending() if self._core.changes else None
        self._publish(pending)
        return decision

    def report(self, reports: list[TrialReport]) -> None:
        for report in reports:
            with self._lock:
                next_open = self._core.fleet_open_seconds()
                keys = self._keys
            args = self._args(
                "finish", next_open, report.incarnation, report.epoch, report.trial_id,
                report.outcome,
            )  # fmt: skip
            try:
                reply = self._backend._call(BREAKER, keys, args)
            except Exception:
                return  # offline now: the local core decides the next round
            self._apply(_snapshot(reply)[0], None)

    def command(self, target: str) -> bool:
        if not self._backend.connected:
            return False
        with self._lock:
            next_open = self._core.fleet_open_seconds()
            keys = self._keys
        try:
            reply = self._backend._call(BREAKER, keys, self._args("set", next_open, target))
        except Exception:
            return False
        self._apply(_snapshot(reply)[0], None)
        return True

    def wake(self) -> None:
        self._backend._wake()

    def renamed(self) -> None:
        breaker = self._breaker()
        if breaker is None:
            return
        with self._lock:
            self._version += 1
            self._keys = breaker_keys(self._backend.prefix, breaker.name)
            self._core.go_offline()
        self._backend._wake()

    # -- helpers ----------------------------------------------------------------------------------
    def _apply(self, snapshot: FleetSnapshot, version: int | None) -> None:
        now = self._clock()
        with self._lock:
            if version is not None and version != self._version:
                return
            self._core.apply(snapshot, now)
            pending = self._core.take_pending() if self._core.changes else None
        self._publish(pending)

    def _locally(
        self, decide: Callable[[SharedBreakerCore], Permit | Rejection]
    ) -> Permit | Rejection:
        with self._lock:
            decision = decide(self._core)
            pending = self._core.take_pending() if self._core.changes else None
        self._publish(pending)
        return decision

    def _publish(self, pending: tuple[list[Transition], int] | None) -> None:
        if pending:
            publish = self._publisher()
            if publish is not None:
                publish(*pending)
