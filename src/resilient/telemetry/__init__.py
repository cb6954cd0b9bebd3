"""Telemetry: typed events for listeners, Prometheus metrics and OpenTelemetry spans.

Everything a policy decides becomes an :class:`Event`. The hub sends it to global listeners
(:func:`add_listener`), the policy's own ``on_event``, the Prometheus metrics and, as a span
event, to the current OpenTelemetry span. :func:`configure_telemetry` switches sinks off or
points them at another registry or tracer provider.
"""

from ._events import (
    AdaptiveLimitChanged,
    BreakerStateChanged,
    BulkheadAdmitted,
    BulkheadQueued,
    BulkheadRejected,
    CallFailed,
    CallIgnored,
    CallRejected,
    CallSlow,
    CallSucceeded,
    ChaosInjected,
    Event,
    FallbackUsed,
    HedgeStarted,
    RateLimiterQueued,
    RetryScheduled,
    SagaEvent,
    TimeoutHit,
)
from ._hub import (
    Listener,
    PolicyTelemetry,
    add_listener,
    configure_telemetry,
    remove_listener,
    reset_telemetry,
)

__all__ = [
    "AdaptiveLimitChanged",
    "BreakerStateChanged",
    "BulkheadAdmitted",
    "BulkheadQueued",
    "BulkheadRejected",
    "CallFailed",
    "CallIgnored",
    "CallRejected",
    "CallSlow",
    "CallSucceeded",
    "ChaosInjected",
    "Event",
    "FallbackUsed",
    "HedgeStarted",
    "Listener",
    "PolicyTelemetry",
    "RateLimiterQueued",
    "RetryScheduled",
    "SagaEvent",
    "TimeoutHit",
    "add_listener",
    "configure_telemetry",
    "families_for",
    "remove_listener",
    "reset_telemetry",
]


def __getattr__(name: str) -> object:
    # prometheus-client is imported when metrics are first needed, not with the package
    if name == "families_for":
        from ._prometheus import families_for

        return families_for
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
