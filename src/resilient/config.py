"""Configuration from the environment: ``RESILIENT__<NAME>__<POLICY>__<FIELD>=value``.

Operators tune a running service without a release: ``RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION
=15s`` changes the breaker that the code builds with ``CircuitBreaker.from_env("payments")`` (or
``rs.registry.breaker("payments")``, or ``@rs.policy("payments", "breaker")``). The environment
wins over the code's defaults, which win over the library's defaults.

The list of fields is derived from each policy's constructor signature (``inspect.signature``
and ``typing.get_type_hints``), plus a small table saying which fields are durations,
exception lists or code-only. A new constructor parameter therefore shows up here by itself; if
its type cannot be read from text it is reported as *unclassified* (and a test fails) instead of
being silently unconfigurable.

Every problem (bad value, unknown variable, a code-only field set from the environment, a value
the constructor refuses) raises :class:`~resilient.ConfigError` when the policy is CREATED,
naming the variable, the value and what was expected — never later, at call time.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union

from ._config_parse import (
    BOOL_HELP,
    DURATION_HELP,
    EXCEPTIONS_HELP,
    Parser,
    config_error,
    parse_bool,
    parse_choice,
    parse_duration,
    parse_exceptions,
    parse_float,
    parse_int,
    parse_json,
    parse_str,
    qualified_name,
)
from .errors import ConfigError

if TYPE_CHECKING:
    from ._policy import Policy

__all__ = [
    "CHOICE_FIELDS",
    "CODE_ONLY_FIELDS",
    "DURATION_FIELDS",
    "ENABLED",
    "ENV_PREFIX",
    "EXCEPTION_FIELDS",
    "JSON_FIELDS",
    "REQUIRED",
    "ConfigError",
    "FieldSpec",
    "FieldValue",
    "ResolvedPolicy",
    "build_from_env",
    "check_environment",
    "construct",
    "display_value",
    "env_key",
    "field_specs",
    "is_enabled",
    "json_value",
    "names_in_environment",
    "policy_class",
    "policy_classes",
    "reference_markdown",
    "resolve",
    "variable_name",
]

PolicyT = TypeVar("PolicyT", bound="Policy")

ENV_PREFIX = "RESILIENT"
"""Every variable starts with ``RESILIENT__``."""

_SEP = "__"

ENABLED = "enabled"
"""A pseudo-field accepted for every policy kind: ``...__ENABLED=false`` drops that policy
from pipelines built by :func:`resilient.policy`."""

CODE_ONLY_FIELDS = frozenset(
    {
        "clock",
        "sleep",
        "rng",
        "on_event",
        "handler",
        "record_result",
        "on_result",
        "predicate",
        "predicates",
    }
)
"""Fields that cannot come from text (callables, clocks, random sources): set them in code.
Setting one from the environment is a :class:`ConfigError`."""

DURATION_FIELDS = frozenset(
    {
        "open_duration",
        "slow_call_duration",
        "half_open_max_wait",
        "queue_timeout",
        "seconds",
        "max_delay",
        "wait",
    }
)
"""Seconds-valued fields: the environment accepts ``250ms``, ``2s``, ``1.5m``, ``1h`` or a bare
number of seconds. (``open_duration`` also takes a callable in code; ``wait`` also takes a
tenacity wait strategy in code; from text both are a fixed number of seconds.)"""

EXCEPTION_FIELDS = frozenset({"record", "ignore", "on"})
"""Exception-type fields: comma-separated dotted import paths of ``BaseException`` classes."""

JSON_FIELDS = frozenset({"value"})
"""Fields taking an arbitrary value (``Fallback.value``): the environment gives JSON."""

CHOICE_FIELDS: Mapping[str, tuple[str, ...]] = types.MappingProxyType(
    {"window_type": ("count", "time")}
)
"""Fields taking one word of a fixed set (case-insensitive in the environment)."""

# The built-in policies, in the usual pipeline order (outermost first). The kind string users
# pass to ``rs.policy`` is each class's own ``kind`` attribute.
_BUILTIN_POLICIES: tuple[tuple[str, str], ...] = (
    ("resilient.fallback", "Fallback"),
    ("resilient.retry", "Retry"),
    ("resilient.breaker", "CircuitBreaker"),
    ("resilient.timeout", "Timeout"),
    ("resilient.bulkhead", "Bulkhead"),
)

_NONE_WORDS = frozenset({"none", "null"})

Source = Literal["env", "code", "default", "missing"]


class _Required:
    """Marker for a constructor parameter without a default (``Timeout.seconds``)."""

    _instance: _Required | None = None

    def __new__(cls) -> _Required:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()
"""The ``default`` of a field the constructor requires (no library default)."""


# -- names -------------------------------------------------------------------------------------
def env_key(name: str) -> str:
    """The ``<NAME>`` part of a variable for policy name ``name``.

    Upper-cased; every run of non-alphanumeric characters becomes one ``_`` and leading or
    trailing ones are dropped, so a key never contains the ``__`` separator (``"my-svc.v2"``
    -> ``"MY_SVC_V2"``). That keeps every variable unambiguous.
    """
    if not isinstance(name, str):
        raise TypeError(f"policy name must be a string, got {name!r}")
    key = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper()
    if not key:
        raise ConfigError(
            f"policy name {name!r} has no letters or digits, so it cannot be configured from "
            f"the environment (RESILIENT__<NAME>__...): give it a name with letters or digits"
        )
    return key


def variable_name(name: str, kind: str, field_name: str) -> str:
    """``RESILIENT__<NAME>__<KIND>__<FIELD>`` for one field of one named policy."""
    return _SEP.join((ENV_PREFIX, env_key(name), kind.upper(), field_name.upper()))


# -- policy classes ------------------------------------------------------------------------------
def _load_builtin_classes() -> list[type[Policy]]:
    found: list[type[Policy]] = []
    for module_name, class_name in _BUILTIN_POLICIES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # not written (yet): skip; any other error is real
                continue
            raise
        found.append(getattr(module, class_name))
    return found


def policy_classes() -> dict[str, type[Policy]]:
    """The configurable policy classes by kind, in the usual pipeline order (outermost first):
    fallback, retry, breaker, timeout, bulkhead."""
    return {cls.kind: cls for cls in _load_builtin_classes()}


def policy_class(kind: str) -> type[Policy]:
    """The policy class of ``kind`` (``"breaker"``, ``"retry"``, ...), with a "did you mean"
    when the kind is misspelt."""
    classes = policy_classes()
    cls = classes.get(kind) if isinstance(kind, str) else None
    if cls is None:
        hint = _did_you_mean(str(kind), list(classes), "{!r}")
        raise ValueError(
            f"unknown policy kind {kind!r}: expected one of {', '.join(classes)}{hint}"
        )
    return cls


# -- fields --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldSpec:
    """How one constructor parameter of one policy kind is read from the environment.

    ``format`` is ``integer``, ``number``, ``boolean``, ``duration``, ``exceptions``, ``json``,
    ``choice``, ``string``, ``code-only`` or ``unclassified`` (a parameter whose type this
    module cannot read from text and that is not listed as code-only: a bug a test catches).
    """

    name: str
    kind: str
    format: str
    accepts: str
    default: Any
    optional: bool
    parser: Parser | None = field(default=None, repr=False)
    in_constructor: bool = True

    @property
    def settable(self) -> bool:
        """True when the field can come from the environment."""
        return self.parser is not None

    @property
    def required(self) -> bool:
        """True when the constructor has no default for it."""
        return self.default is REQUIRED

    def variable(self, name: str) -> str:
        """The variable setting this field for the policy named ``name``."""
        return variable_name(name, self.kind, self.name)

    def parse(self, text: str, variable: str) -> Any:
        """Parse ``text`` read from ``variable``; only :class:`ConfigError` escapes."""
        if self.parser is None:
            expected = f"nothing: {self.name} is {self.format} ({self.accepts})"
            raise config_error(variable, text, expected)
        if self.optional and text.strip().lower() in _NONE_WORDS:
            return None
        try:
            return self.parser(text, variable)
        except ConfigError:
            raise
        except Exception as exc:  # a parser bug must still name the variable
            raise config_error(variable, text, f"{self.accepts} ({exc!r})") from None


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) != len(typing.get_args(hint))
        if len(args) == 1:
            return args[0], optional
        return Union[tuple(args)], optional  # noqa: UP007 - rebuilding a runtime union
    return hint, hint is None or hint is type(None)


def _scalar_parser(hint: Any) -> tuple[str, str, Parser] | None:
    if hint is bool:
        return "boolean", BOOL_HELP, parse_bool
    if hint is int:
        return "integer", "an integer", parse_int
    if hint is float:
        return "number", "a number", parse_float
    if hint is str:
        return "string", "text", parse_str
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        members = set(typing.get_args(hint))
        if members <= {int, float}:
            return "number", "a number", parse_float
        return None
    if origin is Literal:
        values = typing.get_args(hint)
        if values and all(isinstance(v, str) for v in values):
            return "choice", "one of " + "|".join(values), parse_choice(values)
    return None


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # an annotation only importable under TYPE_CHECKING: classify by table
        return {}


def _classify(kind: str, param: inspect.Parameter, hint: Any) -> FieldSpec:
    name = param.name
    default = REQUIRED if param.default is inspect.Parameter.empty else param.default
    inner, optional = _strip_optional(hint) if hint is not None else (None, False)
    optional = optional or default is None

    def spec(fmt: str, accepts: str, parser: Parser | None) -> FieldSpec:
        return FieldSpec(name, kind, fmt, accepts, default, optional, parser)

    if name in CODE_ONLY_FIELDS:
        return spec("code-only", "a callable or object given in code", None)
    if name in DURATION_FIELDS:
        return spec("duration", DURATION_HELP, parse_duration)
    if name in EXCEPTION_FIELDS:
        return spec("exceptions", EXCEPTIONS_HELP, parse_exceptions)
    if name in JSON_FIELDS:
        return spec("json", 'a JSON value (null, 0, "text", {...})', parse_json)
    if name in CHOICE_FIELDS:
        choices = CHOICE_FIELDS[name]
        return spec("choice", "one of " + "|".join(choices), parse_choice(choices))
    scalar = _scalar_parser(inner)
    if scalar is not None:
        return spec(*scalar)
    return spec("unclassified", f"nothing (type {hint!r} cannot be read from text)", None)


_SPECS: dict[type[Any], tuple[FieldSpec, ...]] = {}


def field_specs(cls: type[Policy]) -> tuple[FieldSpec, ...]:
    """Every keyword-settable constructor parameter of ``cls`` (except ``name``), then the
    ``enabled`` pseudo-field, in signature order."""
    cached = _SPECS.get(cls)
    if cached is None:
        cached = _SPECS[cls] = _derive_specs(cls)
    return cached


def _derive_specs(cls: type[Policy]) -> tuple[FieldSpec, ...]:
    kind = cls.kind
    hints = _hints(cls)
    specs: list[FieldSpec] = []
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.name in ("self", "name") or param.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
            inspect.Parameter.POSITIONAL_ONLY,
        ):
            continue
        specs.append(_classify(kind, param, hints.get(param.name)))
    if not any(s.name == ENABLED for s in specs):
        specs.append(FieldSpec(ENABLED, kind, "boolean", BOOL_HELP, True, False, parse_bool, False))
    return tuple(specs)


def _spec_map(cls: type[Policy]) -> dict[str, FieldSpec]:
    return {s.name: s for s in field_specs(cls)}


# -- the environment -------------------------------------------------------------------------
def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _did_you_mean(word: str, candidates: Iterable[str], template: str = "{}") -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {template.format(close[0])}?" if close else ""


def names_in_environment(environ: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """``{<NAME> key: [kinds]}`` for every ``RESILIENT__<NAME>__<POLICY>__<FIELD>`` variable
    (kinds lower-cased, as written, sorted); variables of another shape are left out here and
    reported by :func:`check_environment`."""
    found: dict[str, set[str]] = {}
    prefix = ENV_PREFIX + _SEP
    for var in _environ(environ):
        if not var.startswith(prefix):
            continue
        parts = var[len(prefix) :].split(_SEP)
        if len(parts) >= 2 and parts[0]:
            found.setdefault(parts[0], set())
            if len(parts) == 3 and parts[1]:
                found[parts[0]].add(parts[1].lower())
    return {key: sorted(kinds) for key, kinds in sorted(found.items())}


def _problem(var: str, text: str, what: str) -> str:
    return f"{var}={text!r}: {what}"


def _variable_problems(
    name: str, environ: Mapping[str, str], classes: Mapping[str, type[Policy]]
) -> list[str]:
    key = env_key(name)
    prefix = _SEP.join((ENV_PREFIX, key, ""))
    problems: list[str] = []
    kinds_upper = {kind.upper(): kind for kind in classes}
    for var in sorted(environ):
        if not var.startswith(prefix):
            continue
        text = environ[var]
        parts = var[len(prefix) :].split(_SEP)
        if len(parts) != 2 or not all(parts):
            problems.append(
                _problem(
                    var,
                    text,
                    f"expected the shape {prefix}<POLICY>__<FIELD>, with POLICY "
                    f"one of {', '.join(kinds_upper)}",
                )
            )
            continue
        kind_word, field_word = parts
        kind = kinds_upper.get(kind_word)
        if kind is None:
            hint = _did_you_mean(kind_word, kinds_upper, f"{prefix}{{}}{_SEP}{field_word}")
            problems.append(
                _problem(
                    var,
                    text,
                    f"unknown policy {kind_word} (expected one of {', '.join(kinds_upper)}){hint}",
                )
            )
            continue
        specs = {s.name.upper(): s for s in field_specs(classes[kind])}
        spec = specs.get(field_word)
        if spec is None:
            settable = [f for f, s in specs.items() if s.settable]
            hint = _did_you_mean(field_word, settable, f"{prefix}{kind_word}{_SEP}{{}}")
            problems.append(
                _problem(
                    var,
                    text,
                    f"{kind} has no field {field_word.lower()} (settable: "
                    f"{', '.join(f.lower() for f in settable)}){hint}",
                )
            )
        elif not spec.settable:
            problems.append(
                _problem(
                    var,
                    text,
                    f"{kind} field {spec.name} is {spec.format} and cannot be "
                    "set from the environment; pass it in code",
                )
            )
    return problems


def check_environment(
    name: str,
    environ: Mapping[str, str] | None = None,
    *,
    extra: type[Policy] | None = None,
) -> None:
    """Raise :class:`ConfigError` if any variable under ``RESILIENT__<NAME>__`` names no known
    policy kind or field, or sets a code-only field: typos must never be silently ignored.

    The message names every offending variable and suggests the closest valid one.
    """
    classes = policy_classes()
    if extra is not None:
        classes.setdefault(extra.kind, extra)
    problems = _variable_problems(name, _environ(environ), classes)
    if problems:
        err = ConfigError(
            f"bad configuration for policy name {name!r}: " + "; ".join(problems)
            if len(problems) == 1
            else f"bad configuration for policy name {name!r}:\n  " + "\n  ".join(problems)
        )
        err.variable = problems[0].split("=", 1)[0]  # type: ignore[attr-defined]
        raise err


# -- resolving ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldValue:
    """The effective value of one field and where it came from.

    ``source`` is ``env`` (the variable), ``code`` (the code's defaults), ``default`` (the
    library's) or ``missing`` (required and given nowhere). ``text`` is the raw variable text
    when the source is ``env``.
    """

    spec: FieldSpec
    value: Any
    source: Source
    variable: str | None
    text: str | None = None

    @property
    def name(self) -> str:
        """The field (constructor parameter) name."""
        return self.spec.name


@dataclass(frozen=True)
class ResolvedPolicy:
    """Everything :func:`build_from_env` decided for one named policy, before constructing it.

    ``kwargs`` holds only what the environment and the code set (the library's defaults stay
    the constructor's own), ``enabled`` the ``ENABLED`` switch.
    """

    cls: type[Policy]
    name: str
    fields: tuple[FieldValue, ...]
    kwargs: Mapping[str, Any]
    enabled: bool

    @property
    def kind(self) -> str:
        """The policy kind (``breaker``, ``retry``, ...)."""
        return self.cls.kind

    @property
    def missing(self) -> list[FieldValue]:
        """Required fields given neither in code nor in the environment."""
        return [f for f in self.fields if f.source == "missing"]


def _check_code_defaults(cls: type[Policy], code_defaults: Mapping[str, Any]) -> None:
    if "name" in code_defaults:
        raise TypeError(
            f"{cls.__name__}.from_env() takes the name as its first positional argument, "
            f"not name={code_defaults['name']!r}"
        )
    specs = _spec_map(cls)
    for key in code_defaults:
        spec = specs.get(key)
        if spec is None:
            hint = _did_you_mean(key, specs)
            raise TypeError(
                f"{cls.__name__} has no parameter {key!r} (given as a code default){hint}"
            )


def resolve(
    cls: type[Policy],
    name: str,
    code_defaults: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResolvedPolicy:
    """Work out every field of policy ``cls`` named ``name``: parse its variables, check that
    no variable under ``RESILIENT__<NAME>__`` is unknown, and layer env > code > library
    default. Raises :class:`ConfigError` (bad or unknown variables) or :class:`TypeError`
    (a code default naming no parameter)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    code = dict(code_defaults or {})
    env = _environ(environ)
    _check_code_defaults(cls, code)
    check_environment(name, env, extra=cls)
    values: list[FieldValue] = []
    kwargs: dict[str, Any] = {}
    enabled = True
    for spec in field_specs(cls):
        var = spec.variable(name) if spec.settable else None
        if var is not None and var in env:
            text = env[var]
            fv = FieldValue(spec, spec.parse(text, var), "env", var, text)
        elif spec.name in code:
            fv = FieldValue(spec, code[spec.name], "code", var)
        elif spec.required:
            fv = FieldValue(spec, REQUIRED, "missing", var)
        else:
            fv = FieldValue(spec, spec.default, "default", var)
        values.append(fv)
        if spec.in_constructor:
            if fv.source in ("env", "code"):
                kwargs[spec.name] = fv.value
        else:
            enabled = bool(fv.value)
    return ResolvedPolicy(cls, name, tuple(values), kwargs, enabled)


def is_enabled(
    cls: type[Policy],
    name: str,
    *,
    default: bool = True,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """The ``RESILIENT__<NAME>__<POLICY>__ENABLED`` switch, ``default`` when it is not set;
    a bad value raises :class:`ConfigError`."""
    spec = _spec_map(cls)[ENABLED]
    var = spec.variable(name)
    env = _environ(environ)
    if var not in env:
        return default
    return bool(spec.parse(env[var], var))


def _rejected_by_constructor(resolved: ResolvedPolicy, exc: Exception) -> ConfigError | None:
    from_env = [f for f in resolved.fields if f.source == "env" and f.spec.in_constructor]
    if not from_env:
        return None
    message = str(exc)
    named = [f for f in from_env if re.search(rf"\b{re.escape(f.name)}\b", message)]
    culprits = named or from_env
    shown = ", ".join(f"{f.variable}={f.text!r}" for f in culprits)
    err = ConfigError(f"{shown}: rejected by {resolved.cls.__name__}({resolved.name!r}): {message}")
    err.variable = culprits[0].variable  # type: ignore[attr-defined]
    err.value = culprits[0].text  # type: ignore[attr-defined]
    err.expected = message  # type: ignore[attr-defined]
    return err


def construct(resolved: ResolvedPolicy) -> Policy:
    """Build the policy ``resolved`` describes. A ``ValueError``/``TypeError`` of the
    constructor caused by a value from the environment becomes a :class:`ConfigError` naming
    the variable; one caused only by code defaults propagates unchanged (it is a code bug)."""
    missing = resolved.missing
    if missing:
        need = ", ".join(f.name for f in missing)
        where = " or ".join(f"{f.variable}" for f in missing if f.variable)
        err = ConfigError(
            f"{resolved.cls.__name__} {resolved.name!r} needs {need}: pass it as a code "
            f"default (from_env({resolved.name!r}, {missing[0].name}=...))"
            + (f" or set {where}" if where else "")
        )
        err.variable = missing[0].variable  # type: ignore[attr-defined]
        raise err
    try:
        return resolved.cls(name=resolved.name, **resolved.kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        wrapped = _rejected_by_constructor(resolved, exc)
        if wrapped is None:
            raise
        raise wrapped from exc


def build_from_env(cls: type[PolicyT], name: str, code_defaults: Mapping[str, Any]) -> PolicyT:
    """Implementation of ``Policy.from_env``: resolve every field of ``cls`` for ``name`` and
    build it. The ``ENABLED`` switch is validated but not applied here (a policy object is
    always returned); :func:`resilient.policy` applies it when building a pipeline."""
    resolved = resolve(cls, name, code_defaults)
    policy = construct(resolved)
    return typing.cast(PolicyT, policy)


# -- presenting ---------------------------------------------------------------------------------
def display_value(value: Any) -> str:
    """A short, stable text form of a field value, in the syntax the environment accepts
    where there is one (booleans lower-case, exception classes as dotted paths)."""
    if value is REQUIRED:
        return "<required>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, type):
        return qualified_name(value)
    if isinstance(value, (tuple, list)) and all(isinstance(v, type) for v in value):
        return ",".join(qualified_name(v) for v in value) if value else "(none)"
    if inspect.isfunction(value) or inspect.isbuiltin(value) or inspect.ismethod(value):
        module = getattr(value, "__module__", None)
        qual = getattr(value, "__qualname__", repr(value))
        return f"{module}.{qual}" if module else qual
    return re.sub(r" at 0x[0-9A-Fa-f]+", "", repr(value))


def json_value(value: Any) -> Any:
    """A JSON-serialisable form of a field value (numbers stay numbers, exception classes
    become dotted paths, anything else its :func:`display_value`)."""
    if value is REQUIRED:
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, type) for v in value):
        return [qualified_name(v) for v in value]
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return display_value(value)
    return value


def reference_markdown() -> str:
    """The variable reference of ``docs/configuration.md``, generated from the policies'
    signatures so that it cannot drift from the code (a test compares the two)."""
    lines: list[str] = []
    for kind, cls in policy_classes().items():
        specs = field_specs(cls)
        lines += [
            f"### {cls.__name__} (`{kind.upper()}`)",
            "",
            "| Variable | Accepts | Library default |",
            "| --- | --- | --- |",
        ]
        for spec in specs:
            if not spec.settable:
                continue
            var = _SEP.join((ENV_PREFIX, "<NAME>", kind.upper(), spec.name.upper()))
            if spec.format == "choice":
                accepts = " or ".join(f"`{c}`" for c in CHOICE_FIELDS.get(spec.name, ()))
                accepts = accepts or spec.accepts
            else:
                accepts = spec.format
            if spec.optional:
                accepts += ", or `none`"
            if not spec.in_constructor:
                accepts += " (pipelines built by `rs.policy`)"
            default = "required" if spec.required else f"`{display_value(spec.default)}`"
            cells = (f"`{var}`", accepts, default)
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        code_only = [s.name for s in specs if not s.settable]
        if code_only:
            lines += ["", "Code-only (pass in code): " + ", ".join(f"`{n}`" for n in code_only)]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
