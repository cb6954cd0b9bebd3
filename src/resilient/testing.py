"""Helpers for testing code that uses ``resilient``: a fake clock and instant retries.

Every time-dependent policy takes ``clock=``; pass a :class:`FakeClock` and move time with
:meth:`FakeClock.advance` instead of sleeping. :func:`instant_retries` makes every wait the
library starts (retry backoff) return at once, so a user's test of "retries three times" does
not spend seconds in backoff.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from . import _sleeping

__all__ = ["FakeClock", "instant_retries"]


class FakeClock:
    """A monotonic clock that only moves when told to. Thread-safe.

    Call it to read the time (it is a ``Callable[[], float]`` like ``time.monotonic``);
    :meth:`sleep` advances it, so it doubles as an injected ``sleep`` for ``Retry``.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

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
            return self._now

    def sleep(self, seconds: float) -> None:
        """Record a sleep of ``seconds`` and advance the clock by it, without waiting."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)

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
