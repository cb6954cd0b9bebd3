"""Every single-file example runs on its own, quickly, and exits 0.

Examples are documentation that executes: if one breaks, a reader copying it breaks too.
Each runs in a fresh interpreter from a neutral working directory, as a user would run it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SINGLE_FILE = sorted(p for p in EXAMPLES.glob("*.py") if p.name not in {"__init__.py", "demo.py"})


def test_every_pattern_has_an_example() -> None:
    names = {p.stem for p in SINGLE_FILE}
    expected = {"breaker", "bulkhead", "retry", "timeout", "fallback", "pipeline", "saga"}
    assert expected | {"trio_example"} <= names


@pytest.mark.parametrize("example", SINGLE_FILE, ids=lambda p: p.name)
def test_example_runs(example: Path, tmp_path: Path) -> None:
    if example.stem == "trio_example":
        pytest.importorskip("trio")
    done = subprocess.run(
        [sys.executable, str(example)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{example.name} failed:\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), f"{example.name} printed nothing"
    assert "Traceback" not in done.stderr, done.stderr
