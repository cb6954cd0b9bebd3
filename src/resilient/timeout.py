"""Timeout: give a call a time budget and stop waiting for it when the budget is spent.

How the deadline is enforced depends on what Python can do in each mode:

* ``async def`` (asyncio and trio): real cancellation. The call runs inside an
  ``anyio.CancelScope`` with a deadline; when it expires the coroutine is cancelled at its next
  ``await`` (its ``finally`` blocks and ``async with`` exits run), and the caller gets
  :class:`~resilient.TimeoutExceeded` chained to the cancellation. A cancellation that comes
  from an *enclosing* scope is never turned into ``TimeoutExceeded``: it propagates unchanged.
* ``def`` (decorator, ``call``): the caller never waits past the deadline. The function runs in
  a worker thread (in a copy of the caller's ``contextvars`` context, so ``rs.remaining()``,
  OpenTelemetry spans and other context variables carry over) while the caller waits at most
  ``seconds``. Python cannot stop a thread, so on timeout the worker is **abandoned**: the
  function keeps running in the background until it returns by itself, and its result or
  error is discarded. Functions under a sync timeout should therefore hand ``rs.remaining()``
  to their I/O (socket/HTTP timeouts) so the abandoned work also ends in time. The same
  holds when the waiting caller is interrupted (``KeyboardInterrupt``): it stops waiting at
  once and the worker is abandoned.
* ``with Timeout(s):`` around a sync block cannot interrupt the block either; it opens the
  deadline for ``rs.remaining()`` and raises ``TimeoutExceeded`` when the block *completed*
  after its budget (a block that raised keeps its own exception). Prefer the decorator when
  the caller must not wait. ``async with Timeout(s):`` cancels the block for real.

Worker threads come from a small process-wide pool that grows on demand and never queues a
call behind another (an abandoned, stuck function can only occupy its own thread); idle
threads exit after a while. Reusing a thread costs a fraction of starting one per call.

Nested timeouts shrink: ``rs.remaining()`` always reports the innermost effective budget, and
the ``TimeoutExceeded`` raised names the policy whose budget ran out.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

import anyio

from . import _validate as v
from ._deadline import enter_deadline, leave_deadline
from ._policy import Policy
from ._thread_cache import POOL as _POOL
from ._thread_cache import Job as _Job
from .errors import TimeoutExceeded
from .telemetry._events import TimeoutHit
from .telemetry._hub import Listener

__all__ = ["Timeout"]


# -- the policy --------------------------------------------------------------------------------
_SECONDS = v.duration("seconds", zero=False)
_OPTIONS = v.Options(_SECONDS, v.ON_EVENT)


class Timeout(Policy):
    """Limit a call to ``seconds``; raise :class:`~resilient.TimeoutExceeded` when it overruns.

    Why: a caller that waits forever on a stuck dependency holds its thread, connection and
    user hostage. A timeout bounds the wait, and ``rs.remaining()`` lets the code inside hand
    the rest of the budget on (to an HTTP client, a database driver, a retry).

    Use ``@Timeout(2.0)`` on ``def`` or ``async def``, ``timeout.call(fn, ...)``,
    ``await timeout.acall(fn, ...)``, ``async with Timeout(2.0):`` or ``with Timeout(2.0):``.
    Async code is cancelled for real. **Sync code cannot be killed**: the decorated function
    runs in a worker thread and the caller stops waiting at the deadline, but the function
    keeps running in the background until it returns (its outcome is discarded), so it should
    respect ``rs.remaining()`` itself. ``with Timeout(...)`` around a sync block only sets the
    deadline and raises at the end of a block that finished late. See the module docstring.
    """

    kind = "timeout"
    options = _OPTIONS

    def __init__(
        self, seconds: float, name: str | None = None, *, on_event: Listener | None = None
    ) -> None:
        self._seconds = _SECONDS(seconds)
        super().__init__(name, on_event=on_event)
        # open `with` / `async with` blocks of this context (thread or task), innermost last
        self._frames: ContextVar[tuple[tuple[Any, Token[float | None]], ...]] = ContextVar(
            f"resilient.timeout.{self.name}.frames", default=()
        )

    def __repr__(self) -> str:
        return f"<Timeout {self.name!r} {self._seconds:g}s>"

    @property
    def seconds(self) -> float:
        """The time budget of one call, in seconds."""
        return self._seconds

    def _health(self) -> dict[str, Any]:
        return {"seconds": self._seconds}

    def _expired(self, cause: BaseException | None) -> TimeoutExceeded:
        tel = self._tel
        if tel.wants_events():
            tel.emit(TimeoutHit(policy=self.kind, name=self.name, seconds=self._seconds))
        error = TimeoutExceeded(self.name, self._seconds)
        error.__cause__ = cause
        self._own(error)
        return error

    # -- sync: worker thread ------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        seconds = self._seconds
        end = time.monotonic() + seconds
        _, token = enter_deadline(seconds)
        try:
            job = _Job(contextvars.copy_context(), fn, args, kwargs)
        finally:
            leave_deadline(token)
        _POOL.submit(job)
        if job.wait(end - time.monotonic()):
            if job.error is not None:
                error, job.error = job.error, None
                raise error
            return job.result
        raise self._expired(None)

    # -- async: cancel scope -------------------------------------------------------------------
    async def _acall(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        _, token = enter_deadline(self._seconds)
        caught: BaseException | None = None
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + self._seconds):
                try:
                    return await fn(*args, **kwargs)
                except BaseException as exc:
                    caught = exc
                    raise
        finally:
            leave_deadline(token)
        # Only reached when our scope absorbed a cancellation, i.e. our deadline expired. A
        # scope never absorbs a cancellation while an enclosing scope is cancelled too (the
        # outermost cancelled scope catches it, on trio and on anyio's asyncio backend), so a
        # cancel from outside is never turned into a TimeoutExceeded.
        raise self._expired(caught)

    # -- context managers ------------------------------------------------------------------------
    def __enter__(self) -> Timeout:
        _, token = enter_deadline(self._seconds)
        self._frames.set((*self._frames.get(), (time.monotonic(), token)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        start, token = self._pop()
        leave_deadline(token)
        if exc is None and time.monotonic() - start > self._seconds:
            raise self._expired(None)

    async def __aenter__(self) -> Timeout:
        _, token = enter_deadline(self._seconds)
        scope = anyio.CancelScope(deadline=anyio.current_time() + self._seconds)
        try:
            scope.__enter__()
        except BaseException:
            leave_deadline(token)
            raise
        self._frames.set((*self._frames.get(), (scope, token)))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        scope, token = self._pop()
        assert isinstance(scope, anyio.CancelScope)
        try:
            swallowed = bool(scope.__exit__(exc_type, exc, tb))
        finally:
            leave_deadline(token)
        if scope.cancelled_caught:
            raise self._expired(exc)
        return swallowed

    def _pop(self) -> tuple[Any, Token[float | None]]:
        frames = self._frames.get()
        if not frames:
            raise RuntimeError(f"{self!r}: exit without a matching enter")
        self._frames.set(frames[:-1])
        return frames[-1]
