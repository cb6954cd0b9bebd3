"""Hedging's pure decisions: when the next attempt starts, and what "p95 of recent latencies" is.

No locks, no clock of its own, no I/O: the front end (:mod:`resilient.hedge`) passes the time
in and does the starting, waiting and cancelling itself. Two pieces:

* :class:`HedgeRace` — one hedged call. It knows how many attempts were started, how many are
  still running and which failed, and answers the front end's three questions: *when* is the
  next attempt due (``delay`` after the last start), *may* it start now (attempts left, and
  enough of the caller's deadline left for it to answer), and *is the call over* (an answer
  won, or every attempt failed and none can follow). A failed attempt makes the next one due
  at once: waiting out the delay after a fast error would only add latency.
* :class:`LatencyWindow` — the latencies of the last ``size`` calls, for ``delay="p95"``.
  Each latency is kept as the index of a logarithmic bucket (a ratio of :data:`GROWTH`
  between bucket edges, from :data:`LOWEST` to :data:`HIGHEST` seconds) in a ring, next to
  a count per bucket. Adding a latency is O(1): one ``log``, one ring write, two count
  updates (the oldest sample leaves the window as the new one enters). A percentile walks
  the counts (a few hundred buckets) and is cached, recomputed only after ``refresh`` new
  samples, so reading it is O(1) and the walk is O(1) amortised per call.

  **Error.** The rank is exact over the window (no sampling); the value is the *upper* edge
  of the bucket that holds that rank, so the reported percentile ``v`` of true value ``x``
  satisfies ``x <= v < x * GROWTH``: at most 10 % high, never low (an estimate that errs
  towards waiting slightly longer, i.e. towards fewer hedges). Latencies under
  :data:`LOWEST` count as :data:`LOWEST`, over :data:`HIGHEST` as :data:`HIGHEST`. The cached
  value lags the window by fewer than ``refresh`` samples. Until ``warmup`` latencies are
  known there is no percentile (``None``): like Finagle's backup requests, no hedge is timed
  from a guess.
"""

from __future__ import annotations

import math

__all__ = ["GROWTH", "HIGHEST", "LOWEST", "HedgeRace", "LatencyWindow", "parse_percentile"]

LOWEST = 1e-5
"""Smallest latency told apart (10 us); anything faster counts as this."""
HIGHEST = 1e4
"""Largest latency told apart (about 2.8 hours); anything slower counts as this."""
GROWTH = 1.1
"""Ratio between consecutive bucket edges: the estimate's worst relative error."""

_LOG_GROWTH = math.log(GROWTH)
_INV_LOG_GROWTH = 1.0 / _LOG_GROWTH
_INV_LOWEST = 1.0 / LOWEST
_log = math.log
_ceil = math.ceil
_BUCKETS = math.ceil(math.log(HIGHEST / LOWEST) / _LOG_GROWTH) + 1
_EDGES = tuple(min(HIGHEST, LOWEST * GROWTH**i) for i in range(_BUCKETS))
"""``_EDGES[i]`` is the upper edge of bucket ``i`` (bucket 0 holds everything <= LOWEST)."""


def parse_percentile(text: str) -> float | None:
    """``"p95"`` -> ``95.0``, ``"p99.9"`` -> ``99.9``; ``None`` unless ``text`` is ``p`` (or
    ``P``) followed by a number strictly between 0 and 100."""
    if len(text) < 2 or text[0] not in "pP":
        return None
    digits = text[1:]
    if not digits.replace(".", "", 1).isdigit():
        return None
    value = float(digits)
    if not 0.0 < value < 100.0:
        return None
    return value


def bucket_of(seconds: float) -> int:
    """The bucket index of a latency: the smallest ``i`` with ``seconds <= _EDGES[i]``."""
    if seconds <= LOWEST:
        return 0
    if seconds >= HIGHEST:
        return _BUCKETS - 1
    index = _ceil(_log(seconds * _INV_LOWEST) * _INV_LOG_GROWTH)
    # float rounding may put a value that sits on an edge one bucket off: settle it exactly
    if index > 0 and seconds <= _EDGES[index - 1]:
        index -= 1
    elif seconds > _EDGES[index]:
        index += 1
    return min(index, _BUCKETS - 1)


def upper_edge(index: int) -> float:
    """The largest latency bucket ``index`` holds (what a percentile reports)."""
    return _EDGES[index]


