"""The same policies under trio: nothing asyncio-specific in ``resilient``.

Run: ``python examples/trio_example.py``

A nursery of workers fetches exchange rates through a retry, a circuit breaker, a timeout
and a bulkhead. Timeouts cancel through trio's own cancel scopes, the bulkhead queues tasks
with trio primitives, and retries sleep with ``trio.sleep`` (through anyio).
"""

from __future__ import annotations

import trio

import resilient as rs

flaky_left = 3

rates = rs.pipeline(
    rs.Retry("rates-retry", attempts=4, wait=0.01, on=(ConnectionError,)),
    rs.CircuitBreaker("rates", window_size=10, minimum_calls=10),
    rs.Timeout(0.2, name="rates-timeout"),
    rs.Bulkhead("rates-bulkhead", max_concurrent=2, max_queued=10),
)


@rates
async def fetch_rate(currency: str) -> float:
    global flaky_left
    await trio.sleep(0.02)
    if flaky_left > 0:
        flaky_left -= 1
        raise ConnectionError(f"rate for {currency}: connection reset")
    return {"EUR": 1.0, "USD": 1.08, "GBP": 0.86, "JPY": 162.4}.get(currency, 1.0)


@rs.Timeout(0.05, name="stuck")
async def stuck() -> None:
    await trio.sleep(10)


async def worker(currency: str, results: dict[str, float]) -> None:
    results[currency] = await fetch_rate(currency)


async def main() -> None:
    results: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        for currency in ("EUR", "USD", "GBP", "JPY"):
            nursery.start_soon(worker, currency, results)
    print(f"rates (3 transient failures were retried): {dict(sorted(results.items()))}")

    try:
        await stuck()
    except rs.TimeoutExceeded as exc:
        print(f"a stuck call was cancelled by trio after {exc.seconds:g}s")

    with trio.move_on_after(0.01) as scope:  # an outer trio cancellation is left alone
        await fetch_rate("EUR")
    print(f"an outer trio cancel scope still works: cancelled_caught={scope.cancelled_caught}")


if __name__ == "__main__":
    trio.run(main)
