"""The default policy of a saga's compensations (``Saga(compensation_policy=None)``)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from .. import _sleeping
from .._policy import Policy
from .._types import Args, AsyncFn, Kwargs
from ._host import SagaHost


class _CompensationRetry(Policy):
    """The default policy of compensations: generous capped exponential backoff (an undo must
    be given every chance before the saga is declared STUCK)."""

    kind = "saga_compensation"

    def __init__(self, saga: SagaHost, attempts: int = 10, base: float = 0.5, cap: float = 30.0):
        super().__init__(f"{saga.name}.compensation")
        self._saga_ref = weakref.ref(saga)
        self.attempts = attempts
        self.base = base
        self.cap = cap

    def _delay(self, n: int) -> float:
        return float(min(self.cap, self.base * (2 ** (n - 1))))

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        n = 1
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception:
                if n >= self.attempts:
                    raise
            saga = self._saga_ref()
            sleep = getattr(saga._clock, "sleep", None) if saga is not None else None
            (sleep or _sleeping.sync_sleep)(self._delay(n))
            n += 1

    async def _acall(self, fn: AsyncFn, args: Args, kwargs: Kwargs) -> Any:
        n = 1
        while True:
            try:
                return await fn(*args, **kwargs)
            except Exception:
                if n >= self.attempts:
                    raise
            saga = self._saga_ref()
            asleep = getattr(saga._clock, "asleep", None) if saga is not None else None
            await (asleep or _sleeping.async_sleep)(self._delay(n))
            n += 1
