"""Shared saga test participants: the SAGA.md 4.9 fixture (A, B, C and the long variant with
D), whose steps record their effects in a :class:`~resilient.saga.testing.Ledger` keyed by
the idempotency key, with scripted behaviour per invocation.

Imported by the tests and by ``saga_child.py`` (the process that gets killed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio

import resilient as rs
from resilient.saga import SagaContext
from resilient.saga.testing import Ledger

A, B, C, D = "reserve_inventory", "charge_payment", "send_notification", "D"

# An action scripted for one invocation: "ok", "hang" (effect, then never return), an
# exception instance (raised before any effect), or ("effect", exc) (effect, then raise).
Action = Any


class Shop:
    """The participants: every call is logged in ``calls``; effects go to ``ledger``."""

    def __init__(self, ledger: Ledger | None = None) -> None:
        self.ledger = ledger
        self.calls: list[tuple[str, str, str, int, Any]] = []
        self.plan: dict[str, list[Action]] = {}
        self.hanging: anyio.Event | None = None  # set when a "hang" action starts
        self._lock = threading.Lock()

    def script(self, target: str, *actions: Action) -> None:
        """Queue ``actions`` for the next invocations of ``target`` ("B" or "undo:B")."""
        self.plan.setdefault(target, []).extend(actions)

    def _next(self, target: str) -> Action:
        with self._lock:
            queue = self.plan.get(target)
            return queue.pop(0) if queue else "ok"

    def _effect(self, ctx: SagaContext, op: str) -> None:
        if self.ledger is not None:
            self.ledger.apply(ctx.idempotency_key, op)

    def invoked(self, kind: str, name: str | None = None) -> list[tuple[str, str, str, int, Any]]:
        return [c for c in self.calls if c[0] == kind and (name is None or c[1] == name)]

    def order(self) -> list[str]:
        return [f"{c[0]}:{c[1]}" for c in self.calls]

    # -- sync participants --------------------------------------------------------------------
    def step(self, name: str) -> Callable[[SagaContext], Any]:
        def run(ctx: SagaContext) -> Any:
            self.calls.append(("do", name, ctx.idempotency_key, ctx.attempt, None))
            action = self._next(name)
            if isinstance(action, BaseException):
                raise action
            self._effect(ctx, name)
            if isinstance(action, tuple):
                raise action[1]
            return {"step": name, "saga": ctx.saga_id}

        run.__name__ = name
        return run

    def undo(self, name: str) -> Callable[[SagaContext, Any], None]:
        def run(ctx: SagaContext, done: Any) -> None:
            self.calls.append(("undo", name, ctx.idempotency_key, ctx.attempt, done))
            action = self._next(f"undo:{name}")
            if isinstance(action, BaseException):
                raise action
            self._effect(ctx, f"undo {name}")

        return run

    # -- async participants -------------------------------------------------------------------
    def astep(self, name: str) -> Callable[[SagaContext], Any]:
        sync = self.step(name)

        async def run(ctx: SagaContext) -> Any:
            await anyio.lowlevel.checkpoint()
            queue = self.plan.get(name)
            if queue and queue[0] == "hang":
                queue.pop(0)
                self.calls.append(("do", name, ctx.idempotency_key, ctx.attempt, None))
                self._effect(ctx, name)
                if self.hanging is not None:
                    self.hanging.set()
                await anyio.sleep_forever()
            return sync(ctx)

        run.__name__ = name
        return run

    def aundo(self, name: str) -> Callable[[SagaContext, Any], Any]:
        sync = self.undo(name)

        async def run(ctx: SagaContext, done: Any) -> None:
            await anyio.lowlevel.checkpoint()
            sync(ctx, done)

        return run


def order_saga(
    shop: Shop,
    *,
    long: bool = False,
    is_async: bool = True,
    policies: dict[str, rs.Policy] | None = None,
    undo_policy: rs.Policy | None = None,
    name: str = "order",
    **saga_kw: Any,
) -> rs.Saga:
    """The 4.9 fixture. Basic: A(undo), B(undo, pivot), C(retriable). Long: A(undo),
    B(undo), D(undo, pivot), C(retriable)."""
    step = shop.astep if is_async else shop.step
    undo = shop.aundo if is_async else shop.undo
    pol = policies or {}
    saga = rs.Saga(name, **saga_kw)
    saga.add_step(A, step(A), compensate=undo(A), policy=pol.get(A), compensate_policy=undo_policy)
    saga.add_step(
        B,
        step(B),
        compensate=undo(B),
        policy=pol.get(B),
        pivot=not long,
        compensate_policy=undo_policy,
    )
    if long:
        saga.add_step(
            D,
            step(D),
            compensate=undo(D),
            policy=pol.get(D),
            pivot=True,
            compensate_policy=undo_policy,
        )
    saga.add_step(C, step(C), policy=pol.get(C), retriable=True)
    return saga
