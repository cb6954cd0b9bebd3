"""Fallback: value or handler on matching errors and rejected results, sync and async."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

import resilient as rs
from resilient.telemetry import Event, FallbackUsed, reset_telemetry
from resilient.testing import FakeClock


@pytest.fixture(autouse=True)
def _isolated_registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    rs.configure_telemetry(registry=reg, metrics=True, tracing=False)
    yield reg
    reset_telemetry()


def _boom(exc: BaseException) -> Any:
    def fn() -> None:
        raise exc

    return fn


def test_value_replaces_a_failure_and_passes_success_through() -> None:
    fallback = rs.Fallback("cached")

    @fallback
    def fetch(fail: bool) -> str:
        if fail:
            raise ConnectionError("down")
        return "fresh"

    assert fetch(False) == "fresh"
    assert fetch(True) == "cached"


def test_none_is_a_legitimate_value() -> None:
    assert rs.Fallback(None).call(_boom(OSError())) is None
    assert rs.Fallback(value=None).value is None


def test_sync_handler_receives_the_exception() -> None:
    seen: list[Exception | None] = []

    def handler(exc: Exception | None) -> str:
        seen.append(exc)
        return f"degraded: {exc}"

    err = ConnectionError("down")
    assert rs.Fallback(handler=handler).call(_boom(err)) == "degraded: down"
    assert seen == [err]


@pytest.mark.anyio
async def test_async_handler_is_awaited_in_async_calls() -> None:
    async def handler(exc: Exception | None) -> str:
        await anyio.lowlevel.checkpoint()
        return f"async {type(exc).__name__}"

    @rs.Fallback(handler=handler)
    async def fetch() -> str:
        raise TimeoutError

    assert await fetch() == "async TimeoutError"


@pytest.mark.anyio
async def test_sync_handler_and_value_work_in_async_calls() -> None:
    async def failing() -> str:
        await anyio.lowlevel.checkpoint()
        raise KeyError("k")

    assert await rs.Fallback(handler=lambda e: repr(e)).acall(failing) == "KeyError('k')"
    assert await rs.Fallback(0).acall(failing) == 0  # type: ignore[comparison-overlap]


def test_async_handler_on_a_sync_function_is_refused_at_decoration() -> None:
    async def handler(exc: Exception | None) -> str:
        return "x"

    fallback = rs.Fallback(handler=handler)
    with pytest.raises(TypeError, match="async handler"):

        @fallback
        def fetch() -> str:
            return "never decorated"

    calls = []
    with pytest.raises(TypeError, match="async handler"):
        fallback.call(lambda: calls.append(1))
    assert calls == []


def test_sync_handler_returning_an_awaitable_in_a_sync_call_is_an_error() -> None:
    async def later() -> str:
        return "x"

    fallback = rs.Fallback(handler=lambda exc: later())
    with pytest.raises(TypeError, match="awaitable"):
        fallback.call(_boom(ValueError()))


def test_on_types_limit_what_is_replaced() -> None:
    fallback = rs.Fallback("cached", on=(ConnectionError, TimeoutError))
    assert fallback.call(_boom(ConnectionError())) == "cached"
    err = ValueError("bug")
    with pytest.raises(ValueError) as info:
        fallback.call(_boom(err))
    assert info.value is err
    assert rs.Fallback("x", on=KeyError).call(_boom(KeyError())) == "x"


def test_on_predicate() -> None:
    fallback = rs.Fallback("cached", on=lambda e: "503" in str(e))
    assert fallback.call(_boom(OSError("503"))) == "cached"
    with pytest.raises(OSError, match="404"):
        fallback.call(_boom(OSError("404")))


def test_on_result_triggers_the_fallback_and_the_handler_gets_none() -> None:
    seen: list[Exception | None] = []

    def handler(exc: Exception | None) -> str:
        seen.append(exc)
        return "substitute"

    fallback = rs.Fallback(handler=handler, on_result=lambda r: r is None)
    assert fallback.call(lambda: None) == "substitute"
    assert fallback.call(lambda: "real") == "real"
    assert seen == [None]
    assert rs.Fallback([], on_result=lambda r: r == "").call(lambda: "") == []  # type: ignore[comparison-overlap]


@pytest.mark.anyio
async def test_on_result_in_async_calls() -> None:
    async def empty() -> list[int]:
        return []

    assert await rs.Fallback([0], on_result=lambda r: not r).acall(empty) == [0]


def test_rejections_are_caught_by_default_and_by_their_base() -> None:
    assert rs.Fallback("later").call(_boom(rs.CircuitOpenError("pay", 3.0))) == "later"
    full = rs.BulkheadFullError("pool", 2, 0)
    assert rs.Fallback("busy", on=(rs.PolicyRejectedError,)).call(_boom(full)) == "busy"
    with pytest.raises(ConnectionError):
        rs.Fallback("busy", on=(rs.PolicyRejectedError,)).call(_boom(ConnectionError()))


def test_fallback_outside_retry_sees_the_final_verdict() -> None:
    clock = FakeClock()
    calls = []

    def down() -> str:
        calls.append(1)
        raise ConnectionError("down")

    protected = rs.pipeline(rs.Fallback("cached"), rs.Retry(attempts=3, wait=1, sleep=clock.sleep))
    assert protected.call(down) == "cached"
    assert len(calls) == 3 and clock.sleeps == [1, 1]


def test_keyboard_interrupt_is_not_replaced() -> None:
    with pytest.raises(KeyboardInterrupt):
        rs.Fallback("x").call(_boom(KeyboardInterrupt()))


@pytest.mark.anyio
async def test_cancellation_is_not_replaced() -> None:
    handled = []

    @rs.Fallback(handler=lambda e: handled.append(e))
    async def slow() -> None:
        await anyio.sleep(3600)

    with anyio.CancelScope() as scope:
        scope.cancel()
        await slow()
    assert scope.cancelled_caught
    assert handled == []


def test_a_failing_handler_propagates_with_the_original_as_context() -> None:
    def handler(exc: Exception | None) -> str:
        raise RuntimeError("cache down too")

    original = ConnectionError("db down")
    with pytest.raises(RuntimeError, match="cache down too") as info:
        rs.Fallback(handler=handler).call(_boom(original))
    assert info.value.__context__ is original


def test_event_and_fallback_outcome_are_recorded(_isolated_registry: CollectorRegistry) -> None:
    events: list[Event] = []
    fallback = rs.Fallback("cached", name="fb", on_event=events.append)
    err = ConnectionError()
    fallback.call(_boom(err))
    fallback.call(lambda: "ok")
    used = [e for e in events if isinstance(e, FallbackUsed)]
    assert len(used) == 1 and used[0].error is err and used[0].name == "fb"
    sample = _isolated_registry.get_sample_value
    labels = {"policy": "fallback", "name": "fb"}
    assert sample("resilient_calls_total", {**labels, "outcome": "fallback"}) == 1.0
    assert sample("resilient_calls_total", {**labels, "outcome": "success"}) == 1.0


def test_no_event_when_the_handler_fails() -> None:
    events: list[Event] = []

    def handler(exc: Exception | None) -> str:
        raise RuntimeError

    with pytest.raises(RuntimeError):
        rs.Fallback(handler=handler, on_event=events.append).call(_boom(ValueError()))
    assert not any(isinstance(e, FallbackUsed) for e in events)


def test_decorator_keeps_signature() -> None:
    def fetch(url: str, retries: int = 2) -> str:
        return url

    async def afetch(url: str) -> str:
        return url

    assert inspect.signature(rs.Fallback("x")(fetch)) == inspect.signature(fetch)
    assert inspect.iscoroutinefunction(rs.Fallback("x")(afetch))
    assert "value='x'" in repr(rs.Fallback("x", name="fb"))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((), {}, ValueError, "exactly one of value= and handler="),
        (("v",), {"handler": str}, ValueError, "value='v', handler=<class 'str'>"),
        ((), {"handler": "not callable"}, TypeError, "handler must be callable"),
        (("v",), {"on": "ValueError"}, TypeError, "on must be an exception type"),
        (("v",), {"on": (KeyboardInterrupt,)}, ValueError, "on may only name Exception"),
        (("v",), {"on_result": 1}, TypeError, "on_result must be callable or None, got 1"),
        (("v",), {"name": 7}, ValueError, "name must be a non-empty string, got 7"),
    ],
)
def test_bad_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        rs.Fallback(*args, **kwargs)
