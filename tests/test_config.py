"""Configuration from the environment: ``RESILIENT__<NAME>__<POLICY>__<FIELD>``.

What a user relies on: every field can be set from the environment and is the value the built
policy uses; env beats code beats library defaults; every mistake (bad value, typo, code-only
field, a value the constructor refuses) is a ConfigError naming the variable at creation time.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resilient as rs
from resilient import _config_render, config
from resilient._config_parse import parse_bool, parse_duration, parse_exceptions

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

# The code defaults a policy cannot be built without.
REQUIRED_CODE: dict[str, dict[str, Any]] = {
    "timeout": {"seconds": 1.0},
    "bulkhead": {"max_concurrent": 4},
    "fallback": {"value": None},
    "rate_limiter": {"rate": 10.0},
    "chaos_fault": {"rate": 0.1, "error": ConnectionError},
    "chaos_latency": {"rate": 0.1, "seconds": 0.5},
    "chaos_result": {"rate": 0.1, "value": None},
}


class Boom(Exception):
    """An application exception, importable as ``tests.test_config.Boom``-like path below."""


def _is_time_window(p: Any) -> bool:
    return type(p._core.window).__name__ == "TimeWindow"


def _catches(predicate: Callable[[BaseException], bool]) -> tuple[bool, bool]:
    return predicate(ConnectionError()), predicate(KeyError())


# (kind, field) -> (text set in the environment, value expected, how to read it from the policy).
# Public attributes where the policy exposes one; CircuitBreaker keeps its settings on its core
# and Retry/Fallback keep ``on`` as private types (see the report).
ROUND_TRIP: dict[tuple[str, str], tuple[str, Any, Callable[[Any], Any]]] = {
    ("breaker", "failure_rate_threshold"): ("0.25", 0.25, lambda p: p._core.failure_rate_threshold),
    ("breaker", "slow_call_duration"): ("1.5s", 1.5, lambda p: p._core.slow_call_duration),
    ("breaker", "slow_call_rate_threshold"): (
        "0.75",
        0.75,
        lambda p: p._core.slow_call_rate_threshold,
    ),
    ("breaker", "window_type"): ("TIME", True, _is_time_window),
    ("breaker", "window_size"): ("20", 20, lambda p: p._core.window.size),
    ("breaker", "minimum_calls"): ("7", 7, lambda p: p._core.minimum_calls),
    ("breaker", "open_duration"): ("15s", 15.0, lambda p: p._core.open_duration(1)),
    ("breaker", "open_jitter"): ("0.1", 0.1, lambda p: p._core.open_jitter),
    ("breaker", "half_open_max_calls"): ("3", 3, lambda p: p._core.half_open_max_calls),
    ("breaker", "half_open_max_wait"): ("250ms", 0.25, lambda p: p._core.half_open_max_wait),
    ("breaker", "record"): (
        "builtins.ConnectionError", (True, False), lambda p: _catches(p._records)
    ),
    ("breaker", "ignore"): ("ConnectionError", (True, False), lambda p: _catches(p._ignores)),
    ("retry", "attempts"): ("5", 5, lambda p: p.max_attempts),
    ("retry", "wait"): ("200ms", 0.2, lambda p: p.wait(None)),  # a fixed wait ignores the state
    ("retry", "on"): (
        "builtins.ConnectionError,builtins.TimeoutError",
        (ConnectionError, TimeoutError),
        lambda p: p._on_types,
    ),
    ("retry", "max_delay"): ("1m", 60.0, lambda p: p.max_delay),
    ("timeout", "seconds"): ("1.5m", 90.0, lambda p: p.seconds),
    ("timeout", "mode"): ("Deadline", "deadline", lambda p: p.mode),
    ("bulkhead", "max_concurrent"): ("12", 12, lambda p: p.max_concurrent),
    ("bulkhead", "max_queued"): ("5", 5, lambda p: p.max_queued),
    ("bulkhead", "queue_timeout"): ("2s", 2.0, lambda p: p.queue_timeout),
    ("fallback", "value"): ('{"status": "degraded"}', {"status": "degraded"}, lambda p: p.value),
    ("fallback", "on"): ("builtins.KeyError", (KeyError,), lambda p: p._on_types),
    ("rate_limiter", "rate"): ("250", 250.0, lambda p: p.rate),
    ("rate_limiter", "per"): ("1m", 60.0, lambda p: p.per),
    ("rate_limiter", "burst"): ("7", 7, lambda p: p.burst),
    ("rate_limiter", "max_wait"): ("150ms", 0.15, lambda p: p.max_wait),
    ("adaptive_bulkhead", "initial"): ("30", 30, lambda p: p.limit),
    ("adaptive_bulkhead", "min_limit"): ("5", 5, lambda p: p.min_limit),
    ("adaptive_bulkhead", "max_limit"): ("50", 50, lambda p: p.max_limit),
    ("adaptive_bulkhead", "algorithm"): ("aimd", "aimd", lambda p: p.algorithm),
    ("adaptive_bulkhead", "max_queued"): ("9", 9, lambda p: p.max_queued),
    ("adaptive_bulkhead", "queue_timeout"): ("3s", 3.0, lambda p: p.queue_timeout),
    ("retry_budget", "ratio"): ("0.5", 0.5, lambda p: p.ratio),
    ("retry_budget", "min_per_second"): ("2", 2.0, lambda p: p.min_per_second),
    ("retry_budget", "window"): ("30s", 30.0, lambda p: p.window),
    ("hedge", "delay"): ("p99.5", "p99.5", lambda p: p.delay),
    ("hedge", "max_hedged"): ("2", 2, lambda p: p.max_hedged),
    ("hedge", "on"): ("builtins.KeyError", (KeyError,), lambda p: p._on_types),
    ("chaos_fault", "rate"): ("0.25", 0.25, lambda p: p.rate),
    ("chaos_fault", "error"): ("builtins.KeyError", KeyError, lambda p: p.error),
    ("chaos_fault", "seed"): ("42", 42, lambda p: p.seed),
    ("chaos_fault", "enabled"): ("false", False, lambda p: p.enabled),
    ("chaos_latency", "rate"): ("1", 1.0, lambda p: p.rate),
    ("chaos_latency", "seconds"): ("250ms", 0.25, lambda p: p.seconds),
    ("chaos_latency", "seed"): ("0x10", 16, lambda p: p.seed),
    ("chaos_latency", "enabled"): ("yes", True, lambda p: p.enabled),
    ("chaos_result", "rate"): ("0", 0.0, lambda p: p.rate),
    ("chaos_result", "value"): ('{"items": []}', {"items": []}, lambda p: p.value),
    ("chaos_result", "seed"): ("7", 7, lambda p: p.seed),
    ("chaos_result", "enabled"): ("true", True, lambda p: p.enabled),
}  # fmt: skip


def _all_specs() -> list[config.FieldSpec]:
    return [s for cls in config.policy_classes().values() for s in config.field_specs(cls)]


def _settable_constructor_fields() -> set[tuple[str, str]]:
    return {(s.kind, s.name) for s in _all_specs() if s.settable and s.in_constructor}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in list(os.environ):
        if var.startswith("RESILIENT__"):
            monkeypatch.delenv(var)


# -- coverage of the field list -----------------------------------------------------------------
def test_every_policy_kind_is_configurable() -> None:
    assert list(config.policy_classes()) == [
        "fallback",
        "retry",
        "hedge",
        "breaker",
        "rate_limiter",
        "timeout",
        "bulkhead",
        "adaptive_bulkhead",
        "chaos_latency",
        "chaos_fault",
        "chaos_result",
        "retry_budget",  # configurable, but no pipeline member
    ]


def test_every_keyword_parameter_is_parseable_or_code_only() -> None:
    for kind, cls in config.policy_classes().items():
        specs = {s.name: s for s in config.field_specs(cls)}
        for param in inspect.signature(cls).parameters.values():
            if param.name == "name" or param.kind is inspect.Parameter.VAR_KEYWORD:
                continue
            spec = specs[param.name]
            assert spec.settable or spec.format == "code-only", (
                f"{kind}.{param.name} is neither parseable from text nor declared code-only "
                f"({spec.format}): declare its option (resilient/_validate.py) in the policy"
            )
            assert spec.format != "unclassified"


def test_round_trip_table_covers_every_settable_field() -> None:
    assert set(ROUND_TRIP) == _settable_constructor_fields()


@pytest.mark.parametrize("key", sorted(ROUND_TRIP), ids=lambda k: f"{k[0]}.{k[1]}")
def test_every_field_round_trips_from_the_environment(
    key: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kind, field = key
    text, expected, read = ROUND_TRIP[key]
    var = f"RESILIENT__ORDERS_API__{kind.upper()}__{field.upper()}"
    monkeypatch.setenv(var, text)
    cls = config.policy_class(kind)
    policy = cls.from_env("orders-api", **REQUIRED_CODE.get(kind, {}))
    assert isinstance(policy, cls)
    assert policy.name == "orders-api"
    assert read(policy) == expected
    sources = {
        fv.name: fv.source
        for fv in config.resolve(cls, "orders-api", REQUIRED_CODE.get(kind)).fields
    }
    assert sources[field] == "env"


# -- precedence ---------------------------------------------------------------------------------
def test_env_beats_code_beats_library_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION", "15s")
    breaker = rs.CircuitBreaker.from_env(
        "payments", open_duration=99.0, window_size=20, minimum_calls=5
    )
    assert breaker._core.open_duration(1) == 15.0  # env
    assert breaker._core.window.size == 20  # code
    assert breaker._core.failure_rate_threshold == 0.5  # library
    resolved = config.resolve(
        rs.CircuitBreaker, "payments", {"open_duration": 99.0, "window_size": 20}
    )
    sources = {fv.name: fv.source for fv in resolved.fields}
    assert sources["open_duration"] == "env"
    assert sources["window_size"] == "code"
    assert sources["failure_rate_threshold"] == "default"


def test_env_configured_breaker_actually_opens_as_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESILIENT__INVENTORY__BREAKER__WINDOW_SIZE", "2")
    monkeypatch.setenv("RESILIENT__INVENTORY__BREAKER__MINIMUM_CALLS", "2")
    monkeypatch.setenv("RESILIENT__INVENTORY__BREAKER__FAILURE_RATE_THRESHOLD", "1")
    breaker = rs.CircuitBreaker.from_env("inventory")

    @breaker
    def flaky() -> None:
        raise ConnectionError("down")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            flaky()
    with pytest.raises(rs.CircuitOpenError):
        flaky()


def test_names_are_upper_cased_with_non_alphanumerics_as_underscores() -> None:
    assert config.env_key("payments") == "PAYMENTS"
    assert config.env_key("orders-api.v2") == "ORDERS_API_V2"
    assert config.env_key("a  b") == "A_B"
    assert config.variable_name("my svc", "breaker", "open_duration") == (
        "RESILIENT__MY_SVC__BREAKER__OPEN_DURATION"
    )
    with pytest.raises(rs.ConfigError, match="letters or digits"):
        config.env_key("--")


def test_none_word_clears_an_optional_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__P__BREAKER__SLOW_CALL_DURATION", "none")
    monkeypatch.setenv("RESILIENT__P__RETRY__MAX_DELAY", "NULL")
    breaker = rs.CircuitBreaker.from_env("p", slow_call_duration=5.0)
    retry = rs.Retry.from_env("p", max_delay=3.0)
    assert breaker._core.slow_call_duration is None
    assert retry.max_delay is None


def test_required_field_comes_from_code_or_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(rs.ConfigError, match="RESILIENT__SEARCH__TIMEOUT__SECONDS"):
        rs.Timeout.from_env("search")
    assert rs.Timeout.from_env("search", seconds=2).seconds == 2
    monkeypatch.setenv("RESILIENT__SEARCH__TIMEOUT__SECONDS", "750ms")
    assert rs.Timeout.from_env("search").seconds == 0.75


# -- errors -------------------------------------------------------------------------------------
def test_bad_value_names_variable_value_and_expectation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION", "fast")
    with pytest.raises(rs.ConfigError) as info:
        rs.CircuitBreaker.from_env("payments")
    message = str(info.value)
    assert "RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION" in message
    assert "'fast'" in message
    assert "duration" in message
    assert info.value.variable == "RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION"  # type: ignore[attr-defined]
    assert info.value.value == "fast"  # type: ignore[attr-defined]


def test_typo_in_field_is_an_error_with_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__BREAKER__OPEN_DURATON", "15s")
    with pytest.raises(
        rs.ConfigError, match="did you mean RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION"
    ):
        rs.CircuitBreaker.from_env("payments")


def test_typo_in_policy_is_an_error_for_any_policy_of_that_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__BREKER__WINDOW_SIZE", "10")
    # The retry of the same name is created first: the typo is still reported then.
    with pytest.raises(
        rs.ConfigError, match="did you mean RESILIENT__PAYMENTS__BREAKER__WINDOW_SIZE"
    ):
        rs.Retry.from_env("payments")
    rs.Retry.from_env("shipping")  # another name is not affected


def test_malformed_variable_under_a_name_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__BREAKER", "on")
    with pytest.raises(rs.ConfigError, match="RESILIENT__PAYMENTS__BREAKER="):
        rs.Retry.from_env("payments")


@pytest.mark.parametrize("field", ["CLOCK", "ON_EVENT", "RECORD_RESULT", "RNG"])
def test_code_only_field_from_env_is_an_error(monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    var = f"RESILIENT__PAYMENTS__BREAKER__{field}"
    monkeypatch.setenv(var, "time.monotonic")
    with pytest.raises(rs.ConfigError, match=f"{var}=.*pass it in code"):
        rs.CircuitBreaker.from_env("payments")


def test_constructor_rejection_is_wrapped_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__BREAKER__FAILURE_RATE_THRESHOLD", "1.5")
    monkeypatch.setenv("RESILIENT__PAYMENTS__BREAKER__WINDOW_SIZE", "10")
    with pytest.raises(rs.ConfigError) as info:
        rs.CircuitBreaker.from_env("payments")
    message = str(info.value)
    assert "RESILIENT__PAYMENTS__BREAKER__FAILURE_RATE_THRESHOLD='1.5'" in message
    assert "WINDOW_SIZE" not in message  # only the culprit is named
    assert isinstance(info.value.__cause__, ValueError)


def test_retry_on_cancellation_type_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__RETRY__ON", "builtins.KeyboardInterrupt")
    with pytest.raises(rs.ConfigError, match=r"RESILIENT__PAYMENTS__RETRY__ON='builtins\.Keyboard"):
        rs.Retry.from_env("payments")


def test_bad_code_default_stays_the_constructors_own_error() -> None:
    with pytest.raises(ValueError, match="failure_rate_threshold") as info:
        rs.CircuitBreaker.from_env("payments", failure_rate_threshold=2.0)
    assert not isinstance(info.value, rs.ConfigError)
    with pytest.raises(TypeError, match="did you mean window_size"):
        rs.CircuitBreaker.from_env("payments", windowsize=3)
    with pytest.raises(TypeError, match="positional"):
        rs.CircuitBreaker.from_env("payments", name="other")


def test_enabled_is_accepted_for_every_kind_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    for kind, cls in config.policy_classes().items():
        if kind == "retry_budget":
            continue  # no pipeline member: no switch (see the next test)
        monkeypatch.setenv(f"RESILIENT__SVC__{kind.upper()}__ENABLED", "no")
        assert config.resolve(cls, "svc", REQUIRED_CODE.get(kind)).enabled is False
        assert isinstance(cls.from_env("svc", **REQUIRED_CODE.get(kind, {})), cls)
    monkeypatch.setenv("RESILIENT__SVC__RETRY__ENABLED", "maybe")
    with pytest.raises(rs.ConfigError, match="RESILIENT__SVC__RETRY__ENABLED='maybe'"):
        rs.Retry.from_env("svc")


def test_a_retry_budget_has_no_enabled_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "enabled" not in {s.name for s in config.field_specs(rs.RetryBudget)}
    monkeypatch.setenv("RESILIENT__SVC__RETRY_BUDGET__ENABLED", "no")
    with pytest.raises(rs.ConfigError, match="retry_budget has no field enabled"):
        rs.RetryBudget.from_env("svc")


# -- parsers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        ("3", 3.0),
        ("0.5", 0.5),
        (" 10 S ", 10.0),
        ("2MS", 0.002),
        ("1e3ms", 1.0),
        (".5s", 0.5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "V") == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "fast", "-1s", "2 days", "1e999", "nan", "inf", "1.5.2s", "s"]
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(rs.ConfigError, match=r"^V="):
        parse_duration(text, "V")


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("FALSE", False), ("1", True), ("0", False), ("Yes", True), (" no ", False)],
)
def test_booleans(text: str, value: bool) -> None:
    assert parse_bool(text, "V") is value


def test_exception_lists_resolve_dotted_paths() -> None:
    assert parse_exceptions("builtins.ConnectionError, json.JSONDecodeError", "V") == (
        ConnectionError,
        json.JSONDecodeError,
    )
    assert parse_exceptions("TimeoutError", "V") == (TimeoutError,)
    assert parse_exceptions("resilient.errors.CircuitOpenError", "V") == (rs.CircuitOpenError,)
    assert parse_exceptions("", "V") == ()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("builtins.int", "exception class"),
        ("os.path", "exception class"),
        ("no_such_module_xyz.Error", "importable"),
        ("json.NoSuchError", "no 'NoSuchError'"),
        ("NoSuchBuiltinError", "builtin"),
        ("1bad", "dotted import paths"),
    ],
)
def test_bad_exception_lists(text: str, why: str) -> None:
    with pytest.raises(rs.ConfigError, match=re.escape(why)):
        parse_exceptions(text, "V")


def test_window_type_accepts_count_or_time_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__P__BREAKER__WINDOW_TYPE", "sliding")
    with pytest.raises(rs.ConfigError, match="count\\|time"):
        rs.CircuitBreaker.from_env("p")


def test_fallback_value_is_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__P__FALLBACK__VALUE", "[1, 2]")
    fallback = rs.Fallback.from_env("p")
    assert fallback.call(lambda: 1 / 0) == [1, 2]
    monkeypatch.setenv("RESILIENT__P__FALLBACK__VALUE", "not json")
    with pytest.raises(rs.ConfigError, match="JSON"):
        rs.Fallback.from_env("p")


_SETTABLE = [s for s in _all_specs() if s.settable]
_NEAR_VALID = st.one_of(
    st.text(),
    st.from_regex(r"\A ?-?[0-9.eE+]{0,6} ?(ms|s|m|h|MS|x)? ?\Z"),
    st.sampled_from(
        ["none", "null", "True", "yes", "count", "TIME", "builtins.OSError", "os.sep", "[]", "{"]
    ),
    st.lists(
        st.sampled_from(["builtins", "json", "os", "ValueError", "Error", "."]), max_size=4
    ).map("".join),
)


@pytest.mark.parametrize("spec", _SETTABLE, ids=lambda s: f"{s.kind}.{s.name}")
@settings(max_examples=60)
@given(text=_NEAR_VALID)
def test_every_parser_parses_or_raises_config_error(spec: config.FieldSpec, text: str) -> None:
    var = spec.variable("fuzz")
    try:
        spec.parse(text, var)
    except rs.ConfigError as exc:
        assert var in str(exc)


# -- generated reference ------------------------------------------------------------------------
def test_reference_doc_is_generated_from_the_code() -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert _config_render.reference_markdown() in doc, (
        "docs/configuration.md is stale: regenerate its reference with "
        "`python -m resilient config --reference`"
    )


def test_reference_lists_every_field_of_every_policy() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for spec in _all_specs():
        if spec.settable:
            assert f"`RESILIENT__<NAME>__{spec.kind.upper()}__{spec.name.upper()}`" in doc
        else:
            assert f"`{spec.name}`" in doc
