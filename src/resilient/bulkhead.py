"""Bulkhead: bound how many calls run at once, with a bounded, fair wait queue.

One :class:`Bulkhead` instance can be shared by threads, asyncio tasks and trio tasks at the
same time: they all draw from the same slots and wait in the same FIFO queue, so a slot freed
by a thread may go to an asyncio task that has waited longer, and vice versa.

How waiting works, and why no slot is ever lost, is told in :mod:`resilient._slots`, which
holds the slow paths this shares with :class:`resilient.AdaptiveBulkhead`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from . import _hot_paths
from . import _validate as v
from ._core.bulkhead import BulkheadCore
from ._slots import SlotPolicy, in_flight_reader
from .telemetry._hub import Listener
from .telemetry._stats import UNLOCKED

__all__ = ["Bulkhead"]


_MAX_CONCURRENT = v.count("max_concurrent")
_MAX_QUEUED = v.count("max_queued", minimum=0)
_QUEUE_TIMEOUT = v.duration("queue_timeout", optional=True)
_CLOCK = v.clock()
_OPTIONS = v.Options(_MAX_CONCURRENT, _MAX_QUEUED, _QUEUE_TIMEOUT, v.ON_EVENT, _CLOCK)


class Bulkhead(SlotPolicy):
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
        self._core = BulkheadCore(max_concurrent, max_queued)
        # Without a queue the bulkhead is a counter: taking a slot is "if running < max:
        # running += 1" and giving it back "running -= 1", each a sequence the interpreter
        # runs without switching threads under the GIL (no call, no backward jump in it), so
        # no lock is needed and threads never queue on one. With a queue, the lock keeps a
        # waiter from missing a slot freed while it queues. Free-threaded builds always lock.
        self._counter_only = max_queued == 0 and UNLOCKED
        self._tel.gauge_source("resilient_bulkhead_in_flight", in_flight_reader(self))
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
