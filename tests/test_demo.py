"""``examples/demo.py`` (``make demo``) as a test: a short run must work without a terminal,
write its report and leave no process behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("httpx", reason="needs the examples extra: pip install -e '.[examples]'")
pytest.importorskip("rich", reason="needs the examples extra: pip install -e '.[examples]'")
pytest.importorskip("starlette", reason="needs the examples extra: pip install -e '.[examples]'")
pytest.importorskip("uvicorn", reason="needs the examples extra: pip install -e '.[examples]'")

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def _running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_demo_quick_run_writes_report_and_stops_every_service(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, str(DEMO), "--quick", "--orders", "40", "--report", str(report)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "TERM": "dumb", "COLUMNS": "100"},
    )
    assert done.returncode == 0, f"demo failed:\n{done.stdout}\n{done.stderr}"

    pids = [int(p) for p in re.findall(r"pid=(\d+)", done.stdout)]
    assert len(pids) == 4, done.stdout  # orders, payments, two notifications replicas
    deadline = time.monotonic() + 5
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _running(p)], "the demo left service processes behind"

    html = report.read_text(encoding="utf-8")
    assert "<svg" in html and "</html>" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "must be self-contained"
    embedded = re.search(r'<script type="application/json" id="demo-data">(.*?)</script>', html)
    assert embedded is not None
    data = json.loads(embedded.group(1))
    assert sorted(data["pids"]) == sorted(pids)
    assert data["orders"] >= 40
    assert data["outcomes"].get("completed", 0) > 0
    assert "payments" in data["breakers_opened"]
    assert data["breakers_at_end"].get("payments") == "closed"
    assert data["money_checked"] > 0 and data["money_mismatches"] == []
    assert "demo summary" in done.stdout

    # the hedge comparison and the Retry-After counts are in the report
    assert "Hedging a slow replica" in html and "429 / 503 with Retry-After" in html
    hedge = data["hedge"]
    assert set(hedge) == {"slow replica, no hedge", "slow replica, hedged"}
    for phase in hedge.values():
        assert phase["orders"] > 0 and phase["p95_ms"] >= phase["p50_ms"] > 0, hedge
    retry_after = data["retry_after"]
    assert set(retry_after) == {
        "payments_shed_503",
        "payments_throttled_429",
        "orders_honoured_503",
        "orders_honoured_429",
    }
    # every retry that honoured a Retry-After answered one that payments sent
    assert retry_after["orders_honoured_503"] <= retry_after["payments_shed_503"]
    assert retry_after["orders_honoured_429"] <= retry_after["payments_throttled_429"]
