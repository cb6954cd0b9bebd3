"""CPU instructions per protected call, counted by valgrind's callgrind: a load-proof benchmark.

Wall-clock benchmarks (``core.py``, ``compare.py``) need a quiet machine; on a busy one (two
cores shared with test runs) their numbers drift by tens of percent. Instruction counts do not:
callgrind counts what the CPU executes, whatever else the machine is doing, so two commits can
be compared at any time. Instructions are not nanoseconds (a cache miss or a contended lock
costs time, not instructions), so this complements the timed benchmarks, it does not replace
them.

How: the script re-runs itself under ``valgrind --tool=callgrind --dump-before=os_getppid``.
In the child, every case runs ``N`` calls and then ``2N`` calls, with ``os.getppid()`` (a C
function nothing else here calls) as a marker between blocks, so callgrind writes one dump per
block. ``(I(2N) - I(N)) / N`` is the cost of one call without the fixed costs of the block,
and the bare function's cost is subtracted.

Usage::

    python benchmarks/instructions.py                 # table of instructions per call
    python benchmarks/instructions.py --json out.json # also write the numbers
    python benchmarks/instructions.py --compare a.json b.json  # side by side, with ratios
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

N = 2000
MODES = ("off", "metrics")


def _policies() -> dict[str, Callable[[], Any]]:
    import resilient as rs

    makers: dict[str, Callable[[], Any]] = {
        "CircuitBreaker": lambda: rs.CircuitBreaker(),
        "Bulkhead": lambda: rs.Bulkhead(max_concurrent=10),
        "Retry": lambda: rs.Retry(attempts=3, wait=0),
        "Fallback": lambda: rs.Fallback(0),
        "Timeout": lambda: rs.Timeout(10.0),
        "pipeline of 5": lambda: rs.pipeline(
            rs.Fallback(0),
            rs.Retry(attempts=3, wait=0),
            rs.CircuitBreaker(),
            rs.Timeout(10.0),
            rs.Bulkhead(max_concurrent=10),
        ),
    }
    for name, attr, make in (
        ("RateLimiter", "RateLimiter", lambda: rs.RateLimiter(rate=1e12, burst=10**9)),
        (
            "Retry(budget)",
            "RetryBudget",
            lambda: rs.Retry(attempts=3, wait=0, budget=rs.RetryBudget()),
        ),
        ("AdaptiveBulkhead", "AdaptiveBulkhead", lambda: rs.AdaptiveBulkhead()),
        ("Hedge", "Hedge", lambda: rs.Hedge(delay=10.0)),
        (
            "chaos Fault, off",
            "chaos",
            lambda: rs.chaos.Fault(rate=1.0, error=RuntimeError, enabled=False),
        ),
    ):
        if hasattr(rs, attr):
            makers[name] = make
    if _redis_answers():
        makers["CircuitBreaker, RedisState"] = _shared_breaker
    return makers


REDIS_URL = os.environ.get("RESILIENT_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def _redis_answers() -> bool:
    """Whether the shared breaker's row can be measured (the redis extra and a server)."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        client.close()
    except Exception:
        return False
    return True


def _shared_breaker() -> Any:
    """A breaker sharing its state through Redis, in step with the fleet before it is
    measured. Its sync thread waits an hour between exchanges, so no other thread's
    instructions land in the count: the happy path itself never waits for Redis."""
    import time

    import resilient as rs

    state = rs.RedisState(REDIS_URL, prefix="bench-instructions", sync_interval=3600.0)
    breaker = rs.CircuitBreaker(state=state)
    deadline = time.monotonic() + 120.0
    while not breaker._shared_core.online and time.monotonic() < deadline:
        time.sleep(0.01)
    return breaker


def _cases() -> list[tuple[str, str, str]]:
    """(policy, kind, mode), plus the two bare-call baselines."""
    out = [("bare", "sync", "-"), ("bare", "async", "-")]
    for name in _policies():
        for kind in ("sync", "async"):
            if name in ("Timeout", "Hedge") and kind == "sync":
                continue  # a thread hand-off: instructions of two threads, not a useful count
            for mode in MODES:
                out.append((name, kind, mode))
    return out


