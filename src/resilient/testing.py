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

__all__ = ["FakeClock", "FakeTimer", "force_open", "instant_retries", "reset_breaker"]


class FakeTimer:
    """A callback scheduled with :meth:`FakeClock.call_at`; :meth:`cancel` stops it."""

    __slots__ = ("callback", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        """Make sure the callback never runs (no effect once it ran)."""
        self.callback = None

    @property
    def cancelled(self) -> bool:
        """True once cancelled or fired."""
        return self.callback is None


class FakeClock:
    """A monotonic clock that only moves when told to. Thread-safe.

    Call it to read the time (it is a ``Callable[[], float]`` like ``time.monotonic``);
    :meth:`sleep` advances it, so it doubles as an injected ``sleep`` for ``Retry``.

    It also keeps timers (:meth:`call_at`): a policy given this clock, such as ``Hedge``,
    waits for its deadlines on it, so a test moves time with :meth:`advance` and the policy
    acts exactly then — no real waiting, no race with the machine's speed.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._sequence = itertools.count()

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
        self._fire_due()
        return now

    def sleep(self, seconds: float) -> None:
        """Record a sleep of ``seconds`` and advance the clock by it, without waiting."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)
        self._fire_due()

    def call_at(self, when: float, callback: Callable[[], object]) -> FakeTimer:
        """Run ``callback()`` once the clock reads ``when`` or later: in the thread that
        advances it there, or at once (in this thread) if that time has already come.
        Callbacks run in time order, outside the clock's lock."""
        timer = FakeTimer(float(when), callback)
        with self._lock:
            heapq.heappush(self._timers, (timer.when, next(self._sequence), timer))
        self._fire_due()
        return timer

    @property
    def pending(self) -> int:
        """How many timers are waiting for a later time (cancelled ones excluded)."""
        with self._lock:
            return sum(1 for _, _, t in self._timers if not t.cancelled)

    def _fire_due(self) -> None:
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > self._now:
                    return
                timer = heapq.heappop(self._timers)[2]
                callback, timer.callback = timer.callback, None
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
