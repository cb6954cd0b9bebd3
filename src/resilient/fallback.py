"""``Fallback``: answer with a substitute when the call fails, instead of failing.

The outermost layer of a pipeline: after retries gave up, the breaker rejected or the timeout
hit, a degraded answer (a cached value, an empty list, "try again later") is often better for
the user than an error page. Rejections (``CircuitOpenError``, ``BulkheadFullError``) are
ordinary ``Exception`` subclasses, so the default ``on=(Exception,)`` covers them; narrow it
with ``on=(rs.PolicyRejectedError,)`` to fall back only when a policy refused the call.

Cancellation (``asyncio.CancelledError``, trio/anyio cancellation, ``KeyboardInterrupt``) is
never replaced by the fallback: the caller asked to stop, not for an answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from . import _hot_drivers
from . import _validate as v
from ._misuse import without_parentheses
from ._outcomes import NOTE
from ._policy import Policy
from ._validate import is_async_callable
from .telemetry._events import FallbackUsed
from .telemetry._hub import STATE, Listener

__all__ = ["Fallback"]

P = ParamSpec("P")
R = TypeVar("R")


class _Missing:
    """Marks "no ``value`` given" (``None`` is a legitimate fallback value)."""

    def __repr__(self) -> str:
        return "<no value>"


_MISSING: Any = _Missing()


_VALUE = v.json_value("value")
_HANDLER = v.callback("handler")
_ON = v.exceptions("on", exceptions_only=True)
_ON_RESULT = v.callback("on_result")
_OPTIONS = v.Options(_VALUE, _HANDLER, _ON, _ON_RESULT, v.ON_EVENT)


class Fallback(Policy):
    """Return a substitute when the protected call fails.

    Give exactly one of:

    - ``value``: returned as is (the same object every time: don't mutate it);
    - ``handler``: called with ONE argument, the exception that triggered the fallback, or
      ``None`` when ``on_result`` triggered it (the rejected result is not passed: decide
      what to return from the predicate's verdict alone). Its return value is the answer.
      An ``async def`` handler is awaited in async calls; decorating (or calling) a sync
      function with an async handler raises ``TypeError``, because a sync caller cannot
      await it.

    ``on``: exception types, or a predicate ``exc -> bool``, that trigger the fallback
    (default: every ``Exception``, rejections included). ``on_result``: predicate
    ``result -> bool``; ``True`` means "this result is a failure, answer with the fallback
    instead". An ``async def`` predicate is awaited in async calls; a policy holding one (or an
    async handler) refuses sync calls with ``TypeError``. An exception raised by the handler
    propagates (with the original error as its ``__context__``).
    """

    kind = "fallback"
    options = _OPTIONS
    _notes_outcome = True  # an answered failure is recorded as outcome "fallback"

    def __init__(
        self,
        value: Any = _MISSING,
        *,
        handler: Callable[[Exception | None], Any] | None = None,
        on: v.HandledFilter = (Exception,),
        on_result: Callable[[Any], bool] | None = None,
        name: str | None = None,
        on_event: Listener | None = None,
    ) -> None:
        parentheses = without_parentheses("Fallback", value) if handler is None else None
        if parentheses is not None:
            raise parentheses
        super().__init__(name, on_event=on_event)
        has_value = value is not _MISSING
        if has_value == (handler is not None):
            raise ValueError(
                "Fallback needs exactly one of value= and handler=, got "
                f"value={value!r}, handler={handler!r}"
            )
        handler = _HANDLER(handler)
        self._on_types, self._on_pred = _ON(on)
        self._on_result: Callable[[Any], bool] | None = _ON_RESULT(on_result)
        self.value: Any = value if has_value else None
        """The substitute value (``None`` when a handler is used)."""
        self.handler: Callable[[Exception | None], Any] | None = handler
        """The substitute function, or ``None`` when a value is used."""
        self._handler_is_async = handler is not None and is_async_callable(handler)
        self._on_pred_async = self._on_pred is not None and is_async_callable(self._on_pred)
        self._settle(
            value=self.value, handler=handler, on=on, on_result=on_result, on_event=on_event
        )
        self._on_result_async = on_result is not None and is_async_callable(on_result)
        self._refuse_sync_calls_if_async(handler=handler, on=on, on_result=on_result)

    def __repr__(self) -> str:
        what = f"handler={self.handler!r}" if self.handler is not None else f"value={self.value!r}"
        return f"<Fallback {self.name!r} {what}>"

    def _answered(self, error: Exception | None) -> None:
        tel = self._tel
        if not tel.quiet or tel.gen != STATE.generation:
            NOTE.set((self, "fallback"))  # ``self._note_outcome("fallback")``, inlined
        if (tel.detail or tel.gen != STATE.generation) and tel.wants_events():
            tel.emit(FallbackUsed(policy=self.kind, name=self.name, error=error))

    def _substitute(self, error: Exception | None) -> Any:
        """The answer for ``error``: the value, or the handler's result."""
        handler = self.handler
        if handler is None:
            return self.value
        answer = handler(error)
        v.refuse_awaitable(answer, f"Fallback {self.name!r} handler")
        return answer

    async def _asubstitute(self, error: Exception | None) -> Any:
        """:meth:`_substitute` for async calls: an async handler is awaited."""
        handler = self.handler
        if handler is None:
            return self.value
        answer = handler(error)
        if v.isawaitable(answer):
            answer = await answer
        return answer

    # -- the per-call path ----------------------------------------------------------------------
    # --- generated from src/resilient/_templates/fallback.tmpl by tools/gen_hotpaths.py ---
    _async_wrapper = _hot_drivers.fallback_async_wrapper
    _sync_wrapper = _hot_drivers.fallback_sync_wrapper
    _acall = _hot_drivers.fallback_acall
    _call = _hot_drivers.fallback_call
    # --- end of generated code ---
