"""Configuration from the environment: ``RESILIENT__<NAME>__<POLICY>__<FIELD>=value``.

Operators tune a running service without a release: ``RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION
=15s`` changes the breaker that the code builds with ``CircuitBreaker.from_env("payments")`` (or
``rs.registry.breaker("payments")``, or ``@rs.policy("payments", "breaker")``). The environment
wins over the code's defaults, which win over the library's defaults.

Which fields exist and how each is read from text comes from the options every policy declares
(:mod:`resilient._validate`, turned into rows by :mod:`resilient._config_fields`), so a new
constructor option is configurable without touching this module. Text parsing lives in
:mod:`resilient._config_parse`, presentation (the CLI, the reference in the docs) in
:mod:`resilient._config_render`.

Every problem (bad value, unknown variable, a code-only field set from the environment, a value
the constructor refuses) raises :class:`~resilient.ConfigError` when the policy is CREATED,
naming the variable, the value and what was expected — never later, at call time.

The policy kinds are registered here by :mod:`resilient._registry` (which sits above every
policy and holds the explicit kind -> class table), so that this module imports no policy.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ._config_fields import (
    ENABLED,
    ENV_PREFIX,
    REQUIRED,
    SEP,
    Configurable,
    FieldSpec,
    class_name,
    env_key,
    field_specs,
    variable_name,
)
from .errors import ConfigError

__all__ = [
    "ENABLED",
    "ENV_PREFIX",
    "REQUIRED",
    "ConfigError",
    "Configurable",
    "FieldSpec",
    "FieldValue",
    "ResolvedPolicy",
    "build_from_env",
    "check_environment",
    "construct",
    "env_key",
    "field_specs",
    "is_enabled",
    "names_in_environment",
    "policy_class",
    "policy_classes",
    "register_kinds",
    "resolve",
    "variable_name",
]

T = TypeVar("T")

Source = Literal["env", "code", "default", "missing"]

_KINDS: dict[str, Configurable[Any]] = {}


def register_kinds(classes: Iterable[Configurable[Any]]) -> None:
    """Make ``classes`` the configurable policy kinds, in the usual pipeline order
    (outermost first). Called once by :mod:`resilient._registry` with its table."""
    _KINDS.clear()
    _KINDS.update((cls.kind, cls) for cls in classes)


def _known_kinds() -> dict[str, Configurable[Any]]:
    """The registered kinds. ``import resilient`` loads lazily, so a policy module can be in
    use before the registry module that holds the table was imported: load it then (the
    registry registers its table on import; this module never names a policy)."""
    if not _KINDS:
        importlib.import_module("resilient._registry")
    return _KINDS


def policy_classes() -> dict[str, Configurable[Any]]:
    """The configurable policy classes by kind, in the usual pipeline order (outermost
    first)."""
    return dict(_known_kinds())


def policy_class(kind: str) -> Configurable[Any]:
    """The policy class of ``kind`` (``"breaker"``, ``"retry"``, ...), with a "did you mean"
    when the kind is misspelt."""
    cls = _known_kinds().get(kind) if isinstance(kind, str) else None
    if cls is None:
        hint = _kind_hint(str(kind))
        raise ValueError(f"unknown policy kind {kind!r}: expected one of {', '.join(_KINDS)}{hint}")
    return cls


# -- the environment -------------------------------------------------------------------------
def _spec_map(cls: Configurable[Any]) -> dict[str, FieldSpec]:
    return {s.name: s for s in field_specs(cls)}


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _kind_hint(word: str) -> str:
    """The "did you mean" of a policy kind: a close spelling of a kind, or a word of a class
    name (``circuit`` -> ``breaker``, from ``CircuitBreaker``)."""
    hint = _did_you_mean(word, list(_KINDS), "{!r}")
    if hint:
        return hint
    folded = re.sub(r"[^a-z]", "", word.lower())
    for kind, cls in _KINDS.items():
        name = class_name(cls).lower()
        if folded and (folded in name or name in folded):
            return f"; did you mean {kind!r} ({class_name(cls)})?"
    return ""


def _did_you_mean(word: str, candidates: Iterable[str], template: str = "{}") -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {template.format(close[0])}?" if close else ""


def names_in_environment(environ: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """``{<NAME> key: [kinds]}`` for every ``RESILIENT__<NAME>__<POLICY>__<FIELD>`` variable
    (kinds lower-cased, as written, sorted); variables of another shape are left out here and
    reported by :func:`check_environment`."""
    found: dict[str, set[str]] = {}
    prefix = ENV_PREFIX + SEP
    for var in _environ(environ):
        if not var.startswith(prefix):
            continue
        parts = var[len(prefix) :].split(SEP)
        if len(parts) >= 2 and parts[0]:
            found.setdefault(parts[0], set())
            if len(parts) == 3 and parts[1]:
                found[parts[0]].add(parts[1].lower())
    return {key: sorted(kinds) for key, kinds in sorted(found.items())}


def _problem(var: str, text: str, what: str) -> str:
    return f"{var}={text!r}: {what}"


def _variable_problems(
    name: str, environ: Mapping[str, str], classes: Mapping[str, Configurable[Any]]
) -> list[str]:
    key = env_key(name)
    prefix = SEP.join((ENV_PREFIX, key, ""))
    problems: list[str] = []
    kinds_upper = {kind.upper(): kind for kind in classes}
    for var in sorted(environ):
        if not var.startswith(prefix):
            continue
        text = environ[var]
        parts = var[len(prefix) :].split(SEP)
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
            hint = _did_you_mean(kind_word, kinds_upper, f"{prefix}{{}}{SEP}{field_word}")
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
            hint = _did_you_mean(field_word, settable, f"{prefix}{kind_word}{SEP}{{}}")
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
    extra: Configurable[Any] | None = None,
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

    cls: Configurable[Any]
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


def _check_code_defaults(cls: Configurable[Any], code_defaults: Mapping[str, Any]) -> None:
    if "name" in code_defaults:
        raise TypeError(
            f"{class_name(cls)}.from_env() takes the name as its first positional argument, "
            f"not name={code_defaults['name']!r}"
        )
    specs = _spec_map(cls)
    for key in code_defaults:
        spec = specs.get(key)
        if spec is None:
            hint = _did_you_mean(key, specs)
            raise TypeError(
                f"{class_name(cls)} has no parameter {key!r} (given as a code default){hint}"
            )


def resolve(
    cls: Configurable[Any],
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
        if spec.in_constructor and fv.source in ("env", "code"):
            kwargs[spec.name] = fv.value
        if spec.name == ENABLED:  # the pseudo-field, or a policy's own switch (chaos)
            enabled = bool(fv.value)
    return ResolvedPolicy(cls, name, tuple(values), kwargs, enabled)


def is_enabled(
    cls: Configurable[Any],
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
    err = ConfigError(
        f"{shown}: rejected by {class_name(resolved.cls)}({resolved.name!r}): {message}"
    )
    err.variable = culprits[0].variable  # type: ignore[attr-defined]
    err.value = culprits[0].text  # type: ignore[attr-defined]
    err.expected = message  # type: ignore[attr-defined]
    return err


def construct(resolved: ResolvedPolicy) -> Any:
    """Build the policy ``resolved`` describes. A ``ValueError``/``TypeError`` of the
    constructor caused by a value from the environment becomes a :class:`ConfigError` naming
    the variable; one caused only by code defaults propagates unchanged (it is a code bug)."""
    missing = resolved.missing
    if missing:
        need = ", ".join(f.name for f in missing)
        where = " or ".join(f"{f.variable}" for f in missing if f.variable)
        err = ConfigError(
            f"{class_name(resolved.cls)} {resolved.name!r} needs {need}: pass it as a code "
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


def build_from_env(cls: Configurable[T], name: str, code_defaults: Mapping[str, Any]) -> T:
    """Implementation of ``Policy.from_env``: resolve every field of ``cls`` for ``name`` and
    build it. The ``ENABLED`` switch is validated but not applied here (a policy object is
    always returned); :func:`resilient.policy` applies it when building a pipeline."""
    resolved = resolve(cls, name, code_defaults)
    policy: T = construct(resolved)
    return policy
