"""``rs.registry.health()`` and ``python -m resilient health``: a JSON-ready snapshot of every
named policy, and an exit code a probe can use."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import resilient as rs
from resilient.__main__ import main
from resilient.testing import FakeClock

SRC = Path(__file__).resolve().parents[1] / "src"


def _registry_with_everything(clock: FakeClock) -> rs.Registry:
    registry = rs.Registry()
    breaker = registry.breaker("payments", window_size=4, minimum_calls=4, clock=clock)
    for outcome in (True, False, True, True):
        with contextlib.suppress(ConnectionError):
            breaker.call(lambda ok=outcome: None if ok else _fail())
    registry.bulkhead("payments", max_concurrent=5, max_queued=2)
    registry.adaptive_bulkhead("search", initial=7, algorithm="aimd")
    limiter = registry.rate_limiter("search", rate=4.0, burst=2, clock=clock)
    limiter.call(lambda: None)
    budget = registry.retry_budget("payments", ratio=0.5, min_per_second=0.0, clock=clock)
    registry.retry("payments", budget=budget, attempts=4)
    registry.timeout("payments", seconds=2.0)
    registry.fallback("payments", value=None)
    return registry


def _fail() -> None:
    raise ConnectionError("down")


def test_health_reports_every_kind_with_its_documented_keys() -> None:
    clock = FakeClock()
    registry = _registry_with_everything(clock)
    snapshot = registry.health()
    assert json.loads(json.dumps(snapshot)) == snapshot  # JSON-ready, nothing lost
    assert snapshot["status"] == "ok" and snapshot["open_breakers"] == []
    assert abs(snapshot["time"] - time.time()) < 60
    payments, search = snapshot["policies"]["payments"], snapshot["policies"]["search"]
    assert set(payments) == {"breaker", "bulkhead", "retry", "retry_budget", "timeout", "fallback"}
    assert set(search) == {"adaptive_bulkhead", "rate_limiter"}
    assert payments["breaker"] == {
        "state": "closed",
        "calls": 4,
        "failures": 1,
        "slow_calls": 0,
        "failure_rate": 0.25,
        "slow_call_rate": 0.0,
        "retry_after": None,
        "last_transition": None,
    }
    assert payments["bulkhead"] == {"in_flight": 0, "queued": 0, "limit": 5, "max_queued": 2}
    assert search["adaptive_bulkhead"] == {
        "in_flight": 0,
        "queued": 0,
        "limit": 7,
        "min_limit": 1,
        "max_limit": 200,
        "max_queued": 0,
        "algorithm": "aimd",
    }
    assert search["rate_limiter"] == {
        "tokens": 1.0,
        "burst": 2,
        "rate": 4.0,
        "per": 1.0,
        "max_wait": 0.0,
        "queued": 0,
    }
    assert payments["retry_budget"] == {
        "balance": 0.0,
        "deposits": 0.0,
        "retries": 0,
        "refused": 0,
        "ratio": 0.5,
        "min_per_second": 0.0,
        "window": 10.0,
    }
    assert payments["retry"] == {"attempts": 4, "max_delay": None, "budget": "payments"}
    assert payments["timeout"] == {"seconds": 2.0}
    assert payments["fallback"] == {}


def test_an_open_breaker_degrades_the_status_and_dates_its_transition() -> None:
    clock = FakeClock(100.0)
    registry = _registry_with_everything(clock)
    breaker = registry.breaker("payments")
    breaker.force_open()
    clock.advance(30.0)
    before = time.time()
    snapshot = registry.health()
    assert snapshot["status"] == "degraded" and snapshot["open_breakers"] == ["payments"]
    entry = snapshot["policies"]["payments"]["breaker"]
    assert entry["state"] == "forced_open"
    # forced open 30 s ago on the breaker's clock: dated 30 s before now on the wall clock
    assert before - 31 <= entry["last_transition"] <= time.time() - 29
    breaker.reset()
    assert registry.health()["status"] == "ok"


def test_health_applies_due_transitions_and_shows_the_wait() -> None:
    clock = FakeClock()
    registry = rs.Registry()
    breaker = registry.breaker("db", window_size=2, minimum_calls=2, open_duration=10, clock=clock)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(_fail)
    entry = registry.health()["policies"]["db"]["breaker"]
    assert entry["state"] == "open" and entry["retry_after"] == pytest.approx(10.0)
    clock.advance(10.0)
    snapshot = registry.health()
    assert snapshot["policies"]["db"]["breaker"]["state"] == "half_open"
    assert snapshot["status"] == "ok"  # trial calls get through: not an open breaker


def test_the_budget_balance_counts_first_attempts() -> None:
    clock = FakeClock()
    registry = rs.Registry()
    budget = registry.retry_budget("api", ratio=0.5, min_per_second=0.0, clock=clock)
    retry = rs.Retry(budget=budget)
    for _ in range(6):
        retry.call(lambda: None)
    entry = registry.health()["policies"]["api"]["retry_budget"]
    assert (entry["balance"], entry["deposits"]) == (3.0, 6.0)


# -- the command ----------------------------------------------------------------------------------
def _write_app(tmp_path: Path, body: str) -> None:
    (tmp_path / "myservice.py").write_text(textwrap.dedent(body), encoding="utf-8")


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resilient", "health", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=60,
    )


def test_cli_prints_the_snapshot_and_exits_1_while_a_breaker_is_open(tmp_path: Path) -> None:
    _write_app(
        tmp_path,
        """
        import resilient as rs

        payments = rs.registry.breaker("payments")
        search = rs.registry.rate_limiter("search", rate=10)
        app = object()  # what a server would import
        payments.force_open()
        """,
    )
    done = _run(tmp_path, "--app", "myservice:app")
    assert done.returncode == 1, done.stderr
    snapshot = json.loads(done.stdout)
    assert snapshot["open_breakers"] == ["payments"]
    assert snapshot["policies"]["search"]["rate_limiter"]["tokens"] == 10.0


def test_cli_exits_0_when_healthy_and_reports_a_registry_attr(tmp_path: Path) -> None:
    _write_app(
        tmp_path,
        """
        import resilient as rs

        rs.registry.breaker("ignored").force_open()  # the default registry is not asked
        mine = rs.Registry()
        mine.bulkhead("db", max_concurrent=3)
        """,
    )
    done = _run(tmp_path, "--app", "myservice:mine", "--compact")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1
    snapshot = json.loads(done.stdout)
    assert list(snapshot["policies"]) == ["db"]


@pytest.mark.parametrize(
    ("spec", "words"),
    [("nosuchmodule:app", "nosuchmodule"), ("myservice:missing", "missing"), (":app", "MODULE")],
)
def test_cli_exits_2_when_the_app_cannot_be_loaded(tmp_path: Path, spec: str, words: str) -> None:
    _write_app(tmp_path, "app = 1\n")
    done = _run(tmp_path, "--app", spec)
    assert done.returncode == 2
    assert words in done.stderr and done.stdout == ""


def test_cli_runs_in_process_on_the_default_registry(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rs.registry.clear()
    try:
        rs.registry.timeout("cli-check", seconds=1.0)
        assert main(["health"]) == 0
        out: dict[str, Any] = json.loads(capsys.readouterr().out)
        assert out["policies"] == {"cli-check": {"timeout": {"seconds": 1.0}}}
    finally:
        rs.registry.clear()
