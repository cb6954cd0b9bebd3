"""User code that must type-check under ``mypy --strict`` (checked by test_typing.py).

``assert_type`` pins what the decorators return; a ``# type: ignore[...]`` marks a line that
MUST be an error (``--strict`` warns about unused ignores, so if the saga's types decayed to
``Any`` those lines would fail the check). The module also runs: ``build()`` makes a saga that
``run_sync`` completes.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from typing_extensions import assert_type

import resilient as rs
from resilient.saga import Step


def build() -> rs.Saga:
    saga = rs.Saga("typed")

    @saga.step
    def reserve(ctx: rs.SagaContext) -> dict[str, int]:
        return {"qty": 1}

    assert_type(reserve, Step[dict[str, int], dict[str, int]])

    @reserve.compensate
    def release(ctx: rs.SagaContext, done: dict[str, int] | None) -> None:
        return None

    assert_type(release, Callable[[rs.SagaContext, dict[str, int] | None], None])

    @saga.step(policy=rs.Retry(attempts=2, wait=0.0), pivot=True)
    def charge(ctx: rs.SagaContext) -> str:
        return "ch_1"

    assert_type(charge(rs.SagaContext("id", None, {}, "charge")), str)

    @charge.compensate(policy=rs.Retry(attempts=2, wait=0.0))
    def refund(ctx: rs.SagaContext, done: str | None) -> None:
        return None

    @saga.step(retriable=True)
    def notify(ctx: rs.SagaContext) -> None:
        return None

    assert_type(notify, Step[None, None])
    return saga


def build_async() -> rs.Saga:
    saga = rs.Saga("typed-async")

    @saga.step()
    async def reserve(ctx: rs.SagaContext) -> list[str]:
        return ["a"]

    assert_type(reserve, Step[Coroutine[Any, Any, list[str]], list[str]])

    @reserve.compensate()
    async def release(ctx: rs.SagaContext, done: list[str] | None) -> None:
        return None

    return saga


def mistakes() -> None:
    saga = rs.Saga("typed-mistakes")

    @saga.step
    def reserve(ctx: rs.SagaContext) -> int:
        return 1

    # the compensation must accept None: the step's outcome may be unknown
    @reserve.compensate  # type: ignore[arg-type]
    def release(ctx: rs.SagaContext, done: int) -> None:
        return None

    # a step is called with exactly one argument, the context
    @saga.step  # type: ignore[arg-type]
    def no_context() -> int:
        return 1
