"""What an async ``rs.Timeout`` costs on asyncio and on trio, next to each backend's own
deadline primitive, in one process (issue 16: under 2 us).

For each backend, interleaved rounds of: a bare ``await f()``; the backend's own primitive
around it (``asyncio.timeout`` on 3.11+, trio's ``move_on_after`` and a plain
``trio.CancelScope()``); and ``rs.Timeout(10)`` with the default telemetry and with telemetry
off. Each row is the best round (ns per call); the overhead is the row minus the bare call.
Nothing here fires: this is the happy path every protected call pays.

Usage::

    python benchmarks/async_timeout.py            # ~20 s
    python benchmarks/async_timeout.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import resilient as rs
from resilient.telemetry import reset_telemetry

AsyncCall = Callable[[], Awaitable[Any]]


async def _f() -> int:
    return 1


def _contenders(backend: str) -> dict[str, tuple[AsyncCall, str]]:
    """label -> (call, telemetry mode it needs: "defaults", "off" or "-")."""
    out: dict[str, tuple[AsyncCall, str]] = {"bare call": (_f, "-")}
    if backend == "asyncio" and sys.version_info >= (3, 11):

        async def asyncio_timeout() -> int:
            async with asyncio.timeout(10):
                return await _f()

        out["asyncio.timeout(10) (ref)"] = (asyncio_timeout, "-")
    if backend == "trio":
        import trio

        async def move_on_after() -> int:
            with trio.move_on_after(10):
                return await _f()
            return 0

        async def plain_scope() -> int:
            with trio.CancelScope():
                return await _f()

        out["trio.move_on_after(10) (ref)"] = (move_on_after, "-")
        out["trio.CancelScope(), no deadline (ref)"] = (plain_scope, "-")
    out["rs.Timeout(10), defaults"] = (rs.Timeout(10.0, name="bench-defaults")(_f), "defaults")
    out["rs.Timeout(10), telemetry off"] = (rs.Timeout(10.0, name="bench-off")(_f), "off")
    return out


def _telemetry(mode: str) -> None:
    reset_telemetry()
    if mode == "off":
        rs.configure_telemetry(metrics=False, tracing=False)


async def _measure(backend: str, calls: int, rounds: int) -> dict[str, float]:
    contenders = _contenders(backend)
    best = {label: float("inf") for label in contenders}
    for call, mode in contenders.values():  # warm up every path once
        _telemetry(mode)
        for _ in range(100):
            await call()
    for _ in range(rounds):
        for label, (call, mode) in contenders.items():
            _telemetry(mode)
            start = time.perf_counter()
            for _ in range(calls):
                await call()
            best[label] = min(best[label], (time.perf_counter() - start) / calls * 1e9)
    reset_telemetry()
    return best


def _run(backend: str, calls: int, rounds: int) -> dict[str, float]:
    if backend == "trio":
        import trio

        return trio.run(_measure, backend, calls, rounds)
    return asyncio.run(_measure(backend, calls, rounds))


def main(argv: list[str] | None = None) -> int:
    """Measure both backends and print one table each."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny rounds (smoke test)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    calls, rounds = (200, 2) if args.quick else (20_000, 15)
    results: dict[str, dict[str, float]] = {}
    for backend in ("asyncio", "trio"):
        try:
            rows = _run(backend, calls, rounds)
        except ImportError:  # pragma: no cover - trio comes with the dev extra
            print(f"({backend} not installed: skipped)")
            continue
        results[backend] = rows
        bare = rows["bare call"]
        print(f"\n{backend}: ns per call (best of {rounds} rounds of {calls:,})\n")
        print("| contender | ns/call | over bare | target < 2 us |")
        print("|---|---:|---:|---|")
        for label, ns in rows.items():
            over = "-" if label == "bare call" else f"+{ns - bare:,.0f}"
            target = ""
            if label.startswith("rs.Timeout"):
                target = "met" if ns - bare < 2000 else "MISSED"
            print(f"| {label} | {ns:,.0f} | {over} | {target} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"ns_per_call": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
