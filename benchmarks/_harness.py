"""Shared timing machinery for the benchmark scripts.

Why a harness of our own rather than ``timeit`` or pyperf: we compare many libraries doing the
same work in ONE process, and on a small shared machine the speed of the CPU drifts (other
processes, frequency scaling) over the seconds a comparison takes. So contenders are timed in
short blocks, round-robin, several rounds, and each one's median block is kept: drift then
hits every contender alike instead of whichever happened to run last.

Every contender is also *checked* before it is timed: the protected function counts its calls
and the harness asserts the count and the returned value, so a library configured to do less
work (no retry, no real breaker) fails loudly instead of winning quietly.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from itertools import repeat
from typing import Any

__all__ = [
    "Contender",
    "Counter",
    "Measured",
    "Runner",
    "Scenario",
    "ScenarioResult",
    "environment",
    "format_ns",
    "installed",
    "render_table",
    "result_to_json",
    "write_json",
]

#: Roles of a row: ``bare`` is the hand-written minimum, ``resilient`` our library, ``peer``
#: another resilience library, ``reference`` a standard-library building block for scale.
ROLES = ("bare", "resilient", "peer", "reference")


class Counter:
    """How many times the protected function ran (checked against what the scenario expects)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


@dataclass
class Contender:
    """One row: a zero-argument callable (sync or ``async def``) doing one or more calls.

    ``ops`` is how many protected calls one invocation makes (1000 for "1,000 tasks"), so the
    reported figure is always per protected call. ``prepare`` runs before every timed block
    (it switches global telemetry settings, which other rows change between blocks).
    """

    label: str
    library: str
    role: str
    call: Callable[[], Any]
    is_async: bool = False
    ops: int = 1
    prepare: Callable[[], None] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")


@dataclass
class Scenario:
    """One thing to measure (a pattern, a case, sync or async) and its contenders.

    ``expect_calls`` is the number of protected-function calls per op (2 for "one failure
    then success", 0 for an open breaker) and ``expect_result`` what every invocation returns.
    """

    pattern: str
    case: str
    mode: str
    counter: Counter
    expect_calls: int
    expect_result: Any
    contenders: list[Contender]
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.pattern} | {self.case} | {self.mode}"


@dataclass
class Measured:
    """The timing of one contender in one scenario (nanoseconds per protected call)."""

    label: str
    library: str
    role: str
    ns: float
    best: float
    samples: list[float]
    n: int
    note: str = ""
    overhead: float = 0.0
    ratio: float | None = None
    overhead_ratio: float | None = None


@dataclass
class ScenarioResult:
    """All rows of one scenario, with overhead and ratios filled in."""

    scenario: Scenario
    rows: list[Measured] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def row(self, label: str) -> Measured | None:
        for r in self.rows:
            if r.label == label:
                return r
        return None


def installed(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None (optional peers are skipped)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


async def _atimed(fn: Callable[[], Awaitable[Any]], n: int) -> int:
    start = time.perf_counter_ns()
    for _ in repeat(None, n):
        await fn()
    return time.perf_counter_ns() - start


def _timed(fn: Callable[[], Any], n: int) -> int:
    start = time.perf_counter_ns()
    for _ in repeat(None, n):
        fn()
    return time.perf_counter_ns() - start


class Runner:
    """Times contenders in interleaved rounds on one event loop.

    ``block_s`` is the target duration of one timed block and ``rounds`` how many blocks each
    contender gets; the median block is the result. The garbage collector is collected before
    and disabled during each block (as ``timeit`` does) so one contender's garbage is not
    billed to the next one.
    """

    def __init__(self, *, block_s: float = 0.05, rounds: int = 7, warmup: int = 50) -> None:
        if block_s <= 0:
            raise ValueError(f"block_s must be > 0, got {block_s!r}")
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds!r}")
        self.block_s = block_s
        self.rounds = rounds
        self.warmup = warmup
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

    def close(self) -> None:
        """Close the event loop the async contenders ran on."""
        self.loop.close()

    # -- one invocation / one block -------------------------------------------------------
    def invoke(self, c: Contender) -> Any:
        """Run one invocation of ``c`` and return what it returned."""
        if c.is_async:
            return self.loop.run_until_complete(c.call())
        return c.call()

    def block(self, c: Contender, n: int) -> float:
        """Time ``n`` invocations of ``c``; nanoseconds per protected call."""
        if c.prepare is not None:
            c.prepare()
        for _ in range(min(self.warmup, n)):
            self.invoke(c)
        gc.collect()
        gc.disable()
        try:
            if c.is_async:
                elapsed = self.loop.run_until_complete(_atimed(c.call, n))
            else:
                elapsed = _timed(c.call, n)
        finally:
            gc.enable()
        return elapsed / (n * c.ops)

    # -- checking ----------------------------------------------------------------------------
    def check(self, s: Scenario, c: Contender, times: int = 3) -> None:
        """Fail unless ``c`` makes the expected number of protected calls and returns the
        expected value: a contender that does less work must not win."""
        if c.prepare is not None:
            c.prepare()
        for _ in range(times):
            before = s.counter.n
            got = self.invoke(c)
            made = s.counter.n - before
            if got != s.expect_result:
                raise AssertionError(
                    f"{s.key} / {c.label}: returned {got!r}, expected {s.expect_result!r}"
                )
            if made != s.expect_calls * c.ops:
                raise AssertionError(
                    f"{s.key} / {c.label}: made {made} protected calls per invocation, "
                    f"expected {s.expect_calls * c.ops}"
                )

    def calibrate(self, c: Contender) -> int:
        """How many invocations fill one block of ``block_s`` seconds."""
        n = 1
        while True:
            if c.prepare is not None:
                c.prepare()
            start = time.perf_counter()
            if c.is_async:
                self.loop.run_until_complete(_atimed(c.call, n))
            else:
                _timed(c.call, n)
            took = time.perf_counter() - start
            if took >= self.block_s / 5 or n >= 1 << 24:
                return max(1, int(n * self.block_s / max(took, 1e-9)))
            n *= 4

    # -- a whole scenario -------------------------------------------------------------------
    def run(self, s: Scenario, *, progress: Callable[[str], None] | None = None) -> ScenarioResult:
        """Check, calibrate and time every contender of ``s`` in interleaved rounds."""
        result = ScenarioResult(s)
        live: list[tuple[Contender, int]] = []
        for c in s.contenders:
            self.check(s, c)
            live.append((c, self.calibrate(c)))
        samples: dict[str, list[float]] = {c.label: [] for c, _ in live}
        for r in range(self.rounds):
            k = r % len(live)
            for c, n in live[k:] + live[:k]:  # rotate who goes first, round by round
                samples[c.label].append(self.block(c, n))
        for c, n in live:
            xs = samples[c.label]
            result.rows.append(
                Measured(
                    label=c.label,
                    library=c.library,
                    role=c.role,
                    ns=statistics.median(xs),
                    best=min(xs),
                    samples=xs,
                    n=n,
                    note=c.note,
                )
            )
        _fill_ratios(result)
        if progress is not None:
            progress(s.key)
        return result


