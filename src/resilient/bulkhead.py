"""Bulkhead: bound how many calls run at once, with a bounded, fair wait queue.

One :class:`Bulkhead` instance can be shared by threads, asyncio tasks and trio tasks at the
same time: they all draw from the same slots and wait in the same FIFO queue, so a slot freed
by a thread may go to an asyncio task that has waited longer, and vice versa. How the waiting
works, and why no slot is ever lost, is told in :mod:`resilient._slots`, which this shares
with :class:`resilient.AdaptiveBulkhead`.
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
        self._tel.gauge_source("resilient_bulkhead_in_flight", in_flight_reader(self))

    def __repr__(self) -> str:
        core = self._core
        return (
            f"<Bulkhead {self.name!r} running={core.running}/{core.max_concurrent} "
            f"queued={core.queued}/{core.max_queued}>"
        )

    # -- read-only view ------------------------------------------------------------------------
    @property
    def max_concurrent(self) -> int:
        """How many calls may run at once."""
        return self._core.max_concurrent

    # -- admission: the per-call paths ----------------------------------------------------------
    # --- generated from src/resilient/_templates/bulkhead.tmpl by tools/gen_hotpaths.py ---
    _acall = _hot_paths.bulkhead_acall
    _call = _hot_paths.bulkhead_call
    _aenter = _hot_paths.bulkhead_aenter
    _enter = _hot_paths.bulkhead_enter
    _enter_nowait = _hot_paths.bulkhead_enter_nowait

    def _hot_self(self) -> _hot_paths.BulkheadSelf:
        """For the type checker: this class provides what its per-call code uses."""
        return self

    # --- end of generated code ---
