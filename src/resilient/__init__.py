"""resilient: composable sync and async resilience policies.

Circuit breaker, bulkhead, retry, timeout, fallback and saga orchestration, usable as
decorators and context managers on ``def`` and ``async def`` (asyncio and trio), composable
with :func:`pipeline`, observable through Prometheus metrics, OpenTelemetry spans and typed
events, and configurable from environment variables.
"""

from __future__ import annotations

from ._deadline import remaining
from ._policy import Policy
from .errors import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigError,
    IdempotencyConflict,
    PolicyRejectedError,
    Rejected,
    ResilienceError,
    RetryExhaustedError,
    SagaFailed,
    SagaStuck,
    TimeoutExceeded,
)
from .pipeline import Pipeline, pipeline
from .telemetry import add_listener, configure_telemetry, remove_listener

# -- policies (one import line per module; keep this block sorted) --
# -- end policies --

__version__ = "0.1.0"

__all__ = [
    # -- policy names (keep sorted) --
    # -- end policy names --
    "BulkheadFullError",
    "CircuitOpenError",
    "ConfigError",
    "IdempotencyConflict",
    "Pipeline",
    "Policy",
    "PolicyRejectedError",
    "Rejected",
    "ResilienceError",
    "RetryExhaustedError",
    "SagaFailed",
    "SagaStuck",
    "TimeoutExceeded",
    "add_listener",
    "configure_telemetry",
    "pipeline",
    "remaining",
    "remove_listener",
]
