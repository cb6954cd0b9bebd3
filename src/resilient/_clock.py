"""The clock a policy gets when it is given none, switchable by tests.

Every policy's ``clock=`` option goes through :func:`resilient._validate.clock`, which asks
:func:`default` for the clock when the value is the default (``time.monotonic``, or ``None``
where a signature says so). That happens once, at construction: a policy keeps the clock it was
built with, so the hook costs nothing per call and a policy built outside a test never sees a
fake clock.

``resilient.testing.fake_clock()`` (and the pytest fixture ``resilient_clock``) install a
:class:`~resilient.testing.FakeClock` here. While one is installed, policies built without an
explicit clock use it, and every wait the library starts on its own (``_sleeping``: retry
backoff, saga step retries) advances it instead of sleeping, so a test reads the backoff in
``clock.sleeps`` and ``max_delay`` is measured in the same fake seconds.

A plain module global, not a ``ContextVar``: pytest fixtures run outside the test's task (an
asyncio or trio runner may be older than the fixture), and worker threads must see it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["FakeTime", "default", "fake", "install", "is_default"]


class FakeTime(Protocol):
    """What a fake clock provides: the time, and a sleep that only moves it."""

    def __call__(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


fake: FakeTime | None = None
"""The installed fake clock, or ``None`` (the real world: ``time.monotonic`` and real sleeps)."""


def is_default(value: object) -> bool:
    """True when a ``clock=`` value means "the default clock" rather than a chosen one."""
    return value is None or value is time.monotonic


def default() -> Callable[[], float]:
    """The clock for a policy built now without one: the installed fake, else the real one."""
    current = fake
    return time.monotonic if current is None else current


def install(clock: FakeTime | None) -> FakeTime | None:
    """Make ``clock`` the default (``None``: back to ``time.monotonic``); returns the clock it
    replaces, for the caller to put back."""
    global fake
    previous, fake = fake, clock
    return previous
