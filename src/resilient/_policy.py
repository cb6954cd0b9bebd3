"""The one front end every policy shares: decorators, context managers, ``call``/``acall``.

A policy only says what it does around one call: "around" policies (breaker, bulkhead) supply
``_enter``/``_exit`` and get the sync wrapper, the async wrapper and both context managers from
:class:`AroundPolicy`; policies that drive the call (retry, timeout, fallback) supply
``_call``/``_acall``. Telemetry (span, metrics, call events) is added here, once, so every
policy reports the same way and the cost is paid in one place that can be measured.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import types
import weakref
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, ClassVar, ParamSpec, TypeVar, cast

from . import _hot_paths
from . import _validate as v
from ._misuse import check_async_entry, check_decoratable, check_sync_entry, without_parentheses
from ._outcomes import NOTE, WAIT
from ._types import Args, AsyncFn, Exc, ExcType, Fn, Kwargs, Tb
from ._validate import check_name, is_async_callable
from .errors import INJECTED as _INJECTED
from .errors import ORIGIN as _ORIGIN
from .errors import PolicyRejectedError, TimeoutExceeded
from .telemetry._hub import STATE, Listener, PolicyTelemetry

__all__ = ["AroundPolicy", "Policy", "is_async_callable"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
PolicyT = TypeVar("PolicyT", bound="Policy")

_log = logging.getLogger("resilient")

_names = itertools.count(1)
_names_lock = threading.Lock()

# Live stateful policies by (kind, name): a second breaker (bulkhead, ...) under a name already
# taken by a live one merges its metrics with the first, which is almost always a mistake.
_live: weakref.WeakValueDictionary[tuple[str, str], Policy] = weakref.WeakValueDictionary()


def _check_name(cls: type[Policy], name: object) -> str:
    if name is None:
        with _names_lock:
            return f"{cls.kind}-{next(_names)}"
    error = without_parentheses(cls.__name__, name)
    if error is not None:
        raise error
    return check_name(name)


def _claim_name(policy: Policy) -> None:
    """Remember a live stateful policy under its name; warn when another live one has it."""
    key = (policy.kind, policy.name)
    with _names_lock:
        other = _live.get(key)
        _live[key] = policy
    if other is not None and other is not policy:
        _log.warning(
            "two live %s policies are named %r: their metrics merge and dashboards cannot tell "
            "them apart; share one instance (rs.registry.%s(%r)) or give each its own name",
            policy.kind,
            policy.name,
            policy.kind,
            policy.name,
        )


class Policy:
    """Base of every policy: usable as ``@policy`` on ``def`` and ``async def``.

    The decorator keeps the wrapped function's signature (``ParamSpec``), so type checkers see
    the same parameters and return type. ``policy.call(fn, *args)`` and
    ``await policy.acall(fn, *args)`` run one call without decorating.
    """

    kind: ClassVar[str] = "policy"
    options: ClassVar[v.Options] = v.Options(v.ON_EVENT)
    """The constructor's options (checks, and how configuration reads them from text)."""
    name: str
    _notes_outcome: bool = False
    """True for policies that may call ``_note_outcome`` (their executions read the note)."""
    _counts_calls: ClassVar[bool] = True
    """False for policies that bypass ``_execute``'s telemetry: no empty call series for them."""
    _own_wrappers: ClassVar[bool] = False
    """True for a policy that overrides ``_execute`` yet builds its decorator wrappers itself
    (``_sync_wrapper``/``_async_wrapper``): chaos policies, whose switched-off check must be
    the wrapper's first line."""
    _sync_refusal: str | None = None
    """Why this policy cannot serve sync calls (it holds an ``async def`` sleep, handler or
    predicate it would have to await), or ``None``."""
    _stateful: ClassVar[bool] = False
    """True for policies whose state is shared by every caller (breaker, bulkhead): a second
    live one with the same name and kind logs a warning."""

    def __init__(self, name: str | None = None, *, on_event: Listener | None = None) -> None:
        self._auto_named = name is None
        self._sync_refusal = None  # an instance attribute: read on every sync call
        self.name = _check_name(type(self), name)
        v.ON_EVENT(on_event)
        self._tel = PolicyTelemetry(self.kind, self.name, on_event, counts_calls=self._counts_calls)
        if self._stateful and not self._auto_named:
            _claim_name(self)

    def _label(self) -> str:
        return f"{type(self).__name__} {self.name!r}"

    def _adopt_name(self, fn: object) -> None:
        """An unnamed policy decorating its first function takes that function's qualified
        name, so metrics and dashboards keep the same series across restarts."""
        self._auto_named = False
        name = getattr(fn, "__qualname__", None)
        if not isinstance(name, str) or not name.strip():
            return
        self.name = name
        self._tel.rename(name)
        self._renamed()
        if self._stateful:
            _claim_name(self)

    def _renamed(self) -> None:
        """Hook for policies that keep name-derived state (e.g. published gauges)."""

    def _refuse_sync_calls_if_async(self, **callables: object) -> None:
        """Refuse sync calls when one of ``callables`` (a sleep, a handler, a predicate) is an
        ``async def``: a sync call could not await it (in async calls it is awaited)."""
        found = [
            f"{option}= ({fn!r})"
            for option, fn in callables.items()
            if callable(fn) and not isinstance(fn, type) and is_async_callable(fn)
        ]
        if found:
            self._sync_refusal = (
                f"{self._label()} has an async {' and an async '.join(found)} and cannot serve "
                "a sync call, which could not await it; use sync callables or call it from "
                "async code"
            )

    def _refuse_sync(self) -> None:
        """Raise ``TypeError`` when this policy cannot serve a sync call (see
        ``_sync_refusal``): before any user code runs."""
        if self._sync_refusal is not None:
            raise TypeError(self._sync_refusal)

    _repr_settings: ClassVar[tuple[str, ...]] = ()
    """The settings ``repr`` shows (the ones an operator checks first)."""
    _settings: types.MappingProxyType[str, Any] = types.MappingProxyType({})

    def __repr__(self) -> str:
        shown = " ".join(f"{key}={self._settings[key]!r}" for key in self._repr_settings)
        return f"<{type(self).__name__} {self.name!r}{' ' if shown else ''}{shown}>"

    @property
    def settings(self) -> types.MappingProxyType[str, Any]:
        """The effective configuration, read-only: every constructor option with the value this
        policy runs with (after checks, environment overrides and defaults), keyed by the
        option's name, so a user can check that ``RESILIENT__...`` took effect without the
        CLI. The same names ``from_env`` and ``python -m resilient config`` use."""
        return self._settings

    def _settle(self, **values: Any) -> None:
        """Record the effective value of each option (called at the end of ``__init__``)."""
        self._settings = types.MappingProxyType(values)

    @classmethod
    def from_env(cls: type[PolicyT], name: str, /, **code_defaults: Any) -> PolicyT:
        """Build the policy named ``name`` from ``RESILIENT__<NAME>__<KIND>__<FIELD>``
        variables; the environment wins over ``code_defaults``, which win over the library's
        defaults. Bad values raise :class:`resilient.ConfigError` here, not at call time."""
        from .config import Configurable, build_from_env  # configuration: loaded when used

        return cast(PolicyT, build_from_env(cast("Configurable[Any]", cls), name, code_defaults))

    # -- per-policy listener ---------------------------------------------------------------
    @property
    def on_event(self) -> Listener | None:
        """A listener receiving this policy's events only (in addition to global ones)."""
        return self._tel.on_event

    @on_event.setter
    def on_event(self, listener: Listener | None) -> None:
        self._tel.set_on_event(v.ON_EVENT(listener))

    # -- decorator ---------------------------------------------------------------------------
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (``def`` or ``async def``) so every call runs under this policy.

        An unnamed policy takes the qualified name of the first function it decorates.
        Generator functions are refused (``TypeError``): the policy would only guard the
        creation of the generator, never its iteration."""
        check_decoratable(self._label(), fn)
        if self._sync_refusal is not None and not is_async_callable(fn):
            raise TypeError(f"{self._sync_refusal} (decorating {fn!r})")
        if self._auto_named:
            self._adopt_name(fn)
        if type(self)._execute is not Policy._execute and not self._own_wrappers:  # pipelines
            if is_async_callable(fn):
                afn = cast(Callable[..., Awaitable[Any]], fn)

                @functools.wraps(fn)
                async def async_execute(*args: Any, **kwargs: Any) -> Any:
                    return await self._aexecute(afn, args, kwargs)

                return cast(Callable[P, R], async_execute)

            @functools.wraps(fn)
            def sync_execute(*args: Any, **kwargs: Any) -> Any:
                return self._execute(fn, args, kwargs)

            return cast(Callable[P, R], sync_execute)
        if is_async_callable(fn):
            return cast(
                Callable[P, R],
                functools.wraps(fn)(self._async_wrapper(cast(Callable[..., Any], fn))),
            )
        return cast(Callable[P, R], functools.wraps(fn)(self._sync_wrapper(fn)))

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` once under this policy (sync).

        ``fn`` must be a sync function: an ``async def`` raises ``TypeError`` (use
        :meth:`acall`) without being called."""
        check_sync_entry(self._label(), "call", fn)
        if self._sync_refusal is not None:
            raise TypeError(self._sync_refusal)
        return cast(T, self._execute(fn, args, kwargs))

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await fn(*args, **kwargs)`` once under this policy (asyncio or trio).

        ``fn`` must be an async function (or return one's coroutine from an async
        ``__call__``): a sync function raises ``TypeError`` (use :meth:`call`) without being
        called, instead of blocking the event loop."""
        check_async_entry(self._label(), "acall", fn)
        return cast(T, await self._aexecute(fn, args, kwargs))

    # -- what subclasses implement ---------------------------------------------------------
    def _call(self, fn: Fn, args: Args, kwargs: Kwargs) -> Any:
        raise NotImplementedError  # pragma: no cover - every concrete policy overrides it

    async def _acall(self, fn: AsyncFn, args: Args, kwargs: Kwargs) -> Any:
        raise NotImplementedError  # pragma: no cover - every concrete policy overrides it

    def _health(self) -> dict[str, Any]:
        """This policy's live figures and key settings, JSON-ready, for
        ``Registry.health()`` (the keys each kind reports are listed in docs/health.md)."""
        return {}

    # -- outcome plumbing ------------------------------------------------------------------
    def _own(self, error: BaseException) -> BaseException:
        """Mark ``error`` as this policy's own decision (a rejection or a timeout), so the
        outcome is recorded as such here and as an ordinary failure by outer policies."""
        setattr(error, _ORIGIN, id(self))
        return error

    def _is_own(self, error: BaseException) -> bool:
        return getattr(error, _ORIGIN, None) == id(self)

    def _outcome_for(self, error: BaseException) -> str:
        if getattr(error, _ORIGIN, None) == id(self):  # only ever set on an Exception
            if isinstance(error, PolicyRejectedError):
                return "rejected"
            if isinstance(error, TimeoutExceeded):
                return "timeout"
            return "failure"
        if not isinstance(error, Exception):
            return "cancelled"
        # a chaos rehearsal's fault is told apart from a real one wherever it is recorded
        return "injected" if getattr(error, _INJECTED, False) is True else "failure"

    def _note_outcome(self, outcome: str) -> None:
        """Record a non-default outcome for the current (successful) execution of this policy.

        Only read for policies whose ``_notes_outcome`` is true (see ``_noted``), and only
        when something records outcomes."""
        tel = self._tel
        if not tel.quiet or tel.gen != STATE.generation:
            NOTE.set((self, outcome))

    def _noted(self, before: tuple[object, str] | None) -> str:
        """The outcome of an execution that returned: ``"success"`` unless this policy noted
        another one since ``before`` (the note read when the execution began) was current.
        A note is consumed (the variable goes back to ``before``), so an enclosing execution
        of the same policy never sees it, and a note by another policy is never ours."""
        note = NOTE.get()
        if note is before or note is None:
            return "success"
        NOTE.set(before)
        return note[1] if note[0] is self else "success"

    # -- observed execution: the decorator's wrappers and ``_execute`` -------------------------
    # --- generated from src/resilient/_templates/policy.tmpl by tools/gen_hotpaths.py ---
    _async_wrapper = _hot_paths.policy_async_wrapper
    _sync_wrapper = _hot_paths.policy_sync_wrapper
    _aexecute = _hot_paths.policy_aexecute
    _execute = _hot_paths.policy_execute
    _aexecute_traced = _hot_paths.policy_aexecute_traced
    _execute_traced = _hot_paths.policy_execute_traced
    # --- end of generated code ---


class AroundPolicy(Policy):
    """A policy that only decides before and after the call (breaker, bulkhead).

    Subclasses implement ``_enter() -> permit`` (raise to reject; may block for a sync
    caller), optionally ``async _aenter()`` (wait without blocking the event loop), and
    ``_exit(permit, error, result)``. ``_exit`` runs exactly once per successful ``_enter``,
    also on cancellation (``error`` is then a ``BaseException`` that is not an ``Exception``).
    """

    _block_result: Any = None
    """What ``_exit`` gets as the result of a ``with`` block (which has none)."""

    def __init__(self, name: str | None = None, *, on_event: Listener | None = None) -> None:
        super().__init__(name, on_event=on_event)
        self._held: ContextVar[tuple[Any, ...]] = ContextVar(
            f"resilient.{self.kind}.{self.name}.held", default=()
        )

    def _enter(self) -> Any:
        raise NotImplementedError  # pragma: no cover

    async def _aenter(self) -> Any:
        return self._enter()

    def _enter_nowait(self) -> Any:
        """Admission for an async caller without awaiting: the permit, or ``WAIT`` when the
        caller must ``await self._aenter()`` instead. Raise to reject. The default always
        defers to ``_aenter``; a policy whose admission is usually immediate overrides it so
        its async wrapper needs no coroutine of its own."""
        return WAIT

    def _exit(self, permit: Any, error: BaseException | None, result: Any) -> None:
        raise NotImplementedError  # pragma: no cover

    def _exit_ok(self, permit: Any, result: Any) -> None:
        """``_exit(permit, None, result)``: the call returned ``result``."""
        self._exit(permit, None, result)

    # -- the decorator's async wrapper and ``_call``/``_acall`` --------------------------------
    # --- generated from src/resilient/_templates/policy.tmpl by tools/gen_hotpaths.py ---
    _async_wrapper = _hot_paths.around_async_wrapper
    _acall = _hot_paths.around_acall
    _call = _hot_paths.around_call
    # --- end of generated code ---

    # -- context managers ----------------------------------------------------------------------
    # Permits are kept on a per-context stack (threads and tasks each see their own), so one
    # policy instance can be entered concurrently and re-entered (nested) safely.
    def __enter__(self) -> AroundPolicy:
        permit = self._enter()
        self._held.set((*self._held.get(), permit))
        return self

    def __exit__(self, exc_type: ExcType, exc: Exc, tb: Tb) -> None:
        held = self._held.get()
        if not held:
            raise RuntimeError(f"{self!r}: __exit__ without a matching __enter__")
        self._held.set(held[:-1])
        self._exit(held[-1], exc, self._block_result)

    async def __aenter__(self) -> AroundPolicy:
        permit = await self._aenter()
        self._held.set((*self._held.get(), permit))
        return self

    async def __aexit__(self, exc_type: ExcType, exc: Exc, tb: Tb) -> None:
        self.__exit__(exc_type, exc, tb)
