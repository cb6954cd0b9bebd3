"""Every option check of every policy, in one place, with one message shape.

A policy declares its constructor options as :class:`Option` objects (``count("window_size")``,
``duration("queue_timeout", optional=True)``, ...) in an :class:`Options` table and calls each
one on the value it was given. The declaration buys three things at once:

* **validation** at construction time, never deep inside a call, with a message that names
  the option, the bad value and what was expected: ``"window_size must be an integer >= 1, got
  0"``. A value of the wrong type raises ``TypeError``, one outside the allowed range
  ``ValueError``;
* **configuration**: :mod:`resilient.config` reads how to parse each option from text (a
  duration, an integer, exception paths, ...) from the same declaration, so a new option is
  settable through ``RESILIENT__<NAME>__<KIND>__<FIELD>`` without touching the config code;
* **documentation**: the configuration reference is generated from the declarations.

Options that cannot come from text (callables, clocks, random sources) are ``code-only``;
setting one from the environment is a configuration error.
"""

from __future__ import annotations

import functools
import math
import numbers
import random
import types
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeGuard, TypeVar

from . import _clock
from ._config_parse import (
    BOOL_HELP,
    DELAY_HELP,
    DURATION_HELP,
    EXCEPTION_CLASS_HELP,
    EXCEPTIONS_HELP,
    Parser,
    parse_bool,
    parse_choice,
    parse_delay,
    parse_duration,
    parse_exception_class,
    parse_exceptions,
    parse_float,
    parse_int,
    parse_json,
    parse_str,
)

__all__ = [
    "ON_EVENT",
    "ExceptionFilter",
    "AllExcept",
    "ExceptionTest",
    "HandledFilter",
    "Option",
    "Options",
    "callback",
    "check_name",
    "choice",
    "clock",
    "count",
    "delay_or_percentile",
    "duration",
    "error_factory",
    "exception_filter",
    "exceptions",
    "flag",
    "fraction",
    "instance",
    "is_async_callable",
    "isawaitable",
    "json_value",
    "number",
    "random_generator",
    "random_source",
    "refuse_awaitable",
    "seed",
    "seconds_or_callable",
    "state_backend",
    "text",
]

T = TypeVar("T")

ExceptionFilter = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)
"""What ``on=``, ``record=`` and ``ignore=`` accept: exception types (one or a tuple) or a
predicate ``exc -> bool``."""

HandledFilter = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]
"""What ``Retry(on=)`` and ``Fallback(on=)`` accept: only ``Exception`` types (cancellation and
exits are never retried or replaced) or a predicate ``exc -> bool``."""


class AllExcept(tuple):  # type: ignore[type-arg]
    """``(Exception,)``, minus the exception types in ``excluded``: a default ``on=`` that
    reads as what it is in signatures, ``repr`` and the configuration reference."""

    excluded: tuple[type[BaseException], ...]

    def __new__(cls, *excluded: type[BaseException]) -> AllExcept:
        self = super().__new__(cls, (Exception,))
        self.excluded = excluded
        return self

    def __repr__(self) -> str:
        return "every Exception except " + ", ".join(e.__name__ for e in self.excluded)


ExceptionTest = tuple[tuple[type[BaseException], ...], Callable[[BaseException], Any] | None]
"""A checked exception filter: ``(types, predicate)``; the predicate, when not ``None``,
replaces the types. Kept as two parts so hot paths can test ``isinstance`` inline."""


