"""RetryBudget: one allowance of retries shared by many ``Retry`` policies.

Retries multiply load exactly when a dependency is struggling: three attempts per call turn an
outage into three times the traffic. A budget caps retries at a fraction of the calls
(``ratio``) over a sliding ``window``, with a small reserve (``min_per_second``) so a service
with little traffic can still retry now and then. Give the same budget to every ``Retry`` that
talks to one dependency: ``rs.Retry(attempts=3, budget=budget)``.

Cost on the happy path: a first attempt deposits by advancing an ``itertools.count`` (one C
call, atomic under the GIL, no lock); the count is read, exactly, only when a retry is being
decided, under a short lock. See :mod:`resilient._core.budget` for the rule and the window.
"""

from __future__ import annotations

import itertools
import threading
import types
from collections.abc import Callable
from typing import Any, TypeVar, cast

from . import _validate as v
from ._core.budget import BudgetCore
from .config import Configurable, build_from_env

__all__ = ["RetryBudget"]

_RATIO = v.number("ratio", minimum=0)
_MIN_PER_SECOND = v.number("min_per_second", minimum=0)
_WINDOW = v.duration("window", zero=False)
_CLOCK = v.clock()
_OPTIONS = v.Options(_RATIO, _MIN_PER_SECOND, _WINDOW, _CLOCK)

BudgetT = TypeVar("BudgetT", bound="RetryBudget")

_names = itertools.count(1)
_names_lock = threading.Lock()


class RetryBudget:
    """Retries allowed: ``ratio`` of the first attempts of the last ``window`` seconds, plus
    ``min_per_second`` per second. Shared by every ``Retry(budget=...)`` it is given to.

    * ``ratio`` (>= 0, default 0.2): retries earned per first attempt. 0.2 means that, over
      the window, retries add at most 20% to the calls made (plus the reserve).
    * ``min_per_second`` (>= 0, default 10): the reserve: this many retries per second are
      allowed even without traffic to earn them, so a quiet service can still retry.
    * ``window`` (seconds > 0, default 10): how long a first attempt's deposit (and a retry's
      withdrawal) counts.
    * ``clock``: where time comes from (default ``time.monotonic``).

    Every first attempt of a ``Retry`` using the budget deposits ``ratio``; every retry
    withdraws 1. When less than one retry is left, the retry is not taken: the ``Retry`` gives
    up at once and the last error propagates (or ``RetryExhaustedError`` for a result), and
    ``resilient_rejections_total{policy="retry", reason="retry_budget"}`` counts it.
    :attr:`balance` reads what is left. Not a policy: it decorates nothing; it is named (for
    the registry, ``rs.registry.health()`` and configuration) and built from the environment
    with :meth:`from_env` (``RESILIENT__<NAME>__RETRY_BUDGET__<FIELD>``).
    """

    kind = "retry_budget"
    options = _OPTIONS
    switchable = False
    """No ``ENABLED`` switch: a budget is no pipeline member (configuration reads this)."""

    def __init__(
        self,
        name: str | None = None,
        *,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        window: float = 10.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        ratio = _RATIO(ratio)
        min_per_second = _MIN_PER_SECOND(min_per_second)
        window = _WINDOW(window)
        clock = _CLOCK(clock)
        if name is None:
            with _names_lock:
                name = f"{self.kind}-{next(_names)}"
        self.name: str = v.check_name(name)
        self._clock = clock
        self._lock = threading.Lock()
        self._core = BudgetCore(ratio, min_per_second, window)
        # First attempts: a ``Retry`` calls ``next()`` on this ``itertools.count`` (the builtin
        # ``next``: cheaper than a bound ``__next__``). Reading the count also advances it, so
        # reads are counted (under the lock) and subtracted.
        self._counter = itertools.count()
        self._reads = 0
        self._seen = 0  # deposits handed to the core so far
        self._seen_at = self._clock()  # when they were last handed over
        self.refused = 0
        """Retries refused since the budget was made."""
        self._settings = types.MappingProxyType(
            {"ratio": ratio, "min_per_second": min_per_second, "window": window, "clock": clock}
        )

    def __repr__(self) -> str:
        core = self._core
        return (
            f"<RetryBudget {self.name!r} ratio={core.ratio:g} "
            f"min_per_second={core.min_per_second:g} window={core.window:g}>"
        )

    @classmethod
    def from_env(cls: type[BudgetT], name: str, /, **code_defaults: Any) -> BudgetT:
        """Build the budget named ``name`` from ``RESILIENT__<NAME>__RETRY_BUDGET__<FIELD>``
        variables; the environment wins over ``code_defaults``, which win over the defaults.
        Bad values raise :class:`resilient.ConfigError`."""
        return cast(BudgetT, build_from_env(cast("Configurable[Any]", cls), name, code_defaults))

    # -- read-only view ------------------------------------------------------------------------
    @property
    def settings(self) -> types.MappingProxyType[str, Any]:
        """The effective configuration, read-only, keyed by option name (as for policies)."""
        return self._settings

    @property
    def ratio(self) -> float:
        """Retries earned per first attempt."""
        return self._core.ratio

    @property
    def min_per_second(self) -> float:
        """Retries per second allowed without traffic to earn them."""
        return self._core.min_per_second

    @property
    def window(self) -> float:
        """Seconds a deposit or a withdrawal counts."""
        return self._core.window

    @property
    def balance(self) -> float:
        """Retries the budget would allow right now (below 1: none)."""
        now = self._clock()
        with self._lock:
            self._collect(now)
            return self._core.balance(now)

    # -- what Retry calls ----------------------------------------------------------------------
    def _collect(self, now: float) -> None:
        """Hand the first attempts counted since the last look to the core (lock held)."""
        total = next(self._counter) - self._reads  # deposits so far: reads are not deposits
        self._reads += 1
        fresh = total - self._seen
        if fresh:
            self._core.deposit(fresh, self._seen_at, now)
            self._seen = total
        self._seen_at = now

    def _try_withdraw(self) -> bool:
        """Take one retry from the budget; ``False`` (and counted) when none is left."""
        now = self._clock()
        with self._lock:
            self._collect(now)
            if self._core.try_withdraw(now):
                return True
            self.refused += 1
            return False

    def _health(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            self._collect(now)
            core = self._core
            balance = core.balance(now)
            return {
                "balance": round(balance, 6),
                "deposits": round(core.deposited, 6),
                "retries": core.withdrawn,
                "refused": self.refused,
                "ratio": core.ratio,
                "min_per_second": core.min_per_second,
                "window": core.window,
            }
