"""Saga definitions: the steps a saga is built from, the decorators that add them, and the
frozen :class:`_Definition` the engine runs.

``Saga.step`` / ``Saga.add_step`` / ``Step.compensate`` are the public faces; the checks behind
them (names, pivots, retriable steps, compensations) live in :class:`_Steps`, which freezes
the list into a :class:`_Definition` (pivot index, steps hash, which functions are async) the
first time the saga runs, after which the steps can no longer change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, Protocol, TypeVar, cast, overload

from .._policy import Policy, is_async_callable
from ._model import SagaContext, steps_hash

__all__ = ["Step"]

R = TypeVar("R")  # what calling a step returns (a coroutine for an async step)
T = TypeVar("T")  # the result a step records (awaited)
U = TypeVar("U")
V = TypeVar("V")
_IN_DOUBT = ("retry", "compensate", "escalate")


@dataclasses.dataclass
class _StepDef:
    name: str
    fn: Callable[..., Any]
    policy: Policy | None
    pivot: bool
    retriable: bool
    in_doubt: str
    compensate: Callable[..., Any] | None = None
    compensate_policy: Policy | None = None


class Step(Generic[R, T]):
    """What ``@saga.step`` returns: the step's function (still callable as before) plus
    ``.compensate`` to attach its compensation.

    Generic so type checkers follow the step: ``R`` is what calling it returns (a coroutine
    for an ``async def`` step) and ``T`` the result the saga records (the awaited value),
    which is what the compensation receives as ``done`` (``T | None``).
    """

    __slots__ = ("_def", "_steps")

    def __init__(self, steps: _Steps, sdef: _StepDef) -> None:
        self._steps = steps
        self._def = sdef

    @property
    def name(self) -> str:
        """The step's name (unique within its saga)."""
        return self._def.name

    def __call__(self, ctx: SagaContext, /) -> R:
        result: R = self._def.fn(ctx)
        return result

    def __repr__(self) -> str:
        return f"<Step {self._steps.saga_name}.{self.name}>"

    @overload
    def compensate(
        self, fn: Callable[[SagaContext, T | None], U], /, *, policy: Policy | None = None
    ) -> Callable[[SagaContext, T | None], U]: ...

    @overload
    def compensate(
        self, fn: None = None, /, *, policy: Policy | None = None
    ) -> _CompensationDecorator[T]: ...

    def compensate(
        self,
        fn: Callable[[SagaContext, T | None], U] | None = None,
        /,
        *,
        policy: Policy | None = None,
    ) -> Callable[[SagaContext, T | None], U] | _CompensationDecorator[T]:
        """Attach the compensation ``fn(ctx, done)`` (``def`` or ``async def``); ``done`` is the
        step's result, or ``None`` when its outcome is unknown. ``policy`` retries it (default:
        the saga's generous compensation retry). Usable bare (``@step.compensate``) or called
        (``@step.compensate(policy=...)``); returns ``fn`` unchanged."""

        def attach(f: Callable[[SagaContext, T | None], V]) -> Callable[[SagaContext, T | None], V]:
            self._steps.set_compensation(self._def, f, policy)
            return f

        if fn is not None:
            return attach(fn)
        return attach


class _CompensationDecorator(Protocol[T]):
    """What ``step.compensate(policy=...)`` returns: a decorator taking ``fn(ctx, done)``
    whose ``done`` accepts the step's result or ``None``, and returning ``fn`` as it was."""

    def __call__(
        self, fn: Callable[[SagaContext, T | None], U], /
    ) -> Callable[[SagaContext, T | None], U]: ...


class _StepDecorator(Protocol):
    """What ``saga.step(...)`` returns when called with options: a decorator that turns
    ``fn(ctx)`` into a :class:`Step`, typed for ``def`` and ``async def`` alike."""

    @overload
    def __call__(
        self, fn: Callable[[SagaContext], Coroutine[Any, Any, T]], /
    ) -> Step[Coroutine[Any, Any, T], T]: ...

    @overload
    def __call__(self, fn: Callable[[SagaContext], T], /) -> Step[T, T]: ...


@dataclasses.dataclass(frozen=True)
class _Definition:
    steps: tuple[_StepDef, ...]
    index: dict[str, int]
    pivot_idx: int | None  # the point of no return (-1: the first step is already past it)
    hash: str
    is_async: frozenset[tuple[str, str]]  # (step, phase) whose function is async
    async_step: str | None  # the first step with an async function (run_sync refuses it)

    def forward_only(self, idx: int) -> bool:
        """Steps after the pivot only go forward (retried until they succeed)."""
        return self.pivot_idx is not None and idx > self.pivot_idx


