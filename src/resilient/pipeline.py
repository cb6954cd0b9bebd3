"""Composition: ``pipeline(outer, ..., inner)`` wraps a call in several policies.

The first policy is outermost, like Polly's resilience pipeline. The usual order is
``Fallback, Retry, CircuitBreaker, Timeout, Bulkhead``: the fallback sees the final verdict,
each retry attempt passes the breaker and gets its own timeout, and the bulkhead bounds only
the work actually running.
"""

from __future__ import annotations

from typing import Any

from ._policy import Policy
from ._types import Args, AsyncFn, Fn, Kwargs

__all__ = ["Pipeline", "pipeline"]


class Pipeline(Policy):
    """Several policies applied as one; ``policies[0]`` is the outermost.

    The pipeline itself adds no span or metric: each member reports its own, nested.
    """

    kind = "pipeline"
    _counts_calls = False

    def __init__(self, *policies: Policy, name: str | None = None) -> None:
        if not policies:
            raise ValueError("pipeline() needs at least one policy, got none")
        for i, p in enumerate(policies):
            if not isinstance(p, Policy):
                raise TypeError(f"pipeline() argument {i} must be a resilient policy, got {p!r}")
        super().__init__(name)
        self.policies: tuple[Policy, ...] = tuple(policies)

    def __repr__(self) -> str:
        inner = ", ".join(repr(p) for p in self.policies)
        return f"<Pipeline {self.name!r}: {inner}>"

    def _adopt_name(self, fn: object) -> None:
        """Decorating a function names the pipeline and its unnamed members after it, so a
        ``pipeline(Retry(), CircuitBreaker())`` on ``charge`` reports ``retry``/``breaker``
        series named ``charge``."""
        super()._adopt_name(fn)
        for member in self.policies:
            if member._auto_named:
                member._adopt_name(fn)

    def _execute(self, fn: Fn, args: Args, kwargs: Kwargs) -> Any:
        return self._call(fn, args, kwargs)

    async def _aexecute(self, fn: AsyncFn, args: Args, kwargs: Kwargs) -> Any:
        return await self._acall(fn, args, kwargs)

    def _call(self, fn: Fn, args: Args, kwargs: Kwargs) -> Any:
        return self._layer(0, fn, args, kwargs)

    def _layer(self, index: int, fn: Fn, args: Args, kwargs: Kwargs) -> Any:
        if index == len(self.policies):
            return fn(*args, **kwargs)
        return self.policies[index]._execute(self._layer, (index + 1, fn, args, kwargs), {})

    async def _acall(self, fn: AsyncFn, args: Args, kwargs: Kwargs) -> Any:
        return await self._alayer(0, fn, args, kwargs)

    async def _alayer(
        self,
        index: int,
        fn: AsyncFn,
        args: Args,
        kwargs: Kwargs,
    ) -> Any:
        if index == len(self.policies):
            return await fn(*args, **kwargs)
        return await self.policies[index]._aexecute(self._alayer, (index + 1, fn, args, kwargs), {})


def pipeline(*policies: Policy, name: str | None = None) -> Pipeline:
    """Compose ``policies`` into one decorator; the first is outermost."""
    return Pipeline(*policies, name=name)
