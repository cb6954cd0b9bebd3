"""Safe defaults and loud misuse (issue 10): what a new user copies must never stall or
silently do nothing, and every common mistake fails at once with a message naming the fix."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

import resilient as rs
from resilient.telemetry import reset_telemetry
from resilient.testing import FakeClock, instant_retries


class Down(Exception):
    """The dependency's failure."""


# -- 1. rejections are not retried by default -----------------------------------------------------
def _readme_pipeline(clock: FakeClock | None = None, sleep: Any = None) -> rs.Pipeline:
    """The README's pipeline, as a user copies it (clock and sleep injectable for tests)."""
    extra: dict[str, Any] = {} if clock is None else {"clock": clock}
    retry_extra: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
    return rs.pipeline(
        rs.Retry(attempts=3, wait=0.2, **retry_extra),
        rs.CircuitBreaker("payments-readme", failure_rate_threshold=0.5, window_size=20, **extra),
        rs.Timeout(2.0),
    )


def test_readme_pipeline_answers_at_once_when_open_fake_clock() -> None:
    clock = FakeClock()
    slept: list[float] = []
    calls = []

    @_readme_pipeline(clock, slept.append)
    def charge() -> None:
        calls.append(1)
        raise Down("payments down")

    while True:  # until the breaker opens
        try:
            charge()
        except rs.CircuitOpenError:
            break
        except Down:
            continue
    before, waits_before = len(calls), len(slept)
    for _ in range(50):
        with pytest.raises(rs.CircuitOpenError):
            charge()
    assert len(calls) == before, "an open breaker must not call the dependency"
    assert slept[waits_before:] == [], "no retry may wait out the breaker's retry_after"


@pytest.mark.anyio
async def test_readme_pipeline_answers_in_under_a_second_when_open_real_clock() -> None:
    calls = []

    @_readme_pipeline()
    async def charge(order: str) -> None:
        calls.append(order)
        raise Down("payments down")

    with anyio.fail_after(60):  # the pre-opening phase waits 0.2 s between attempts
        while True:
            try:
                await charge("o")
            except rs.CircuitOpenError:
                break
            except Down:
                continue
    for _ in range(20):
        started = time.monotonic()
        with pytest.raises(rs.CircuitOpenError):
            await charge("o")
        # before the fix each call slept the breaker's 30 s retry_after
        assert time.monotonic() - started < 1.0


def test_explicit_on_retries_exactly_what_it_names() -> None:
    slept: list[float] = []
    errors = iter([rs.CircuitOpenError("dep", 3.0)])

    def once_open() -> str:
        for error in errors:
            raise error
        return "ok"

    assert rs.Retry(attempts=2, wait=0, sleep=slept.append, on=(Exception,)).call(once_open) == "ok"
    assert slept == [3.0]  # named (through Exception): retried, honouring retry_after
    errors = iter([rs.CircuitOpenError("dep", 3.0)])
    with pytest.raises(rs.CircuitOpenError):
        rs.Retry(attempts=2, wait=0, sleep=slept.append).call(once_open)  # default: not retried


def test_retry_after_longer_than_the_deadline_ends_retrying() -> None:
    calls = []

    def open_for_long() -> None:
        calls.append(1)
        raise rs.CircuitOpenError("dep", 30.0)

    # only 5 s left: waiting 30 s is pointless
    with rs.Timeout(5.0), pytest.raises(rs.CircuitOpenError) as info:
        rs.Retry(attempts=5, wait=0, on=(Exception,)).call(open_for_long)
    assert len(calls) == 1
    assert any("deadline" in note for note in getattr(info.value, "__notes__", []))
    with pytest.raises(rs.CircuitOpenError):
        rs.Retry(attempts=5, wait=0, on=(Exception,), max_delay=10).call(open_for_long)
    assert len(calls) == 2


# -- 2 and 3. the wrong entry point for the kind of function --------------------------------------
def _policies() -> list[rs.Policy]:
    return [
        rs.CircuitBreaker(),
        rs.Bulkhead(max_concurrent=2),
        rs.Retry(attempts=2, wait=0),
        rs.Timeout(0.1),
        rs.Fallback(0),
        rs.pipeline(rs.Retry(attempts=2, wait=0), rs.CircuitBreaker()),
    ]


