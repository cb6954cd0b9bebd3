"""Tail latency of a simulated long-tailed dependency, with and without ``rs.Hedge``.

The dependency is a pool of replicas whose answer time is drawn per attempt (so a hedge goes
to "another replica"): usually about 10 ms, 8 % of the time 20-50 ms, and 2 % of the time a
stall of 0.3-1.5 s (a GC pause, a cold cache, a queue behind a slow request) — the shape of
"The Tail at Scale". Each configuration serves the same number of calls, concurrently, and
reports p50/p95/p99/p99.9 of what the *caller* waited, plus the extra load the hedges added
(hedged attempts per call).

Time is simulated: the run uses trio's ``MockClock`` with ``autojump_threshold=0``, so the
clock jumps to the next timer whenever every task waits. The numbers are therefore exact for
the model (no scheduler noise, no dependence on the machine's speed) and a run takes seconds,
not minutes. The hedge is given ``clock=trio.current_time`` so its latencies and timers follow
the simulated clock.

Usage::

    python benchmarks/hedge_tail.py            # 20,000 calls per configuration
    python benchmarks/hedge_tail.py --quick    # 500 calls (smoke test)
    python benchmarks/hedge_tail.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Callable
from typing import Any

import trio
import trio.testing

import resilient as rs
from resilient.telemetry import configure_telemetry, reset_telemetry

CONCURRENCY = 50


def dependency_latency(rng: random.Random) -> float:
    """One attempt's answer time, in seconds."""
    draw = rng.random()
    if draw < 0.02:
        return rng.uniform(0.3, 1.5)  # a stall
    if draw < 0.10:
        return rng.uniform(0.02, 0.05)  # a slow-ish replica
    return rng.lognormvariate(math.log(0.010), 0.25)  # the usual answer


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


async def _serve(calls: int, make_policy: Callable[[], Any] | None, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    attempts = 0
    waited: list[float] = []

    async def dependency() -> str:
        nonlocal attempts
        attempts += 1
        await trio.sleep(dependency_latency(rng))
        return "ok"

    policy = make_policy() if make_policy is not None else None
    call = dependency if policy is None else policy(dependency)
    queue = iter(range(calls))

    async def client() -> None:
        for _ in queue:
            start = trio.current_time()
            await call()
            waited.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        for _ in range(CONCURRENCY):
            nursery.start_soon(client)
    waited.sort()
    return {
        "calls": calls,
        "p50_ms": round(_quantile(waited, 0.50) * 1000, 2),
        "p95_ms": round(_quantile(waited, 0.95) * 1000, 2),
        "p99_ms": round(_quantile(waited, 0.99) * 1000, 2),
        "p999_ms": round(_quantile(waited, 0.999) * 1000, 2),
        "mean_ms": round(sum(waited) / len(waited) * 1000, 2),
        "extra_load": round(attempts / calls - 1, 4),
    }


def configurations() -> dict[str, Callable[[], Any] | None]:
    clock = trio.current_time
    return {
        "no hedge": None,
        "Hedge(delay=50ms)": lambda: rs.Hedge(delay=0.050, clock=clock),
        'Hedge(delay="p95")': lambda: rs.Hedge(delay="p95", clock=clock),
        'Hedge(delay="p95", max_hedged=2)': lambda: rs.Hedge(
            delay="p95", max_hedged=2, clock=clock
        ),
        "Hedge(delay=10ms)": lambda: rs.Hedge(delay=0.010, clock=clock),
    }


def run(calls: int, seed: int = 7) -> list[dict[str, Any]]:
    rows = []
    for label, make in configurations().items():

        async def main(make: Callable[[], Any] | None = make) -> dict[str, Any]:
            return await _serve(calls, make, seed)

        result = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        rows.append({"configuration": label, **result})
        print(f"  measured {label}", file=sys.stderr, flush=True)
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| configuration | p50 | p95 | p99 | p99.9 | mean | extra load |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['configuration']} | {r['p50_ms']} ms | {r['p95_ms']} ms | {r['p99_ms']} ms "
            f"| {r['p999_ms']} ms | {r['mean_ms']} ms | {r['extra_load'] * 100:.1f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="500 calls per configuration")
    ap.add_argument("--calls", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    calls = args.calls or (500 if args.quick else 20_000)
    configure_telemetry(metrics=False, tracing=False)  # measure the policy, not the exporters
    try:
        rows = run(calls)
    finally:
        reset_telemetry()
    print(
        f"Simulated dependency, {calls:,} calls per configuration, {CONCURRENCY} concurrent "
        "callers (trio MockClock, simulated time):\n"
    )
    print(render(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"calls": calls, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
