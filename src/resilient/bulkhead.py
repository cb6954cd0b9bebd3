"""Bulkhead: bound how many calls run at once, with a bounded, fair wait queue.

One :class:`Bulkhead` instance can be shared by threads, asyncio tasks and trio tasks at the
same time: they all draw from the same slots and wait in the same FIFO queue, so a slot freed
by a thread may go to an asyncio task that has waited longer, and vice versa.

How waiting works: the state lives in :class:`~resilient._core.bulkhead.BulkheadCore`, updated
under one short ``threading.Lock`` that is never held while anyone waits or user code runs; a
caller that must wait queues a wake-up handle from :mod:`resilient._waiters` (a lock for a
thread, an event woken through its own loop for a task) and the releaser hands its slot
straight to the longest waiter. No polling, and no thread is ever blocked on behalf of a task.
If a waiter's loop has already been closed, the slot is passed on to the next waiter.

Giving up (cancel scope, ``asyncio`` cancellation, ``KeyboardInterrupt``, queue timeout) takes
the waiter out of the queue; if the slot was handed to it in the same instant, the waiter
passes that slot on before the exception propagates. So every admitted caller releases
exactly once and no slot is ever lost.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from . import _hot_paths
from . import _validate as v
from ._core.bulkhead import ADMITTED, FULL, BulkheadCore
from ._policy import AroundPolicy
from ._waiters import Waiter
from .errors import _bulkhead_full
from .telemetry._events import BulkheadAdmitted, BulkheadQueued, BulkheadRejected
from .telemetry._hub import STATE, Listener
from .telemetry._stats import UNLOCKED

__all__ = ["Bulkhead"]


_MAX_CONCURRENT = v.count("max_concurrent")
_MAX_QUEUED = v.count("max_queued", minimum=0)
_QUEUE_TIMEOUT = v.duration("queue_timeout", optional=True)
_CLOCK = v.clock()
_OPTIONS = v.Options(_MAX_CONCURRENT, _MAX_QUEUED, _QUEUE_TIMEOUT, v.ON_EVENT, _CLOCK)


class Bulkhead(AroundPolicy):
    """Run at most ``max_concurrent`` calls at once; let up to ``max_queued`` more wait.

    Why: one slow dependency must not take every thread, connection or task of the process
    with it. The bulkhead caps the work in flight towards it and turns the excess away fast
    (:class:`~resilient.BulkheadFullError`) instead of letting it pile up.

    * ``max_concurrent`` (int >= 1): slots. A call holds one from admission until it returns,
      raises or is cancelled.
    * ``max_queued`` (int >= 0, default 0: no queue): callers that may wait for a slot. They
      are admitted strictly first come, first served, whether they are threads or tasks.
    * ``queue_timeout`` (seconds >= 0, ``None``: wait as long as it takes): how long one
      caller may wait in the queue. A thread also never waits past an enclosing
      ``rs.Timeout`` deadline (``rs.remaining()``); a task's wait is cancelled by its cancel
      scope anyway.
    * ``clock``: measures how long a caller waited (``BulkheadAdmitted.waited`` and
      ``BulkheadFullError.waited``). The waiting itself uses real time.

    Raises :class:`~resilient.BulkheadFullError` with ``reason="full"`` when every slot is
    taken and the queue is full, ``reason="queue_timeout"`` when the wait timed out; the
    protected function is not called in either case. ``in_flight`` and ``queued`` read the
    current counts. Use it as ``@bulkhead``, ``with bulkhead:`` or ``async with bulkhead:``.
    """

    kind = "bulkhead"
    options = _OPTIONS
    _stateful = True

    def __init__(
        self,
        name: str | None = None,
        *,
        max_concurrent: int,
        max_queued: int = 0,
        queue_timeout: float | None = None,
        on_event: Listener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        max_concurrent = _MAX_CONCURRENT(max_concurrent)
        max_queued = _MAX_QUEUED(max_queued)
        self._queue_timeout = _QUEUE_TIMEOUT(queue_timeout)
        self._clock = _CLOCK(clock)
        super().__init__(name, on_event=on_event)
        self._lock = threading.Lock()
        self._core: BulkheadCore[Waiter] = BulkheadCore(max_concurrent, max_queued)
        # Without a queue the bulkhead is a counter: taking a slot is "if running < max:
        # running += 1" and giving it back "running -= 1", each a sequence the interpreter
        # runs without switching threads under the GIL (no call, no backward jump in it), so
        # no lock is needed and threads never queue on one. With a queue, the lock keeps a
        # waiter from missing a slot freed while it queues. Free-threaded builds always lock.
        self._counter_only = max_queued == 0 and UNLOCKED
        self._tel.gauge_source("resilient_bulkhead_in_flight", _in_flight_reader(self))
        self._settle(
            max_concurrent=max_concurrent,
            max_queued=max_queued,
            queue_timeout=self._queue_timeout,
            on_event=on_event,
            clock=self._clock,
        )

    def __repr__(self) -> str:
        core = self._core
        return (
            f"<Bulkhead {self.name!r} running={core.running}/{core.max_concurrent} "
            f"queued={core.queued}/{core.max_queued} queue_timeout={self._queue_timeout!r}>"
        )

    # -- read-only view ------------------------------------------------------------------------
    @property
    def max_concurrent(self) -> int:
        """How many calls may run at once."""
        return self._core.max_concurrent

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

    # -- admission: the per-call paths ----------------------------------------------------------
    # --- generated from src/resilient/_templates/bulkhead.tmpl by tools/gen_hotpaths.py ---
    _async_wrapper = _hot_paths.bulkhead_async_wrapper
    _sync_wrapper = _hot_paths.bulkhead_sync_wrapper
    _acall = _hot_paths.bulkhead_acall
    _call = _hot_paths.bulkhead_call
    _aenter = _hot_paths.bulkhead_aenter
    _enter = _hot_paths.bulkhead_enter
    _enter_nowait = _hot_paths.bulkhead_enter_nowait
    _wait_in_task = _hot_paths.bulkhead_wait_in_task
    _wait_in_thread = _hot_paths.bulkhead_wait_in_thread
    # --- end of generated code ---

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
            tel.current()
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


def _in_flight_reader(bulkhead: Bulkhead) -> Callable[[], float]:
    """Read ``in_flight`` at scrape time through a weak reference: the gauge costs nothing
    per call and does not keep a discarded bulkhead alive."""
    ref = weakref.ref(bulkhead)

    def read() -> float:
        live = ref()
        return 0.0 if live is None else float(live.in_flight)

    return read
