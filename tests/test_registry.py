"""Named policies shared across a service: ``rs.registry``, ``rs.policy`` and test helpers."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import resilient as rs
from resilient.testing import force_open, reset_breaker


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in list(os.environ):
        if var.startswith("RESILIENT__"):
            monkeypatch.delenv(var)
    rs.registry.clear()
    yield
    rs.registry.clear()


def test_same_name_and_kind_is_the_same_instance() -> None:
    reg = rs.Registry()
    breaker = reg.breaker("payments", window_size=20)
    assert isinstance(breaker, rs.CircuitBreaker)
    assert breaker.name == "payments"
    assert reg.breaker("payments") is breaker
    assert reg.breaker("payments", window_size=20) is breaker
    assert reg.breaker("shipping") is not breaker
    assert reg.retry("payments") is reg.retry("payments")
    assert reg.get("payments", "breaker") is breaker
    assert reg.get("payments", "bulkhead") is None
    assert ("payments", "retry") in reg


def test_every_kind_is_available_with_its_required_defaults() -> None:
    reg = rs.Registry()
    assert isinstance(reg.bulkhead("db", max_concurrent=3), rs.Bulkhead)
    assert isinstance(reg.timeout("db", seconds=1.5), rs.Timeout)
    assert isinstance(reg.fallback("db", value=0), rs.Fallback)
    assert isinstance(reg.retry("db"), rs.Retry)
    assert isinstance(reg.breaker("db"), rs.CircuitBreaker)
    assert [p.kind for p in reg] == ["bulkhead", "timeout", "fallback", "retry", "breaker"]
    assert len(reg) == 5
    reg.clear()
    assert len(reg) == 0 and reg.get("db", "timeout") is None


def test_different_code_defaults_for_one_name_are_refused() -> None:
    reg = rs.Registry()
    reg.breaker("payments", window_size=20)
    with pytest.raises(rs.ConfigError, match="window_size"):
        reg.breaker("payments", window_size=10)


def test_registry_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__SEARCH__TIMEOUT__SECONDS", "250ms")
    assert rs.registry.timeout("search").seconds == 0.25
    monkeypatch.setenv("RESILIENT__SEARCH__BULKHEAD__MAX_CONCURRENT", "0")
    with pytest.raises(rs.ConfigError, match="RESILIENT__SEARCH__BULKHEAD__MAX_CONCURRENT='0'"):
        rs.registry.bulkhead("search")
    assert rs.registry.get("search", "bulkhead") is None  # a failed creation registers nothing


def test_eight_threads_get_one_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    reg = rs.Registry()
    created: list[Any] = []
    original = rs.CircuitBreaker.from_env.__func__  # type: ignore[attr-defined]

    def counting_from_env(cls: type[rs.CircuitBreaker], name: str, /, **kw: Any) -> Any:
        policy = original(cls, name, **kw)
        created.append(policy)
        return policy

    monkeypatch.setattr(rs.CircuitBreaker, "from_env", classmethod(counting_from_env))
    barrier = threading.Barrier(8)
    got: list[rs.CircuitBreaker] = []
    got_lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        breaker = reg.breaker("payments", window_size=10)
        with got_lock:
            got.append(breaker)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to provoke a race
    try:
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old_interval)
    assert len(got) == 8
    assert len({id(b) for b in got}) == 1
    assert len(created) == 1
    assert list(reg) == [got[0]]


# -- rs.policy ------------------------------------------------------------------------------------
def test_policy_nests_in_the_usual_order_whatever_the_order_given() -> None:
    pipe = rs.policy(
        "payments", "bulkhead", "timeout", "fallback", "breaker", "retry",
        timeout={"seconds": 5}, bulkhead={"max_concurrent": 2}, fallback={"value": "cached"},
    )  # fmt: skip
    assert isinstance(pipe, rs.Pipeline)
    assert pipe.name == "payments"
    assert [p.kind for p in pipe.policies] == [
        "fallback",
        "retry",
        "breaker",
        "timeout",
        "bulkhead",
    ]
    assert all(p.name == "payments" for p in pipe.policies)
    assert pipe.policies[2] is rs.registry.breaker("payments")


def test_policy_is_a_one_line_decorator_sharing_one_breaker() -> None:
    calls: list[str] = []

    @rs.policy("payments", "retry", "breaker", "timeout", timeout={"seconds": 5}, retry={"wait": 0})
    def charge(amount: int) -> str:
        calls.append("charge")
        return f"charged {amount}"

    @rs.policy("payments", "breaker")
    def refund(amount: int) -> str:
        return f"refunded {amount}"

    assert charge(5) == "charged 5"
    assert refund(3) == "refunded 3"
    force_open("payments")
    with pytest.raises(rs.CircuitOpenError):
        refund(1)
    with pytest.raises(rs.CircuitOpenError):
        charge(1)
    reset_breaker("payments")
    assert charge(2) == "charged 2"


@pytest.mark.anyio
async def test_policy_decorates_async_functions() -> None:
    @rs.policy("async-svc", "timeout", "fallback", timeout={"seconds": 5}, fallback={"value": -1})
    async def compute(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x * 2

    assert await compute(4) == 8
    assert await compute(-1) == -1


def test_disabled_kind_is_left_out_and_not_created(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__PAYMENTS__RETRY__ENABLED", "false")
    monkeypatch.setenv("RESILIENT__PAYMENTS__TIMEOUT__ENABLED", "0")
    pipe = rs.policy("payments", "retry", "breaker", "timeout")  # no seconds needed: disabled
    assert [p.kind for p in pipe.policies] == ["breaker"]
    assert rs.registry.get("payments", "retry") is None


def test_code_can_default_a_kind_off_and_env_switch_it_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipe = rs.policy("svc", "retry", "breaker", retry={"enabled": False})
    assert [p.kind for p in pipe.policies] == ["breaker"]
    monkeypatch.setenv("RESILIENT__SVC__RETRY__ENABLED", "yes")
    pipe = rs.policy("svc", "retry", "breaker", retry={"enabled": False})
    assert [p.kind for p in pipe.policies] == ["retry", "breaker"]


def test_everything_disabled_calls_straight_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__SVC__BREAKER__ENABLED", "no")

    @rs.policy("svc", "breaker")
    def f(x: int) -> int:
        return x + 1

    assert f(1) == 2
    assert len(rs.registry) == 0


def test_bad_configuration_fails_at_decoration_not_at_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESILIENT__SVC__BREAKER__WINDOW_SIZE", "ten")
    with pytest.raises(rs.ConfigError, match="RESILIENT__SVC__BREAKER__WINDOW_SIZE='ten'"):
        rs.policy("svc", "breaker")
    monkeypatch.setenv("RESILIENT__SVC__BREAKER__WINDOW_SIZE", "10")
    monkeypatch.setenv("RESILIENT__SVC__RETRY__ATEMPTS", "2")
    with pytest.raises(rs.ConfigError, match="did you mean RESILIENT__SVC__RETRY__ATTEMPTS"):
        rs.policy("svc", "breaker")  # the retry typo is caught although no retry is built
    monkeypatch.setenv("RESILIENT__SVC__TIMEOUT__ENABLED", "perhaps")
    monkeypatch.delenv("RESILIENT__SVC__RETRY__ATEMPTS")
    with pytest.raises(rs.ConfigError, match="ENABLED='perhaps'"):
        rs.policy("svc", "timeout")


def test_timeout_seconds_from_env_in_a_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT__X__TIMEOUT__SECONDS", "3s")
    pipe = rs.policy("x", "timeout")
    (timeout,) = pipe.policies
    assert isinstance(timeout, rs.Timeout) and timeout.seconds == 3.0
    rs.registry.clear()
    monkeypatch.delenv("RESILIENT__X__TIMEOUT__SECONDS")
    with pytest.raises(rs.ConfigError, match="RESILIENT__X__TIMEOUT__SECONDS"):
        rs.policy("x", "timeout")


def test_policy_argument_mistakes_are_named() -> None:
    with pytest.raises(ValueError, match="did you mean 'breaker'"):
        rs.policy("svc", "braker")
    with pytest.raises(ValueError, match="twice"):
        rs.policy("svc", "retry", "retry")
    with pytest.raises(TypeError, match="add 'timeout' to the kinds"):
        rs.policy("svc", "retry", timeout={"seconds": 1})
    with pytest.raises(TypeError, match="at least one kind"):
        rs.policy("svc")
    with pytest.raises(TypeError, match="mapping"):
        rs.policy("svc", "retry", retry=3)  # type: ignore[arg-type]


def test_testing_helpers_need_a_registered_breaker() -> None:
    with pytest.raises(LookupError, match="no breaker named 'nope'"):
        force_open("nope")
    reg = rs.Registry()
    breaker = reg.breaker("own")
    assert force_open("own", registry=reg) is breaker
    assert breaker.state is rs.BreakerState.FORCED_OPEN
    assert reset_breaker("own", registry=reg) is breaker
    assert breaker.state is rs.BreakerState.CLOSED
