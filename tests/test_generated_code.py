"""The hot paths generated from ``src/resilient/_templates`` are current.

Each policy's per-call code is written once, in a template, and ``tools/gen_hotpaths.py``
writes its sync and async copies into the policy modules. Editing a generated region by hand,
or a template without regenerating, makes this test fail with the diff.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_hot_paths_match_their_templates() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_hotpaths.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_template_targets_a_region_that_exists() -> None:
    templates = sorted((ROOT / "src" / "resilient" / "_templates").glob("*.tmpl"))
    assert templates, "no templates found"
    for path in templates:
        marker = (
            f"# --- generated from src/resilient/_templates/{path.name} "
            "by tools/gen_hotpaths.py ---"
        )
        targets = [
            line.split()[2]
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.startswith("#@ target ")
        ]
        assert targets, f"{path.name} has no #@ target"
        for target in targets:
            assert marker in (ROOT / target).read_text(encoding="utf-8"), (path.name, target)
