"""What one resilient policy costs per call on the happy path, in each telemetry mode.

Three modes, interleaved round-robin in one process so machine drift hits them alike:

(a) defaults: Prometheus metrics on (default registry), tracing on but no OpenTelemetry SDK
    configured (the global provider is the API's no-op proxy, so spans are skipped);
(b) everything off: ``configure_telemetry(metrics=False, tracing=False)``, no listener;
(c) full: metrics on and an OpenTelemetry SDK ``TracerProvider`` whose only span processor
    drops every span, set with ``configure_telemetry(tracer_provider=...)``: the cost of
    creating, recording and ending one real span per policy execution.

The overhead is the policy call minus a bare call of the same function. Target: mode (a)
below 2 us per policy, sync.

Usage::

    python benchmarks/core.py            # full run (about a minute)
    python benchmarks/core.py --quick    # tiny blocks, one round (smoke test)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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

TARGET_A_SYNC_NS = 2000.0
MODES = {
    "a": "(a) metrics on, no OTel SDK",
    "b": "(b) telemetry off",
    "c": "(c) metrics + OTel SDK spans",
}


def _sdk_provider() -> Any | None:
    """An SDK provider whose one span processor drops every span: we measure producing
    spans, not exporting them (exporters run off the hot path, in a batch processor)."""
    try:
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    except ImportError:  # pragma: no cover - the dev extra installs it
        return None

    class DropSpans(SpanProcessor):
        def on_end(self, span: Any) -> None:
            return None

    provider = TracerProvider()
    provider.add_span_processor(DropSpans())
    return provider


def _mode_setter(mode: str, provider: Any | None) -> Callable[[], None]:
    def prepare() -> None:
        reset_telemetry()  # the only way back to "no provider" for mode (a)
        if mode == "b":
            rs.configure_telemetry(metrics=False, tracing=False)
        elif mode == "c":
            rs.configure_telemetry(metrics=True, tracing=True, tracer_provider=provider)

    return prepare


def _policies() -> dict[str, Callable[[], Any]]:
    """Each policy as a user would configure it; only those that exist are measured."""
    makers: dict[str, Callable[[], Any]] = {}
    if hasattr(rs, "CircuitBreaker"):
        makers["CircuitBreaker"] = lambda: rs.CircuitBreaker()
    if hasattr(rs, "Bulkhead"):
        makers["Bulkhead"] = lambda: rs.Bulkhead(max_concurrent=10)
    if hasattr(rs, "Retry"):
        makers["Retry"] = lambda: rs.Retry(attempts=3, wait=0)
    if hasattr(rs, "Timeout"):
        makers["Timeout"] = lambda: rs.Timeout(10.0)
        makers["Timeout(mode=deadline)"] = lambda: rs.Timeout(10.0, mode="deadline")
    if hasattr(rs, "Fallback"):
        makers["Fallback"] = lambda: rs.Fallback(0)
    if hasattr(rs, "RateLimiter"):  # a rate never reached: the happy path
        makers["RateLimiter"] = lambda: rs.RateLimiter(rate=1e12, burst=10**9)
    if hasattr(rs, "RetryBudget"):
        makers["Retry(budget)"] = lambda: rs.Retry(attempts=3, wait=0, budget=rs.RetryBudget())
    if hasattr(rs, "AdaptiveBulkhead"):
        makers["AdaptiveBulkhead"] = lambda: rs.AdaptiveBulkhead()
    if all(k in makers for k in ("CircuitBreaker", "Bulkhead", "Retry", "Timeout", "Fallback")):
        makers["pipeline of all 5"] = lambda: rs.pipeline(
            rs.Fallback(0),
            rs.Retry(attempts=3, wait=0),
            rs.CircuitBreaker(),
            rs.Timeout(10.0),
            rs.Bulkhead(max_concurrent=10),
        )
    if hasattr(rs, "Hedge"):  # happy path: the first attempt answers long before the delay
        makers["Hedge"] = lambda: rs.Hedge(delay=10.0)
    if hasattr(rs, "chaos"):  # switched off: what a chaos policy left in production costs
        makers["chaos Fault, off"] = lambda: rs.chaos.Fault(
            rate=1.0, error=RuntimeError, enabled=False
        )
    return makers


_EXECUTOR_REF = "ThreadPoolExecutor.submit().result() (ref)"


def _executor_reference(fn: Callable[[], int]) -> Contender:
    """The standard library's hand-off to a worker thread and back, measured in the same run
    as the sync ``Timeout`` (whose default mode is such a hand-off, plus the deadline)."""
    pool = ThreadPoolExecutor(max_workers=1)
    pool.submit(fn).result()  # the worker exists before timing starts

    def call() -> int:
        return pool.submit(fn).result()

    return Contender(_EXECUTOR_REF, "concurrent.futures", "reference", call)


def _scenarios(modes: list[str], provider: Any | None) -> list[Scenario]:
    out = []
    for name, make in _policies().items():
        for kind in ("sync", "async"):
            c = Counter()
            if kind == "sync":

                def fn(c: Counter = c) -> int:
                    c.n += 1
                    return 1

            else:

                async def fn(c: Counter = c) -> int:  # type: ignore[misc]
                    c.n += 1
                    return 1

            s = Scenario(name, "happy path", kind, c, 1, 1, [])
            s.contenders.append(
                Contender("bare call", "bare", "bare", fn, is_async=kind == "async")
            )
            if name == "Timeout" and kind == "sync":
                s.contenders.append(_executor_reference(fn))
            for m in modes:
                if m == "c" and provider is None:
                    continue
                s.contenders.append(
                    Contender(
                        MODES[m],
                        "resilient",
                        "resilient",
                        make()(fn),
                        is_async=kind == "async",
                        prepare=_mode_setter(m, provider),
                    )
                )
            out.append(s)
    return out


def render(results: list[ScenarioResult], modes: list[str]) -> str:
    """One line per policy and mode: overhead per call in each telemetry mode."""
    head = "| policy | mode | bare call | " + " | ".join(MODES[m] for m in modes)
    lines = [
        head + " | reference in the same run | target (a) < 2 us sync |",
        "|---|---|---:|" + "---:|" * len(modes) + "---|---:|",
    ]
    for res in results:
        bare = res.row("bare call")
        cells = []
        for m in modes:
            r = res.row(MODES[m])
            cells.append("-" if r is None else f"+{format_ns(r.overhead)}")
        ref = res.row(_EXECUTOR_REF)
        reference = "" if ref is None else f"{_EXECUTOR_REF}: +{format_ns(ref.overhead)}"
        target = ""
        ra = res.row(MODES["a"])
        if (
            res.scenario.mode == "sync"
            and ra is not None
            and "pipeline" not in res.scenario.pattern
        ):
            target = "met" if ra.overhead < TARGET_A_SYNC_NS else "MISSED"
        lines.append(
            f"| {res.scenario.pattern} | {res.scenario.mode} | "
            f"{format_ns(bare.ns) if bare else '-'} | "
            + " | ".join(cells)
            + f" | {reference} | {target} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table and the target verdict."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny blocks and one round (smoke test)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--block", type=float, default=None, help="seconds per timed block")
    ap.add_argument("--mode", action="append", choices=sorted(MODES), help="telemetry modes")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    modes = args.mode or sorted(MODES)
    rounds = args.rounds or (1 if args.quick else 7)
    block = args.block or (0.002 if args.quick else 0.03)
    runner = Runner(block_s=block, rounds=rounds, warmup=3 if args.quick else 200)
    provider = _sdk_provider()
    started = time.perf_counter()
    results = []
    try:
        for s in _scenarios(modes, provider):
            results.append(runner.run(s))
            print(f"  measured {s.pattern} {s.mode}", file=sys.stderr, flush=True)
    finally:
        reset_telemetry()
        runner.close()
    print(render(results, modes))
    missed = [
        f"{r.scenario.pattern} sync: {r.row(MODES['a']).overhead:.0f} ns"  # type: ignore[union-attr]
        for r in results
        if r.scenario.mode == "sync"
        and "pipeline" not in r.scenario.pattern
        and r.row(MODES["a"]) is not None
        and r.row(MODES["a"]).overhead >= TARGET_A_SYNC_NS  # type: ignore[union-attr]
    ]
    print()
    if "a" in modes:
        if missed:
            print("Target (a) < 2 us per policy, sync: MISSED by " + "; ".join(missed))
        else:
            print("Target (a) < 2 us per policy, sync: met by every policy.")
    for r in results:
        if r.scenario.pattern == "Timeout(mode=deadline)" and r.scenario.mode == "sync":
            costs = ", ".join(
                f"{MODES[m]} +{format_ns(row.overhead)}"
                for m in modes
                if (row := r.row(MODES[m])) is not None
            )
            print(f"Timeout(mode='deadline') sync, target < 300 ns: {costs}")
    if provider is None:
        print("(mode c skipped: opentelemetry-sdk is not installed)")
    if args.json:
        env = environment(("opentelemetry-api", "opentelemetry-sdk", "prometheus-client"))
        env["seconds"] = round(time.perf_counter() - started, 1)
        write_json(args.json, {"meta": env, "scenarios": [result_to_json(r) for r in results]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
