"""Sliding windows of call outcomes for the circuit breaker.

A breaker decides on *rates* over recent calls, so it needs the number of calls, failed calls
and slow calls in the window after every recorded outcome. Both windows keep those three
totals up to date incrementally: recording is O(1) (amortised O(1) for the time window) and
reading the totals is three attribute reads, never a scan.

- :class:`CountWindow` holds the last ``size`` outcomes in a ring (a deque).
- :class:`TimeWindow` holds one aggregate per second for the last ``size`` seconds, so its
  memory is bounded by the window length in seconds, not by the call rate.

An outcome is a small bit set: :data:`FAILED` and/or :data:`SLOW` (0 is a fast success).
Windows are not thread-safe; the breaker core that owns one is guarded by its front end.
"""

from __future__ import annotations

import math
from collections import deque
from typing import ClassVar, Protocol

__all__ = ["FAILED", "SLOW", "CountWindow", "TimeWindow", "Window"]

FAILED = 1
"""Outcome bit: the call failed."""
SLOW = 2
"""Outcome bit: the call took longer than the breaker's ``slow_call_duration``."""
_EMPTY = 4  # a ring slot that holds no outcome yet


class Window(Protocol):
    """What the breaker core needs from a window: running totals, ``add`` and ``clear``."""

    calls: int
    failures: int
    slow_calls: int
    successes_lower_rates: ClassVar[bool]
    """True when recording a fast success can never raise a rate (except by reaching
    ``minimum_calls``): the core then skips the threshold check for it."""

    def add(self, code: int, now: float) -> None:
        """Record one outcome (``FAILED``/``SLOW`` bits) that finished at ``now``."""

    def refresh(self, now: float) -> None:
        """Drop what has left the window by ``now`` (a no-op for count windows)."""

    def clear(self) -> None:
        """Forget every outcome (the breaker starts a new epoch)."""


class CountWindow:
    """The last ``size`` outcomes, in a ring with running totals.

    The ring is a deque whose first slot is the oldest outcome, the one the next call
    replaces: recording writes slot 0 and rotates it to the end. Totals only change when the
    evicted outcome differs from the new one, so a steady stream of successes costs a read, a
    compare and a rotation per call; :meth:`pass_success` does that without the breaker's
    lock (see there).
    """

    __slots__ = ("calls", "failures", "size", "slots", "slow_calls")
    successes_lower_rates: ClassVar[bool] = True

    def __init__(self, size: int) -> None:
        self.size = size
        self.slots: deque[int] = deque((_EMPTY,) * size)
        self.calls = 0
        self.failures = 0
        self.slow_calls = 0

    def add(self, code: int, now: float) -> None:
        """Record one outcome, evicting the oldest once the ring is full (O(1))."""
        slots = self.slots
        old = slots[0]
        if old != code:  # the common case (a success replacing a success) changes no total
            slots[0] = code
            if old == _EMPTY:
                self.calls += 1
            else:
                self.failures -= old & FAILED
                self.slow_calls -= old >> 1
            self.failures += code & FAILED
            self.slow_calls += code >> 1
        slots.rotate(-1)

    def pass_success(self) -> bool:
        """Record a fast success if the outcome it evicts is a fast success too; ``False``
        (nothing recorded) otherwise. Safe without the owner's lock: it never writes a slot
        or a total, only rotates the ring, and a deque's read and rotation are atomic. A
        racing writer can at worst make one outcome stay a rotation longer (the ring moves
        on past it) or let this success replace the outcome after the one it read: totals
        always equal the slots' contents."""
        slots = self.slots
        if slots[0]:  # an empty slot, a failure or a slow call: the totals would change
            return False
        slots.rotate(-1)
        return True

    def refresh(self, now: float) -> None:
        """Nothing expires by time in a count window."""

    def clear(self) -> None:
        """Forget every outcome (a new ring: a success racing with this rotates the old one)."""
        self.slots = deque((_EMPTY,) * self.size)
        self.calls = self.failures = self.slow_calls = 0


class TimeWindow:
    """Outcomes of the last ``size`` seconds, aggregated in one bucket per second.

    Bucket ``s % size`` holds the calls that finished during second ``s`` (``floor(now)``).
    The window covers the current second and the ``size - 1`` before it. Moving to a new
    second empties the buckets in between (at most ``size`` of them, so a long idle gap costs
    one ``O(size)`` sweep, amortised over the seconds that passed). A clock that steps
    backwards (it should not: use a monotonic clock) is treated as standing still.
    """

    __slots__ = ("_fail", "_head", "_slow", "_total", "calls", "failures", "size", "slow_calls")
    successes_lower_rates: ClassVar[bool] = False  # expiring old successes raises the rates

    def __init__(self, size: int) -> None:
        self.size = size
        self._total = [0] * size
        self._fail = [0] * size
        self._slow = [0] * size
        self._head: int | None = None  # the newest second the buckets describe
        self.calls = 0
        self.failures = 0
        self.slow_calls = 0

    def _advance(self, now: float) -> int:
        sec = math.floor(now)
        head = self._head
        if head is None:
            self._head = sec
            return sec
        if sec <= head:
            return head
        size = self.size
        if sec - head >= size:
            self._reset_buckets()
        else:
            total, fail, slow = self._total, self._fail, self._slow
            for s in range(head + 1, sec + 1):
                i = s % size
                self.calls -= total[i]
                self.failures -= fail[i]
                self.slow_calls -= slow[i]
                total[i] = fail[i] = slow[i] = 0
        self._head = sec
        return sec

    def _reset_buckets(self) -> None:
        size = self.size
        self._total = [0] * size
        self._fail = [0] * size
        self._slow = [0] * size
        self.calls = self.failures = self.slow_calls = 0

    def add(self, code: int, now: float) -> None:
        """Record one outcome in the bucket of ``now``'s second (amortised O(1))."""
        i = self._advance(now) % self.size
        self._total[i] += 1
        self.calls += 1
        if code:
            failed = code & FAILED
            slow = code >> 1
            self._fail[i] += failed
            self._slow[i] += slow
            self.failures += failed
            self.slow_calls += slow

    def refresh(self, now: float) -> None:
        """Expire the seconds that are older than the window at ``now``."""
        self._advance(now)

    def clear(self) -> None:
        """Forget every outcome."""
        self._reset_buckets()
        self._head = None
