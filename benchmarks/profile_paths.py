"""Where one resilient call spends its time: cProfile per function, per protected call.

``compare.py`` says *how much* a call costs; this says *where*. Each path runs N times under
cProfile and every function is listed with its own time (``tottime``) and cumulative time per
protected call. cProfile inflates every Python-level call by a similar amount, so read the
numbers as shares, and confirm a suspect with a plain timing (``--no-profile`` prints the
unprofiled ns per call of the same path).

Usage::

    python benchmarks/profile_paths.py                      # every path, telemetry off
    python benchmarks/profile_paths.py breaker-open --telemetry defaults
    python benchmarks/profile_paths.py --list
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

import resilient as rs


class Boom(Exception):
    """The failure the protected functions raise."""


def _ok() -> int:
    return 1


async def _aok() -> int:
    return 1


def _fail() -> int:
    raise Boom


_flip = [False]


def _flaky() -> int:
    _flip[0] = not _flip[0]
    if _flip[0]:
        raise Boom
    return 1


async def _aflaky() -> int:
    _flip[0] = not _flip[0]
    if _flip[0]:
        raise Boom
    return 1


def _breaker() -> Any:
    return rs.CircuitBreaker(
        window_size=5, minimum_calls=5, failure_rate_threshold=1.0, open_duration=3600
    )


def _opened(guarded: Callable[[], Any]) -> Callable[[], Any]:
    for _ in range(7):
        try:
            guarded()
        except Exception:  # the failures and the trip are the point
            continue
    return guarded


def _full_bulkhead() -> Callable[[], Any]:
    bulkhead = rs.Bulkhead(max_concurrent=1)
    bulkhead.__enter__()  # this thread holds the only slot for the rest of the run
    guarded: Callable[[], Any] = bulkhead(_ok)
    return guarded


# name -> (build the guarded callable, is_async, exceptions a call may raise)
PATHS: dict[str, tuple[Callable[[], Any], bool, tuple[type[BaseException], ...]]] = {
    "retry-happy": (lambda: rs.Retry(attempts=3, wait=0, on=Boom)(_ok), False, ()),
    "retry-one-failure": (lambda: rs.Retry(attempts=3, wait=0, on=Boom)(_flaky), False, ()),
    "retry-one-failure-async": (
        lambda: rs.Retry(attempts=3, wait=0, on=Boom)(_aflaky),
        True,
        (),
    ),
    "breaker-closed": (lambda: _breaker()(_ok), False, ()),
    "breaker-closed-async": (lambda: _breaker()(_aok), True, ()),
    "breaker-open": (lambda: _opened(_breaker()(_fail)), False, (rs.CircuitOpenError,)),
    "bulkhead": (lambda: rs.Bulkhead(max_concurrent=10)(_ok), False, ()),
    "bulkhead-async": (lambda: rs.Bulkhead(max_concurrent=10)(_aok), True, ()),
    "bulkhead-full": (_full_bulkhead, False, (rs.BulkheadFullError,)),
    "fallback-happy": (lambda: rs.Fallback(0)(_ok), False, ()),
    "fallback-failure": (lambda: rs.Fallback(0, on=(Boom,))(_fail), False, ()),
    "timeout": (lambda: rs.Timeout(10.0)(_ok), False, ()),
    "timeout-async": (lambda: rs.Timeout(10.0)(_aok), True, ()),
}


def _runner(
    guarded: Callable[[], Any], is_async: bool, errors: tuple[type[BaseException], ...], n: int
) -> Callable[[], None]:
    if is_async:

        async def many() -> None:
            for _ in range(n):
                try:  # noqa: SIM105 - contextlib.suppress would add its own cost
                    await guarded()
                except errors:
                    pass

        loop = asyncio.new_event_loop()
        return lambda: loop.run_until_complete(many())

    def run() -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost
                guarded()
            except errors:
                pass

    return run


def profile(name: str, n: int, top: int, plain: bool) -> str:
    """Profile one path; return its report."""
    make, is_async, errors = PATHS[name]
    guarded = make()
    run = _runner(guarded, is_async, errors, n)
    run()  # warm up (telemetry caches, first-call paths)
    start = time.perf_counter_ns()
    run()
    unprofiled = (time.perf_counter_ns() - start) / n
    out = [f"== {name}: {unprofiled:,.0f} ns per call without the profiler"]
    if plain:
        return "\n".join(out)
    prof = cProfile.Profile()
    prof.enable()
    run()
    prof.disable()
    stats = pstats.Stats(prof)
    rows = []
    for (path, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func in ("<lambda>", "run", "many", "run_until_complete") and "profile_paths" in path:
            continue
        where = f"{os.path.basename(path)}:{line}({func})" if line else func
        rows.append((tt, ct, nc, where))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    out.append(f"{'own ns/call':>12} {'cum ns/call':>12} {'calls/call':>10}  function")
    for tt, ct, nc, where in rows[:top]:
        out.append(f"{tt * 1e9 / n:12,.0f} {ct * 1e9 / n:12,.0f} {nc / n:10.2f}  {where}")
    out.append(f"{total * 1e9 / n:12,.0f} {'':12} {'':10}  (total under the profiler)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Profile the chosen paths (all by default) in the chosen telemetry mode."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", help="paths to profile (default: all)")
    ap.add_argument("--list", action="store_true", help="list the paths and exit")
    ap.add_argument("--telemetry", choices=("off", "defaults"), default="off")
    ap.add_argument("-n", type=int, default=50_000, help="calls per path")
    ap.add_argument("--top", type=int, default=12, help="functions to show per path")
    ap.add_argument("--no-profile", action="store_true", help="only the unprofiled ns/call")
    ap.add_argument("--quick", action="store_true", help="200 calls per path (smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n = 200
    if args.list:
        print("\n".join(PATHS))
        return 0
    unknown = [p for p in args.paths if p not in PATHS]
    if unknown:
        ap.error(f"unknown path(s) {unknown}; choose from {', '.join(PATHS)}")
    if args.telemetry == "off":
        rs.configure_telemetry(metrics=False, tracing=False)
    print(f"telemetry: {args.telemetry}, {args.n:,} calls per path")
    for name in args.paths or list(PATHS):
        print(profile(name, args.n, args.top, args.no_profile))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
