"""pytest fixtures for code that uses ``resilient``.

Installed with the package and loaded by pytest through the ``pytest11`` entry point named
``resilient``; a suite that does not want it runs ``pytest -p no:resilient`` (or puts
``-p no:resilient`` in its ``addopts``). Nothing here runs unless a test asks for a fixture:
no autouse fixture, no hook, and no import of the library's internals at load time (pytest
loads this module in every test run of every project that installs ``resilient``), so the
fixtures import what they need when first used.

- ``resilient_clock``: a :class:`~resilient.testing.FakeClock` that policies built during
  the test use when given no ``clock=``, and that library waits advance instead of sleeping
  (:func:`resilient.testing.fake_clock`).
- ``instant_retries``: every retry wait is zero-length
  (:func:`resilient.testing.instant_retries`).
- ``breaker_control``: force named breakers open or closed, reset them
  (:class:`resilient.testing.BreakerControl`).
- ``isolated_registry``: the test's own named policies and telemetry
  (:func:`resilient.testing.isolated_registry`).

Every fixture is a plain (sync) function-scoped fixture over process-wide switches, so it works
the same in sync tests, under pytest-asyncio (strict and auto modes) and under anyio's pytest
plugin (asyncio and trio), and everything it changed is put back when the test ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .._registry import Registry
    from ._helpers import BreakerControl, FakeClock

__all__ = ["breaker_control", "instant_retries", "isolated_registry", "resilient_clock"]


@pytest.fixture
def resilient_clock() -> Iterator[FakeClock]:
    """A fake clock (starting at 0.0) for every policy the test builds without ``clock=``;
    library waits advance it instead of sleeping. Move time with ``advance(seconds)``."""
    from ._helpers import fake_clock

    with fake_clock() as clock:
        yield clock


@pytest.fixture
def instant_retries() -> Iterator[None]:
    """Every wait the library starts (retry backoff) returns at once during the test."""
    from ._helpers import instant_retries as instant

    with instant():
        yield


@pytest.fixture
def breaker_control() -> Iterator[BreakerControl]:
    """``force_open(name)``, ``force_closed(name)``, ``reset(name)`` on the named breakers
    (or breaker instances); every breaker touched is reset when the test ends."""
    from ._helpers import breaker_control as control

    with control() as handle:
        yield handle


@pytest.fixture
def isolated_registry() -> Iterator[Registry]:
    """``rs.registry`` with the test's own named policies and fresh telemetry; policies
    registered during the test are forgotten after it, earlier ones are reset before and
    after it."""
    from ._helpers import isolated_registry as isolated

    with isolated() as registry:
        yield registry
