"""Configuration shown to people: value display, JSON values and the generated reference.

``python -m resilient config`` and ``docs/configuration.md`` present what
:mod:`resilient.config` resolved; keeping the presentation here leaves the resolution logic free
of formatting concerns.
"""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

from ._config_fields import ENV_PREFIX, REQUIRED, SEP, class_name, field_specs
from ._config_parse import qualified_name
from ._validate import AllExcept
from .config import policy_classes

__all__ = ["display_value", "json_value", "reference_markdown"]


def display_value(value: Any) -> str:
    """A short, stable text form of a field value, in the syntax the environment accepts
    where there is one (booleans lower-case, exception classes as dotted paths)."""
    if value is REQUIRED:
        return "<required>"
    if isinstance(value, AllExcept):
        return repr(value)
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
    if isinstance(value, AllExcept):
        return repr(value)
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
            f"### {class_name(cls)} (`{kind.upper()}`)",
            "",
            "| Variable | Accepts | Library default |",
            "| --- | --- | --- |",
        ]
        for spec in specs:
            if not spec.settable:
                continue
            var = SEP.join((ENV_PREFIX, "<NAME>", kind.upper(), spec.name.upper()))
            if spec.format == "choice":
                accepts = " or ".join(f"`{c}`" for c in spec.choices) or spec.accepts
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
