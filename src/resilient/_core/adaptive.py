"""The adaptive bulkhead's pure parts: a concurrency limit that follows measured latency, and
the bulkhead state machine whose limit it moves.

No locks, no clock of its own, no I/O: the front end (:class:`resilient.AdaptiveBulkhead`)
calls these under one short lock with the time ``now``. A hypothesis state machine
(``tests/test_adaptive_bulkhead_model.py``) checks them against a reference implementation.

The algorithms are those of Netflix's concurrency-limits library
(https://github.com/Netflix/concurrency-limits, ``AIMDLimit``, ``Gradient2Limit``,
``WindowedLimit``); ``docs/policies/adaptive_bulkhead.md`` gives the formulas and where ours
differ. In short:

* Every call that completes is a **sample**: its latency (``rtt``), how many calls were in
  flight when it started, and whether it was *dropped* (it timed out: a sign of overload).
  Calls that were cancelled, rejected, or failed with another policy's rejection are no
  samples at all, so they never move the limit.
* Samples are gathered in a **window** (``WindowedLimit``): at least ``WINDOW_SAMPLES``
  samples spanning at least the shortest latency seen in it, so each decision sees a full
  round of calls at the current limit. The window's average latency, the most calls in flight
  and whether any was dropped feed the algorithm once per window.
* **gradient2** (``Gradient2Limit``): ``gradient = clamp(long_rtt / rtt, 0.5, 1)``,
  ``limit = limit * (1 - smoothing) + (limit * gradient + queue_size) * smoothing``, where
  ``long_rtt`` is an exponential average over ``LONG_WINDOW`` windows (a plain average over the
  first ``WARMUP`` ones), pulled down by 10% whenever it exceeds twice the current latency; the
  limit is left alone while fewer than half of it is in use (the application, not the
  dependency, is the bottleneck).
* **aimd** (``AIMDLimit``): a window with a drop, or whose latency exceeds ``AIMD_TOLERANCE``
  times the long-term average, multiplies the limit by ``BACKOFF`` (0.9); otherwise, while at
  least half the limit is in use, the limit grows by one.

Both keep the limit within ``min_limit .. max_limit``. ``limit`` (an int) is what the
bulkhead enforces; ``estimate`` keeps gradient2's fractional value between windows.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import TypeVar

from .bulkhead import BulkheadCore

__all__ = [
    "AIMD_TOLERANCE",
    "ALGORITHMS",
    "BACKOFF",
    "LONG_WINDOW",
    "QUEUE_SIZE",
    "SMOOTHING",
    "WARMUP",
    "WINDOW_SAMPLES",
    "AdaptiveBulkheadCore",
    "AdaptiveLimit",
    "ExpAverage",
]

W = TypeVar("W", bound=Hashable)

ALGORITHMS = ("gradient2", "aimd")
WINDOW_SAMPLES = 10  # WindowedLimit's windowSize: samples a window needs before it decides
LONG_WINDOW = 600  # Gradient2Limit's longWindow (in windows here)
WARMUP = 10  # ExpAvgMeasurement's warm-up: a plain average over the first samples
SMOOTHING = 0.2  # Gradient2Limit's smoothing
QUEUE_SIZE = 4.0  # Gradient2Limit's default queueSize: growth allowed while latency is flat
BACKOFF = 0.9  # AIMDLimit's backoffRatio
AIMD_TOLERANCE = 1.25  # latency over this many times the long-term average counts as a drop


class ExpAverage:
    """An exponential moving average over about ``window`` values, a plain average over the
    first ``warmup`` (Netflix's ``ExpAvgMeasurement``)."""

    __slots__ = ("_count", "_factor", "_sum", "_warmup", "value")

    def __init__(self, window: int = LONG_WINDOW, warmup: int = WARMUP) -> None:
        self._factor = 2.0 / (window + 1)
        self._warmup = warmup
        self._count = 0
        self._sum = 0.0
        self.value = 0.0

    def add(self, sample: float) -> float:
        if self._count < self._warmup:
            self._count += 1
            self._sum += sample
            self.value = self._sum / self._count
        else:
            self.value = self.value * (1.0 - self._factor) + sample * self._factor
        return self.value


class AdaptiveLimit:
    """A concurrency limit moved by latency samples (see the module docstring)."""

    __slots__ = (
        "_long",
        "_w_count",
        "_w_dropped",
        "_w_inflight",
        "_w_min",
        "_w_start",
        "_w_sum",
        "algorithm",
        "estimate",
        "last_rtt",
        "limit",
        "max_limit",
        "min_limit",
        "windows",
    )

    def __init__(self, algorithm: str, initial: int, min_limit: int, max_limit: int) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        if not 1 <= min_limit <= initial <= max_limit:
            raise ValueError(
                f"need 1 <= min_limit <= initial <= max_limit, got {min_limit}, {initial}, "
                f"{max_limit}"
            )
        self.algorithm = algorithm
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.estimate = float(initial)
        self.limit = initial
        self._long = ExpAverage()
        self.last_rtt = 0.0
        """The average latency of the last window closed."""
        self.windows = 0
        """Windows closed so far (how many decisions were taken)."""
        self._open_window(None)

    def _open_window(self, now: float | None) -> None:
        self._w_start = now
        self._w_count = 0
        self._w_sum = 0.0
        self._w_min = math.inf
        self._w_inflight = 0
        self._w_dropped = False

    @property
    def long_rtt(self) -> float:
        """The long-term average latency (0 before the first window closed)."""
        return self._long.value

    def sample(self, now: float, rtt: float, inflight: int, dropped: bool) -> bool:
        """Add one completed call; ``True`` when that closed a window and changed ``limit``."""
        if self._w_start is None:
            self._w_start = now - rtt  # the first window starts with its first call
        self._w_count += 1
        self._w_sum += rtt
        if rtt < self._w_min:
            self._w_min = rtt
        if inflight > self._w_inflight:
            self._w_inflight = inflight
        if dropped:
            self._w_dropped = True
        if self._w_count < WINDOW_SAMPLES or now - self._w_start < self._w_min:
            return False
        rtt_avg = self._w_sum / self._w_count
        self.last_rtt = rtt_avg
        before = self.limit
        self._decide(rtt_avg, self._w_inflight, self._w_dropped)
        self.windows += 1
        self._open_window(now)
        return self.limit != before

    def _decide(self, rtt: float, inflight: int, dropped: bool) -> None:
        long_rtt = self._long.add(rtt)
        if rtt > 0.0 and long_rtt / rtt > 2.0:
            # latency is back to normal after a long overload: forget it faster
            self._long.value = long_rtt = long_rtt * 0.9
        if self.algorithm == "gradient2":
            if inflight < self.estimate / 2:
                return  # the application, not the dependency, limits the concurrency
            gradient = 1.0 if rtt <= 0.0 else max(0.5, min(1.0, long_rtt / rtt))
            target = self.estimate * gradient + QUEUE_SIZE
            estimate = self.estimate * (1.0 - SMOOTHING) + target * SMOOTHING
        else:
            limit = self.limit
            if dropped or rtt > AIMD_TOLERANCE * long_rtt:
                estimate = float(int(limit * BACKOFF))
            elif inflight * 2 >= limit:
                estimate = float(limit + 1)
            else:
                return
        self.estimate = max(float(self.min_limit), min(float(self.max_limit), estimate))
        self.limit = int(self.estimate)


class AdaptiveBulkheadCore(BulkheadCore[W]):
    """A bulkhead whose ``max_concurrent`` follows an :class:`AdaptiveLimit`.

    When the limit drops below the calls running, nothing is interrupted: a finishing call
    then frees its slot instead of handing it to a waiter, until the running calls fit the
    limit again. When the limit grows, waiters are admitted at once (:meth:`finish` returns
    them)."""

    __slots__ = ("adaptive",)

    def __init__(self, adaptive: AdaptiveLimit, max_queued: int) -> None:
        super().__init__(adaptive.limit, max_queued)
        self.adaptive = adaptive

    def release(self) -> W | None:
        """A running caller finished (no sample): the waiter its slot goes to, or ``None``."""
        if self.running <= 0:
            raise RuntimeError("bulkhead slot released more often than acquired")
        if self._waiting and self.running <= self.max_concurrent:
            waiter, _ = self._waiting.popitem(last=False)
            return waiter
        self.running -= 1
        return None

    def finish(self, now: float, rtt: float, inflight: int, dropped: bool) -> W | None:
        """A running caller finished with a sample: account it (the limit may move), then
        release its slot. Returns the waiter the slot went to; waiters admitted because the
        limit grew are collected by :meth:`admit_waiting`."""
        if self.adaptive.sample(now, rtt, inflight, dropped):
            self.max_concurrent = self.adaptive.limit
        return self.release()

    def admit_waiting(self) -> list[W]:
        """Give free slots (after the limit grew) to the longest waiters."""
        admitted: list[W] = []
        while self._waiting and self.running < self.max_concurrent:
            waiter, _ = self._waiting.popitem(last=False)
            self.running += 1
            admitted.append(waiter)
        return admitted
