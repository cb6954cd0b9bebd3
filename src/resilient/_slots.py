"""What both bulkheads share: slots, a FIFO wait queue shared by threads and tasks, and the
slow paths around them (queueing, giving up, rejecting, releasing).

:class:`resilient.Bulkhead` (a fixed number of slots) and :class:`resilient.AdaptiveBulkhead`
(a number that follows latency) derive from :class:`SlotPolicy`: each supplies its core (a
:class:`~resilient._core.bulkhead.BulkheadCore`) and its per-call paths (generated from its
template; the adaptive bulkhead waits with the bulkhead's generated ``_wait_in_*``), and
inherits everything here.

How waiting works: the state lives in the core, updated under one short ``threading.Lock``
that is never held while anyone waits or user code runs; a caller that must wait queues a
wake-up handle from :mod:`resilient._waiters` (a lock for a thread, an event woken through its
own loop for a task) and the releaser hands its slot straight to the longest waiter. No
polling, and no thread is ever blocked on behalf of a task. If a waiter's loop has already
been closed, the slot is passed on to the next waiter.

Giving up (cancel scope, ``asyncio`` cancellation, ``KeyboardInterrupt``, queue timeout) takes
the waiter out of the queue; if the slot was handed to it in the same instant, the waiter
passes that slot on before the exception propagates. So every admitted caller releases
exactly once and no slot is ever lost.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from ._core.bulkhead import ADMITTED, FULL, BulkheadCore
from ._policy import AroundPolicy
from ._waiters import Waiter
from .errors import _bulkhead_full
from .telemetry._events import BulkheadAdmitted, BulkheadQueued, BulkheadRejected
from .telemetry._hub import STATE

__all__ = ["SlotPolicy", "in_flight_reader"]


class SlotPolicy(AroundPolicy):
    """A policy admitting calls into slots, with a bounded FIFO queue (the bulkheads).

    Subclasses set ``_lock``, ``_core``, ``_clock``, ``_queue_timeout`` and ``_counter_only``
    in ``__init__``.
    """

    _stateful = True
    _lock: threading.Lock
    _core: BulkheadCore[Waiter]
    _clock: Callable[[], float]
    _queue_timeout: float | None
    _counter_only: bool

    # -- read-only view ------------------------------------------------------------------------
    @property
    def max_queued(self) -> int:
        """How many callers may wait for a slot."""
        return self._core.max_queued

    @property
    def queue_timeout(self) -> float | None:
        """Longest wait in the queue in seconds (``None``: unbounded)."""
        return self._queue_timeout

    @property
    def in_flight(self) -> int:
        """Slots taken right now (calls running, plus any slot just handed to a waiter that
        has not resumed yet)."""
        return self._core.running

    @property
    def queued(self) -> int:
        """Callers waiting for a slot right now."""
        return self._core.queued

    def _health(self) -> dict[str, Any]:
        core = self._core
        return {
            "in_flight": core.running,
            "queued": core.queued,
            "limit": core.max_concurrent,
            "max_queued": core.max_queued,
        }

    # -- waiting: the slow paths (the waits themselves are generated, in bulkhead.tmpl) --------
    def _arrive(self, waiter: Waiter) -> int:
        """Take a slot (returns ``ADMITTED``) or join the queue (returns the 1-based position;
        the caller must then wait). Raises ``BulkheadFullError`` when the queue is full too."""
        with self._lock:
            position = self._core.arrive(waiter)
        if position == ADMITTED:
            self._admitted(0.0)
        elif position == FULL:
            raise self._reject("full", None)
        return position

    def _note_queued(self, position: int) -> None:
        tel = self._tel
        if tel.wants_events():
            tel.emit(BulkheadQueued(policy=self.kind, name=self.name, position=position))

    def _after_wait(self, waiter: Waiter, woken: bool, start: float) -> None:
        if not woken:
            with self._lock:
                gave_up = self._core.cancel(waiter)
            if gave_up:
                raise self._reject("queue_timeout", max(0.0, self._clock() - start))
            # the slot was handed over in the very instant the wait timed out: take it
        self._admitted(max(0.0, self._clock() - start))

    def _abandon(self, waiter: Waiter) -> None:
        """A queued caller is leaving (cancelled, interrupted): drop its ticket, or pass on
        the slot it was handed in the meantime."""
        with self._lock:
            was_queued = self._core.cancel(waiter)
        if not was_queued:
            self._release_slot()

    def _admitted(self, waited: float) -> None:
        tel = self._tel
        try:
            if tel.wants_detail():
                tel.emit(BulkheadAdmitted(policy=self.kind, name=self.name, waited=waited))
        except BaseException:
            self._release_slot()
            raise

    def _reject(self, reason: str, waited: float | None) -> BaseException:
        tel = self._tel
        if not tel.quiet or tel.gen != STATE.generation:
            # ``tel.current()`` inlined: a full bulkhead refuses on every call
            if tel.gen != STATE.generation or tel.otel._TRACER_PROVIDER is not tel.otel_global:
                tel.refresh()
            if tel.detail:
                tel.emit(BulkheadRejected(policy=self.kind, name=self.name, reason=reason))
            tel.rejected(reason)
        core = self._core
        return _bulkhead_full(
            id(self), self.name, core.max_concurrent, core.max_queued, reason, waited
        )

    # -- release -------------------------------------------------------------------------------
    def _exit(self, permit: Any, error: BaseException | None, result: Any) -> None:
        self._release_slot()

    def _exit_ok(self, permit: Any, result: Any) -> None:
        self._release_slot()

    def _release_slot(self) -> None:
        """Free one slot, or hand it to the longest waiter and wake it (outside the lock)."""
        core = self._core
        if self._counter_only:
            core.running -= 1  # no queue, so no waiter to hand the slot to
            return
        lock = self._lock
        while True:
            lock.acquire()
            try:
                waiter = core.release()
            finally:
                lock.release()
            if waiter is None or waiter.wake():
                return
            # that waiter's event loop is gone; it can never use the slot: pass it on


def in_flight_reader(policy: SlotPolicy) -> Callable[[], float]:
    """Read ``in_flight`` at scrape time through a weak reference: the gauge costs nothing
    per call and does not keep a discarded bulkhead alive."""
    ref = weakref.ref(policy)

    def read() -> float:
        live = ref()
        return 0.0 if live is None else float(live.in_flight)

    return read
