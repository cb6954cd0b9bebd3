"""How long ``import resilient`` takes in a fresh interpreter (issue 17: under 40 ms).

Each run starts a new Python with ``-X importtime`` and reads the cumulative time of the
``resilient`` package from its report; the script prints the median of ``--runs`` runs
(default 10), next to the same for a few peers and for the first steps a service takes
(building a breaker, its first call). Wall-clock numbers: run it on a quiet machine.

Usage::

    python benchmarks/cold_start.py [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

SCENARIOS = {
    "import resilient": "import resilient",
    "import resilient; build a breaker": ("import resilient as rs; rs.CircuitBreaker('cold')"),
    "import resilient; build a breaker; first call (metrics on)": (
        "import resilient as rs\nb = rs.CircuitBreaker('cold')\nb.call(lambda: 1)"
    ),
    "import tenacity (peer)": "import tenacity",
    "import prometheus_client (dependency)": "import prometheus_client",
}


def _cumulative_ms(code: str) -> float:
    """The run's import time of everything ``code`` imports (the top-level entries of the
    ``-X importtime`` report, summed), plus the time of the rest of ``code``."""
    script = (
        "import time, sys\n"
        "t = time.perf_counter()\n"
        f"exec({code!r})\n"
        "print(f'WALL {(time.perf_counter() - t) * 1000:.3f}')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    for line in done.stdout.splitlines():
        if line.startswith("WALL "):
            return float(line.split()[1])
    raise RuntimeError(f"no timing in {done.stdout!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args(argv)
    print(f"| what (median of {args.runs} fresh interpreters) | ms |")
    print("|---|---:|")
    for label, code in SCENARIOS.items():
        times = [_cumulative_ms(code) for _ in range(args.runs)]
        print(f"| {label} | {statistics.median(times):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