@pytest.mark.parametrize("policy", _policies(), ids=lambda p: p.kind)
def test_sync_call_of_an_async_function_is_refused(policy: rs.Policy) -> None:
    ran = []

    async def fetch() -> str:
        ran.append(1)
        return "x"

    with pytest.raises(TypeError, match=r"await policy\.acall\(.*fetch") as info:
        policy.call(fetch)
    assert "async function" in str(info.value)
    assert ran == []


@pytest.mark.anyio
@pytest.mark.parametrize("policy", _policies(), ids=lambda p: p.kind)
async def test_acall_of_a_sync_function_is_refused(policy: rs.Policy) -> None:
    ran = []

    def fetch() -> str:
        ran.append(1)
        return "x"

    with pytest.raises(TypeError, match=r"policy\.call\(.*fetch.*async def"):
        await policy.acall(fetch)  # type: ignore[arg-type]
    assert ran == []


@pytest.mark.anyio
async def test_refused_calls_are_not_counted() -> None:
    breaker = rs.CircuitBreaker(minimum_calls=1, window_size=1)

    def sync() -> str:
        return "x"

    async def coro() -> str:
        return "x"

    with pytest.raises(TypeError):
        await breaker.acall(sync)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        breaker.call(coro)
    assert breaker.metrics.calls == 0
    fallback = rs.Fallback("fb")
    with pytest.raises(TypeError):  # not swallowed by the fallback either
        await fallback.acall(sync)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_awaitable_returning_callables_still_work() -> None:
    class Endpoint:
        async def __call__(self) -> str:
            return "called"

    assert await rs.Retry(attempts=1).acall(Endpoint()) == "called"


# -- 4. generators --------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", _policies(), ids=lambda p: p.kind)
def test_generator_functions_are_refused_at_decoration(policy: rs.Policy) -> None:
    def numbers() -> Iterator[int]:
        yield 1

    async def anumbers() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(TypeError, match=r"generator function .*numbers.*iteration"):
        policy(numbers)
    with pytest.raises(TypeError, match=r"async generator function .*anumbers"):
        policy(anumbers)
    with pytest.raises(TypeError, match="generator"):
        policy.call(numbers)


# -- 5. async predicates --------------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_retry_predicates_are_awaited_in_async_calls() -> None:
    calls = []

    async def only_down(exc: Exception) -> bool:
        return isinstance(exc, Down)

    async def failing(kind: type[Exception]) -> None:
        calls.append(kind)
        raise kind("x")

    retry = rs.Retry(attempts=3, wait=0, on=only_down)
    with pytest.raises(KeyError):  # a coroutine object would be truthy: "retry everything"
        await retry.acall(failing, KeyError)
    assert calls == [KeyError]
    with pytest.raises(Down):
        await retry.acall(failing, Down)
    assert calls == [KeyError, Down, Down, Down]

    async def empty(result: list[int]) -> bool:
        return not result

    results = iter([[], [], [1]])

    async def poll() -> list[int]:
        return next(results)

    assert await rs.Retry(attempts=3, wait=0, on_result=empty).acall(poll) == [1]


def test_async_predicates_refuse_sync_calls_before_calling() -> None:
    async def pred(value: object) -> bool:
        return True

    ran = []

    def fetch() -> str:
        ran.append(1)
        return "x"

    for policy in (
        rs.Retry(on=pred),
        rs.Retry(on_result=pred),
        rs.Fallback(0, on=pred),
        rs.Fallback(0, on_result=pred),
    ):
        with pytest.raises(TypeError, match="async"):
            policy.call(fetch)
        with pytest.raises(TypeError, match="async"):
            policy(fetch)
    assert ran == []


@pytest.mark.anyio
async def test_async_fallback_predicates_are_awaited() -> None:
    async def only_keys(exc: Exception) -> bool:
        return isinstance(exc, KeyError)

    async def raises(kind: type[Exception]) -> str:
        raise kind("x")

    fallback = rs.Fallback("fb", on=only_keys)
    assert await fallback.acall(raises, KeyError) == "fb"
    with pytest.raises(ValueError):
        await fallback.acall(raises, ValueError)

    async def bad(result: str) -> bool:
        return result == "bad"

    async def answer(result: str) -> str:
        return result

    assert await rs.Fallback("fb", on_result=bad).acall(answer, "bad") == "fb"
    assert await rs.Fallback("fb", on_result=bad).acall(answer, "good") == "good"


