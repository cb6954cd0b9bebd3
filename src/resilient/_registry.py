"""Named policies shared across a service: ``rs.registry`` and ``@rs.policy(...)``.

A circuit breaker only protects a dependency if every call to that dependency goes through the
SAME breaker. The registry hands out one instance per (name, kind), created on first use from
the environment (``Policy.from_env``) and the code's defaults, so ``payments`` means one
breaker, one bulkhead, ... wherever it is used, and operators configure it by name.

``@rs.policy("payments", "retry", "breaker", "timeout", timeout={"seconds": 2})`` builds the
named pipeline in the usual order (fallback, retry, hedge, breaker, rate limiter, timeout,
bulkhead, adaptive bulkhead, then the chaos kinds innermost) whatever the order of the kinds
given; ``RESILIENT__PAYMENTS__RETRY__ENABLED=false`` leaves the retry out. Chaos kinds are the
exception: their ``enabled`` is a real, run-time switch of the policy
(``RESILIENT__PAYMENTS__CHAOS_FAULT__ENABLED=true``), so they are always members and switch
themselves on and off.

Retry budgets are named too (``rs.registry.retry_budget("payments")``), so retries of one
dependency can share one; they are no pipeline member (a ``Retry`` takes one as ``budget=``).

:meth:`Registry.health` is a JSON-ready snapshot of everything the registry holds, for a
health endpoint or ``python -m resilient health``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar, cast

from . import config
from ._policy import Policy
from ._types import Args, AsyncFn, Fn, Kwargs
from .adaptive_bulkhead import AdaptiveBulkhead
from .breaker import BreakerState, CircuitBreaker
from .bulkhead import Bulkhead
from .chaos import Fault, Latency, Result
from .errors import ConfigError
from .fallback import Fallback
from .hedge import Hedge
from .pipeline import Pipeline
from .rate_limiter import RateLimiter
from .retry import Retry
from .retry_budget import RetryBudget
from .timeout import Timeout

__all__ = ["KINDS", "Registry", "policy", "registry"]

KINDS: Mapping[str, type[Policy]] = {
    cls.kind: cls
    for cls in (
        Fallback,
        Retry,
        Hedge,
        CircuitBreaker,
        RateLimiter,
        Timeout,
        Bulkhead,
        AdaptiveBulkhead,
        Latency,
        Fault,
        Result,
    )
}
"""Every built-in policy kind and its class, in the usual pipeline order (outermost first):
``rs.policy`` nests members in this order, whatever order the kinds are given in. The one
place that knows every kind; configuration learns them from here (``config.register_kinds``),
plus the retry budget, which is configurable but no pipeline member."""

config.register_kinds([*KINDS.values(), RetryBudget])

_OPEN_STATES = (BreakerState.OPEN.value, BreakerState.FORCED_OPEN.value)

NamedT = TypeVar("NamedT", Policy, RetryBudget)


def _switches_itself(cls: type[Policy]) -> bool:
    """True for kinds whose ``enabled`` is a constructor option (chaos): the switch is
    handed to the policy instead of leaving it out of pipelines."""
    return any(s.name == config.ENABLED and s.in_constructor for s in config.field_specs(cls))


def _kind_class(kind: str) -> type[Policy]:
    config.policy_class(kind)  # ValueError naming the kinds, with "did you mean"
    cls = KINDS.get(kind)
    if cls is None:
        raise ValueError(
            f"{kind!r} is not a policy a pipeline can hold (kinds: {', '.join(KINDS)}); "
            f"a retry budget goes to a retry: retry={{'budget': registry.retry_budget(name)}}"
        )
    return cls


_Defaults = Mapping[str, Any]
_Snapshot = tuple[
    dict[tuple[str, str], Policy],
    dict[tuple[str, str], RetryBudget],
    dict[tuple[str, str], dict[str, Any]],
]


def _same_defaults(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        other = b[key]
        if value is other:
            continue
        try:
            if not bool(value == other):
                return False
        except Exception:  # objects whose == is not a bool (arrays): compare by identity
            return False
    return True


class _Passthrough(Policy):
    """What a named pipeline runs when every one of its policies is switched off by
    ``...__ENABLED=false``: the call itself, with no telemetry of its own."""

    kind = "passthrough"
    _counts_calls = False

    def _execute(self, fn: Fn, args: Args, kwargs: Kwargs) -> Any:
        return fn(*args, **kwargs)

    async def _aexecute(self, fn: AsyncFn, args: Args, kwargs: Kwargs) -> Any:
        return await fn(*args, **kwargs)

    _call = _execute
    _acall = _aexecute


class Registry:
    """One policy instance per (name, kind), created on first request via ``from_env``.

    Creation is thread-safe: threads asking for the same name at once all get the one instance.
    Asking again with *different* code defaults raises :class:`~resilient.ConfigError` rather
    than silently ignoring them (two call sites disagreeing about one breaker is a bug); asking
    with none just looks the instance up.
    """

    def __init__(self) -> None:
        # RLock: building a policy may import a user module (exception paths) that itself
        # asks this registry for a policy at import time, on the same thread.
        self._lock = threading.RLock()
        self._policies: dict[tuple[str, str], Policy] = {}
        self._budgets: dict[tuple[str, str], RetryBudget] = {}
        self._defaults: dict[tuple[str, str], dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"<Registry of {len(self._policies)} policies>"

    # -- one policy ------------------------------------------------------------------------
    def breaker(self, name: str, /, **defaults: Any) -> CircuitBreaker:
        """The circuit breaker named ``name`` (``RESILIENT__<NAME>__BREAKER__*``)."""
        return cast(CircuitBreaker, self.obtain("breaker", name, defaults))

    def bulkhead(self, name: str, /, **defaults: Any) -> Bulkhead:
        """The bulkhead named ``name`` (``RESILIENT__<NAME>__BULKHEAD__*``); needs
        ``max_concurrent`` from code or the environment."""
        return cast(Bulkhead, self.obtain("bulkhead", name, defaults))

    def retry(self, name: str, /, **defaults: Any) -> Retry:
        """The retry policy named ``name`` (``RESILIENT__<NAME>__RETRY__*``)."""
        return cast(Retry, self.obtain("retry", name, defaults))

    def timeout(self, name: str, /, **defaults: Any) -> Timeout:
        """The timeout named ``name`` (``RESILIENT__<NAME>__TIMEOUT__*``); needs ``seconds``
        from code or the environment."""
        return cast(Timeout, self.obtain("timeout", name, defaults))

    def fallback(self, name: str, /, **defaults: Any) -> Fallback:
        """The fallback named ``name`` (``RESILIENT__<NAME>__FALLBACK__*``); give ``value`` or
        ``handler`` in code (``VALUE`` may also come from the environment, as JSON)."""
        return cast(Fallback, self.obtain("fallback", name, defaults))

    def rate_limiter(self, name: str, /, **defaults: Any) -> RateLimiter:
        """The rate limiter named ``name`` (``RESILIENT__<NAME>__RATE_LIMITER__*``); needs
        ``rate`` from code or the environment."""
        return cast(RateLimiter, self.obtain("rate_limiter", name, defaults))

    def adaptive_bulkhead(self, name: str, /, **defaults: Any) -> AdaptiveBulkhead:
        """The adaptive bulkhead named ``name``
        (``RESILIENT__<NAME>__ADAPTIVE_BULKHEAD__*``)."""
        return cast(AdaptiveBulkhead, self.obtain("adaptive_bulkhead", name, defaults))

    def retry_budget(self, name: str, /, **defaults: Any) -> RetryBudget:
        """The retry budget named ``name`` (``RESILIENT__<NAME>__RETRY_BUDGET__*``), to share
        between retries: ``registry.retry("payments", budget=registry.retry_budget("payments"))``.
        """
        return self._obtain(self._budgets, RetryBudget, name, defaults)

    def hedge(self, name: str, /, **defaults: Any) -> Hedge:
        """The hedge named ``name`` (``RESILIENT__<NAME>__HEDGE__*``)."""
        return cast(Hedge, self.obtain("hedge", name, defaults))

    def chaos_fault(self, name: str, /, **defaults: Any) -> Fault:
        """The chaos fault injector named ``name`` (``RESILIENT__<NAME>__CHAOS_FAULT__*``);
        needs ``rate`` and ``error`` from code or the environment."""
        return cast(Fault, self.obtain("chaos_fault", name, defaults))

    def chaos_latency(self, name: str, /, **defaults: Any) -> Latency:
        """The chaos latency injector named ``name`` (``RESILIENT__<NAME>__CHAOS_LATENCY__*``);
        needs ``rate`` and ``seconds``."""
        return cast(Latency, self.obtain("chaos_latency", name, defaults))

    def chaos_result(self, name: str, /, **defaults: Any) -> Result:
        """The chaos result injector named ``name`` (``RESILIENT__<NAME>__CHAOS_RESULT__*``);
        needs ``rate`` and ``value``."""
        return cast(Result, self.obtain("chaos_result", name, defaults))

    def obtain(self, kind: str, name: str, defaults: _Defaults | None = None) -> Policy:
        """The policy of ``kind`` named ``name``, created from the environment and
        ``defaults`` on first request (the kind-specific methods call this)."""
        return self._obtain(self._policies, _kind_class(kind), name, defaults)

    def _obtain(
        self,
        table: dict[tuple[str, str], NamedT],
        cls: type[NamedT],
        name: str,
        defaults: _Defaults | None,
    ) -> NamedT:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        given = dict(defaults or {})
        key = (name, cls.kind)
        with self._lock:
            existing = table.get(key)
            if existing is None:
                existing = cls.from_env(name, **given)
                table[key] = existing
                self._defaults[key] = given
                return existing
            recorded = self._defaults[key]
        if given and not _same_defaults(given, recorded):
            raise ConfigError(
                f"{cls.kind} {name!r} already exists, created with code defaults {recorded!r}; "
                f"this call passed {given!r}. Give every call site the same defaults (or none, "
                f"to look it up)."
            )
        return existing

    def get(self, name: str, kind: str) -> Policy | None:
        """The registered policy of ``kind`` named ``name``, or ``None`` (never creates)."""
        return self._policies.get((name, kind))

    def code_defaults(self, name: str, kind: str) -> Mapping[str, Any] | None:
        """The code defaults the policy was created with (``None`` if it is not registered):
        ``python -m resilient config`` shows them as the ``code`` source."""
        with self._lock:
            recorded = self._defaults.get((name, kind))
            return None if recorded is None else dict(recorded)

    def __iter__(self) -> Iterator[Policy]:
        """Every registered policy, in creation order (a snapshot: safe while others add)."""
        with self._lock:
            return iter(list(self._policies.values()))

    def __len__(self) -> int:
        return len(self._policies)

    def __contains__(self, item: object) -> bool:
        """``breaker in registry`` for a policy (what iterating yields), and
        ``("payments", "breaker") in registry`` for a (name, kind) key."""
        if isinstance(item, Policy):
            return self._policies.get((item.name, item.kind)) is item
        return item in self._policies

    def budgets(self) -> list[RetryBudget]:
        """Every registered retry budget, in creation order."""
        with self._lock:
            return list(self._budgets.values())

    def clear(self) -> None:
        """Forget every registered policy and budget (for tests; live decorators keep their
        instances)."""
        with self._lock:
            self._policies.clear()
            self._budgets.clear()
            self._defaults.clear()

    # -- health ------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """A JSON-ready snapshot of every policy and retry budget in the registry.

        ``{"status": "ok" | "degraded", "open_breakers": [names], "time": unix seconds,
        "policies": {name: {kind: {...}}}}``: ``status`` is ``"degraded"`` while a breaker is
        OPEN or FORCED_OPEN (calls to it fail fast). Each entry holds the live figures of its
        kind (documented in ``docs/health.md``): a breaker's ``state``, window counts and rates,
        ``retry_after`` and ``last_transition``; a bulkhead's ``in_flight``, ``queued`` and
        ``limit``; a rate limiter's ``tokens``; a budget's ``balance``; the settings of the
        others. Reading it applies due breaker transitions, like ``breaker.state``."""
        with self._lock:
            items: list[Policy | RetryBudget] = [
                *self._policies.values(),
                *self._budgets.values(),
            ]
        policies: dict[str, dict[str, Any]] = {}
        open_breakers: list[str] = []
        for item in items:
            entry = item._health()
            policies.setdefault(item.name, {})[item.kind] = entry
            if item.kind == CircuitBreaker.kind and entry.get("state") in _OPEN_STATES:
                open_breakers.append(item.name)
        return {
            "status": "degraded" if open_breakers else "ok",
            "open_breakers": open_breakers,
            "time": time.time(),
            "policies": policies,
        }

    # -- test isolation (``resilient.testing``) ---------------------------------------------
    def _snapshot(self) -> _Snapshot:
        """The registered policies, budgets and their code defaults as they are now."""
        with self._lock:
            return dict(self._policies), dict(self._budgets), dict(self._defaults)

    def _restore(self, snapshot: _Snapshot) -> None:
        """Back to ``snapshot``: policies registered since are forgotten, policies forgotten
        since (``clear()``) come back. The instances themselves are untouched."""
        policies, budgets, defaults = snapshot
        with self._lock:
            self._policies = dict(policies)
            self._budgets = dict(budgets)
            self._defaults = dict(defaults)

    # -- named pipelines -------------------------------------------------------------------
    def policy(
        self,
        name: str,
        /,
        *kinds: str,
        fallback: _Defaults | None = None,
        retry: _Defaults | None = None,
        hedge: _Defaults | None = None,
        breaker: _Defaults | None = None,
        rate_limiter: _Defaults | None = None,
        timeout: _Defaults | None = None,
        bulkhead: _Defaults | None = None,
        adaptive_bulkhead: _Defaults | None = None,
        chaos_latency: _Defaults | None = None,
        chaos_fault: _Defaults | None = None,
        chaos_result: _Defaults | None = None,
    ) -> Pipeline:
        """The pipeline named ``name`` made of the registry's policies of ``kinds``.

        Members are nested in the usual order — fallback, retry, hedge, breaker, rate_limiter,
        timeout, bulkhead, adaptive_bulkhead, chaos_latency, chaos_fault, chaos_result —
        whatever order ``kinds`` are given in. Code defaults per kind are mappings:
        ``policy("payments", "breaker", "timeout", breaker={"window_size": 20},
        timeout={"seconds": 2})``. A kind switched off with ``..._<KIND>__ENABLED=false`` is
        left out (and not created); with every kind off the pipeline just calls through.
        Chaos kinds are always members: ``enabled`` switches the policy itself, at run time.
        """
        per_kind: dict[str, _Defaults | None] = {
            "fallback": fallback,
            "retry": retry,
            "hedge": hedge,
            "breaker": breaker,
            "rate_limiter": rate_limiter,
            "timeout": timeout,
            "bulkhead": bulkhead,
            "adaptive_bulkhead": adaptive_bulkhead,
            "chaos_latency": chaos_latency,
            "chaos_fault": chaos_fault,
            "chaos_result": chaos_result,
        }
        if not kinds:
            raise TypeError(
                "policy() needs at least one kind after the name, e.g. "
                f"policy({name!r}, 'retry', 'breaker', 'timeout')"
            )
        classes = {kind: _kind_class(kind) for kind in kinds}
        if len(classes) != len(kinds):
            raise ValueError(f"policy() got a kind twice: {kinds!r}")
        for kind, given in per_kind.items():
            if given is None:
                continue
            if kind not in classes:
                raise TypeError(
                    f"policy({name!r}) got {kind}={dict(given)!r} but {kind!r} is not among "
                    f"its kinds {kinds!r}; add {kind!r} to the kinds"
                )
            if not isinstance(given, Mapping):
                raise TypeError(f"{kind}= must be a mapping of code defaults, got {given!r}")
        config.check_environment(name)
        members: list[Policy] = []
        for kind, cls in KINDS.items():  # the usual order
            if kind not in classes:
                continue
            defaults = dict(per_kind.get(kind) or {})
            if _switches_itself(cls):
                members.append(self.obtain(kind, name, defaults))
                continue
            code_enabled = bool(defaults.pop(config.ENABLED, True))
            if config.is_enabled(cls, name, default=code_enabled):
                members.append(self.obtain(kind, name, defaults))
        if not members:
            return Pipeline(_Passthrough(name), name=name)
        return Pipeline(*members, name=name)


registry = Registry()
"""The process-wide default registry (``rs.registry``)."""


policy = registry.policy
"""``@rs.policy("payments", "retry", "breaker", "timeout")``: the named pipeline from the
default :data:`registry` (see :meth:`Registry.policy`)."""
