"""Pipeline: the usual composition — Fallback, Retry, CircuitBreaker, Timeout, Bulkhead.

Run: ``python examples/pipeline.py``

``rs.pipeline(outer, ..., inner)`` nests policies like Polly's pipeline: the fallback sees
the final verdict, every retry attempt passes the breaker and gets its own timeout, and the
bulkhead bounds only the work actually running. A simulated quote service is healthy, then
fails and hangs for a while, then recovers; a listener counts what each policy did.
"""

from __future__ import annotations

import random
from collections import Counter

import anyio

import resilient as rs
from resilient.telemetry import (
    BreakerStateChanged,
    CallRejected,
    Event,
    FallbackUsed,
    RetryScheduled,
    TimeoutHit,
)

counts: Counter[str] = Counter()


def count(event: Event) -> None:
    """A global listener (``rs.add_listener``) sees every policy's events."""
    if isinstance(event, RetryScheduled):
        counts["retries"] += 1
    elif isinstance(event, CallRejected):
        counts[f"rejected by {event.policy} ({event.reason})"] += 1
    elif isinstance(event, FallbackUsed):
        counts["fallbacks"] += 1
    elif isinstance(event, TimeoutHit):
        counts["timeouts"] += 1
    elif isinstance(event, BreakerStateChanged):
        print(f"    breaker {event.from_state} -> {event.to_state}")


quotes = rs.pipeline(
    rs.Fallback({"price": None, "stale": True}, name="quote-fallback"),
    rs.Retry("quote-retry", attempts=3, wait=0.005, on=(ConnectionError, rs.TimeoutExceeded)),
    rs.CircuitBreaker("quotes", window_size=10, minimum_calls=5, open_duration=0.2),
    rs.Timeout(0.05, name="quote-timeout"),
    rs.Bulkhead("quote-bulkhead", max_concurrent=4),
)

rng = random.Random(7)
health = "up"


@quotes
async def get_quote(sku: str) -> dict[str, object]:
    """The dependency: fine when up; errors or hangs when down."""
    if health == "down":
        if rng.random() < 0.5:
            raise ConnectionError("quote service unreachable")
        await anyio.sleep(1.0)  # hangs: the timeout cancels it
    return {"price": 1200, "stale": False}


async def phase(name: str, n: int) -> None:
    fresh = stale = 0
    for _ in range(n):
        quote = await get_quote("mug")
        if quote["stale"]:
            stale += 1
        else:
            fresh += 1
        await anyio.sleep(0.005)
    print(f"  {name}: {fresh} fresh quotes, {stale} stale (fallback)")


async def main() -> None:
    global health
    rs.add_listener(count)
    try:
        print("healthy:")
        await phase("healthy", 10)
        print("quote service down:")
        health = "down"
        await phase("down", 20)
        print("recovered:")
        health = "up"
        await anyio.sleep(0.25)  # longer than open_duration: the next call is a trial
        await phase("recovered", 10)
    finally:
        rs.remove_listener(count)
    for what, n in sorted(counts.items()):
        print(f"  {what}: {n}")


if __name__ == "__main__":
    anyio.run(main)
