"""Loud failures for the mistakes a new user makes, before any user code runs.

Each check here guards an entry point of :class:`resilient.Policy` against a call that would
otherwise *look* protected and silently not be: a coroutine function given to a sync entry
point (the policy would see an un-awaited coroutine come back at once and count a success), a
sync function given to ``acall`` (it would block the event loop), a generator function (the
policy would guard only the creation of the generator, never its iteration), or a policy
class used as a decorator without parentheses. The messages say what to write instead.

The checks run at decoration time, or once per ``call``/``acall`` (a flag test on the code
object for plain functions), never on the decorated function's per-call path.
"""

from __future__ import annotations

import functools
import types
from typing import Any

from ._lazy import module
from ._validate import is_async_callable

__all__ = [
    "check_async_entry",
    "check_decoratable",
    "check_sync_entry",
    "describe",
    "without_parentheses",
]

# Code flags (``inspect.CO_*``; read here without importing ``inspect`` for every call).
_COROUTINE = 0x80 | 0x100  # CO_COROUTINE | CO_ITERABLE_COROUTINE
_GENERATORS = 0x20 | 0x200  # CO_GENERATOR | CO_ASYNC_GENERATOR


def describe(fn: object) -> str:
    """A short name for ``fn`` in messages: its qualified name when it has one."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return str(name) if name else repr(fn)


def _is_generator_function(fn: object) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    inspect = module("inspect")  # checked per call() of a bound method: no import statement
    return bool(inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn))


def _generator_message(label: str, fn: object) -> str:
    kind = "async generator" if module("inspect").isasyncgenfunction(fn) else "generator"
    return (
        f"{label} cannot protect the {kind} function {describe(fn)}: calling it only creates "
        f"the {kind}, so the policy would see an instant success and nothing of the iteration "
        "(errors while iterating would not be retried or counted, a timeout would not fire). "
        "Protect a function that consumes it (e.g. one returning list(...)), or the calls "
        "made inside it"
    )


def check_decoratable(label: str, fn: object) -> None:
    """``fn`` may be decorated by the policy named ``label`` (``"Retry 'db'"``)."""
    if not callable(fn):
        raise TypeError(f"{label} can only decorate a callable, got {fn!r}")
    if _is_generator_function(fn):
        raise TypeError(_generator_message(label, fn))


def check_sync_entry(label: str, method: str, fn: object) -> None:
    """``fn`` may be run by a sync entry point (``policy.call``): neither a coroutine function
    nor a generator function."""
    target = fn.__func__ if type(fn) is types.MethodType else fn  # a bound method: its function
    code = getattr(target, "__code__", None)
    if type(target) is types.FunctionType and code is not None:
        flags = code.co_flags
        if not flags & (_COROUTINE | _GENERATORS) and not hasattr(target, "_is_coroutine_marker"):
            return  # a plain sync function or method: the common case, from one flag word
    if is_async_callable(fn):
        raise TypeError(
            f"{label}.{method}() got the async function {describe(fn)}: a sync call would only "
            f"create its coroutine, never run it. Use `await policy.a{method}({describe(fn)}, "
            "...)` from async code, or decorate the async function with the policy"
        )
    if _is_generator_function(fn):
        raise TypeError(_generator_message(label, fn))


def check_async_entry(label: str, method: str, fn: object) -> None:
    """``fn`` may be awaited by an async entry point (``policy.acall``): a coroutine function
    (or anything whose call returns one, such as an object with an async ``__call__``)."""
    target = fn.__func__ if type(fn) is types.MethodType else fn  # a bound method: its function
    code = getattr(target, "__code__", None)
    if type(target) is types.FunctionType and code is not None and code.co_flags & _COROUTINE:
        return  # an ``async def`` function or method: the common case
    if is_async_callable(fn):
        return
    if _is_generator_function(fn):
        raise TypeError(_generator_message(label, fn))
    sync = method.removeprefix("a")
    raise TypeError(
        f"{label}.{method}() got {describe(fn)}, which is not an async function: awaiting its "
        f"result would fail after it ran, blocking the event loop meanwhile. Use "
        f"`policy.{sync}({describe(fn)}, ...)` for sync code (or run it in a worker thread, "
        "e.g. anyio.to_thread.run_sync), or pass an `async def`"
    )


def without_parentheses(cls_name: str, value: Any) -> TypeError | None:
    """The error for ``@rs.<cls_name>`` used without ``(...)`` (the class received the
    decorated function where it expected its first argument), or ``None``."""
    if isinstance(value, (types.FunctionType, types.MethodType, functools.partial)):
        return TypeError(
            f"rs.{cls_name} got the function {describe(value)} as its first argument: a policy "
            f"class is not a decorator by itself; create the policy first, e.g. "
            f"@rs.{cls_name}(...) with parentheses"
        )
    return None
