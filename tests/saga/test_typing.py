"""User code written against the saga decorators type-checks under ``mypy --strict``."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import typed_usage

from resilient.saga import SagaStatus

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_decorated_steps_and_compensations_type_check_strictly() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(HERE / "typed_usage.py")],
        cwd=ROOT,  # the project's mypy config and cache
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_typed_usage_module_runs() -> None:
    saga = typed_usage.build()
    assert saga.steps == ("reserve", "charge", "notify")
    assert saga.run_sync({}).status == SagaStatus.COMPLETED
    assert typed_usage.build_async().steps == ("reserve",)