class LatencyWindow:
    """The last ``size`` latencies as bucket counts; percentiles exact in rank, at most
    ``GROWTH`` high in value (see the module docstring)."""

    __slots__ = ("_cached", "_counts", "_filled", "_pos", "_ring", "_since", "refresh", "size")

    def __init__(self, size: int = 1000, refresh: int = 16) -> None:
        if size < 1 or refresh < 1:
            raise ValueError(f"size and refresh must be >= 1, got {size!r} and {refresh!r}")
        self.size = size
        self.refresh = refresh
        self._ring = [0] * size  # bucket index of each sample in the window
        self._counts = [0] * _BUCKETS
        self._pos = 0
        self._filled = 0
        self._since = 0  # samples added since the cache was filled
        self._cached: dict[float, float | None] = {}

    def __len__(self) -> int:
        """How many latencies the window holds (at most ``size``)."""
        return self._filled

    def add(self, seconds: float) -> None:
        """Count one latency; the oldest leaves once the window is full. O(1): one ``log``
        and a few list updates (``bucket_of`` written out, since this
        runs on every call of a hedge)."""
        if seconds <= LOWEST:
            index = 0
        elif seconds >= HIGHEST:
            index = _BUCKETS - 1
        else:
            index = _ceil(_log(seconds * _INV_LOWEST) * _INV_LOG_GROWTH)
            if index > 0 and seconds <= _EDGES[index - 1]:  # float rounding on an edge
                index -= 1
            elif seconds > _EDGES[index]:
                index += 1
        pos = self._pos
        ring = self._ring
        counts = self._counts
        if self._filled == self.size:
            counts[ring[pos]] -= 1
        else:
            self._filled += 1
        ring[pos] = index
        counts[index] += 1
        pos += 1
        self._pos = 0 if pos == self.size else pos
        since = self._since + 1
        if since >= self.refresh:
            since = 0
            self._cached.clear()
        self._since = since

    def percentile(self, q: float, warmup: int = 20) -> float | None:
        """The ``q``-th percentile (``0 < q < 100``) of the window, or ``None`` while it
        holds fewer than ``warmup`` latencies. Cached: the walk over the buckets runs once
        per ``refresh`` added latencies."""
        if self._filled < warmup:
            return None
        cached = self._cached.get(q, _MISSING)
        if cached is not _MISSING:
            return cached
        value = self.exact_bucket_percentile(q)
        self._cached[q] = value
        return value

    def exact_bucket_percentile(self, q: float) -> float | None:
        """The percentile from the current counts, ignoring the cache (``None`` if empty):
        the upper edge of the bucket holding the sample of rank ``ceil(q/100 * n)``."""
        n = self._filled
        if n == 0:
            return None
        rank = max(1, math.ceil(q / 100.0 * n))
        seen = 0
        for index, count in enumerate(self._counts):
            seen += count
            if seen >= rank:
                return _EDGES[index]
        return _EDGES[-1]  # pragma: no cover - the counts always add up to n


_MISSING: float = math.nan  # never a cached value: percentiles are finite or None


class HedgeRace:
    """One hedged call: attempt 1 starts at once, each next one ``delay`` after the previous
    start (or at once when an attempt fails), at most ``max_attempts`` in all.

    The front end reports every start, answer and failure; the race only counts. Times are
    whatever clock the front end uses (seconds)."""

    __slots__ = (
        "delay",
        "due_now",
        "failed",
        "last_start",
        "max_attempts",
        "running",
        "started",
        "winner",
    )

    def __init__(self, max_attempts: int, delay: float | None, now: float) -> None:
        self.max_attempts = max_attempts
        self.delay = delay
        """Seconds between starts; ``None``: no timed hedge (only failures start the next)."""
        self.started = 1
        self.running = 1
        self.failed = 0
        self.winner = 0
        """The attempt whose answer won (numbered from 1); 0 while undecided."""
        self.last_start = now
        self.due_now = False
        """True after a failure: the next attempt is due at once, whatever the delay."""

    @property
    def over(self) -> bool:
        """True once an answer won, or every attempt failed and no other may start."""
        if self.winner:
            return True
        return self.running == 0 and self.started == self.max_attempts

    def next_due(self) -> float | None:
        """When the next attempt is due by time (``None``: none will be, by time)."""
        if self.winner or self.started >= self.max_attempts:
            return None
        if self.due_now:
            return -math.inf
        if self.delay is None:
            return None
        return self.last_start + self.delay

    def may_start(self, now: float, remaining: float | None, expected: float | None) -> bool:
        """Whether another attempt may start now: attempts are left, no answer won yet, and
        the caller's deadline leaves it time to answer. ``remaining`` is the deadline's
        budget (``None``: no deadline); ``expected`` the typical latency of an attempt
        (``None``: unknown). An attempt that would not answer before the deadline only adds
        load, so it is not started."""
        if self.winner or self.started >= self.max_attempts:
            return False
        if remaining is None:
            return True
        if remaining <= 0.0:
            return False
        return expected is None or expected <= remaining

    def start(self, now: float) -> int:
        """Record a started attempt; returns its number (2, 3, ...)."""
        if self.winner or self.started >= self.max_attempts:
            raise RuntimeError("no attempt may start: the race is decided or full")
        self.started += 1
        self.running += 1
        self.last_start = now
        self.due_now = False
        return self.started

    def answered(self, attempt: int) -> bool:
        """Attempt ``attempt`` answered. True when it wins (the first answer does); a later
        answer only ends that attempt."""
        self.running -= 1
        if self.winner:
            return False
        self.winner = attempt
        return True

    def failed_one(self) -> None:
        """An attempt failed with an error the hedge handles: the next attempt, if any, is
        due at once (``next_due`` is now)."""
        self.running -= 1
        self.failed += 1
        self.due_now = True

    def cancelled_one(self) -> None:
        """An attempt ended by cancellation (it lost, or the call was abandoned)."""
        self.running -= 1
