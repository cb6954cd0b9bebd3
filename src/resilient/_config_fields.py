"""Which constructor options of a policy can be set from the environment, and how.

A policy declares its options (:mod:`resilient._validate`); this module turns a policy class
into :class:`FieldSpec` rows, one per keyword parameter of its constructor (``name`` excepted)
plus the ``enabled`` switch every kind has. The format, the parser and the words for error
messages come from the option declaration; the default from the signature. A parameter that
declares no option is *unclassified* (a test fails on it) instead of being silently
unconfigurable.

Configuration works on anything shaped like :class:`Configurable`, not on the policy base
class, so this module imports no policy and every policy may import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ._config_parse import BOOL_HELP, Parser, config_error, parse_bool
from ._validate import Option, Options
from .errors import ConfigError

if TYPE_CHECKING:
    import inspect

__all__ = [
    "ENABLED",
    "ENV_PREFIX",
    "REQUIRED",
    "Configurable",
    "FieldSpec",
    "env_key",
    "field_specs",
    "class_name",
    "variable_name",
]

T_co = TypeVar("T_co", covariant=True)

ENV_PREFIX = "RESILIENT"
"""Every variable starts with ``RESILIENT__``."""

SEP = "__"

ENABLED = "enabled"
"""A pseudo-field accepted for every policy kind: ``...__ENABLED=false`` drops that policy
from pipelines built by :func:`resilient.policy`."""

_NONE_WORDS = frozenset({"none", "null"})


class Configurable(Protocol[T_co]):
    """What configuration needs of a policy class: its ``kind``, its declared ``options`` and
    a constructor taking ``name=`` and the options as keywords."""

    @property
    def kind(self) -> str: ...
    @property
    def options(self) -> Options: ...

    def __call__(self, *args: Any, **kwargs: Any) -> T_co: ...


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
    return SEP.join((ENV_PREFIX, env_key(name), kind.upper(), field_name.upper()))


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
    choices: tuple[str, ...] = ()

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


def class_name(cls: Configurable[Any]) -> str:
    """The class's own name (``CircuitBreaker``), for messages."""
    return str(getattr(cls, "__name__", cls.kind))


def _spec(kind: str, param: inspect.Parameter, option: Option[Any] | None) -> FieldSpec:
    import inspect

    default = REQUIRED if param.default is inspect.Parameter.empty else param.default
    if option is None:
        return FieldSpec(
            param.name, kind, "unclassified", "nothing (no option is declared for it)",
            default, default is None, None,
        )  # fmt: skip
    return FieldSpec(
        param.name,
        kind,
        option.format,
        option.accepts,
        default,
        option.optional or default is None,
        option.parser,
        choices=option.choices,
    )


_SPECS: dict[Any, tuple[FieldSpec, ...]] = {}


def field_specs(cls: Configurable[Any]) -> tuple[FieldSpec, ...]:
    """Every keyword-settable constructor parameter of ``cls`` (except ``name``), then the
    ``enabled`` pseudo-field (unless the class sets ``switchable = False``: it is no pipeline
    member), in signature order."""
    cached = _SPECS.get(cls)
    if cached is None:
        cached = _SPECS[cls] = _derive_specs(cls)
    return cached


def _derive_specs(cls: Configurable[Any]) -> tuple[FieldSpec, ...]:
    kind = cls.kind
    options = cls.options
    specs: list[FieldSpec] = []
    import inspect  # configuration reads signatures: loaded when first used

    for param in inspect.signature(cls).parameters.values():
        if param.name == "name" or param.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
            inspect.Parameter.POSITIONAL_ONLY,
        ):
            continue
        specs.append(_spec(kind, param, options.get(param.name)))
    if getattr(cls, "switchable", True) and not any(s.name == ENABLED for s in specs):
        specs.append(FieldSpec(ENABLED, kind, "boolean", BOOL_HELP, True, False, parse_bool, False))
    return tuple(specs)
