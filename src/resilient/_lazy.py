"""Modules imported on first use and found again at the cost of a dict lookup.

``import resilient`` stays light by importing tenacity, anyio and the like only when a call
first needs them (see docs/performance.md, cold start). But an ``import`` statement inside a
per-call function is not free once the module is loaded: CPython 3.11 runs the whole import
protocol each time (for a relative import it also resolves the package through the module's
``__spec__.parent``, a Python-level property), about 0.6-1 us per call measured here. That
was a third of a retried call. Per-call code asks :func:`module` instead.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["module"]

_LOADED: dict[str, ModuleType] = {}


def module(name: str) -> ModuleType:
    """The module ``name`` (absolute), imported the first time it is asked for.

    Only fully imported modules are cached: a thread asking while another one is still
    importing ``name`` waits on the import system's module lock, as an ``import`` would."""
    found = _LOADED.get(name)
    if found is None:
        found = _LOADED[name] = importlib.import_module(name)
    return found