def test_breaker_refuses_async_predicates_at_construction() -> None:
    async def pred(value: object) -> bool:
        return True

    for option in ("record", "ignore", "record_result"):
        with pytest.raises(TypeError, match=f"{option} must be a plain"):
            rs.CircuitBreaker(**{option: pred})


# -- 6. cancellation while retrying ---------------------------------------------------------------
async def _nosleep(delay: float) -> None:
    """An injected sleep that never yields to the event loop."""


@pytest.mark.anyio
async def test_cancelled_caller_stops_retrying_with_a_non_yielding_sleep() -> None:
    calls = []

    async def failing() -> None:
        calls.append(1)
        raise Down("x")

    retry = rs.Retry(attempts=10_000, wait=0, sleep=_nosleep)
    with anyio.CancelScope() as scope:
        scope.cancel()  # cancelled before the first retry
        await retry.acall(failing)
    assert scope.cancelled_caught
    assert len(calls) == 1


def test_cancelled_asyncio_task_stops_retrying() -> None:
    calls = []

    async def failing() -> None:
        calls.append(1)
        if len(calls) == 3:
            asyncio.current_task().cancel()  # type: ignore[union-attr]
        raise Down("x")

    async def main() -> None:
        await rs.Retry(attempts=10_000, wait=0, sleep=_nosleep).acall(failing)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert len(calls) == 3


# -- 7. decorators without parentheses ------------------------------------------------------------
@pytest.mark.parametrize("cls", [rs.Retry, rs.Timeout, rs.Fallback, rs.CircuitBreaker])
def test_decorator_without_parentheses_names_the_fix(cls: type[rs.Policy]) -> None:
    ran = []

    with pytest.raises(TypeError, match=rf"@rs\.{cls.__name__}\(\.\.\.\) with parentheses"):

        @cls  # type: ignore[arg-type,call-arg]
        def fetch() -> None:
            ran.append(1)

    assert ran == []


# -- 8. names -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: rs.CircuitBreaker(name="svc"),
        lambda: rs.Bulkhead(name="svc", max_concurrent=1),
        lambda: rs.Retry(name="svc"),
        lambda: rs.Timeout(1.0, name="svc"),
        lambda: rs.Fallback(0, name="svc"),
        lambda: rs.pipeline(rs.Retry(), name="svc"),
    ],
)
def test_every_policy_takes_name_as_a_keyword(make: Any) -> None:
    assert make().name == "svc"


def test_unnamed_policy_takes_the_qualified_name_of_what_it_decorates() -> None:
    registry = CollectorRegistry()
    rs.configure_telemetry(registry=registry)
    try:
        breaker = rs.CircuitBreaker()
        auto = breaker.name
        assert auto.startswith("breaker-")

        @breaker
        def charge() -> str:
            return "ok"

        assert breaker.name == charge.__qualname__
        assert charge() == "ok"
        assert (
            registry.get_sample_value(
                "resilient_breaker_state", {"name": charge.__qualname__, "state": "closed"}
            )
            == 1.0
        )
        assert (
            registry.get_sample_value("resilient_breaker_state", {"name": auto, "state": "closed"})
            is None
        ), "the auto name's series is withdrawn"
        assert (
            registry.get_sample_value(
                "resilient_calls_total",
                {"policy": "breaker", "name": charge.__qualname__, "outcome": "success"},
            )
            == 1.0
        )

        @breaker
        def refund() -> str:
            return "ok"

        assert breaker.name == charge.__qualname__  # only the first function names it
        named = rs.Retry("explicit")
        named(refund)
        assert named.name == "explicit"

        retry, inner = rs.Retry(), rs.CircuitBreaker()

        @rs.pipeline(retry, inner)
        def ship() -> str:
            return "ok"

        assert retry.name == inner.name == ship.__qualname__
    finally:
        reset_telemetry()


def test_two_live_breakers_with_one_name_log_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="resilient"):
        first = rs.CircuitBreaker("dup-name")
        assert not caplog.records
        second = rs.CircuitBreaker("dup-name")
        assert any(
            "two live breaker policies are named 'dup-name'" in r.message for r in caplog.records
        )
        caplog.clear()
        rs.Bulkhead("dup-name", max_concurrent=1)  # another kind: no clash
        rs.Retry("dup-name")  # not stateful: no clash
        assert not caplog.records
    assert first is not second


