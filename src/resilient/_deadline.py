"""The innermost deadline of the current thread or task, for ``rs.remaining()``.

Deadlines live in a ``ContextVar`` as absolute ``time.monotonic()`` instants: a nested timeout
can only shrink the budget (``min`` of the two), asyncio tasks and trio tasks inherit their
parent's deadline, and a sync timeout's worker thread runs in a copy of the caller's context.
Retry reads it so it never sleeps past the enclosing deadline.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token

__all__ = ["enter_deadline", "leave_deadline", "remaining", "current_deadline"]

_DEADLINE: ContextVar[float | None] = ContextVar("resilient_deadline", default=None)


def current_deadline() -> float | None:
    """The innermost deadline as a ``time.monotonic()`` instant, or ``None``."""
    return _DEADLINE.get()


def remaining() -> float | None:
    """Seconds left before the innermost enclosing ``Timeout`` expires (never negative), or
    ``None`` outside any timeout. Hand it to an HTTP client so it gives up in time too."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def enter_deadline(seconds: float) -> tuple[float, Token[float | None]]:
    """Open a nested deadline ``seconds`` from now (never later than the enclosing one).

    Returns the effective absolute deadline and the token for :func:`leave_deadline`.
    """
    deadline = time.monotonic() + seconds
    outer = _DEADLINE.get()
    if outer is not None and outer < deadline:
        deadline = outer
    return deadline, _DEADLINE.set(deadline)


def leave_deadline(token: Token[float | None]) -> None:
    """Close the deadline opened with ``token``."""
    _DEADLINE.reset(token)
