"""Fixtures of the HTTP tests: one scripted server per module, isolated metrics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

import resilient as rs
from resilient.telemetry import reset_telemetry

pytest.importorskip("httpx", reason="needs the httpx extra: pip install -e '.[dev]'")
pytest.importorskip("uvicorn", reason="needs uvicorn: pip install -e '.[dev]'")

from http_servers import ScriptedApp, UvicornThread


@pytest.fixture(autouse=True)
def _isolated_metrics() -> Iterator[None]:
    rs.configure_telemetry(registry=CollectorRegistry(), metrics=True, tracing=False)
    yield
    reset_telemetry()


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[ScriptedApp, str]]:
    """A scripted app under uvicorn, shared by a module's tests (each uses its own key)."""
    app = ScriptedApp()
    with UvicornThread(app) as server:
        yield app, server.url


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex
