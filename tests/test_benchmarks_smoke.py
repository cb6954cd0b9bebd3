"""The benchmark scripts run end to end (tiny sizes, no timing assertions).

Benchmarks rot silently when nobody runs them: an API change breaks a script and the next
``make bench`` fails weeks later. Each script runs here in a subprocess with ``--quick``.
Peers come from the optional ``bench`` extra; when one is not installed its rows are skipped
(and so is its check below), but resilient's own rows must always be there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
PATTERNS = ("retry", "breaker", "timeout", "bulkhead", "fallback", "ratelimit")
PEERS = {
    # peer distribution -> patterns it must show up in (when installed)
    "tenacity": ("retry",),
    "stamina": ("retry",),
    "backoff": ("retry",),
    "pybreaker": ("breaker",),
    "circuitbreaker": ("breaker",),
    "aiobreaker": ("breaker",),
    "purgatory": ("breaker",),
    "pyresilience": ("retry", "breaker", "timeout", "bulkhead", "fallback", "ratelimit"),
    "limits": ("ratelimit",),
    "aiolimiter": ("ratelimit",),
    "pyrate-limiter": ("ratelimit",),
}


def _run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def compare_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    stdout = _run("compare.py", "--output", str(out))
    assert "| pattern | case | mode | contender |" in stdout
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


def test_compare_has_resilient_rows_for_every_pattern_and_mode(
    compare_results: dict[str, Any],
) -> None:
    seen = {
        (s["pattern"], s["mode"], r["label"])
        for s in compare_results["scenarios"]
        for r in s["rows"]
        if r["library"] == "resilient"
    }
    for pattern in PATTERNS:
        for mode in ("sync", "async"):
            labels = {label for p, m, label in seen if (p, m) == (pattern, mode)}
            assert len(labels) == 2, f"{pattern}/{mode}: resilient rows {labels}"
    assert all(r["ns_per_call"] > 0 for s in compare_results["scenarios"] for r in s["rows"])
    assert compare_results["meta"]["python"]


def test_compare_rows_carry_overhead_and_ratio(compare_results: dict[str, Any]) -> None:
    for s in compare_results["scenarios"]:
        bare = [r for r in s["rows"] if r["role"] == "bare"]
        assert len(bare) == 1, f"{s['pattern']}/{s['case']}: one bare baseline"
        ours = next(r for r in s["rows"] if r["role"] == "resilient")
        assert ours["ratio_to_resilient"] == 1.0
        for r in s["rows"]:
            assert r["overhead_ns"] == pytest.approx(
                r["ns_per_call"] - bare[0]["ns_per_call"], abs=0.2
            )


@pytest.mark.parametrize("peer", sorted(PEERS))
def test_compare_includes_installed_peer(compare_results: dict[str, Any], peer: str) -> None:
    if not _installed(peer):
        pytest.skip(f"{peer} not installed (pip install -e '.[bench]')")
    for pattern in PEERS[peer]:
        rows = [
            r
            for s in compare_results["scenarios"]
            if s["pattern"] == pattern
            for r in s["rows"]
            if r["library"] == peer
        ]
        assert rows, f"{peer} has no {pattern} rows"


def test_core_reports_every_policy_and_the_target() -> None:
    stdout = _run("core.py")
    for policy in (
        "CircuitBreaker",
        "Bulkhead",
        "Retry",
        "Timeout",
        "Fallback",
        "RateLimiter",
        "Retry(budget)",
        "AdaptiveBulkhead",
    ):
        assert f"| {policy} | sync |" in stdout
        assert f"| {policy} | async |" in stdout
    assert "Target (a) < 2 us per policy, sync:" in stdout


def test_core_reports_hedge_and_switched_off_chaos() -> None:
    stdout = _run("core.py", "--mode", "b")
    assert "| Hedge | async |" in stdout
    assert "| chaos Fault, off | sync |" in stdout


def test_hedge_tail_reports_every_configuration(tmp_path: Path) -> None:
    out = tmp_path / "tail.json"
    stdout = _run("hedge_tail.py", "--json", str(out))
    assert "| configuration | p50 | p95 | p99 |" in stdout
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    assert rows[0]["configuration"] == "no hedge" and rows[0]["extra_load"] == 0
    assert len(rows) >= 3 and all(r["p50_ms"] > 0 and r["calls"] == 500 for r in rows)


def test_scaling_reports_windows_threads_and_tasks(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    _run("scaling.py", "--json", str(out))
    data = json.loads(out.read_text(encoding="utf-8"))
    assert [r["window_s"] for r in data["time_window"]] == [10, 60]
    assert all(r["memory_held_bytes"] > 0 for r in data["time_window"])
    assert {r["threads"] for r in data["threads"]} == {1, 2}
    assert {r["tasks"] for r in data["tasks"]} == {10, 1000}


def test_profile_paths_reports_every_path() -> None:
    stdout = _run("profile_paths.py", "--top", "3")
    for path in ("retry-happy", "breaker-open", "bulkhead", "fallback-failure", "timeout-async"):
        assert f"== {path}:" in stdout
    assert "(total under the profiler)" in stdout


def test_fleet_reports_the_shared_breaker_beside_the_local_one(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    stdout = _run("fleet.py", "--json", str(out))
    assert "| mode | telemetry | bare call | local breaker | RedisState breaker |" in stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    rows = {(s["mode"], s["case"]): s["rows"] for s in data["scenarios"]}
    assert set(rows) == {
        (mode, case) for mode in ("sync", "async") for case in ("telemetry off", "default metrics")
    }
    if data["ping_round_trip"] is None:  # no Redis on this machine: the script says so
        assert "Shared rows and the PING round trip skipped" in stdout
        return
    assert data["ping_round_trip"]["median_us"] > 0
    assert "Redis PING round trip" in stdout
    for labels in rows.values():
        assert {r["label"] for r in labels} == {"bare call", "local breaker", "RedisState breaker"}


def test_tracing_reports_sampled_and_unsampled_costs(tmp_path: Path) -> None:
    out = tmp_path / "tracing.json"
    stdout = _run("tracing.py", "--json", str(out))
    assert "| policy (sync) |" in stdout and "| policy (async) |" in stdout
    data = json.loads(out.read_text(encoding="utf-8"))["ns_per_call"]
    for kind in ("sync", "async"):
        for policy in ("CircuitBreaker", "Bulkhead", "Retry", "Fallback", "Timeout"):
            row = data[kind][policy]
            assert set(row) == {"metrics only", "unsampled request", "root, 1% sampler", "sampled"}
            assert all(ns > 0 for ns in row.values())


def test_async_timeout_reports_both_backends(tmp_path: Path) -> None:
    out = tmp_path / "async_timeout.json"
    stdout = _run("async_timeout.py", "--json", str(out))
    assert "asyncio: ns per call" in stdout and "trio: ns per call" in stdout
    data = json.loads(out.read_text(encoding="utf-8"))["ns_per_call"]
    for backend in ("asyncio", "trio"):
        rows = data[backend]
        expected = {"bare call", "rs.Timeout(10), defaults", "rs.Timeout(10), telemetry off"}
        assert expected <= set(rows)
        assert all(ns > 0 for ns in rows.values())
