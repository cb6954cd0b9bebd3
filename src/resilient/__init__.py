"""resilient: composable sync and async resilience policies.

Circuit breaker, bulkhead, retry, timeout, fallback, rate limiter, retry budget, adaptive
bulkhead, hedging, chaos injection (``rs.chaos``) and saga orchestration, usable as decorators
and context managers on ``def`` and ``async def`` (asyncio and trio), composable with
:func:`pipeline`, observable through Prometheus metrics, OpenTelemetry spans and typed events,
and configurable from environment variables.

``import resilient`` is cheap (it loads the error classes and nothing else): every other name
is imported on first use (PEP 562 ``__getattr__``), so a CLI, a serverless cold start or a
test collection pays only for what it touches. Type checkers and ``dir()`` see every name.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from ._deadline import remaining
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

if TYPE_CHECKING:
    from . import chaos
    from ._policy import Policy
    from ._registry import Registry, policy, registry
    from .adaptive_bulkhead import AdaptiveBulkhead
    from .breaker import BreakerState, CircuitBreaker
    from .bulkhead import Bulkhead
    from .fallback import Fallback
    from .fleet import RedisState
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

# Where each lazily imported name lives. Policy classes and the registry come in together:
# configuration must know every policy kind (``_registry`` registers them) before any one of
# them is built from the environment.
_POLICIES = "resilient._registry"
_LAZY: dict[str, tuple[str, str]] = {
    "AdaptiveBulkhead": ("resilient.adaptive_bulkhead", _POLICIES),
    "BreakerState": ("resilient.breaker", _POLICIES),
    "Bulkhead": ("resilient.bulkhead", _POLICIES),
    "CircuitBreaker": ("resilient.breaker", _POLICIES),
    "Fallback": ("resilient.fallback", _POLICIES),
    "Hedge": ("resilient.hedge", _POLICIES),
    "Pipeline": ("resilient.pipeline", _POLICIES),
    "Policy": ("resilient._policy", _POLICIES),
    "RateLimiter": ("resilient.rate_limiter", _POLICIES),
    "Registry": (_POLICIES, _POLICIES),
    "Retry": ("resilient.retry", _POLICIES),
    "RetryBudget": ("resilient.retry_budget", _POLICIES),
    "Timeout": ("resilient.timeout", _POLICIES),
    "policy": (_POLICIES, _POLICIES),
    "registry": (_POLICIES, _POLICIES),
    "wait_exponential": ("resilient.waits", _POLICIES),
    "wait_fixed": ("resilient.waits", _POLICIES),
    "wait_linear": ("resilient.waits", _POLICIES),
    "add_listener": ("resilient.telemetry", ""),
    "configure_telemetry": ("resilient.telemetry", ""),
    "remove_listener": ("resilient.telemetry", ""),
    "InMemorySagaStore": ("resilient.saga", _POLICIES),
    "PostgresSagaStore": ("resilient.saga", _POLICIES),
    "SQLiteSagaStore": ("resilient.saga", _POLICIES),
    "Saga": ("resilient.saga", _POLICIES),
    "SagaContext": ("resilient.saga", _POLICIES),
    "SagaResult": ("resilient.saga", _POLICIES),
    "SagaStatus": ("resilient.saga", _POLICIES),
    "SagaStore": ("resilient.saga", _POLICIES),
    "StaleEpoch": ("resilient.saga", _POLICIES),
    "UnknownSagaVersion": ("resilient.saga", _POLICIES),
    # imports redis-py (the `redis` extra) on first use
    "RedisState": ("resilient.fleet", _POLICIES),
}
_SUBMODULES = {"chaos": _POLICIES, "testing": "", "saga": _POLICIES, "telemetry": ""}


def __getattr__(name: str) -> Any:
    found = _LAZY.get(name)
    if found is not None:
        module, first = found
        if first:
            importlib.import_module(first)
        value = getattr(importlib.import_module(module), name)
    elif name in _SUBMODULES:
        if _SUBMODULES[name]:
            importlib.import_module(_SUBMODULES[name])
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later reads are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``rs.pipeline`` is a function, but ``resilient.pipeline`` is also a module: importing
    that module makes the import system bind the *module* as the package's ``pipeline``
    attribute. Here that binding is ignored, so ``rs.pipeline(...)`` always composes."""

    @property
    def pipeline(self) -> Any:
        return importlib.import_module("resilient.pipeline").pipeline

    @pipeline.setter
    def pipeline(self, value: Any) -> None:
        if not isinstance(value, types.ModuleType):  # anything but the submodule binding
            raise AttributeError("resilient.pipeline is the composition function")


sys.modules[__name__].__class__ = _Package


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
    "RedisState",
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