def _child() -> None:
    """Run every case under callgrind, with ``os.getppid()`` dumps between blocks."""
    import resilient as rs
    from resilient.telemetry import reset_telemetry

    def ok() -> int:
        return 1

    async def aok() -> int:
        return 1

    makers = _policies()
    loop = asyncio.new_event_loop()
    for name, kind, mode in _cases():
        reset_telemetry()
        if mode == "off":
            rs.configure_telemetry(metrics=False, tracing=False)
        fn: Any = (
            (ok if kind == "sync" else aok)
            if name == "bare"
            else makers[name]()(ok if kind == "sync" else aok)
        )
        if kind == "sync":

            def block(n: int, fn: Any = fn) -> None:
                for _ in range(n):
                    fn()

            block(50)  # warm caches, children and lazy imports
            os.getppid()
            block(N)
            os.getppid()
            block(2 * N)
            os.getppid()
        else:

            async def ablock(n: int, fn: Any = fn) -> None:
                for _ in range(n):
                    await fn()

            loop.run_until_complete(ablock(50))
            os.getppid()
            loop.run_until_complete(ablock(N))
            os.getppid()
            loop.run_until_complete(ablock(2 * N))
            os.getppid()
    loop.close()
    reset_telemetry()


def _totals(prefix: str) -> list[int]:
    files = glob.glob(prefix + ".*")
    files.sort(key=lambda f: int(f.rsplit(".", 1)[1]))
    out = []
    for f in files:
        with open(f) as fh:
            for line in fh:
                if line.startswith("totals:"):
                    out.append(int(line.split()[1]))
                    break
    return out


def measure() -> dict[str, Any]:
    """Run the child under callgrind and turn its dumps into instructions per call."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "cg")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--dump-before=os_getppid",
                f"--callgrind-out-file={prefix}",
                sys.executable,
                os.path.abspath(__file__),
                "--child",
            ],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        dumps = _totals(prefix)
    cases = _cases()
    if len(dumps) != 3 * len(cases):
        raise SystemExit(f"expected {3 * len(cases)} callgrind dumps, got {len(dumps)}")
    # per case three dumps: set-up and warm-up (since the previous marker), N calls, 2N calls
    per_call: dict[tuple[str, str, str], float] = {}
    for i, case in enumerate(cases):
        n_block, two_n_block = dumps[3 * i + 1], dumps[3 * i + 2]
        per_call[case] = (two_n_block - n_block) / N
    bare = {kind: per_call[("bare", kind, "-")] for kind in ("sync", "async")}
    rows = []
    for (name, kind, mode), instr in per_call.items():
        if name == "bare":
            continue
        rows.append(
            {
                "policy": name,
                "kind": kind,
                "mode": mode,
                "instructions": round(instr - bare[kind]),
            }
        )
    return {"bare": {k: round(v) for k, v in bare.items()}, "rows": rows}


def render(result: dict[str, Any]) -> str:
    lines = [
        "| policy | kind | " + " | ".join(f"telemetry {m}" for m in MODES) + " |",
        "|---|---|" + "---:|" * len(MODES),
    ]
    table: dict[tuple[str, str], dict[str, int]] = {}
    for r in result["rows"]:
        table.setdefault((r["policy"], r["kind"]), {})[r["mode"]] = r["instructions"]
    for (policy, kind), by_mode in table.items():
        cells = " | ".join(f"{by_mode.get(m, '-'):,}" for m in MODES)
        lines.append(f"| {policy} | {kind} | {cells} |")
    lines.append("")
    lines.append(
        f"(instructions per call over a bare call; bare call: {result['bare']['sync']:,} sync, "
        f"{result['bare']['async']:,} async)"
    )
    return "\n".join(lines)


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    key = lambda r: (r["policy"], r["kind"], r["mode"])  # noqa: E731
    old = {key(r): r["instructions"] for r in before["rows"]}
    lines = [
        "| policy | kind | mode | before | after | after/before |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in after["rows"]:
        b = old.get(key(r))
        ratio = f"{r['instructions'] / b:.2f}" if b else "-"
        lines.append(
            f"| {r['policy']} | {r['kind']} | {r['mode']} | "
            f"{'-' if b is None else f'{b:,}'} | {r['instructions']:,} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help="write the numbers to this file")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), default=None)
    args = ap.parse_args(argv)
    if args.child:
        _child()
        return 0
    if args.compare:
        with open(args.compare[0]) as a, open(args.compare[1]) as b:
            print(compare(json.load(a), json.load(b)))
        return 0
    result = measure()
    print(render(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
