"""Shared test configuration: hypothesis profiles and the async backends.

The ``ci`` profile (the default) is derandomized so a run is reproducible and cannot flake,
with enough examples to matter; ``dev`` explores randomly for local bug hunting
(``HYPOTHESIS_PROFILE=dev``).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# pytester runs the documentation's test-shaped examples in process (tests/docs/)
pytest_plugins = ["pytester"]

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on asyncio and on trio."""
    return str(request.param)
