"""``python -m resilient config``: effective configuration for operators, exit code 2 on errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import resilient as rs
from resilient import __main__ as cli
from resilient import _config_render


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in list(os.environ):
        if var.startswith("RESILIENT__"):
            monkeypatch.delenv(var)
    rs.registry.clear()
    yield
    rs.registry.clear()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _rows(out: str) -> dict[tuple[str, str], list[str]]:
    lines = out.strip().splitlines()
    assert lines[0].split() == ["NAME", "POLICY", "FIELD", "VALUE", "SOURCE"]
    return {(ln.split()[1], ln.split()[2]): ln.split()[3:] for ln in lines[1:]}


def test_table_shows_values_and_their_sources(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION", "15s")
    monkeypatch.setenv("RESILIENT__PAYMENTS__TIMEOUT__SECONDS", "250ms")
    rs.registry.breaker("payments", window_size=20)
    code, out, err = _run(capsys, "config", "payments")
    assert code == 0, err
    rows = _rows(out)
    assert rows[("breaker", "open_duration")] == ["15.0", "env"]
    assert rows[("breaker", "window_size")] == ["20", "code"]
    assert rows[("breaker", "failure_rate_threshold")] == ["0.5", "default"]
    assert rows[("timeout", "seconds")] == ["0.25", "env"]
    assert rows[("breaker", "record")] == ["builtins.Exception", "default"]
    assert {kind for kind, _ in rows} == {"breaker", "timeout"}  # the kinds configured
    lines = out.strip().splitlines()
    source_column = lines[0].index("SOURCE")
    assert all(ln[source_column - 2 : source_column] == "  " for ln in lines)  # aligned
    assert {ln[source_column:].split()[0] for ln in lines[1:]} <= {"env", "code", "default"}


def test_required_field_without_value_is_shown_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(capsys, "config", "search", "--kind", "timeout")
    assert code == 0
    assert _rows(out)[("timeout", "seconds")] == ["<required>", "missing"]


def test_json_output(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__RETRY__ON", "builtins.ConnectionError")
    monkeypatch.setenv("RESILIENT__PAYMENTS__RETRY__ENABLED", "false")
    code, out, _ = _run(capsys, "config", "payments", "--json")
    assert code == 0
    (policy,) = json.loads(out)["policies"]
    assert policy["name"] == "payments" and policy["kind"] == "retry"
    assert policy["enabled"] is False
    assert policy["fields"]["on"] == {
        "value": ["builtins.ConnectionError"],
        "source": "env",
        "variable": "RESILIENT__PAYMENTS__RETRY__ON",
    }
    assert policy["fields"]["attempts"]["value"] == 3
    assert policy["fields"]["clock"]["variable"] is None  # code-only: no variable


def test_no_name_lists_names_found_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__BREAKER__WINDOW_SIZE", "10")
    monkeypatch.setenv("RESILIENT__PAYMENTS__RETRY__ATTEMPTS", "2")
    monkeypatch.setenv("RESILIENT__ORDERS_API__TIMEOUT__SECONDS", "1s")
    code, out, _ = _run(capsys, "config")
    assert code == 0
    assert out.split() == [
        "NAME",
        "POLICIES",
        "ORDERS_API",
        "timeout",
        "PAYMENTS",
        "retry,",
        "breaker",
    ]
    code, out, _ = _run(capsys, "config", "--json")
    assert json.loads(out) == {
        "names": [
            {"name": "ORDERS_API", "policies": ["timeout"]},
            {"name": "PAYMENTS", "policies": ["retry", "breaker"]},
        ]
    }


def test_bad_configuration_exits_2_with_the_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION", "fast")
    code, out, err = _run(capsys, "config", "payments")
    assert code == 2
    assert out == ""
    assert "RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION='fast'" in err
    # the name listing checks every variable too
    code, _, err = _run(capsys, "config")
    assert code == 2 and "OPEN_DURATION='fast'" in err


def test_every_problem_is_reported_in_one_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RESILIENT__A__BREAKER__WINDOW_SIZE", "many")
    monkeypatch.setenv("RESILIENT__A__TIMEOUT__SECONDS", "-1")
    monkeypatch.setenv("RESILIENT__B__RETRY__ATEMPTS", "2")
    code, _, err = _run(capsys, "config", "a", "b")
    assert code == 2
    assert "WINDOW_SIZE='many'" in err
    assert "SECONDS='-1'" in err
    assert "did you mean RESILIENT__B__RETRY__ATTEMPTS" in err


def test_malformed_variable_and_constructor_rejection_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS", "x")
    code, _, err = _run(capsys, "config")
    assert code == 2 and "RESILIENT__PAYMENTS='x'" in err
    monkeypatch.delenv("RESILIENT__PAYMENTS")
    monkeypatch.setenv("RESILIENT__PAYMENTS__BREAKER__OPEN_JITTER", "3")
    code, _, err = _run(capsys, "config", "payments")
    assert code == 2 and "RESILIENT__PAYMENTS__BREAKER__OPEN_JITTER='3'" in err


def test_usage_errors_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["config", "svc", "--kind", "braker"]) == 2
    assert "did you mean 'breaker'" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0
    assert "config" in capsys.readouterr().out


def test_reference_flag_prints_the_generated_reference(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(capsys, "config", "--reference")
    assert code == 0 and out == _config_render.reference_markdown()


def test_import_shows_code_defaults_of_registered_policies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "svc_policies_mod.py").write_text(
        "import resilient as rs\n"
        "@rs.policy('checkout', 'bulkhead', bulkhead={'max_concurrent': 7})\n"
        "def checkout():\n    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = _run(capsys, "config", "checkout", "--import", "svc_policies_mod")
    assert code == 0, err
    assert _rows(out)[("bulkhead", "max_concurrent")] == ["7", "code"]
    assert _run(capsys, "config", "--import", "no_such_module_xyz")[0] == 2


def test_subcommand_plugins_register_and_missing_ones_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cli_plugin_mod.py").write_text(
        "def add_parser(subparsers):\n"
        "    parser = subparsers.add_parser('hello')\n"
        "    parser.add_argument('who')\n"
        "    parser.set_defaults(func=lambda args: print('hello', args.who) or 3)\n"
    )
    (tmp_path / "cli_plugin_run_mod.py").write_text(
        "def add_parser(subparsers):\n"
        "    return subparsers.add_parser('bye')\n"
        "def run(args):\n"
        "    print('bye')\n"
        "    return 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        cli, "PLUGINS", ["resilient._no_such_cli_module", "cli_plugin_mod", "cli_plugin_run_mod"]
    )
    assert cli.main(["hello", "ops"]) == 3
    assert capsys.readouterr().out == "hello ops\n"
    assert cli.main(["bye"]) == 0
    assert capsys.readouterr().out == "bye\n"
    assert cli.main(["config", "--reference"]) == 0


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESILIENT__")}
    env.update(extra)
    return env


def test_runs_as_a_module_in_a_subprocess() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "resilient", "config", "payments", "--json"],
        env=_subprocess_env(RESILIENT__PAYMENTS__BREAKER__WINDOW_SIZE="25"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    (policy,) = json.loads(ok.stdout)["policies"]
    assert policy["fields"]["window_size"] == {
        "value": 25,
        "source": "env",
        "variable": "RESILIENT__PAYMENTS__BREAKER__WINDOW_SIZE",
    }
    bad = subprocess.run(
        [sys.executable, "-m", "resilient", "config", "payments"],
        env=_subprocess_env(RESILIENT__PAYMENTS__BREAKER__WINDOW_SIZE="lots"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "RESILIENT__PAYMENTS__BREAKER__WINDOW_SIZE='lots'" in bad.stderr