def is_async_callable(fn: object) -> bool:
    """True for ``async def`` functions, partials of them and objects with an async
    ``__call__``: anything whose call returns a coroutine to await."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    import inspect  # at decoration time, not with the package

    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - we need the bound __call__ itself
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


@dataclass(frozen=True, slots=True, eq=False)
class Option(Generic[T]):
    """One constructor option: how to check a value given in code, and how configuration
    reads it from text.

    ``format`` names the text form (``integer``, ``number``, ``duration``, ``exceptions``,
    ``json``, ``choice``, ``boolean``, ``string`` or ``code-only``), ``accepts`` says it in
    words for error messages and the reference, ``parser`` turns text into a value (``None``
    for code-only options), ``optional`` is true when ``None`` is a legal value.
    """

    name: str
    check: Callable[[str, object], T] = field(repr=False)
    format: str = field(kw_only=True)
    accepts: str = field(kw_only=True, repr=False)
    parser: Parser | None = field(kw_only=True, repr=False)
    optional: bool = field(default=False, kw_only=True)
    choices: tuple[str, ...] = field(default=(), kw_only=True)

    def __call__(self, value: object) -> T:
        """The checked (and normalised) value; ``TypeError``/``ValueError`` naming the option
        and the value otherwise. ``None`` passes through for optional options."""
        if value is None and self.optional:
            return None  # type: ignore[return-value]
        return self.check(self.name, value)


class Options(Mapping[str, Option[Any]]):
    """A policy's declared options, by constructor parameter name (read by configuration)."""

    __slots__ = ("_by_name",)

    def __init__(self, *options: Option[Any]) -> None:
        self._by_name = {o.name: o for o in options}
        if len(self._by_name) != len(options):
            raise ValueError(f"an option is declared twice in {options!r}")

    def __getitem__(self, name: str) -> Option[Any]:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"Options({', '.join(self._by_name)})"


# -- shared pieces -----------------------------------------------------------------------------
def _bad_type(name: str, what: str, value: object) -> TypeError:
    return TypeError(f"{name} must be {what}, got {value!r}")


def _bad_value(name: str, what: str, value: object) -> ValueError:
    return ValueError(f"{name} must be {what}, got {value!r}")


