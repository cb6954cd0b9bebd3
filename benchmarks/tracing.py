"""What OpenTelemetry tracing costs per policy call, sampled and not sampled.

The production set-up is an SDK ``TracerProvider`` with a parent-based 1% ratio sampler
(``ParentBased(TraceIdRatioBased(0.01))``). Four set-ups, each measured as nanoseconds over
the same policy with metrics on and tracing off (the default telemetry without an SDK):

- **unsampled request**: the call runs inside a request span that was not sampled (what a
  server's instrumentation leaves current for 99% of requests). The sampler would drop the
  policy's span, so the policy does not open one. Target: at most 3 us.
- **root, 1% sampler**: no span is current, so the policy opens the root span, and the
  sampler decides (99% not sampled). This is the SDK's ``start_span`` cost, paid once per
  call: policies nested inside it follow its decision, as they do in the request case.
- **sampled**: every span is recorded (``ALWAYS_ON``, and a span processor that drops
  finished spans, so exporting is not measured: exporters run off the hot path).

Rounds are interleaved and the best round is kept, so machine drift hits every set-up alike.

Usage::

    python benchmarks/tracing.py            # full run (about a minute)
    python benchmarks/tracing.py --quick    # one short round (smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import environment, format_ns  # the harness sits next to this script
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased

import resilient as rs
from resilient.telemetry import reset_telemetry

TARGET_UNSAMPLED_NS = 3000.0
POLICIES: dict[str, Callable[[], rs.Policy]] = {
    "CircuitBreaker": lambda: rs.CircuitBreaker(),
    "Bulkhead": lambda: rs.Bulkhead(max_concurrent=10),
    "Retry": lambda: rs.Retry(attempts=3, wait=0),
    "Fallback": lambda: rs.Fallback(0),
    "Timeout": lambda: rs.Timeout(10.0),
}
SETUPS = ("metrics only", "unsampled request", "root, 1% sampler", "sampled")


class _DropSpans(SpanProcessor):
    def on_end(self, span: Any) -> None:
        return None


def _provider(sampler: Sampler) -> TracerProvider:
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(_DropSpans())
    return provider


def _configure(setup: str) -> Any:
    """Set the telemetry up for ``setup``; return the span to run the calls in, if any."""
    reset_telemetry()
    if setup == "metrics only":
        rs.configure_telemetry(metrics=True, tracing=False)
        return None
    if setup == "sampled":
        rs.configure_telemetry(tracer_provider=_provider(ALWAYS_ON))
        return None
    rs.configure_telemetry(tracer_provider=_provider(ParentBased(TraceIdRatioBased(0.01))))
    if setup == "unsampled request":
        context = trace.SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=trace.TraceFlags(0))
        return trace.NonRecordingSpan(context)
    return None


def _sync_round(fn: Callable[[], int], n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n


async def _async_round(fn: Callable[[], Awaitable[int]], n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        await fn()
    return (time.perf_counter_ns() - start) / n


def _ok() -> int:
    return 1


async def _aok() -> int:
    return 1


def measure(kind: str, rounds: int, n: int) -> dict[str, dict[str, float]]:
    """Best-of-``rounds`` ns per call for each policy and set-up (``kind``: sync or async)."""
    best: dict[str, dict[str, float]] = {p: {} for p in [*POLICIES, "bare call"]}
    loop = asyncio.new_event_loop() if kind == "async" else None
    try:
        for _ in range(rounds):
            for setup in SETUPS:
                parent = _configure(setup)
                fns: dict[str, Any] = {"bare call": _ok if kind == "sync" else _aok}
                for name, make in POLICIES.items():
                    fns[name] = make()(_ok if kind == "sync" else _aok)
                for name, fn in fns.items():
                    with trace.use_span(parent) if parent is not None else _no_span():
                        if loop is None:
                            _sync_round(fn, n // 10)  # warm-up
                            ns = _sync_round(fn, n)
                        else:
                            loop.run_until_complete(_async_round(fn, n // 10))
                            ns = loop.run_until_complete(_async_round(fn, n))
                    previous = best[name].get(setup)
                    best[name][setup] = ns if previous is None else min(previous, ns)
    finally:
        reset_telemetry()
        if loop is not None:
            loop.close()
    return best


class _no_span:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def render(kind: str, best: dict[str, dict[str, float]]) -> str:
    """A table of ns over 'metrics only' per set-up, with the unsampled target verdict."""
    lines = [
        f"| policy ({kind}) | metrics only, over bare | "
        + " | ".join(f"{s}, over metrics only" for s in SETUPS[1:])
        + " | unsampled <= 3 us |",
        "|---|---:|" + "---:|" * (len(SETUPS) - 1) + "---|",
    ]
    bare = best["bare call"]["metrics only"]
    for name in POLICIES:
        row = best[name]
        base = row["metrics only"]
        over = [row[s] - base for s in SETUPS[1:]]
        verdict = "met" if over[0] <= TARGET_UNSAMPLED_NS else "MISSED"
        lines.append(
            f"| {name} | +{format_ns(base - bare)} | "
            + " | ".join(f"+{format_ns(o)}" for o in over)
            + f" | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure sync and async, print both tables, optionally write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one short round (smoke test)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    rounds, n = (1, 200) if args.quick else (5, 20_000)
    results = {}
    for kind in ("sync", "async"):
        results[kind] = measure(kind, rounds, n)
        print(render(kind, results[kind]))
        print()
    if args.json:
        meta = environment(("opentelemetry-api", "opentelemetry-sdk", "prometheus-client"))
        with open(args.json, "w") as out:
            json.dump({"meta": meta, "ns_per_call": results}, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
