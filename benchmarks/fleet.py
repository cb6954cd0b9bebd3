"""What sharing a circuit breaker through Redis costs a call, beside a Redis round trip.

Per-call time of a protected no-op call on the happy path (CLOSED, every call succeeds): a bare
call, the local ``CircuitBreaker``, and the same breaker with ``state=rs.RedisState(...)``,
sync and async, with telemetry off and with the default metrics. The shared breaker's sync
thread runs meanwhile (one pipelined exchange every ``sync_interval``), as in production.
Beside them: the Redis ``PING`` round trip, i.e. what one call would cost if it asked Redis.

Target (issue 15): the shared breaker's per-call overhead within 2x the local breaker's.

Redis: ``RESILIENT_BENCH_REDIS`` (default ``redis://127.0.0.1:6379/0``); without one the shared
rows are skipped with a message.

Usage::

    python benchmarks/fleet.py             # full run (about half a minute)
    python benchmarks/fleet.py --quick     # tiny blocks, one round (smoke test)
    python benchmarks/fleet.py --json out.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # the harness sits next to this script
    Contender,
    Counter,
    Runner,
    Scenario,
    ScenarioResult,
    environment,
    format_ns,
    result_to_json,
    write_json,
)

import resilient as rs
from resilient.telemetry import reset_telemetry

REDIS_URL = os.environ.get("RESILIENT_BENCH_REDIS", "redis://127.0.0.1:6379/0")
TARGET_RATIO = 2.0
TELEMETRY = {
    "off": "telemetry off",
    "metrics": "default metrics",
}
LOCAL = "local breaker"
SHARED = "RedisState breaker"


def redis_problem() -> str | None:
    try:
        import redis
    except ImportError:
        return "redis-py is not installed (pip install -e '.[redis]')"
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except (redis.RedisError, OSError) as error:
        return f"no Redis answers at {REDIS_URL} ({error})"
    return None


def ping_round_trip(n: int) -> dict[str, float]:
    """``PING`` round trips on one connection: median and p99 in microseconds."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for _ in range(min(n, 100)):
            client.ping()
        samples = []
        for _ in range(n):
            start = time.perf_counter_ns()
            client.ping()
            samples.append((time.perf_counter_ns() - start) / 1000)
    finally:
        client.close()
    samples.sort()
    return {
        "median_us": round(statistics.median(samples), 1),
        "p99_us": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 1),
        "n": n,
    }


def _telemetry(mode: str) -> Callable[[], None]:
    def prepare() -> None:
        reset_telemetry()
        if mode == "off":
            rs.configure_telemetry(metrics=False, tracing=False)

    return prepare


def _scenarios(state: rs.RedisState | None) -> list[Scenario]:
    out = []
    for kind in ("sync", "async"):
        for mode in TELEMETRY:
            c = Counter()
            if kind == "sync":

                def fn(c: Counter = c) -> int:
                    c.n += 1
                    return 1

            else:

                async def fn(c: Counter = c) -> int:  # type: ignore[misc]
                    c.n += 1
                    return 1

            is_async = kind == "async"
            prepare = _telemetry(mode)
            s = Scenario("breaker", TELEMETRY[mode], kind, c, 1, 1, [])
            s.contenders.append(Contender("bare call", "bare", "bare", fn, is_async=is_async))
            # window_size as in production-sized breakers; names unique per scenario
            local = rs.CircuitBreaker(f"bench-local-{kind}-{mode}")
            s.contenders.append(
                Contender(LOCAL, "resilient", "resilient", local(fn), is_async, prepare=prepare)
            )
            if state is not None:
                shared = rs.CircuitBreaker(f"bench-shared-{kind}-{mode}", state=state)
                s.contenders.append(
                    Contender(
                        SHARED, "resilient", "reference", shared(fn), is_async, prepare=prepare
                    )
                )
            out.append(s)
    return out


def render(results: list[ScenarioResult]) -> str:
    lines = [
        f"| mode | telemetry | bare call | {LOCAL} | {SHARED} | shared / local overhead "
        f"| target <= {TARGET_RATIO:g}x |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for res in results:
        bare, local, shared = res.row("bare call"), res.row(LOCAL), res.row(SHARED)
        assert bare is not None and local is not None
        if shared is None:
            cells = "(skipped) | | "
        else:
            ratio = shared.overhead / local.overhead if local.overhead > 0 else float("inf")
            verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
            cells = f"+{format_ns(shared.overhead)} | {ratio:.2f}x | {verdict}"
        lines.append(
            f"| {res.scenario.mode} | {res.scenario.case} | {format_ns(bare.ns)} | "
            f"+{format_ns(local.overhead)} | {cells} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny blocks and one round (smoke test)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--block", type=float, default=None, help="seconds per timed block")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 9)
    block = args.block or (0.002 if args.quick else 0.05)
    problem = redis_problem()
    state = None
    if problem is None:
        state = rs.RedisState(REDIS_URL, prefix=f"bench-{uuid.uuid4().hex[:8]}")
    runner = Runner(block_s=block, rounds=rounds, warmup=3 if args.quick else 500)
    results = []
    ping: dict[str, Any] | None = None
    try:
        scenarios = _scenarios(state)
        if state is not None:
            deadline = time.monotonic() + 10.0
            while not state.connected and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)  # every shared breaker has had its first sync: online
        for s in scenarios:
            results.append(runner.run(s))
            print(f"  measured {s.mode} {s.case}", file=sys.stderr, flush=True)
        if state is not None:
            ping = ping_round_trip(200 if args.quick else 5000)
    finally:
        reset_telemetry()
        runner.close()
        if state is not None:
            state.close()
    print(render(results))
    if ping is not None:
        print(
            f"\nRedis PING round trip ({REDIS_URL}, one connection, {ping['n']} pings): "
            f"median {ping['median_us']:g} us, p99 {ping['p99_us']:g} us"
        )
    else:
        print(f"\nShared rows and the PING round trip skipped: {problem}")
    if args.json:
        write_json(
            args.json,
            {
                "meta": environment(("redis",)),
                "redis": REDIS_URL if ping is not None else None,
                "ping_round_trip": ping,
                "scenarios": [result_to_json(r) for r in results],
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
