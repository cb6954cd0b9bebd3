"""Timers and detached tasks, for a policy that must act *while* its caller awaits (hedging).

A hedge runs its first attempt inline — in the caller's own task, creating no task at all —
and must still start a second attempt when ``delay`` passes without an answer. That takes a
callback at a given time while the caller is busy awaiting, which anyio does not offer:

* **asyncio** has one: ``loop.call_at`` (the hedge calls it directly on its fast path).
* **trio** has none (only cancel-scope deadlines), so one *timer service* per ``trio.run``, a
  system task, sleeps until the earliest timer of a heap; a new earlier timer moves the
  service's deadline. Cancelled timers are dropped lazily and the heap is compacted when they
  are the majority, as asyncio does with its own timer heap.
* an **injected clock** offering ``call_at(when, callback)`` (``resilient.testing.FakeClock``)
  replaces both: the callback runs when the clock is advanced past ``when`` and is handed to
  the loop's thread, so tests move time by hand and never sleep.

Attempts started by such a callback cannot be children of the caller's task group (the caller
is inside its inline await), so they are *detached*: an asyncio task (kept alive by a strong
reference) or a trio system task, each running in a copy of the caller's context. Whoever
spawns them is responsible for cancelling them and awaiting their end — the hedge does both
before it returns, so no attempt outlives the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ._sleeping import SNIFFIO

__all__ = [
    "Cancellable",
    "TimerClock",
    "asyncio_loop",
    "call_later",
    "in_loop_thread",
    "spawn_detached",
    "timer_clock",
]

_log = logging.getLogger("resilient")


class Cancellable(Protocol):
    """A scheduled timer: ``cancel()`` makes sure its callback never runs (idempotent)."""

    def cancel(self) -> None: ...


class TimerClock(Protocol):
    """A clock that can call back when it reaches a time (``resilient.testing.FakeClock``)."""

    def __call__(self) -> float: ...
    def call_at(self, when: float, callback: Callable[[], object]) -> Cancellable: ...


def timer_clock(clock: object) -> TimerClock | None:
    """``clock`` itself when it offers ``call_at`` (its time then decides when timers fire),
    else ``None`` (timers follow the event loop's clock)."""
    return clock if callable(getattr(clock, "call_at", None)) else None  # type: ignore[return-value]


def asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop when the current task is an asyncio one, else ``None`` (trio,
    or a thread without a loop). The checks ``sniffio`` makes, minus its import and lookup."""
    loop = asyncio._get_running_loop()
    if loop is None:
        return None
    if SNIFFIO is not None and (
        SNIFFIO.thread_local.name is not None
        or SNIFFIO.current_async_library_cvar.get() not in (None, "asyncio")
    ):
        return None
    return loop


# -- trio's timer service -----------------------------------------------------------------------
class _TrioTimer(list):  # type: ignore[type-arg]
    """``[when, sequence, callback, args, service]``: a heap entry that can cancel itself
    (a list, so the heap compares ``when`` then the unique sequence number, never callbacks)."""

    __slots__ = ()

    def cancel(self) -> None:
        if self[2] is not None:
            self[2] = None
            self[4].cancelled_one()


class _TrioTimers:
    """One trio run's timers, served by one system task (see the module docstring)."""

    def __init__(self) -> None:
        self.heap: list[_TrioTimer] = []
        self.cancelled = 0
        self.scope: Any = None  # the service's sleeping scope, while it sleeps
        self._sequence = itertools.count()

    def call_at(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> Any:
        entry = _TrioTimer((when, next(self._sequence), callback, args, self))
        heapq.heappush(self.heap, entry)
        scope = self.scope
        if scope is not None and self.heap[0] is entry and when < scope.deadline:
            scope.deadline = when
        return entry

    def cancelled_one(self) -> None:
        self.cancelled += 1
        heap = self.heap
        if self.cancelled > 64 and self.cancelled * 2 > len(heap):
            heap[:] = [e for e in heap if e[2] is not None]
            heapq.heapify(heap)
            self.cancelled = 0

    async def serve(self) -> None:
        import trio

        heap = self.heap
        while True:
            while heap and heap[0][2] is None:
                heapq.heappop(heap)
                self.cancelled -= 1
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self.scope = scope
                try:
                    await trio.sleep_forever()
                finally:
                    self.scope = None
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                entry = heapq.heappop(heap)
                callback, args = entry[2], entry[3]
                if callback is None:
                    self.cancelled -= 1
                    continue
                entry[2] = None
                try:
                    callback(*args)
                except Exception:  # a timer must never take the service down
                    _log.exception("resilient: a timer callback raised")


_TRIO_TIMERS: Any = None  # trio.lowlevel.RunVar, made on first use (trio is imported lazily)


def _trio_timers() -> _TrioTimers:
    global _TRIO_TIMERS
    import trio

    if _TRIO_TIMERS is None:
        _TRIO_TIMERS = trio.lowlevel.RunVar("resilient_timers")
    try:
        found: _TrioTimers = _TRIO_TIMERS.get()
        return found
    except LookupError:
        timers = _TrioTimers()
        _TRIO_TIMERS.set(timers)
        trio.lowlevel.spawn_system_task(timers.serve, name="resilient timer service")
        return timers


# -- the generic entry points -----------------------------------------------------------------
def in_loop_thread(loop: asyncio.AbstractEventLoop | None) -> Callable[..., object]:
    """A function that runs ``callback(*args)`` soon in the current event loop's thread, from
    any thread (for callbacks of an injected clock, which may be advanced from anywhere)."""
    if loop is not None:
        deliver: Callable[..., object] = loop.call_soon_threadsafe
        return deliver
    import trio

    token: Any = trio.lowlevel.current_trio_token()
    run_sync_soon: Callable[..., object] = token.run_sync_soon
    return run_sync_soon


def call_later(
    delay: float,
    callback: Callable[..., object],
    args: tuple[Any, ...],
    *,
    loop: asyncio.AbstractEventLoop | None,
    clock: TimerClock | None,
) -> Cancellable:
    """Run ``callback(*args)`` in the event loop's thread ``delay`` seconds from now: on the
    injected ``clock`` when given, else on ``loop`` (asyncio) or trio's timer service."""
    if clock is not None:
        deliver = in_loop_thread(loop)

        def fire() -> None:
            # a RuntimeError: the loop is gone, so nobody waits for this timer any more
            with contextlib.suppress(RuntimeError):
                deliver(callback, *args)

        return clock.call_at(clock() + delay, fire)
    if loop is not None:
        return loop.call_at(loop.time() + delay, callback, *args)
    import trio

    timers = _trio_timers()
    handle: Cancellable = timers.call_at(trio.current_time() + delay, callback, args)
    return handle


def spawn_detached(
    loop: asyncio.AbstractEventLoop | None,
    context: contextvars.Context,
    async_fn: Callable[..., Awaitable[Any]],
    *args: Any,
) -> Any:
    """Start ``async_fn(*args)`` as a task of its own in ``context``, outside any task group.

    Returns the asyncio task (keep a reference: asyncio holds tasks weakly) or ``None`` on
    trio (a system task). The coroutine must handle its own errors and let only
    cancellation escape; whoever spawns it must cancel it and await its end."""
    if loop is not None:
        coroutine: Any = async_fn(*args)
        create: Callable[[Any], Any] = loop.create_task
        return context.run(create, coroutine)
    import trio

    trio.lowlevel.spawn_system_task(async_fn, *args, context=context)
    return None
