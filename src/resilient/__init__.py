"""resilient: composable sync and async resilience policies.

Circuit breaker, bulkhead, retry, timeout, fallback, rate limiter, retry budget, adaptive
bulkhead, hedging, chaos injection (``rs.chaos``) and saga orchestration, usable as
decorators and context managers on ``def`` and ``async def`` (asyncio and trio), composable
with :func:`pipeline`, observable through Prometheus metrics, OpenTelemetry spans and typed
events, and configurable from environment variables.
"""

from __future__ import annotations

from . import chaos
from ._deadline import remaining
from ._policy import Policy
from ._registry import Registry, policy, registry
from .adaptive_bulkhead import AdaptiveBulkhead
from .breaker import BreakerState, CircuitBreaker
from .bulkhead import Bulkhead
from .errors import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigError,
    IdempotencyConflict,
    PolicyRejectedError,
    RateLimitedError,
    Rejected,
    ResilienceError,
    RetryExhaustedError,
    SagaFailed,
    SagaStoreUnavailable,
    SagaStuck,
    TimeoutExceeded,
)
from .fallback import Fallback
from .hedge import Hedge
from .pipeline import Pipeline, pipeline
from .rate_limiter import RateLimiter
from .retry import Retry
from .retry_budget import RetryBudget
from .saga import (
    InMemorySagaStore,
    PostgresSagaStore,
    Saga,
    SagaContext,
    SagaResult,
    SagaStatus,
    SagaStore,
    SQLiteSagaStore,
    StaleEpoch,
    UnknownSagaVersion,
)
from .telemetry import add_listener, configure_telemetry, remove_listener
from .timeout import Timeout
from .waits import wait_exponential, wait_fixed, wait_linear

__version__ = "0.1.0"

__all__ = [
    "AdaptiveBulkhead",
    "BreakerState",
    "Bulkhead",
    "CircuitBreaker",
    "Fallback",
    "Hedge",
    "InMemorySagaStore",
    "PostgresSagaStore",
    "RateLimiter",
    "Registry",
    "Retry",
    "RetryBudget",
    "SQLiteSagaStore",
    "Saga",
    "SagaContext",
    "SagaResult",
    "SagaStatus",
    "SagaStore",
    "StaleEpoch",
    "Timeout",
    "UnknownSagaVersion",
    "policy",
    "registry",
    "wait_exponential",
    "wait_fixed",
    "wait_linear",
    "BulkheadFullError",
    "CircuitOpenError",
    "ConfigError",
    "IdempotencyConflict",
    "Pipeline",
    "Policy",
    "PolicyRejectedError",
    "RateLimitedError",
    "Rejected",
    "ResilienceError",
    "RetryExhaustedError",
    "SagaFailed",
    "SagaStoreUnavailable",
    "SagaStuck",
    "TimeoutExceeded",
    "add_listener",
    "chaos",
    "configure_telemetry",
    "pipeline",
    "remaining",
    "remove_listener",
]
