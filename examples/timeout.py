"""Timeout: give a call a time budget, and hand what is left of it to the I/O inside.

Run: ``python examples/timeout.py``

1. An async call that overruns is cancelled for real and raises ``TimeoutExceeded`` (also a
   builtin ``TimeoutError``).
2. ``rs.remaining()`` tells the code inside how much budget is left, so it can pass it on as
   an HTTP/socket timeout; nested timeouts shrink the budget.
3. A sync function: the caller stops waiting at the deadline (the function runs in a worker
   thread, which Python cannot kill; it should honour ``rs.remaining()`` itself).
"""

from __future__ import annotations

import time

import anyio

import resilient as rs


@rs.Timeout(0.1, name="slow-search")
async def slow_search(query: str) -> list[str]:
    await anyio.sleep(1.0)  # would take a second; gets cancelled at 0.1 s
    return [query]


async def budgeted_call() -> None:
    async with rs.Timeout(0.5, name="request"):
        print(f"  request budget left: {rs.remaining():.2f}s")
        async with rs.Timeout(0.2, name="db-query"):
            # Pass this on, e.g. httpx.get(url, timeout=rs.remaining())
            print(f"  inner budget left:   {rs.remaining():.2f}s (the smaller one wins)")
    print(f"  outside any timeout: rs.remaining() = {rs.remaining()}")


@rs.Timeout(0.1, name="legacy-report")
def legacy_report() -> str:
    left = rs.remaining()
    time.sleep(min(0.3, left if left is not None else 0.3) + 0.05)  # overruns a little
    return "report"


async def async_part() -> None:
    print("1. async call cancelled at its deadline:")
    start = time.perf_counter()
    try:
        await slow_search("teapot")
    except rs.TimeoutExceeded as exc:
        took = time.perf_counter() - start
        print(
            f"  TimeoutExceeded: {exc.name!r} ran out of its {exc.seconds:g}s budget "
            f"(gave up after {took:.2f}s; a TimeoutError too: {isinstance(exc, TimeoutError)})"
        )
    print("2. budgets:")
    await budgeted_call()


def main() -> None:
    anyio.run(async_part)
    print("3. sync call: the caller never waits past the deadline:")
    start = time.perf_counter()
    try:
        legacy_report()
    except rs.TimeoutExceeded as exc:
        waited = time.perf_counter() - start
        print(f"  {exc.name!r} timed out after {exc.seconds:g}s (caller waited {waited:.2f}s)")


if __name__ == "__main__":
    main()
