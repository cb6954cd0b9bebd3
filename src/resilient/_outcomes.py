"""Markers the per-call paths share: the outcome note and the "wait for admission" answer.

Kept apart from the front end (:mod:`resilient._policy`) so that the generated per-call code
(:mod:`resilient._hot_paths`), which the front end binds as its methods, can use them without
importing the front end.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

__all__ = ["NOTE", "WAIT"]

WAIT: Any = object()
"""Returned by ``AroundPolicy._enter_nowait``: this caller has to wait for admission."""

NOTE: ContextVar[tuple[object, str] | None] = ContextVar("resilient_outcome", default=None)
"""The last outcome note, ``(policy, outcome)``: a driving policy that answers without raising
but wants another outcome recorded ("fallback") sets it; the execution of that policy compares
it with the value it read when it began (``Policy._noted``). Two reads per call instead of a
set/reset pair, and only for policies whose ``_notes_outcome`` is true."""