def _freeze(steps: Sequence[_StepDef]) -> _Definition:
    pivot_idx: int | None = None
    for i, s in enumerate(steps):
        if s.pivot:
            pivot_idx = i
            break
    if pivot_idx is None:
        for i, s in enumerate(steps):
            if s.retriable:
                pivot_idx = i - 1  # the step before the first retriable one is the pivot
                break
    is_async = frozenset(
        (s.name, phase)
        for s in steps
        for phase, f in (("forward", s.fn), ("compensate", s.compensate))
        if f is not None and is_async_callable(f)
    )
    return _Definition(
        steps=tuple(steps),
        index={s.name: i for i, s in enumerate(steps)},
        pivot_idx=pivot_idx,
        hash=steps_hash([s.name for s in steps]),
        is_async=is_async,
        async_step=next(
            (
                s.name
                for s in steps
                if (s.name, "forward") in is_async or (s.name, "compensate") in is_async
            ),
            None,
        ),
    )


class _Steps:
    """A saga's steps while it is being defined: every addition is checked here (so a bad
    definition fails at import time, not mid-saga), and :meth:`freeze` turns the list into the
    :class:`_Definition` the engine runs, after which it can no longer change."""

    __slots__ = ("defs", "frozen", "saga_name")

    def __init__(self, saga_name: str) -> None:
        self.saga_name = saga_name
        self.defs: list[_StepDef] = []
        self.frozen: _Definition | None = None

    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.defs)

    def step(
        self,
        fn: Callable[[SagaContext], Any],
        name: str | None,
        policy: Policy | None,
        pivot: bool,
        retriable: bool,
        in_doubt: str,
    ) -> Step[Any, Any]:
        """What ``@saga.step`` does with ``fn``: add it and wrap it in a :class:`Step`."""
        if not callable(fn):
            raise TypeError(f"a saga step must be callable, got {fn!r}")
        step_name = name if name is not None else getattr(fn, "__name__", None)
        return Step(self, self.add(step_name, fn, policy, pivot, retriable, in_doubt))

    def add(
        self,
        name: object,
        fn: Callable[..., Any],
        policy: object,
        pivot: bool,
        retriable: bool,
        in_doubt: str,
    ) -> _StepDef:
        self._check_open()
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError(f"step name must be a non-empty string without ':', got {name!r}")
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError(f"policy of step {name!r} must be a resilient Policy, got {policy!r}")
        if in_doubt not in _IN_DOUBT:
            raise ValueError(
                f"in_doubt of step {name!r} must be one of {_IN_DOUBT}, got {in_doubt!r}"
            )
        if any(s.name == name for s in self.defs):
            raise ValueError(f"duplicate step name {name!r} in saga {self.saga_name!r}")
        if pivot and retriable:
            raise ValueError(f"step {name!r} cannot be both the pivot and retriable")
        first_pivot = next((s.name for s in self.defs if s.pivot), None)
        if pivot and first_pivot is not None:
            raise ValueError(
                f"saga {self.saga_name!r} already has a pivot step ({first_pivot!r}); "
                f"step {name!r} cannot be a second one"
            )
        retriable_before = next((s.name for s in self.defs if s.retriable), None)
        if retriable_before is not None and not retriable:
            what = "the pivot" if pivot else "a non-retriable step"
            raise ValueError(
                f"retriable step {retriable_before!r} would come before {what} {name!r}: "
                "retriable steps must come last, after the pivot"
            )
        sdef = _StepDef(name, fn, policy, bool(pivot), bool(retriable), in_doubt)
        self.defs.append(sdef)
        return sdef

    def set_compensation(self, sdef: _StepDef, fn: object, policy: object) -> None:
        self._check_open()
        if not callable(fn):
            raise TypeError(f"compensation of step {sdef.name!r} must be callable, got {fn!r}")
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError(
                f"policy of the compensation of {sdef.name!r} must be a Policy, got {policy!r}"
            )
        if sdef.compensate is not None:
            raise ValueError(f"step {sdef.name!r} already has a compensation")
        if sdef.retriable:
            raise ValueError(
                f"retriable step {sdef.name!r} cannot have a compensation: it is never compensated"
            )
        idx = self.defs.index(sdef)
        if any(s.pivot for s in self.defs[:idx]):
            raise ValueError(
                f"step {sdef.name!r} comes after the pivot and is never compensated; "
                "it cannot have a compensation"
            )
        sdef.compensate = cast(Callable[..., Any], fn)
        sdef.compensate_policy = policy

    def _check_open(self) -> None:
        if self.frozen is not None:
            raise RuntimeError(
                f"saga {self.saga_name!r} already ran; its steps can no longer change"
            )

    def remove(self, sdef: _StepDef) -> None:
        self.defs.remove(sdef)

    def freeze(self) -> _Definition:
        """The definition the engine runs (built once, on the first run)."""
        if self.frozen is None:
            if not self.defs:
                raise ValueError(f"saga {self.saga_name!r} has no steps")
            self.frozen = _freeze(self.defs)
        return self.frozen
