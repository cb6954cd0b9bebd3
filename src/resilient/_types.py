"""Short names for the types every per-call signature repeats.

A policy's ``_call``/``_acall``, its wrappers and its context-manager exits all take the same
few parameter types; spelling them out made each signature six lines long, the same six lines
in a dozen places. These aliases keep the signatures on one line each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

__all__ = ["Args", "AsyncFn", "Exc", "ExcType", "Fn", "Kwargs", "Tb"]

Fn = Callable[..., Any]
"""A protected sync function."""
AsyncFn = Callable[..., Awaitable[Any]]
"""A protected async function."""
Args = tuple[Any, ...]
"""The positional arguments of one protected call."""
Kwargs = dict[str, Any]
"""The keyword arguments of one protected call."""
ExcType = type[BaseException] | None
"""``__exit__``'s exception type."""
Exc = BaseException | None
"""``__exit__``'s exception."""
Tb = TracebackType | None
"""``__exit__``'s traceback."""