def _real(name: str, kind: str, value: object) -> float:
    """A finite float from a real number (``bool`` is not a number here). ``kind`` names what
    is expected ("a number", "a number of seconds") in the messages."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _bad_type(name, kind, value)
    result = float(value)
    if not math.isfinite(result):
        raise _bad_value(name, f"{_finite(kind)}", value)
    return result


def _finite(kind: str) -> str:
    return kind.replace("a number", "a finite number", 1)


def _bounds_text(minimum: float | None, maximum: float | None, above: float | None) -> str:
    parts = []
    if above is not None:
        parts.append(f"> {above:g}")
    if minimum is not None:
        parts.append(f">= {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    return " and ".join(parts)


# -- numbers -------------------------------------------------------------------------------------
# Messages come in two steps: a value of the wrong type is told what kind of value is expected
# ("attempts must be an int >= 1, got 2.5", a TypeError); a value of the right type outside the
# allowed range is told the bound it broke ("attempts must be >= 1, got 0", a ValueError).
def count(name: str, *, minimum: int = 1, optional: bool = False) -> Option[int]:
    """A whole number ``>= minimum`` (``bool`` refused); ``None`` too when ``optional``."""
    what = f"an int >= {minimum}"

    def check(name: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise _bad_type(name, what, value)
        if value < minimum:
            raise _bad_value(name, f">= {minimum}", value)
        return int(value)

    return Option(
        name, check, format="integer", accepts=f"an integer >= {minimum}", parser=parse_int,
        optional=optional,
    )  # fmt: skip


def number(
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    optional: bool = False,
) -> Option[float]:
    """A finite number within the given bounds (``above`` is exclusive)."""
    bounds = _bounds_text(minimum, maximum, above)

    def check(name: str, value: object) -> float:
        result = _real(name, "a number", value)
        if (
            (above is not None and result <= above)
            or (minimum is not None and result < minimum)
            or (maximum is not None and result > maximum)
        ):
            raise _bad_value(name, bounds, value)
        return result

    accepts = "a number" + (f" {bounds}" if bounds else "")
    return Option(
        name, check, format="number", accepts=accepts, parser=parse_float, optional=optional
    )


def fraction(name: str, *, zero: bool = False) -> Option[float]:
    """A share of calls: ``0 < x <= 1`` (``0 <= x <= 1`` with ``zero=True``)."""
    bounds = "between 0 and 1" if zero else "greater than 0 and at most 1"

    def check(name: str, value: object) -> float:
        result = _real(name, "a number", value)
        if not (0.0 <= result <= 1.0) or (result == 0.0 and not zero):
            raise _bad_value(name, bounds, value)
        return result

    return Option(name, check, format="number", accepts=f"a number {bounds}", parser=parse_float)


def _seconds(name: str, value: object, *, zero: bool, maximum: float | None = None) -> float:
    result = _real(name, "a number of seconds", value)
    if result < 0 or (result == 0 and not zero):
        raise _bad_value(name, ">= 0" if zero else "> 0", value)
    if maximum is not None and result > maximum:
        raise _bad_value(name, f"<= {maximum:g}", value)
    return result


def duration(
    name: str, *, optional: bool = False, zero: bool = True, maximum: float | None = None
) -> Option[float]:
    """Seconds: a finite number ``>= 0`` (``> 0`` with ``zero=False``)."""

    def check(name: str, value: object) -> float:
        return _seconds(name, value, zero=zero, maximum=maximum)

    return Option(
        name, check, format="duration", accepts=DURATION_HELP, parser=parse_duration,
        optional=optional,
    )  # fmt: skip


def seconds_or_callable(
    name: str, *, callable_is: str, check_callable: Callable[[str, Callable[..., Any]], T]
) -> Option[float | T]:
    """Seconds ``>= 0`` (in code or from text) or, in code only, a callable that
    ``check_callable`` vets (``open_duration`` backoff, ``wait`` strategies). ``callable_is``
    says in words what the callable is, for messages."""

    def check(name: str, value: object) -> float | T:
        if callable(value) and not isinstance(value, type):
            return check_callable(name, value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _bad_type(name, f"a number of seconds >= 0 or {callable_is}", value)
        return _seconds(name, value, zero=True)

    return Option(name, check, format="duration", accepts=DURATION_HELP, parser=parse_duration)


def delay_or_percentile(name: str) -> Option[float | str]:
    """Seconds ``>= 0``, or ``"pNN"``: that percentile of recent latencies (``0 < NN <
    100``, e.g. ``"p95"``, ``"p99.9"``). Percentiles come back as given (``"p95"``)."""
    what = "a number of seconds >= 0 or a percentile string such as 'p95'"

    def check(name: str, value: object) -> float | str:
        if isinstance(value, str):
            text = value.strip()
            digits = text[1:]
            if (
                len(text) > 1
                and text[0] in "pP"
                and digits.replace(".", "", 1).isdigit()
                and 0.0 < float(digits) < 100.0
            ):
                return "p" + digits
            raise _bad_value(
                name, "a percentile between p0 and p100 (exclusive) such as 'p95' or 'p99.9'",
                value,
            )  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _bad_type(name, what, value)
        return _seconds(name, value, zero=True)

    return Option(name, check, format="delay", accepts=DELAY_HELP, parser=parse_delay)


def seed(name: str = "seed") -> Option[int | None]:
    """A whole number seeding a random sequence (any size, negative allowed), or ``None``
    for a fresh random one."""

    def check(name: str, value: object) -> int | None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise _bad_type(name, "an int or None", value)
        return int(value)

    return Option(
        name, check, format="integer", accepts="an integer (or none: a random seed)",
        parser=_parse_seed, optional=True,
    )  # fmt: skip


def _parse_seed(text: str, variable: str) -> int:
    from ._config_parse import config_error

    stripped = text.strip()
    try:
        return int(stripped, 0)
    except ValueError:
        raise config_error(variable, text, "an integer, e.g. 42") from None


# -- exceptions ------------------------------------------------------------------------------------
def error_factory(name: str) -> Option[Callable[[str], Exception]]:
    """An error to raise: an ``Exception`` instance, an ``Exception`` class, or a callable
    returning one. Checked into a factory ``(message) -> exception``: a class is called with
    the message, an instance is copied (each raise gets its own object, so tracebacks and
    attributes never leak from one call to the next), a callable is called with no argument
    — once here, to check it returns an exception. Cancellation and interpreter exits
    (``BaseException`` only) are refused: they are not failures. From text, one exception
    class as a dotted path."""
    what = "an exception instance, an exception class or a callable returning an exception"

    def check(name: str, value: object) -> Callable[[str], Exception]:
        if isinstance(value, BaseException):
            if not isinstance(value, Exception):
                raise _bad_value(name, "an Exception (not cancellation or an exit)", value)
            return functools.partial(_copy_exception, value)
        if isinstance(value, type):
            if not issubclass(value, BaseException):
                raise _bad_type(name, what, value)
            if not issubclass(value, Exception):
                raise _bad_value(name, "an Exception class (not cancellation or an exit)", value)
            cls: type[Exception] = value
            try:
                cls("check")
            except Exception as exc:
                raise ValueError(
                    f"{name}={value!r} cannot be built from one message argument ({exc}); "
                    "pass an instance or a factory instead"
                ) from None
            return cls
        if callable(value):
            factory: Callable[[], object] = value
            if not isinstance(factory(), Exception):
                raise _bad_value(name, "a callable returning an Exception", value)
            return lambda _message: _checked(factory(), name)
        raise _bad_type(name, what, value)

    return Option(
        name, check, format="exception", accepts=EXCEPTION_CLASS_HELP,
        parser=parse_exception_class,
    )  # fmt: skip


def _copy_exception(template: Exception, _message: str) -> Exception:
    import copy

    try:
        error = copy.copy(template)
    except Exception:  # an exception type that cannot be copied: raise the instance itself
        error = template
    return error.with_traceback(None)


def _checked(error: object, name: str) -> Exception:
    if not isinstance(error, Exception):
        raise TypeError(f"{name} factory returned {error!r}, not an exception")
    return error


def exception_filter(name: str, value: object, *, exceptions_only: bool) -> ExceptionTest:
    """Check an ``on=``/``record=``-style value: one exception type, a tuple (or list/set) of
    them, or a predicate ``exc -> bool``. With ``exceptions_only``, types that are not
    ``Exception`` subclasses (cancellation, interpreter exits) are refused: those are never
    retried or replaced."""
    what = "an exception type, a tuple of them or a predicate exc -> bool"
    if isinstance(value, type):
        candidates: tuple[object, ...] = (value,)
    elif isinstance(value, (tuple, list, set, frozenset)):
        candidates = tuple(value)
    elif callable(value):
        return (), value
    else:
        raise _bad_type(name, what, value)
    types: list[type[BaseException]] = []
    for item in candidates:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(
                f"{name} must contain only exception types, got {value!r} "
                f"({item!r} is not an exception type)"
            )
        if exceptions_only and not issubclass(item, Exception):
            raise ValueError(
                f"{name} may only name Exception subclasses, got {value!r}: "
                f"{item.__name__} is cancellation or an exit and is never handled"
            )
        types.append(item)
    return tuple(types), None


def exceptions(name: str, *, exceptions_only: bool = False) -> Option[ExceptionTest]:
    """An exception filter (see :func:`exception_filter`); from text, dotted class paths."""

    def check(name: str, value: object) -> ExceptionTest:
        return exception_filter(name, value, exceptions_only=exceptions_only)

    return Option(
        name, check, format="exceptions", accepts=EXCEPTIONS_HELP, parser=parse_exceptions
    )


# -- code-only -----------------------------------------------------------------------------------
def _code_only(
    name: str, what: str, accepts: str, ok: Callable[[object], bool], *, optional: bool
) -> Option[Any]:
    """An option given in code only (no environment form), kept as given when ``ok`` says
    so; ``what`` names the expected type in the error."""

    def check(name: str, value: object) -> Any:
        if not ok(value):
            raise _bad_type(name, what, value)
        return value

    return Option(name, check, format="code-only", accepts=accepts, parser=None, optional=optional)


def callback(name: str, *, optional: bool = True) -> Option[Any]:
    """A callable given in code (a predicate, a handler, a sleep function)."""
    what = "callable" + (" or None" if optional else "")
    return _code_only(name, what, "a callable given in code", callable, optional=optional)


def clock(name: str = "clock") -> Option[Callable[[], float]]:
    """A zero-argument callable returning monotonic seconds; called once to check that.

    The default (``time.monotonic``, or ``None``) resolves to :func:`resilient._clock.default`
    at construction: the real clock, or the fake one a test installed
    (``resilient.testing.fake_clock()``, the ``resilient_clock`` pytest fixture). A clock
    passed explicitly is always kept."""
    what = "a callable returning seconds"

    def check(name: str, value: object) -> Callable[[], float]:
        if _clock.is_default(value):
            return _clock.default()
        if not callable(value):
            raise _bad_type(name, what, value)
        fn: Callable[[], float] = value
        _real(f"{name}()", "a number", fn())
        return fn

    return Option(name, check, format="code-only", accepts="a clock given in code", parser=None)


def state_backend(binds: str, name: str = "state") -> Option[Any]:
    """A shared state backend given in code (``rs.RedisState(...)``), or ``None`` for local
    state. ``binds`` is the method the policy binds itself through (``_bind_breaker``)."""
    return _code_only(
        name,
        "a state backend such as resilient.RedisState(...), or None",
        "a state backend given in code",
        lambda value: callable(getattr(value, binds, None)),
        optional=True,
    )


def random_source(name: str = "rng") -> Option[Callable[[], float]]:
    """A ``random.Random`` (or anything with ``.random()``) or a zero-argument callable
    returning ``[0, 1)``; ``None`` means the module-level ``random.random``."""
    what = "a random.Random, a callable returning [0, 1) or None"

    def check(name: str, value: object) -> Callable[[], float]:
        if value is None:
            return random.random
        if isinstance(value, type):
            raise TypeError(f"{name} must be an instance or a callable, not the class {value!r}")
        method = getattr(value, "random", None)
        if callable(method):
            source: Callable[[], float] = method
            return source
        if callable(value):
            fn: Callable[[], float] = value
            return fn
        raise _bad_type(name, what, value)

    return Option(
        name, check, format="code-only", accepts="a random source given in code", parser=None
    )


def random_generator(name: str = "rng") -> Option[random.Random]:
    """A ``random.Random`` instance (for strategies that need ``uniform``); ``None`` means a
    private, unseeded one."""
    what = "a random.Random instance or None"

    def check(name: str, value: object) -> random.Random:
        if value is None:
            return random.Random()
        if not isinstance(value, random.Random):
            raise _bad_type(name, what, value)
        return value

    return Option(
        name, check, format="code-only", accepts="a random.Random given in code", parser=None
    )


def instance(name: str, cls: type[T], what: str) -> Option[T | None]:
    """An instance of ``cls`` given in code (``what`` names it in messages), or ``None``."""
    return _code_only(
        name,
        f"{what} or None",
        f"{what} given in code",
        lambda value: isinstance(value, cls),
        optional=True,
    )


ON_EVENT: Option[Any] = callback("on_event")
"""Every policy's ``on_event``: a listener for that policy's events only."""


# -- text and choices ------------------------------------------------------------------------------
def choice(name: str, values: tuple[str, ...]) -> Option[str]:
    """One word of ``values``."""
    what = "one of " + ", ".join(repr(v) for v in values)

    def check(name: str, value: object) -> str:
        if not isinstance(value, str) or value not in values:
            raise _bad_value(name, what, value)
        return value

    return Option(
        name, check, format="choice", accepts="one of " + "|".join(values),
        parser=parse_choice(values), choices=values,
    )  # fmt: skip


def flag(name: str) -> Option[bool]:
    """A boolean."""

    def check(name: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise _bad_type(name, "True or False", value)
        return value

    return Option(name, check, format="boolean", accepts=BOOL_HELP, parser=parse_bool)


def text(name: str, *, optional: bool = False) -> Option[str]:
    """A non-empty string."""
    what = "a non-empty string"

    def check(name: str, value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _bad_value(name, what, value)
        return value

    return Option(name, check, format="string", accepts="text", parser=parse_str, optional=optional)


def json_value(name: str) -> Option[Any]:
    """Any value in code; JSON from text."""
    return Option(
        name,
        lambda _name, value: value,
        format="json",
        accepts='a JSON value (null, 0, "text", {...})',
        parser=parse_json,
    )


def isawaitable(value: object) -> TypeGuard[Awaitable[Any]]:
    """``inspect.isawaitable`` without importing ``inspect``: a coroutine, or an object whose
    class defines ``__await__`` (a generator-based coroutine counts through its flag)."""
    if isinstance(value, types.CoroutineType) or hasattr(type(value), "__await__"):
        return True
    code = getattr(value, "gi_code", None)
    return isinstance(value, types.GeneratorType) and bool(
        code is not None and code.co_flags & 0x100  # CO_ITERABLE_COROUTINE
    )


def refuse_awaitable(outcome: object, what: str) -> None:
    """A sync call got an awaitable back from a user callable (an ``async def`` handler,
    predicate or sleep): close it, so no "never awaited" warning follows, and say what to do."""
    if isawaitable(outcome):
        close = getattr(outcome, "close", None)
        if callable(close):
            close()
        raise TypeError(f"{what} returned an awaitable in a sync call; use an async call")


def check_name(name: object) -> str:
    """A policy name: a non-empty string."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    return name
