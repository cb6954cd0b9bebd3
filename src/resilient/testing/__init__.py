"""Helpers for testing code that uses ``resilient``: a fake clock, instant retries, breaker
control and an isolated registry.

Every time-dependent policy takes ``clock=``; pass a :class:`FakeClock` and move time with
:meth:`FakeClock.advance` instead of sleeping, or let :func:`fake_clock` hand one to every
policy the code under test builds. :func:`instant_retries` makes every wait the library starts
(retry backoff) return at once, so a user's test of "retries three times" does not spend
seconds in backoff. :func:`breaker_control` opens and closes named breakers on demand, and
:func:`isolated_registry` gives a test its own named policies and telemetry.

Each helper is a context manager that puts back what it changed on exit; the pytest plugin
(:mod:`resilient.testing.pytest_plugin`) offers each as a fixture.
"""

from ._helpers import (
    BreakerControl,
    FakeClock,
    FakeTimer,
    breaker_control,
    fake_clock,
    force_open,
    instant_retries,
    isolated_registry,
    reset_breaker,
)

__all__ = [
    "BreakerControl",
    "FakeClock",
    "FakeTimer",
    "breaker_control",
    "fake_clock",
    "force_open",
    "instant_retries",
    "isolated_registry",
    "reset_breaker",
]
