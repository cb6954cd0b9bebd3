"""Fixtures of the saga tests: a fake clock, a ledger file, a fresh metrics registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from resilient.saga.testing import Ledger
from resilient.telemetry import configure_telemetry, reset_telemetry
from resilient.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.db")


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    configure_telemetry(registry=reg)
    yield reg
    reset_telemetry()
