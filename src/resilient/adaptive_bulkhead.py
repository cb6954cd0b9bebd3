"""AdaptiveBulkhead: a bulkhead whose limit follows the dependency's measured latency.

A fixed ``max_concurrent`` is a guess: too low wastes capacity, too high lets a slow
dependency pile up work. Netflix's concurrency-limits showed that the limit can be found
instead, the way TCP finds a congestion window: raise it while latency stays flat, lower it
when latency climbs. The algorithms (``gradient2``, ``aimd``) live in
:mod:`resilient._core.adaptive`; the slots and the FIFO wait queue shared by threads, asyncio
and trio are the bulkhead's (:mod:`resilient._slots`).

Only calls that completed are samples. A cancelled call, a call this bulkhead rejected, and a
call refused by an inner policy (another :class:`~resilient.PolicyRejectedError`) never move
the limit; a call that timed out (``TimeoutError``, including ``rs.TimeoutExceeded``) counts
as a drop, the overload signal.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _hot_load, _hot_paths
from . import _validate as v
from ._core.adaptive import ALGORITHMS, AdaptiveBulkheadCore, AdaptiveLimit
from ._slots import SlotPolicy, in_flight_reader
from ._waiters import Waiter
from .errors import PolicyRejectedError
from .telemetry._events import AdaptiveLimitChanged
from .telemetry._hub import Listener

__all__ = ["AdaptiveBulkhead"]

_INITIAL = v.count("initial")
_MIN_LIMIT = v.count("min_limit")
_MAX_LIMIT = v.count("max_limit")
_ALGORITHM = v.choice("algorithm", ALGORITHMS)
_MAX_QUEUED = v.count("max_queued", minimum=0)
_QUEUE_TIMEOUT = v.duration("queue_timeout", optional=True)
_CLOCK = v.clock()
_OPTIONS = v.Options(
    _INITIAL,
    _MIN_LIMIT,
    _MAX_LIMIT,
    _ALGORITHM,
    _MAX_QUEUED,
    _QUEUE_TIMEOUT,
    v.ON_EVENT,
    _CLOCK,
)

Permit = tuple[float, int]
"""``(started, in_flight)``: when the call started and how many ran then (itself included)."""


class AdaptiveBulkhead(SlotPolicy):
    """Run at most ``limit`` calls at once, where ``limit`` follows the measured latency
    between ``min_limit`` and ``max_limit``; let up to ``max_queued`` more wait.

    Why: the right concurrency for a dependency changes with its load, its deployment and the
    time of day. This bulkhead raises the limit while latency stays flat and lowers it when
    latency climbs (the dependency is queueing), so it sheds load before the dependency
    collapses and uses its capacity when it has some.

    * ``initial`` (int, default 20): the limit to start from.
    * ``min_limit`` / ``max_limit`` (ints, default 1 / 200): the limit never leaves this range.
    * ``algorithm``: ``"gradient2"`` (default; Netflix's Gradient2Limit: the limit follows the
      ratio of long-term to current latency) or ``"aimd"`` (AIMDLimit: +1 while calls are
      fast, x0.9 on a timeout or a latency spike).
    * ``max_queued`` (int >= 0, default 0) and ``queue_timeout`` (seconds or ``None``): the
      wait queue, as for :class:`resilient.Bulkhead` (first come, first served across threads
      and tasks; a thread never waits past an enclosing ``rs.Timeout`` deadline).
    * ``clock``: measures each call's latency (default ``time.monotonic``).

    ``limit`` reads the current limit, ``in_flight`` and ``queued`` the counts. Raises
    :class:`~resilient.BulkheadFullError` (its ``max_concurrent`` is the limit at that
    moment) when every slot is taken and the queue is full. When the limit drops below the
    calls running, none is interrupted: new calls wait (or are refused) until enough finish.
    Use it as ``@bulkhead``, ``with bulkhead:`` or ``async with bulkhead:``.
    """

    kind = "adaptive_bulkhead"
    options = _OPTIONS

    def __init__(
        self,
        name: str | None = None,
        *,
        initial: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        algorithm: str = "gradient2",
        max_queued: int = 0,
        queue_timeout: float | None = None,
        on_event: Listener | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        initial = _INITIAL(initial)
        min_limit = _MIN_LIMIT(min_limit)
        max_limit = _MAX_LIMIT(max_limit)
        algorithm = _ALGORITHM(algorithm)
        max_queued = _MAX_QUEUED(max_queued)
        queue_timeout = _QUEUE_TIMEOUT(queue_timeout)
        clock = _CLOCK(clock)
        if min_limit > max_limit:
            raise ValueError(
                f"min_limit must be <= max_limit, got min_limit={min_limit!r} and "
                f"max_limit={max_limit!r}"
            )
        if not min_limit <= initial <= max_limit:
            raise ValueError(
                f"initial must be between min_limit and max_limit ({min_limit}..{max_limit}), "
                f"got {initial!r}"
            )
        super().__init__(name, on_event=on_event)
        self._queue_timeout = queue_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._counter_only = False  # the limit moves: admission and release always lock
        self._adaptive = AdaptiveLimit(algorithm, initial, min_limit, max_limit)
        self._core: AdaptiveBulkheadCore[Waiter] = AdaptiveBulkheadCore(self._adaptive, max_queued)
        self._tel.gauge_source("resilient_bulkhead_in_flight", in_flight_reader(self))
        self._tel.gauge_source("resilient_bulkhead_limit", _limit_reader(self))
        self._settle(
            initial=initial,
            min_limit=min_limit,
            max_limit=max_limit,
            algorithm=algorithm,
            max_queued=max_queued,
            queue_timeout=queue_timeout,
            on_event=on_event,
            clock=clock,
        )

    def __repr__(self) -> str:
        core = self._core
        return (
            f"<AdaptiveBulkhead {self.name!r} {self._adaptive.algorithm} "
            f"running={core.running}/{core.max_concurrent} queued={core.queued}/{core.max_queued}>"
        )

    # -- read-only view ------------------------------------------------------------------------
    @property
    def limit(self) -> int:
        """How many calls may run at once right now."""
        return self._core.max_concurrent

    @property
    def min_limit(self) -> int:
        """The lowest the limit goes."""
        return self._adaptive.min_limit

    @property
    def max_limit(self) -> int:
        """The highest the limit goes."""
        return self._adaptive.max_limit

    @property
    def algorithm(self) -> str:
        """``"gradient2"`` or ``"aimd"``."""
        return self._adaptive.algorithm

    # -- admission: the per-call paths ----------------------------------------------------------
    # --- generated from src/resilient/_templates/adaptive.tmpl by tools/gen_hotpaths.py ---
    _async_wrapper = _hot_load.adaptive_bulkhead_async_wrapper
    _sync_wrapper = _hot_load.adaptive_bulkhead_sync_wrapper
    _acall = _hot_load.adaptive_bulkhead_acall
    _call = _hot_load.adaptive_bulkhead_call
    _aenter = _hot_load.adaptive_bulkhead_aenter
    _enter = _hot_load.adaptive_bulkhead_enter
    _enter_nowait = _hot_load.adaptive_bulkhead_enter_nowait
    # --- end of generated code ---

    # Waiting in the queue is the bulkhead's (generated from bulkhead.tmpl): same slots, same
    # FIFO, same giving up; only the core behind them differs.
    _wait_in_task = _hot_paths.bulkhead_wait_in_task
    _wait_in_thread = _hot_paths.bulkhead_wait_in_thread

    # -- release and samples ---------------------------------------------------------------------
    def _exit(self, permit: Any, error: BaseException | None, result: Any) -> None:
        self._finish(permit, error)

    def _exit_ok(self, permit: Any, result: Any) -> None:
        self._finish(permit, None)

    def _finish(self, permit: Permit, error: BaseException | None) -> None:
        """The call that held ``permit`` ended (``error`` ``None``: it returned): record it as
        a sample unless it says nothing about capacity, free (or hand over) its slot, and let
        waiters in if the limit grew."""
        if error is None:
            sample, dropped = True, False
        elif not isinstance(error, Exception) or isinstance(error, PolicyRejectedError):
            sample, dropped = False, False  # cancelled, or refused further in: no sample
        else:
            sample, dropped = True, isinstance(error, TimeoutError)
        now = self._clock()
        started, in_flight = permit
        core = self._core
        lock = self._lock
        lock.acquire()
        try:
            before = core.max_concurrent
            if sample:
                waiter = core.finish(now, now - started, in_flight, dropped)
            else:
                waiter = core.release()
            after = core.max_concurrent
            admitted = core.admit_waiting() if after > before else None
        finally:
            lock.release()
        if waiter is not None and not waiter.wake():
            self._release_slot()  # its event loop is gone: pass the slot on
        if admitted:
            for other in admitted:
                if not other.wake():
                    self._release_slot()
        if after != before:
            self._limit_changed(before, after)

    def _limit_changed(self, before: int, after: int) -> None:
        tel = self._tel
        if tel.wants_events():
            tel.emit(
                AdaptiveLimitChanged(
                    policy=self.kind,
                    name=self.name,
                    from_limit=before,
                    to_limit=after,
                    rtt=self._adaptive.last_rtt,
                )
            )

    # -- health --------------------------------------------------------------------------------
    def _health(self) -> dict[str, Any]:
        core = self._core
        return {
            "in_flight": core.running,
            "queued": core.queued,
            "limit": core.max_concurrent,
            "min_limit": self._adaptive.min_limit,
            "max_limit": self._adaptive.max_limit,
            "max_queued": core.max_queued,
            "algorithm": self._adaptive.algorithm,
        }


if TYPE_CHECKING:
    from . import _hot_protocols

    def _waits_like_a_bulkhead(bulkhead: AdaptiveBulkhead) -> _hot_protocols.BulkheadSelf:
        """For mypy: the adaptive bulkhead provides what the bulkhead's generated waits use
        (they are bound above by hand, outside the generated region)."""
        return bulkhead


def _limit_reader(bulkhead: AdaptiveBulkhead) -> Callable[[], float]:
    """Read ``limit`` at scrape time through a weak reference: no cost per call."""
    ref = weakref.ref(bulkhead)

    def read() -> float:
        live = ref()
        return 0.0 if live is None else float(live.limit)

    return read
