"""Whether the current call may be repeated at all, whatever the retry policy around it says.

Some calls must never be made twice: an HTTP ``POST`` without an ``Idempotency-Key`` could
charge a card twice. Yet they should still pass through the same pipeline as every other call,
so the circuit breaker counts their failures and the timeouts bound them. The code that knows
(the HTTP transport) sets :data:`NO_RETRY` to a reason for the duration of the call; ``Retry``
reads it on its failure path only (never on the happy path) and gives up at once, naming the
reason in the note it adds to the error.

A ``ContextVar``: it follows the call into tasks and into a sync ``Timeout``'s worker thread
(which runs in a copy of the caller's context), and never leaks into unrelated calls.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["NO_RETRY"]

NO_RETRY: ContextVar[str | None] = ContextVar("resilient_no_retry", default=None)
"""``None`` (the default): the call may be retried; a string: why it may not."""
