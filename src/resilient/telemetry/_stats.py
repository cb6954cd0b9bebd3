"""Per-call counts of one policy, kept as plain numbers and exported at scrape time.

``resilient_calls_total`` and ``resilient_call_duration_seconds`` move on every protected
call, so they are the hot path of the default telemetry. prometheus-client's
``Counter.inc`` + ``Histogram.observe`` cost close to a microsecond (a lock per value and
several checks); a lock of our own around a few integer updates still costs more than the
policies themselves. So a successful call, the common case, updates three numbers and takes
no lock at all:

* ``first`` (calls in the first histogram bucket) or one slot of ``later``, and ``total``
  (the sum of durations). On CPython with a global interpreter lock, an augmented assignment
  to a slot or a list item of a plain number completes without a thread switch in between
  (the interpreter only switches threads at calls, function entries and backward jumps, none
  of which the update contains), so no increment is ever lost: ``tests/test_telemetry.py``
  checks exact counts under eight threads. On free-threaded builds the policies never take
  this path (:data:`UNLOCKED` is false) and every call goes through :meth:`CallStats.record`.
* Successes are not counted on their own: every call lands in exactly one bucket, and every
  other outcome (failure, rejected, timeout, fallback, cancelled) is counted by
  :meth:`CallStats.record` under the lock together with its bucket. At scrape time, under the
  same lock, successes = calls in all buckets - other outcomes: exact, and never decreasing
  between scrapes.
* A rejection is the other per-call path peers answer in about a microsecond (an open breaker,
  a full bulkhead, an empty bucket). One in the first bucket (nearly all: a refusal takes
  well under a millisecond) is one lock-free increment of ``quick_rejected``, which counts both
  as a call in the first bucket and as outcome ``rejected`` at scrape time: a single update, so
  a scrape never sees half of it.

This module imports nothing heavy: the exporter (``_prometheus.py``, prometheus-client) is
only loaded when metrics are first needed.
"""

from __future__ import annotations

import sys
import threading
from bisect import bisect_left

from ._catalog import spec

__all__ = ["BOUNDS", "FIRST_BOUND", "UNLOCKED", "CallStats"]

BOUNDS: tuple[float, ...] = spec("resilient_call_duration_seconds").buckets
"""Upper bounds of the duration histogram's buckets (seconds), ``+Inf`` implied."""
FIRST_BOUND = BOUNDS[0]
"""Most protected calls take less than this: they skip the bucket search."""

_is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
UNLOCKED: bool = _is_gil_enabled is None or bool(_is_gil_enabled())
"""True where the lock-free success path is exact (CPython with its GIL)."""


class CallStats:
    """Counts and latency histogram of one policy's executions (see the module docstring)."""

    __slots__ = ("_lock", "first", "later", "others", "quick_rejected", "total")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.first = 0
        """Calls, of any outcome, that took at most :data:`FIRST_BOUND` seconds."""
        self.later = [0] * len(BOUNDS)
        """Calls in each later bucket, the last one ``+Inf``."""
        self.total = 0.0
        """Sum of every call's duration."""
        self.others: dict[str, int] = {}
        """Calls by outcome, every outcome but ``success`` (and but :attr:`quick_rejected`)."""
        self.quick_rejected = 0
        """Rejected calls in the first bucket, counted without the lock (see the module)."""

    def add_later(self, duration: float) -> None:
        """A success slower than :data:`FIRST_BOUND` (the lock-free path: see the module)."""
        self.later[bisect_left(BOUNDS, duration, 1) - 1] += 1

    def record(self, outcome: str, duration: float) -> None:
        """Count one execution with ``outcome`` that took ``duration`` seconds."""
        if UNLOCKED and duration <= FIRST_BOUND and outcome == "rejected":
            self.quick_rejected += 1  # one update: first bucket and outcome at once
            self.total += duration
            return
        lock = self._lock
        lock.acquire()  # not ``with``: on CPython 3.11 that costs twice the lock round trip
        try:
            if duration <= FIRST_BOUND:
                self.first += 1
            else:
                self.later[bisect_left(BOUNDS, duration, 1) - 1] += 1
            self.total += duration
            if outcome != "success":
                others = self.others
                others[outcome] = others.get(outcome, 0) + 1
        finally:
            lock.release()

    def snapshot(self) -> tuple[dict[str, int], list[int], float]:
        """``(calls by outcome, calls per bucket, sum of durations)``, consistent with each
        other for every outcome that is not ``success``; successes are derived."""
        with self._lock:
            others = dict(self.others)
            quick = self.quick_rejected  # read once: the bucket and the outcome agree
            buckets = [self.first + quick, *self.later]
            total = self.total
        if quick:
            others["rejected"] = others.get("rejected", 0) + quick
        successes = sum(buckets) - sum(others.values())
        counts = {"success": successes, **others} if successes else others
        return counts, buckets, total