def _fill_ratios(result: ScenarioResult) -> None:
    bare = next((r for r in result.rows if r.role == "bare"), None)
    ours = next((r for r in result.rows if r.role == "resilient"), None)
    for r in result.rows:
        r.overhead = r.ns - bare.ns if bare is not None else r.ns
    if ours is None:
        return
    for r in result.rows:
        if r.role == "bare":
            continue
        r.ratio = r.ns / ours.ns if ours.ns > 0 else None
        r.overhead_ratio = r.overhead / ours.overhead if ours.overhead > 0 else None


# -- reporting ---------------------------------------------------------------------------------
def format_ns(ns: float) -> str:
    """Nanoseconds, human-sized: ``850 ns``, ``1.42 us``, ``3.10 ms``."""
    if ns >= 1_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    if ns >= 10_000:
        return f"{ns / 1000:.1f} us"
    if ns >= 1000:
        return f"{ns / 1000:.2f} us"
    return f"{ns:.0f} ns"


def _ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def render_table(results: Iterable[ScenarioResult]) -> str:
    """A plain-text (Markdown-compatible) table of every scenario's rows."""
    lines = [
        "| pattern | case | mode | contender | ns/call | overhead | x resilient "
        "| x resilient overhead |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for res in results:
        s = res.scenario
        for r in res.rows:
            label = r.label if r.role != "reference" else f"{r.label} (ref)"
            lines.append(
                f"| {s.pattern} | {s.case} | {s.mode} | {label} | {format_ns(r.ns)} | "
                f"{format_ns(r.overhead) if r.role != 'bare' else '-'} | {_ratio(r.ratio)} | "
                f"{_ratio(r.overhead_ratio)} |"
            )
        for why in res.skipped:
            lines.append(f"| {s.pattern} | {s.case} | {s.mode} | ({why}) | | | | |")
    return "\n".join(lines)


def environment(extra_dists: Sequence[str] = ()) -> dict[str, Any]:
    """What the numbers were measured on: interpreter, machine, load, library versions."""
    try:
        load = list(os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux
        load = []
    versions = {d: installed(d) for d in ("resilient-patterns", *extra_dists)}
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": load,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions,
    }


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (a half-written results file is worse than none)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, path)


def result_to_json(res: ScenarioResult) -> dict[str, Any]:
    """One scenario as plain data for ``results.json``."""
    s = res.scenario
    return {
        "pattern": s.pattern,
        "case": s.case,
        "mode": s.mode,
        "note": s.note,
        "rows": [
            {
                "label": r.label,
                "library": r.library,
                "role": r.role,
                "ns_per_call": round(r.ns, 1),
                "best_ns_per_call": round(r.best, 1),
                "overhead_ns": round(r.overhead, 1),
                "ratio_to_resilient": None if r.ratio is None else round(r.ratio, 3),
                "overhead_ratio_to_resilient": (
                    None if r.overhead_ratio is None else round(r.overhead_ratio, 3)
                ),
                "invocations_per_block": r.n,
                "samples_ns": [round(x, 1) for x in r.samples],
                "note": r.note,
            }
            for r in res.rows
        ],
        "skipped": res.skipped,
    }
