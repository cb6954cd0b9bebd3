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
import threading
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from typing_extensions import ParamSpec

from . import _hot_paths
from . import _validate as v
from ._outcomes import NOTE, WAIT
from ._validate import check_name, is_async_callable
from .config import Configurable, build_from_env
from .errors import ORIGIN as _ORIGIN
from .errors import PolicyRejectedError, TimeoutExceeded
from .telemetry._hub import STATE, Listener, PolicyTelemetry

if TYPE_CHECKING:
    pass

__all__ = ["AroundPolicy", "Policy", "is_async_callable"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
PolicyT = TypeVar("PolicyT", bound="Policy")

_names = itertools.count(1)
_names_lock = threading.Lock()


def _check_name(kind: str, name: object) -> str:
    if name is None:
        with _names_lock:
            return f"{kind}-{next(_names)}"
    return check_name(name)


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

    def __init__(self, name: str | None = None, *, on_event: Listener | None = None) -> None:
        self.name = _check_name(self.kind, name)
        v.ON_EVENT(on_event)
        self._tel = PolicyTelemetry(self.kind, self.name, on_event, counts_calls=self._counts_calls)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @classmethod
    def from_env(cls: type[PolicyT], name: str, /, **code_defaults: Any) -> PolicyT:
        """Build the policy named ``name`` from ``RESILIENT__<NAME>__<KIND>__<FIELD>``
        variables; the environment wins over ``code_defaults``, which win over the library's
        defaults. Bad values raise :class:`resilient.ConfigError` here, not at call time."""
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
        """Decorate ``fn`` (``def`` or ``async def``) so every call runs under this policy."""
        if not callable(fn):
            raise TypeError(
                f"{type(self).__name__} {self.name!r} can only decorate a callable, got {fn!r}"
            )
        if type(self)._execute is not Policy._execute:  # pipelines: their own _execute
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
        """Run ``fn(*args, **kwargs)`` once under this policy (sync)."""
        return cast(T, self._execute(fn, args, kwargs))

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await fn(*args, **kwargs)`` once under this policy (asyncio or trio)."""
        return cast(T, await self._aexecute(fn, args, kwargs))

    # -- what subclasses implement ---------------------------------------------------------
    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError  # pragma: no cover - every concrete policy overrides it

    async def _acall(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
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
        return "failure" if isinstance(error, Exception) else "cancelled"

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

    def _hot_self(self) -> _hot_paths.PolicySelf:
        """For the type checker: this class provides what its per-call code uses."""
        return self

    # --- end of generated code ---


class AroundPolicy(Policy):
    """A policy that only decides before and after the call (breaker, bulkhead).

    Subclasses implement ``_enter() -> permit`` (raise to reject; may block for a sync
    caller), optionally ``async _aenter()`` (wait without blocking the event loop), and
    ``_exit(permit, error, result)``. ``_exit`` runs exactly once per successful ``_enter``,
    also on cancellation (``error`` is then a ``BaseException`` that is not an ``Exception``).
    """

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

    def _hot_self(self) -> _hot_paths.AroundSelf:
        """For the type checker: this class provides what its per-call code uses."""
        return self

    # --- end of generated code ---

    # -- context managers ----------------------------------------------------------------------
    # Permits are kept on a per-context stack (threads and tasks each see their own), so one
    # policy instance can be entered concurrently and re-entered (nested) safely.
    def __enter__(self) -> AroundPolicy:
        permit = self._enter()
        self._held.set((*self._held.get(), permit))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        held = self._held.get()
        if not held:
            raise RuntimeError(f"{self!r}: __exit__ without a matching __enter__")
        self._held.set(held[:-1])
        self._exit(held[-1], exc, None)

    async def __aenter__(self) -> AroundPolicy:
        permit = await self._aenter()
        self._held.set((*self._held.get(), permit))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
