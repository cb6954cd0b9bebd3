"""Retry honours the "this call must not be repeated" marker (``resilient._no_retry``).

The HTTP transport sets it for requests that are not idempotent: they still pass through the
whole pipeline (the breaker counts them) but ``Retry`` gives up after the first failure. The
marker is read on the failure path only, so a successful call behaves exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextvars import Token
from typing import Any

import pytest

import resilient as rs
from resilient._no_retry import NO_RETRY

REASON = "POST without Idempotency-Key"


class Boom(Exception):
    pass


@pytest.fixture
def forbidden() -> Iterator[None]:
    token: Token[str | None] = NO_RETRY.set(REASON)
    try:
        yield
    finally:
        NO_RETRY.reset(token)


def _notes(error: BaseException) -> list[str]:
    return list(getattr(error, "__notes__", []))


def _failing(calls: list[int]) -> Any:
    def fn() -> str:
        calls.append(1)
        raise Boom(len(calls))

    return fn


@pytest.mark.usefixtures("forbidden")
def test_sync_call_is_not_repeated_and_the_reason_is_noted() -> None:
    waits: list[float] = []
    retry = rs.Retry(attempts=5, wait=0.5, sleep=waits.append)
    calls: list[int] = []
    with pytest.raises(Boom) as info:
        retry.call(_failing(calls))
    assert len(calls) == 1
    assert waits == []
    assert any(REASON in note and "1 attempt" in note for note in _notes(info.value))


@pytest.mark.usefixtures("forbidden")
def test_result_retries_are_not_taken_either() -> None:
    retry = rs.Retry(attempts=5, wait=0.0, on_result=lambda r: r == "again")
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        return "again"

    with pytest.raises(rs.RetryExhaustedError) as info:
        retry.call(fn)
    assert info.value.attempts == 1
    assert len(calls) == 1


@pytest.mark.usefixtures("forbidden")
def test_success_is_untouched() -> None:
    retry = rs.Retry(attempts=3, wait=0.0)
    assert retry.call(lambda: "ok") == "ok"


@pytest.mark.usefixtures("forbidden")
def test_inline_attempts_stop_after_the_first() -> None:
    retry = rs.Retry(attempts=4, wait=0.0)
    seen: list[int] = []
    with pytest.raises(Boom):
        for attempt in retry.attempts():
            with attempt:
                seen.append(attempt.number)
                raise Boom(attempt.number)
    assert seen == [1]


@pytest.mark.anyio
async def test_async_call_is_not_repeated(anyio_backend: str) -> None:
    waits: list[float] = []
    retry = rs.Retry(attempts=5, wait=0.5, sleep=waits.append)
    calls: list[int] = []

    async def fn() -> str:
        calls.append(1)
        raise Boom(len(calls))

    token = NO_RETRY.set(REASON)
    try:
        with pytest.raises(Boom):
            await retry.acall(fn)
    finally:
        NO_RETRY.reset(token)
    assert len(calls) == 1
    assert waits == []


def test_without_the_marker_retries_as_usual() -> None:
    waits: list[float] = []
    retry = rs.Retry(attempts=3, wait=0.5, sleep=waits.append)
    calls: list[int] = []
    with pytest.raises(Boom):
        retry.call(_failing(calls))
    assert len(calls) == 3
    assert waits == [0.5, 0.5]
