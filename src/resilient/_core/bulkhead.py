"""The bulkhead's pure state machine: slots in use and a FIFO of waiters.

No locks, no waiting, no clock, no I/O: the front end (:mod:`resilient.bulkhead`) calls it
under one short ``threading.Lock`` and does the blocking itself. Keeping the decision logic
here lets a hypothesis state machine check every interleaving of arrive / finish / cancel /
time-out without threads.

Waiters are opaque hashable objects supplied by the front end (a thread's or a task's wake-up
handle). The two invariants that make the bulkhead fair and leak-free:

* a freed slot is never released while someone waits: :meth:`BulkheadCore.release` hands it
  *directly* to the longest waiter, so a newcomer can never overtake the queue, and
  ``waiting`` is non-empty only while every slot is taken;
* a waiter that gives up (cancelled, timed out) asks :meth:`BulkheadCore.cancel`; if the slot
  was already handed to it, ``cancel`` says so and the waiter must release that slot itself.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["ADMITTED", "FULL", "BulkheadCore"]

W = TypeVar("W", bound=Hashable)

ADMITTED = -1
"""Returned by :meth:`BulkheadCore.arrive`: the caller got a slot at once."""
FULL = -2
"""Returned by :meth:`BulkheadCore.arrive`: no slot and no room in the queue."""


class BulkheadCore(Generic[W]):
    """Counts running callers (at most ``max_concurrent``) and queues at most ``max_queued``
    waiters in arrival order."""

    __slots__ = ("_waiting", "max_concurrent", "max_queued", "running")

    def __init__(self, max_concurrent: int, max_queued: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.running = 0
        # Insertion-ordered: FIFO pop from the front and O(1) removal of a cancelled waiter.
        self._waiting: OrderedDict[W, None] = OrderedDict()

    @property
    def queued(self) -> int:
        """How many waiters are in the queue."""
        return len(self._waiting)

    def try_admit(self) -> bool:
        """Take a slot if one is free and nobody is waiting for it (fast path, no waiter
        object needed)."""
        if self.running < self.max_concurrent and not self._waiting:
            self.running += 1
            return True
        return False

    def arrive(self, waiter: W) -> int:
        """A caller arrives: :data:`ADMITTED` (slot taken), :data:`FULL` (turned away), or its
        1-based position in the queue (then it must wait until :meth:`release` returns it)."""
        if self.try_admit():
            return ADMITTED
        if len(self._waiting) >= self.max_queued:
            return FULL
        if waiter in self._waiting:
            raise ValueError(f"waiter {waiter!r} is already queued")
        self._waiting[waiter] = None
        return len(self._waiting)

    def release(self) -> W | None:
        """A running caller finished. Returns the waiter its slot was handed to (the caller
        must wake it), or ``None`` when the slot became free."""
        if self.running <= 0:
            raise RuntimeError("bulkhead slot released more often than acquired")
        if self._waiting:
            waiter, _ = self._waiting.popitem(last=False)
            return waiter  # the slot changes hands: running stays the same
        self.running -= 1
        return None

    def cancel(self, waiter: W) -> bool:
        """A waiter gives up. ``True``: it was still queued and is now gone. ``False``: a slot
        was already handed to it; it owns that slot and must :meth:`release` it (or use it)."""
        try:
            del self._waiting[waiter]
        except KeyError:
            return False
        return True
