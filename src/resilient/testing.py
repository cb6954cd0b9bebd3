"""Helpers for testing code that uses ``resilient``: a fake clock and instant retries.

Every time-dependent policy takes ``clock=``; pass a :class:`FakeClock` and move time with
:meth:`FakeClock.advance` instead of sleeping. :func:`instant_retries` makes every wait the
library starts (retry backoff) return at once, so a user's test of "retries three times" does
not spend seconds in backoff.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from . import _sleeping

if TYPE_CHECKING:
    from ._registry import Registry
    from .breaker import CircuitBreaker

__all__ = ["FakeClock", "force_open", "instant_retries", "reset_breaker"]


class FakeClock:
    """A monotonic clock that only moves when told to. Thread-safe.

    Call it to read the time (it is a ``Callable[[], float]`` like ``time.monotonic``);
    :meth:`sleep` advances it, so it doubles as an injected ``sleep`` for ``Retry``.
    :meth:`call_at` runs a callback when the clock reaches a moment: a policy that waits for a
    moment in time (a rate limiter's queued callers) uses it to wait in simulated time, so
    moving the clock wakes them without any real sleeping.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []
        self._alarms: list[tuple[float, int, list[Callable[[], object] | None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self._now

    def now(self) -> float:
        """The current fake time in seconds."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (must be >= 0) and return the new time."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        with self._lock:
            self._now += seconds
            now = self._now
        self._ring()
        return now

    def sleep(self, seconds: float) -> None:
        """Record a sleep of ``seconds`` and advance the clock by it, without waiting."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)
        self._ring()

    def call_at(self, when: float, callback: Callable[[], object]) -> Callable[[], None]:
        """Run ``callback()`` once the clock reads ``when`` or later: at once (in this thread)
        if it already does, else in the thread whose :meth:`advance` or :meth:`sleep` gets
        there, in order of ``when``. Returns a function that cancels it (a no-op once run)."""
        cell: list[Callable[[], object] | None] = [callback]
        with self._lock:
            due = when <= self._now
            if not due:
                heapq.heappush(self._alarms, (when, next(self._seq), cell))
        if due:
            cell[0] = None
            callback()

        def cancel() -> None:
            cell[0] = None

        return cancel

    def _ring(self) -> None:
        """Run the callbacks that came due, earliest first, outside the lock (a callback may
        read the clock or set new alarms)."""
        while True:
            with self._lock:
                if not self._alarms or self._alarms[0][0] > self._now:
                    return
                _, _, cell = heapq.heappop(self._alarms)
            callback, cell[0] = cell[0], None
            if callback is not None:
                callback()

    async def asleep(self, seconds: float) -> None:
        """Async twin of :meth:`sleep` (no real waiting)."""
        self.sleep(seconds)


@contextmanager
def instant_retries() -> Iterator[None]:
    """Inside this block every retry wait of every policy returns at once (process-wide)."""
    _sleeping.set_instant(True)
    try:
        yield
    finally:
        _sleeping.set_instant(False)


def _named_breaker(name: str, registry: Registry | None) -> CircuitBreaker:
    from ._registry import registry as default_registry
    from .breaker import CircuitBreaker

    reg = default_registry if registry is None else registry
    found = reg.get(name, CircuitBreaker.kind)
    if not isinstance(found, CircuitBreaker):
        known = sorted(p.name for p in reg if isinstance(p, CircuitBreaker))
        raise LookupError(
            f"no breaker named {name!r} in the registry (registered breakers: {known or 'none'}); "
            "create it first, e.g. by importing the code that uses rs.policy/rs.registry.breaker"
        )
    return found


def force_open(name: str, *, registry: Registry | None = None) -> CircuitBreaker:
    """Force the registry's breaker named ``name`` open, so a test can check how the code
    behaves when that dependency is cut off (every call fails fast with CircuitOpenError).
    Undo with :func:`reset_breaker`. Returns the breaker."""
    breaker = _named_breaker(name, registry)
    breaker.force_open()
    return breaker


def reset_breaker(name: str, *, registry: Registry | None = None) -> CircuitBreaker:
    """Reset the registry's breaker named ``name`` to CLOSED with an empty window, so one
    test's failures do not leak into the next. Returns the breaker."""
    breaker = _named_breaker(name, registry)
    breaker.reset()
    return breaker