# -- 9. a pipeline adds no series -----------------------------------------------------------------
def test_pipeline_exports_no_series_of_its_own() -> None:
    registry = CollectorRegistry()
    rs.configure_telemetry(registry=registry)
    try:
        pipe = rs.pipeline(rs.Retry("pipe-members", wait=0), name="the-pipe")
        pipe.call(lambda: 1)
        text = "\n".join(f"{s.name}{s.labels}" for m in registry.collect() for s in m.samples)
        assert "pipeline" not in text and "the-pipe" not in text
        assert "pipe-members" in text
    finally:
        reset_telemetry()


# -- 10. the config command -----------------------------------------------------------------------
def _cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resilient", *args],
        capture_output=True,
        text=True,
        check=False,
        **kw,
    )


def test_config_of_a_name_without_variables_shows_every_kind() -> None:
    done = _cli("config", "nothing-set")
    assert done.returncode == 0, done.stderr
    kinds = {line.split()[1] for line in done.stdout.splitlines()[1:]}
    assert kinds == {
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
        "retry_budget",
    }
    assert "fallback: not buildable from the environment alone" in done.stderr


def test_config_json_into_a_closed_pipe_has_no_traceback() -> None:
    command = f"{sys.executable} -m resilient config nothing-set --json | head -1"
    done = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "{"
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_config_kind_suggests_the_kind_of_a_class_name() -> None:
    done = _cli("config", "x", "--kind", "circuit")
    assert done.returncode == 2
    assert "did you mean 'breaker'" in done.stderr


# -- 11. settings ---------------------------------------------------------------------------------
def test_settings_show_the_effective_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__SETTINGS_DEMO__BREAKER__OPEN_DURATION", "15s")
    breaker = rs.CircuitBreaker.from_env("settings-demo", window_size=20)
    assert breaker.settings["open_duration"] == 15.0  # from the environment
    assert breaker.settings["window_size"] == 20  # from the code
    assert breaker.settings["failure_rate_threshold"] == 0.5  # the library's default
    with pytest.raises(TypeError):
        breaker.settings["window_size"] = 5  # type: ignore[index]
    assert "open_duration=15.0" in repr(breaker) and "window_size=20" in repr(breaker)
    assert set(rs.Timeout(2).settings) == {"seconds", "on_event", "mode"}
    assert "on=every Exception except PolicyRejectedError" in repr(rs.Retry())
    for cls, kwargs in (
        (rs.CircuitBreaker, {}),
        (rs.Bulkhead, {"max_concurrent": 1}),
        (rs.Retry, {}),
        (rs.Timeout, {"seconds": 1}),
        (rs.Fallback, {"value": 0}),
    ):
        policy = cls(**kwargs)  # type: ignore[arg-type]
        assert set(policy.settings) == set(cls.options), cls


# -- 12. registry ---------------------------------------------------------------------------------
def test_registry_membership_agrees_with_iteration() -> None:
    registry = rs.Registry()
    breaker = registry.breaker("members")
    assert list(registry) == [breaker]
    assert breaker in registry
    assert ("members", "breaker") in registry
    assert rs.CircuitBreaker("members-other") not in registry


def test_instant_retries_still_apply() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Down("x")
        return "ok"

    with instant_retries():
        assert rs.Retry(attempts=3, wait=5.0).call(flaky) == "ok"


def test_a_rename_withdraws_the_auto_names_rejection_series() -> None:
    """Rejections counted under the automatic name before the policy decorated anything are
    withdrawn with the other series, and later ones count under the new name."""
    registry = CollectorRegistry()
    rs.configure_telemetry(registry=registry)
    try:
        breaker = rs.CircuitBreaker()
        auto = breaker.name
        breaker.force_open()
        with pytest.raises(rs.CircuitOpenError):
            breaker.call(lambda: "never")
        labels = {"policy": "breaker", "reason": "forced_open"}
        assert registry.get_sample_value("resilient_rejections_total", {**labels, "name": auto})

        @breaker
        def charge() -> str:
            return "never"

        with pytest.raises(rs.CircuitOpenError):
            charge()
        assert (
            registry.get_sample_value("resilient_rejections_total", {**labels, "name": auto})
            is None
        ), "the auto name's rejection series is withdrawn"
        assert (
            registry.get_sample_value(
                "resilient_rejections_total", {**labels, "name": charge.__qualname__}
            )
            == 1.0
        )
    finally:
        reset_telemetry()
