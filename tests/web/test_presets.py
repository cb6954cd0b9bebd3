"""presets.http(): the standard HTTP pipeline, its overrides and its environment variables;
presets.http_client(): a ready httpx client around it."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import httpx
import pytest

import resilient as rs
from resilient import presets
from resilient._core.sliding_windows import TimeWindow
from resilient._http import StatusFailure
from resilient.httpx import AsyncResilientTransport, ResilientTransport, is_transient


def _name() -> str:
    return f"preset-{uuid.uuid4().hex[:8]}"


def _breaker_settings(breaker: rs.CircuitBreaker) -> dict[str, Any]:
    """What the breaker was built with (read from its core: there is no public snapshot)."""
    core = breaker._core
    window = core.window
    return {
        "failure_rate_threshold": core.failure_rate_threshold,
        "window_type": "time" if isinstance(window, TimeWindow) else "count",
        "window_size": window.size,
        "minimum_calls": core.minimum_calls,
        "open_duration": core.open_duration(1),  # seconds open after the first opening
    }


def _members(pipeline: rs.Pipeline) -> tuple[rs.Timeout, rs.Retry, rs.CircuitBreaker, rs.Timeout]:
    total, retry, breaker, attempt = pipeline.policies
    assert isinstance(total, rs.Timeout) and isinstance(attempt, rs.Timeout)
    assert isinstance(retry, rs.Retry) and isinstance(breaker, rs.CircuitBreaker)
    return total, retry, breaker, attempt


def test_the_standard_pipeline() -> None:
    name = _name()
    pipeline = presets.http(name)
    total, retry, breaker, attempt = _members(pipeline)
    assert pipeline.name == name
    assert (total.name, retry.name, breaker.name, attempt.name) == (
        name,
        name,
        name,
        f"{name}.attempt",
    )
    assert (total.seconds, attempt.seconds) == (30.0, 10.0)
    assert retry.max_attempts == 3 and retry.wait is rs.retry.DEFAULT_WAIT
    assert _breaker_settings(breaker) == {
        "failure_rate_threshold": 0.1,
        "window_type": "time",
        "window_size": 30,
        "minimum_calls": 20,
        "open_duration": 30.0,  # the library's default
    }


def test_retry_and_breaker_only_count_transient_failures() -> None:
    pipeline = presets.http(_name(), retry={"wait": 0.0})
    _, _, breaker, _ = _members(pipeline)
    calls: list[int] = []

    def bug() -> None:
        calls.append(1)
        raise KeyError("not transient")

    with pytest.raises(KeyError):
        pipeline.call(bug)
    assert len(calls) == 1
    assert breaker.metrics.failures == 0

    def refused() -> None:
        calls.append(1)
        raise ConnectionRefusedError("down")

    with pytest.raises(ConnectionRefusedError):
        pipeline.call(refused)
    assert len(calls) == 4
    assert breaker.metrics.failures == 3


def test_is_transient() -> None:
    transient = [
        StatusFailure(httpx.Response(503), None, None),
        rs.TimeoutExceeded("t", 1.0),
        TimeoutError(),
        ConnectionResetError(),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.PoolTimeout("busy"),
        httpx.RemoteProtocolError("closed mid-answer"),
    ]
    not_transient = [
        rs.CircuitOpenError("b", 1.0),
        rs.BulkheadFullError("b", 1, 0),
        rs.RateLimitedError("r", 1.0),
        httpx.UnsupportedProtocol("ftp"),
        httpx.LocalProtocolError("bad header"),
        ValueError(),
        KeyError(),
    ]
    assert all(is_transient(e) for e in transient)
    assert not any(is_transient(e) for e in not_transient)


def test_overrides_are_per_field() -> None:
    pipeline = presets.http(
        _name(),
        timeout={"seconds": 12},
        retry={"attempts": 5},
        breaker={"minimum_calls": 7, "open_duration": 4.0},
        attempt_timeout={"seconds": 2.5},
    )
    total, retry, breaker, attempt = _members(pipeline)
    assert (total.seconds, retry.max_attempts, attempt.seconds) == (12.0, 5, 2.5)
    settings = _breaker_settings(breaker)
    assert (settings["minimum_calls"], settings["open_duration"]) == (7, 4.0)
    assert settings["failure_rate_threshold"] == 0.1  # untouched fields keep the preset's value
    assert settings["window_type"] == "time"


def test_every_field_is_tunable_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "payments-v2"
    env = {
        "RESILIENT__PAYMENTS_V2__TIMEOUT__SECONDS": "1m",
        "RESILIENT__PAYMENTS_V2__RETRY__ATTEMPTS": "4",
        "RESILIENT__PAYMENTS_V2__RETRY__WAIT": "250ms",
        "RESILIENT__PAYMENTS_V2__BREAKER__FAILURE_RATE_THRESHOLD": "0.25",
        "RESILIENT__PAYMENTS_V2__BREAKER__WINDOW_SIZE": "60",
        "RESILIENT__PAYMENTS_V2__BREAKER__MINIMUM_CALLS": "50",
        "RESILIENT__PAYMENTS_V2_ATTEMPT__TIMEOUT__SECONDS": "2s",
    }
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    # the environment wins over the code's overrides too
    pipeline = presets.http(name, retry={"attempts": 9}, attempt_timeout={"seconds": 7})
    total, retry, breaker, attempt = _members(pipeline)
    assert (total.seconds, retry.max_attempts, attempt.seconds) == (60.0, 4, 2.0)
    assert retry.wait(None) == 0.25  # type: ignore[arg-type]
    settings = _breaker_settings(breaker)
    assert (settings["failure_rate_threshold"], settings["window_size"]) == (0.25, 60)
    assert settings["minimum_calls"] == 50


def test_members_can_be_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    name = _name()
    pipeline = presets.http(name, retry={"enabled": False})
    assert [p.kind for p in pipeline.policies] == ["timeout", "breaker", "timeout"]
    key = name.upper().replace("-", "_")
    monkeypatch.setenv(f"RESILIENT__{key}_ATTEMPT__TIMEOUT__ENABLED", "0")
    pipeline = presets.http(name)
    assert [p.kind for p in pipeline.policies] == ["timeout", "retry", "breaker"]
    everything_off = presets.http(
        name,
        timeout={"enabled": False},
        retry={"enabled": False},
        breaker={"enabled": False},
    )
    assert everything_off.call(lambda: "called") == "called"


def test_bad_configuration_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError, match="retry= must be a mapping"):
        presets.http(_name(), retry=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no parameter 'attempt'"):
        presets.http(_name(), retry={"attempt": 5})
    with pytest.raises(ValueError, match="seconds"):
        presets.http(_name(), attempt_timeout={"seconds": -1})
    monkeypatch.setenv("RESILIENT__BROKEN__BREAKER__MINIMUM_CALLS", "many")
    with pytest.raises(rs.ConfigError, match="RESILIENT__BROKEN__BREAKER__MINIMUM_CALLS"):
        presets.http("broken")
    monkeypatch.delenv("RESILIENT__BROKEN__BREAKER__MINIMUM_CALLS")
    monkeypatch.setenv("RESILIENT__BROKEN__RETRYY__ATTEMPTS", "2")
    with pytest.raises(rs.ConfigError, match="did you mean"):
        presets.http("broken")


# -- http_client ----------------------------------------------------------------------------------
def _answers(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"path": request.url.path})


def test_http_client_sync() -> None:
    client = presets.http_client(
        _name(), transport=httpx.MockTransport(_answers), base_url="http://svc"
    )
    with client:
        assert isinstance(client, httpx.Client)
        assert isinstance(client._transport, ResilientTransport)
        assert client.timeout == httpx.Timeout(None)  # the pipeline's timeouts govern
        assert client.get("/a").json() == {"path": "/a"}


def test_http_client_async() -> None:
    async def go() -> Any:
        client = presets.http_client(
            _name(), async_=True, transport=httpx.MockTransport(_answers), base_url="http://svc"
        )
        async with client:
            assert isinstance(client, httpx.AsyncClient)
            assert isinstance(client._transport, AsyncResilientTransport)
            return (await client.get("/b")).json()

    assert anyio.run(go) == {"path": "/b"}


def test_http_client_options() -> None:
    policy = rs.CircuitBreaker()
    client = presets.http_client(
        _name(),
        policy=policy,
        transport=httpx.MockTransport(_answers),
        timeout=3.0,
        headers={"x-team": "checkout"},
    )
    with client:
        assert client.timeout == httpx.Timeout(3.0)
        assert client.headers["x-team"] == "checkout"
        client.get("http://svc/")
    assert policy.metrics.calls == 1
    with pytest.raises(TypeError, match="verify"):
        presets.http_client(_name(), transport=httpx.MockTransport(_answers), verify=False)
    built = presets.http_client(_name(), http2=False, verify=False, trust_env=False)
    built.close()
