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
import sys
import time
from contextvars import ContextVar, Token
from time import monotonic
from typing import Any, Literal

from . import _hot_drivers
from . import _loop_deadlines as _deadlines
from . import _validate as v
from ._deadline import enter_deadline, leave_deadline
from ._misuse import without_parentheses
from ._policy import Policy
from ._thread_cache import POOL as _POOL
from ._thread_cache import Job as _Job
from ._types import Args, AsyncFn, Exc, ExcType, Fn, Kwargs, Tb
from .errors import TimeoutExceeded
from .telemetry._events import TimeoutHit
from .telemetry._hub import Listener

__all__ = ["Timeout"]


def _cancel_scope(loop: object, seconds: float) -> Any:
    """A cancel scope ending ``seconds`` from now: trio's own on trio (no anyio layer in
    between), anyio's otherwise (asyncio on Python 3.10)."""
    trio: Any = sys.modules.get("trio")
    if loop is None and trio is not None:
        return trio.CancelScope(deadline=trio.current_time() + seconds)
    import anyio

    return anyio.CancelScope(deadline=anyio.current_time() + seconds)


# -- the policy --------------------------------------------------------------------------------
_SECONDS = v.duration("seconds", zero=False)
_MODE = v.choice("mode", ("thread", "deadline"))
_OPTIONS = v.Options(_SECONDS, v.ON_EVENT, _MODE)

Mode = Literal["thread", "deadline"]


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
        self,
        seconds: float,
        name: str | None = None,
        *,
        on_event: Listener | None = None,
        mode: Mode = "thread",
    ) -> None:
        parentheses = without_parentheses("Timeout", seconds)
        if parentheses is not None:
            raise parentheses
        self._seconds = _SECONDS(seconds)
        self._mode: Mode = _MODE(mode)  # type: ignore[assignment]
        super().__init__(name, on_event=on_event)
        # open `with` / `async with` blocks of this context (thread or task), innermost last
        self._frames: ContextVar[tuple[tuple[Any, Token[float | None]], ...]] = ContextVar(
            f"resilient.timeout.{self.name}.frames", default=()
        )
        self._settle(seconds=self._seconds, on_event=on_event, mode=self._mode)

    def __repr__(self) -> str:
        mode = "" if self._mode == "thread" else f" mode={self._mode!r}"
        return f"<Timeout {self.name!r} {self._seconds:g}s{mode}>"

    @property
    def mode(self) -> Mode:
        """How a sync call is bounded: ``"thread"`` (the default: the call runs on a worker
        thread and the caller stops waiting at the deadline) or ``"deadline"`` (the call runs
        in the caller's thread under the deadline ``rs.remaining()`` reports, and
        ``TimeoutExceeded`` is raised after it if it overran). Async calls are cancelled for
        real in both modes."""
        return self._mode

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

    # -- sync: worker thread, or the caller's thread under a deadline -------------------------
    def _sync_wrapper(self, fn: Fn) -> Fn:
        if self._mode == "deadline":  # the decorator's path, inlined (see timeout.tmpl)
            return self._deadline_wrapper(fn)
        return super()._sync_wrapper(fn)

    # --- generated from src/resilient/_templates/timeout.tmpl by tools/gen_hotpaths.py ---
    _deadline_wrapper = _hot_drivers.timeout_deadline_wrapper
    # --- end of generated code ---

    def _call(self, fn: Fn, args: Args, kwargs: Kwargs) -> Any:
        seconds = self._seconds
        if self._mode == "deadline":
            return self._call_under_deadline(fn, args, kwargs)
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

    def _call_under_deadline(self, fn: Fn, args: Args, kwargs: Kwargs) -> Any:
        """``mode="deadline"``: no thread hand-off. The call runs here, ``rs.remaining()``
        (and deadline-aware clients reading it) see the budget, and a call that returned after
        its deadline raises ``TimeoutExceeded`` (its result is dropped: the caller's budget
        was spent); one that raised keeps its own exception."""
        deadline, token = enter_deadline(self._seconds)
        try:
            result = fn(*args, **kwargs)
        finally:
            leave_deadline(token)
        if monotonic() > deadline:
            raise self._expired(None)
        return result

    # -- async: real cancellation -------------------------------------------------------------
    # asyncio (3.11+): the loop's shared deadline queue (``_loop_deadlines``): entering and
    # leaving a timeout that does not fire schedules no loop timer of its own. trio: its native
    # cancel scope. Elsewhere (asyncio on 3.10): an anyio cancel scope. In every case a
    # cancellation from an enclosing scope propagates unchanged, never as TimeoutExceeded.
    async def _acall(self, fn: AsyncFn, args: Args, kwargs: Kwargs) -> Any:
        seconds = self._seconds
        _, token = enter_deadline(seconds)
        try:
            aio: Any = sys.modules.get("asyncio")  # _deadlines.running_loop(), inlined
            loop = None if aio is None else aio.events._get_running_loop()
            if loop is not None and _deadlines.AVAILABLE:
                entry = _deadlines.enter(loop, seconds)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    if _deadlines.leave(loop, entry, seconds) and _deadlines.cancelled(exc):
                        raise self._expired(exc) from exc
                    raise
                _deadlines.leave(loop, entry, seconds)
                return result
            scope = _cancel_scope(loop, seconds)
            caught: BaseException | None = None
            with scope:
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

    def __exit__(self, exc_type: ExcType, exc: Exc, tb: Tb) -> None:
        start, token = self._pop()
        leave_deadline(token)
        if exc is None and time.monotonic() - start > self._seconds:
            raise self._expired(None)

    async def __aenter__(self) -> Timeout:
        seconds = self._seconds
        _, token = enter_deadline(seconds)
        try:
            loop = _deadlines.running_loop()
            if loop is not None and _deadlines.AVAILABLE:
                frame: Any = (loop, _deadlines.enter(loop, seconds))
            else:
                frame = _cancel_scope(loop, seconds)
                frame.__enter__()
        except BaseException:
            leave_deadline(token)
            raise
        self._frames.set((*self._frames.get(), (frame, token)))
        return self

    async def __aexit__(self, exc_type: ExcType, exc: Exc, tb: Tb) -> bool:
        frame, token = self._pop()
        try:
            if isinstance(frame, tuple):
                loop, entry = frame
                ours = _deadlines.leave(loop, entry, self._seconds)
                if ours and _deadlines.cancelled(exc):
                    raise self._expired(exc) from exc
                return False
            swallowed = bool(frame.__exit__(exc_type, exc, tb))
        finally:
            leave_deadline(token)
        if frame.cancelled_caught:
            raise self._expired(exc)
        return swallowed

    def _pop(self) -> tuple[Any, Token[float | None]]:
        frames = self._frames.get()
        if not frames:
            raise RuntimeError(f"{self!r}: exit without a matching enter")
        self._frames.set(frames[:-1])
        return frames[-1]
