"""How resilient's breaker and bulkhead behave as load grows.

1. Time-window breaker: memory (tracemalloc) and per-call cost as the window grows from 10 s
   to 1 h, driven at 10,000 calls per second of a SIMULATED clock (``FakeClock``), so an hour
   of traffic takes as long as the calls themselves, not an hour. The window keeps one
   aggregate per second, so memory should follow the window length, not the call rate.
2. Throughput (calls/s) of one shared breaker and one shared bulkhead called from 1, 2, 4 and
   8 threads, and from 10, 1,000 and 10,000 concurrent asyncio tasks.

Usage::

    python benchmarks/scaling.py            # full run (a few minutes: the 1 h window is
                                            # 36 million simulated calls)
    python benchmarks/scaling.py --quick    # small windows and counts (smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from itertools import repeat
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import environment, format_ns  # the harness sits next to this script

import resilient as rs
from resilient.telemetry import reset_telemetry
from resilient.testing import FakeClock

TELEMETRY = {
    "defaults": lambda: rs.configure_telemetry(metrics=True, tracing=True),
    "off": lambda: rs.configure_telemetry(metrics=False, tracing=False),
}


def _ok() -> int:
    return 1


# == 1. time window ================================================================================
def _drive(guarded: Callable[[], Any], clock: FakeClock, calls: int, step: float) -> None:
    advance = clock.advance
    for _ in repeat(None, calls):
        advance(step)
        guarded()


def _loop_only(clock: FakeClock, calls: int, step: float) -> int:
    """The driving loop without the breaker (subtracted from the per-call cost)."""
    advance = clock.advance
    start = time.perf_counter_ns()
    for _ in repeat(None, calls):
        advance(step)
        _ok()
    return time.perf_counter_ns() - start


def time_window(windows: list[int], rate: int, timed_calls: int) -> list[dict[str, Any]]:
    """Fill a ``window_type="time"`` breaker for each window length and measure it.

    Memory: tracemalloc is started before the breaker is built; after one full window of
    simulated traffic (plus 10 %, so buckets have rolled over) the traced memory still held
    is what the breaker keeps. Per-call cost: ``timed_calls`` more calls with tracemalloc
    off, minus the same loop around a bare call (the fake clock is not free).
    """
    rs.configure_telemetry(metrics=False, tracing=False)  # the window, not the metrics
    step = 1.0 / rate
    # one breaker driven before anything is traced: modules the library imports on first use
    # (it loads them lazily, see docs/performance.md) are not billed to the first window
    warm_clock = FakeClock()
    _drive(
        rs.CircuitBreaker("scaling-warm-up", window_type="time", clock=warm_clock)(_ok),
        warm_clock,
        1000,
        step,
    )
    rows = []
    for w in windows:
        gc.collect()
        clock = FakeClock()
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        breaker = rs.CircuitBreaker(
            f"scaling-window-{w}", window_type="time", window_size=w, clock=clock
        )
        guarded = breaker(_ok)
        built, _ = tracemalloc.get_traced_memory()
        fill = int(w * rate * 1.1)
        t0 = time.perf_counter()
        _drive(guarded, clock, fill, step)
        fill_s = time.perf_counter() - t0
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter_ns()
            _drive(guarded, clock, timed_calls, step)
            took = time.perf_counter_ns() - start
            loop = _loop_only(FakeClock(), timed_calls, step)
        finally:
            gc.enable()
        if breaker.state != "closed":
            raise AssertionError(f"window {w}: breaker left CLOSED on successes ({breaker.state})")
        rows.append(
            {
                "window_s": w,
                "calls_filled": fill,
                "memory_after_build_bytes": built - base,
                "memory_held_bytes": held - base,
                "peak_bytes": peak - base,
                "ns_per_call": (took - loop) / timed_calls,
                "fill_seconds": round(fill_s, 2),
            }
        )
        del guarded, breaker
        print(f"  window {w} s measured", file=sys.stderr, flush=True)
    return rows


# == 2a. threads ===================================================================================
def threads(counts: list[int], total: int, telemetry: list[str]) -> list[dict[str, Any]]:
    """``total`` calls split over N threads sharing one policy: calls per second of wall time."""
    rows = []
    # each row's policy has its own name: rows measured one after another would otherwise
    # share metric series (and the library warns about two live policies with one name)
    makers: dict[str, Callable[[str], Any]] = {
        "bare call": lambda label: lambda f: f,
        "CircuitBreaker": lambda label: rs.CircuitBreaker(label),
        "Bulkhead(8)": lambda label: rs.Bulkhead(label, max_concurrent=8),
        # a rate no benchmark reaches: the happy path (a token is always there)
        "RateLimiter": lambda label: rs.RateLimiter(label, rate=1e9, burst=1_000_000),
    }
    for tel in telemetry:
        TELEMETRY[tel]()
        for name, make in makers.items():
            if name == "bare call" and tel != telemetry[0]:
                continue
            for n in counts:
                guarded = make(f"threads-{tel}-{n}")(_ok)
                guarded()  # warm the telemetry cache
                per = total // n
                barrier = threading.Barrier(n + 1)

                def work(
                    guarded: Callable[[], Any] = guarded,
                    per: int = per,
                    barrier: threading.Barrier = barrier,
                ) -> None:
                    barrier.wait()
                    for _ in repeat(None, per):
                        guarded()

                ts = [threading.Thread(target=work) for _ in range(n)]
                for t in ts:
                    t.start()
                barrier.wait()
                start = time.perf_counter()
                for t in ts:
                    t.join()
                took = time.perf_counter() - start
                rows.append(
                    {
                        "policy": name,
                        "telemetry": tel if name != "bare call" else "-",
                        "threads": n,
                        "calls": per * n,
                        "calls_per_s": per * n / took,
                        "ns_per_call": took * 1e9 / (per * n),
                    }
                )
        print(f"  threads, telemetry {tel} measured", file=sys.stderr, flush=True)
    return rows


# == 2b. asyncio tasks =============================================================================
def tasks(counts: list[int], total: int, telemetry: list[str]) -> list[dict[str, Any]]:
    """``total`` calls spread over N concurrent tasks; every call yields to the loop once
    inside the policy, so the tasks really interleave (and queue at the bulkhead)."""

    async def work() -> int:
        await asyncio.sleep(0)
        return 1

    makers: dict[str, Callable[[str, int], Any]] = {
        "bare call": lambda label, n: lambda f: f,
        "CircuitBreaker": lambda label, n: rs.CircuitBreaker(label),
        "Bulkhead(10), queue": lambda label, n: rs.Bulkhead(label, max_concurrent=10, max_queued=n),
    }
    rows = []

    async def run(guarded: Callable[[], Any], n: int, per: int) -> float:
        async def one() -> None:
            for _ in repeat(None, per):
                await guarded()

        await guarded()
        start = time.perf_counter()
        await asyncio.gather(*[one() for _ in range(n)])
        return time.perf_counter() - start

    for tel in telemetry:
        TELEMETRY[tel]()
        for name, make in makers.items():
            if name == "bare call" and tel != telemetry[0]:
                continue
            for n in counts:
                per = max(1, total // n)
                gc.collect()
                took = asyncio.run(run(make(f"tasks-{tel}-{n}", n)(work), n, per))
                rows.append(
                    {
                        "policy": name,
                        "telemetry": tel if name != "bare call" else "-",
                        "tasks": n,
                        "calls": per * n,
                        "calls_per_s": per * n / took,
                        "ns_per_call": took * 1e9 / (per * n),
                    }
                )
        print(f"  tasks, telemetry {tel} measured", file=sys.stderr, flush=True)
    return rows


# == output ========================================================================================
def _kib(b: float) -> str:
    return f"{b / 1024:.1f} KiB"


def render(
    window_rows: list[dict[str, Any]],
    rate: int,
    thread_rows: list[dict[str, Any]],
    task_rows: list[dict[str, Any]],
) -> str:
    """The three tables, Markdown-compatible."""
    out = [
        f"Time-window breaker at {rate:,} calls/s of simulated time (telemetry off)",
        "",
        "| window | calls to fill | memory held | peak while filling | per call |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in window_rows:
        out.append(
            f"| {r['window_s']:,} s | {r['calls_filled']:,} | {_kib(r['memory_held_bytes'])} | "
            f"{_kib(r['peak_bytes'])} | {format_ns(r['ns_per_call'])} |"
        )
    for title, rows, key in (
        ("Threads sharing one policy (CPython: one GIL)", thread_rows, "threads"),
        ("Concurrent asyncio tasks sharing one policy", task_rows, "tasks"),
    ):
        counts = sorted({r[key] for r in rows})
        out += [
            "",
            title + ": calls per second (ns per call)",
            "",
            "| policy | telemetry | " + " | ".join(f"{n:,} {key}" for n in counts) + " |",
            "|---|---|" + "---:|" * len(counts),
        ]
        groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault((r["policy"], r["telemetry"]), {})[r[key]] = r
        for (policy, tel), by in groups.items():
            cells = [
                f"{by[n]['calls_per_s'] / 1000:,.0f} k ({format_ns(by[n]['ns_per_call'])})"
                if n in by
                else "-"
                for n in counts
            ]
            out.append(f"| {policy} | {tel} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small windows and counts (smoke test)")
    ap.add_argument("--windows", type=int, nargs="+", default=None, help="window lengths (s)")
    ap.add_argument("--rate", type=int, default=None, help="simulated calls per second")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        windows, rate, timed = args.windows or [10, 60], args.rate or 1000, 5000
        thread_counts, thread_total = [1, 2], 4000
        task_counts, task_total = [10, 1000], 4000
        telemetry = ["off"]
    else:
        windows, rate, timed = args.windows or [10, 60, 600, 3600], args.rate or 10_000, 200_000
        thread_counts, thread_total = [1, 2, 4, 8], 400_000
        task_counts, task_total = [10, 1000, 10_000], 200_000
        telemetry = ["defaults", "off"]
    started = time.perf_counter()
    try:
        window_rows = time_window(windows, rate, timed)
        thread_rows = threads(thread_counts, thread_total, telemetry)
        task_rows = tasks(task_counts, task_total, telemetry)
    finally:
        reset_telemetry()
    print(render(window_rows, rate, thread_rows, task_rows))
    if args.json:
        env = environment()
        env["seconds"] = round(time.perf_counter() - started, 1)
        payload = {
            "meta": env,
            "rate": rate,
            "time_window": window_rows,
            "threads": thread_rows,
            "tasks": task_rows,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
