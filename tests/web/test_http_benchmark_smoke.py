"""benchmarks/http_transport.py runs end to end (tiny blocks, no timing assertions): a script
nobody runs rots silently. Its checks (each contender reaches the server once per request)
still apply.

(The script is not called ``http.py``: in the benchmarks directory, first on ``sys.path`` for
every script there, that name would hide the standard library's ``http`` package.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "http_transport.py"


def test_http_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "http.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "in-memory overhead % of plain request" in proc.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    cases = {(r["case"], r["mode"]) for r in data["results"]}
    assert cases == {
        ("GET 200", "sync"),
        ("GET 200", "async"),
        ("in memory", "sync"),
        ("in memory", "async"),
    }
    labels = {row["label"] for r in data["results"] for row in r["rows"]}
    assert {"transport + CircuitBreaker", "transport + presets.http"} <= labels
