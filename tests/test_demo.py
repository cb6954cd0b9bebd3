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
    assert len(pids) == 3, done.stdout
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
