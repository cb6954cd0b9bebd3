"""Text parsers for configuration values read from environment variables.

Each parser takes the raw text and the variable it came from, and either returns the value
the policy constructor expects or raises :class:`~resilient.ConfigError` naming the variable,
the text and what was expected. Nothing else may escape: an operator who mistypes a value
must get one clear message at start-up, never a traceback from deep inside ``importlib``.
"""

from __future__ import annotations

import builtins
import importlib
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from .errors import ConfigError

__all__ = [
    "Parser",
    "config_error",
    "parse_bool",
    "parse_choice",
    "parse_delay",
    "parse_duration",
    "parse_exception_class",
    "parse_exceptions",
    "parse_float",
    "parse_int",
    "parse_json",
    "parse_str",
    "qualified_name",
]

Parser = Callable[[str, str], Any]
"""``parser(text, variable) -> value``; raises :class:`ConfigError` naming ``variable``."""

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_DURATION = re.compile(
    r"(?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*(?P<unit>ms|s|m|h)?",
    re.ASCII | re.IGNORECASE,
)
_UNIT_SECONDS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*", re.ASCII)

DURATION_HELP = "a duration such as 250ms, 2s, 1.5m, 1h or a number of seconds (>= 0)"
DELAY_HELP = (
    "a duration such as 50ms or 0.1 (seconds, >= 0), or a percentile of recent latencies "
    "such as p95 or p99.9 (p followed by a number between 0 and 100)"
)
EXCEPTION_CLASS_HELP = "one exception class as a dotted import path, e.g. builtins.ConnectionError"
_PERCENTILE = re.compile(r"[pP](?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
BOOL_HELP = "a boolean: true/false, 1/0 or yes/no"
EXCEPTIONS_HELP = (
    "a comma-separated list of exception classes as dotted import paths, "
    "e.g. builtins.ConnectionError,httpx.HTTPError"
)


def config_error(variable: str, text: str, expected: str) -> ConfigError:
    """Build the one error shape every parser raises: variable, value, what was expected.

    The parts are kept as attributes (``variable``, ``value``, ``expected``) so tools can show
    them without parsing the message.
    """
    err = ConfigError(f"{variable}={text!r}: expected {expected}")
    err.variable = variable  # type: ignore[attr-defined]
    err.value = text  # type: ignore[attr-defined]
    err.expected = expected  # type: ignore[attr-defined]
    return err


def parse_int(text: str, variable: str) -> int:
    """Parse a whole number written in ASCII digits (``"20"``, ``"-1"``)."""
    stripped = text.strip()
    if not _INT.fullmatch(stripped):
        raise config_error(variable, text, "an integer, e.g. 20")
    return int(stripped)


def parse_float(text: str, variable: str) -> float:
    """Parse a finite decimal number (``"0.5"``, ``"1e-3"``); NaN and infinity are refused
    because no threshold or ratio means anything with them."""
    stripped = text.strip()
    if not _FLOAT.fullmatch(stripped):
        raise config_error(variable, text, "a number, e.g. 0.5")
    value = float(stripped)
    if not math.isfinite(value):
        raise config_error(variable, text, "a finite number")
    return value


def parse_bool(text: str, variable: str) -> bool:
    """Parse ``true/false/1/0/yes/no`` in any case."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise config_error(variable, text, BOOL_HELP)


def parse_duration(text: str, variable: str) -> float:
    """Parse a duration to seconds: ``250ms``, ``2s``, ``1.5m``, ``1h``; a bare number is
    seconds. Units are case-insensitive; negative and infinite durations are refused."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise config_error(variable, text, DURATION_HELP)
    unit = match.group("unit")
    seconds = float(match.group("number")) * _UNIT_SECONDS[unit.lower() if unit else None]
    if not math.isfinite(seconds):
        raise config_error(variable, text, "a finite duration")
    return seconds


def parse_delay(text: str, variable: str) -> float | str:
    """Parse a hedge delay: a duration (``50ms``, ``0.1``) or a percentile (``p95``)."""
    stripped = text.strip()
    if _PERCENTILE.fullmatch(stripped):
        value = float(stripped[1:])
        if not 0.0 < value < 100.0:
            raise config_error(variable, text, DELAY_HELP)
        return "p" + stripped[1:]
    if _DURATION.fullmatch(stripped) is None:
        raise config_error(variable, text, DELAY_HELP)
    return parse_duration(stripped, variable)


def parse_str(text: str, variable: str) -> str:
    """Take the text as it is (a plain string field)."""
    return text


def parse_json(text: str, variable: str) -> Any:
    """Parse a JSON value (``null``, ``0``, ``"text"``, ``{"status": "degraded"}``)."""
    try:
        return json.loads(text)
    except Exception as exc:  # ValueError, or RecursionError on absurd nesting
        raise config_error(
            variable, text, f'a JSON value such as null, 0, "text" or {{}} ({exc})'
        ) from None


def parse_choice(choices: Sequence[str]) -> Parser:
    """Build a parser accepting one of ``choices`` (case-insensitive)."""
    allowed = {c.lower(): c for c in choices}
    expected = "one of " + "|".join(choices)

    def parse(text: str, variable: str) -> str:
        choice = allowed.get(text.strip().lower())
        if choice is None:
            raise config_error(variable, text, expected)
        return choice

    return parse


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a class, the same form :func:`parse_exceptions` accepts."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _resolve_dotted(path: str, variable: str, text: str) -> Any:
    parts = path.split(".")
    if len(parts) == 1:
        if hasattr(builtins, path):
            return getattr(builtins, path)
        raise config_error(variable, text, f"{path!r} to be a builtin (or use module.Class)")
    obj: Any = None
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only "this module does not exist" means: try a shorter prefix.
            if exc.name is not None and module_name.startswith(exc.name):
                continue
            raise config_error(
                variable, text, f"{path!r} to be importable (importing failed: {exc})"
            ) from None
        except Exception as exc:
            raise config_error(
                variable, text, f"{path!r} to be importable (importing failed: {exc!r})"
            ) from None
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                raise config_error(
                    variable, text, f"{path!r} to exist ({module_name} has no {attr!r})"
                )
            obj = getattr(obj, attr)
        return obj
    raise config_error(variable, text, f"{path!r} to be importable (no module {parts[0]!r})")


def parse_exception_class(text: str, variable: str) -> type[BaseException]:
    """Parse one exception class (``builtins.ConnectionError``, or a bare builtin name)."""
    found = parse_exceptions(text, variable)
    if len(found) != 1:
        raise config_error(variable, text, EXCEPTION_CLASS_HELP)
    return found[0]


def parse_exceptions(text: str, variable: str) -> tuple[type[BaseException], ...]:
    """Parse ``builtins.ConnectionError,httpx.HTTPError`` into a tuple of exception classes.

    A bare name (``ConnectionError``) means a builtin. Only classes deriving from
    ``BaseException`` are accepted; an empty value means "no exception types".
    """
    found: list[type[BaseException]] = []
    for raw in text.split(","):
        path = raw.strip()
        if not path:
            continue
        if not _DOTTED.fullmatch(path):
            raise config_error(variable, text, EXCEPTIONS_HELP + f" ({path!r} is not one)")
        obj = _resolve_dotted(path, variable, text)
        if not (isinstance(obj, type) and issubclass(obj, BaseException)):
            raise config_error(variable, text, f"{path!r} to be an exception class (got {obj!r})")
        found.append(obj)
    return tuple(found)
