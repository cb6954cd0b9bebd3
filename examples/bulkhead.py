"""Bulkhead: cap how much work runs at once towards one dependency; turn the excess away fast.

Run: ``python examples/bulkhead.py``

Six requests arrive together at a report generator that may run 2 at a time with 2 more
waiting. Two run, two wait their turn, and two are rejected at once with
``BulkheadFullError`` instead of piling up. Then the same bulkhead serves plain threads.
"""

from __future__ import annotations

import threading
import time

import anyio

import resilient as rs

reports = rs.Bulkhead("reports", max_concurrent=2, max_queued=2, queue_timeout=1.0)


@reports
async def build_report(n: int) -> str:
    await anyio.sleep(0.1)  # the slow part we protect
    return f"report {n}"


async def request(n: int, results: list[str]) -> None:
    try:
        results.append(await build_report(n))
        print(f"  request {n}: done")
    except rs.BulkheadFullError as exc:
        results.append(f"rejected {n}")
        print(f"  request {n}: rejected at once ({exc.reason}): {exc}")


async def async_part() -> None:
    print("1. six concurrent requests, 2 slots + 2 queue places:")
    results: list[str] = []
    async with anyio.create_task_group() as tg:
        for n in range(1, 7):
            tg.start_soon(request, n, results)
            await anyio.sleep(0.001)  # arrive in order, so the output is predictable
        await anyio.sleep(0.02)
        print(f"  now: in_flight={reports.in_flight}, queued={reports.queued}")
    served = [r for r in results if r.startswith("report")]
    print(f"  served {len(served)}, rejected {len(results) - len(served)}")


def thread_part() -> None:
    print("2. the same kind of bulkhead around blocking code, used from threads:")
    db = rs.Bulkhead("db", max_concurrent=1, max_queued=0)
    outcome: dict[str, str] = {}
    holding = threading.Event()

    def query(who: str) -> None:
        try:
            with db:
                holding.set()
                time.sleep(0.2)
            outcome[who] = "ran"
        except rs.BulkheadFullError:
            outcome[who] = "rejected"

    first = threading.Thread(target=query, args=("first",))
    first.start()
    holding.wait(timeout=10)  # until the first thread holds the only slot
    query("second")
    first.join()
    print(f"  {outcome}")


def main() -> None:
    anyio.run(async_part)
    thread_part()


if __name__ == "__main__":
    main()
