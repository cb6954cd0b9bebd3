"""Timers and detached tasks, for a policy that must act *while* its caller awaits (hedging).

A hedge runs its first attempt inline — in the caller's own task, creating no task at all —
and must still start a second attempt when ``delay`` passes without an answer. That takes a
callback at a given time while the caller is busy awaiting, which anyio does not offer:

* **asyncio** has ``loop.call_at``, but a handle per call (a Python object, a context copy,
  a push on the loop's heap, a cancel) costs more than the rest of a hedge's happy path.
* **trio** has none at all (only cancel-scope deadlines).

So each event loop gets one *timer queue*: a heap of our timers, with ONE loop-level wake-up
for its earliest entry (an asyncio ``call_at`` handle; on trio the deadline of one system
task's cancel scope). Setting a timer is a heap push, and the loop is only touched when the new
timer is due before the current wake-up — never, with one fixed delay. Cancelling only marks
the entry; cancelled entries are dropped when they reach the head, and the heap is compacted
when they are the majority (as asyncio does with its own heap).
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

import contextlib
import contextvars
import heapq
import itertools
import logging
import math
import sys
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "Cancellable",
    "TimerClock",
    "asyncio_loop",
    "asyncio_timers",
    "call_later",
    "in_loop_thread",
    "spawn_detached",
    "timer_clock",
    "trio_timers",
]

_log = logging.getLogger("resilient")
_heappush = heapq.heappush


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
    """The running asyncio loop, or ``None`` (trio, or a thread without a loop): trio does
    not set asyncio's running loop, so this one C call tells the two apart (asyncio is not
    imported for it: without the package loaded there is no asyncio loop)."""
    aio: Any = sys.modules.get("asyncio")
    return None if aio is None else aio.events._get_running_loop()


def current_task(loop: asyncio.AbstractEventLoop) -> Any:
    """The running asyncio task of ``loop`` (asyncio is loaded: ``loop`` runs)."""
    return sys.modules["asyncio"].current_task(loop)


# -- one timer queue per event loop -----------------------------------------------------------
class _Timer(list):  # type: ignore[type-arg]
    """``[when, sequence, callback, args, queue]``: a heap entry that can cancel itself (a
    list, so the heap compares ``when`` then the unique sequence number, never callbacks)."""

    __slots__ = ()

    def cancel(self) -> None:
        if self[2] is not None:
            self[2] = None
            queue = self[4]
            queue.cancelled += 1
            if queue.cancelled > 64 and queue.cancelled * 2 > len(queue.heap):
                queue.compact()


class _TimerQueue:
    """The timers of one event loop, woken by ONE loop-level wake-up at a time.

    Setting a timer is a heap push; cancelling it only marks it (a timer cancelled long
    before it is due costs nothing more). The loop is asked to wake up (``_arm``) only when a
    new timer is due before the current wake-up: with one fixed hedge delay, new timers are
    never earlier than the head, so a call that answers in time never touches the loop."""

    def __init__(self) -> None:
        self.heap: list[_Timer] = []
        self.cancelled = 0
        self.armed = math.inf  # when the loop will next wake us
        self._sequence = itertools.count()

    def call_at(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> Any:
        entry = _Timer((when, next(self._sequence), callback, args, self))
        _heappush(self.heap, entry)
        if when < self.armed:
            self._arm(when)
        return entry

    def _arm(self, when: float) -> None:
        raise NotImplementedError  # pragma: no cover - each loop kind wakes up its own way

    def compact(self) -> None:
        """Drop the cancelled timers (once they are the majority: amortised O(1) each)."""
        heap = self.heap
        heap[:] = [e for e in heap if e[2] is not None]
        heapq.heapify(heap)
        self.cancelled = 0

    def run_due(self, now: float) -> float:
        """Run every timer due at ``now`` (in time order); returns when the next is due."""
        heap = self.heap
        while heap:
            head = heap[0]
            callback = head[2]
            if callback is None:
                heapq.heappop(heap)
                self.cancelled -= 1
                continue
            if head[0] > now:
                return float(head[0])
            heapq.heappop(heap)
            head[2] = None
            try:
                callback(*head[3])
            except Exception:  # a timer must never take the others down
                _log.exception("resilient: a timer callback raised")
        return math.inf


class _AsyncioTimers(_TimerQueue):
    """asyncio: the wake-up is one ``loop.call_at`` handle, moved only to an earlier time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.handle: asyncio.TimerHandle | None = None
        # asyncio runs a handle up to its clock resolution early: count that as due
        self.slack = float(getattr(loop, "_clock_resolution", 0.0))

    def _arm(self, when: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.armed = when
        self.handle = self.loop.call_at(when, self._wake)

    def _wake(self) -> None:
        self.handle = None
        self.armed = math.inf
        due = self.run_due(self.loop.time() + self.slack)
        if due < self.armed:
            self._arm(due)


_ASYNCIO_TIMERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncioTimers] = (
    weakref.WeakKeyDictionary()
)
_last_asyncio: tuple[object, _AsyncioTimers | None] = (None, None)


def asyncio_timers(loop: asyncio.AbstractEventLoop) -> _TimerQueue:
    """The timer queue of ``loop`` (made on first use)."""
    global _last_asyncio
    last_loop, timers = _last_asyncio
    if last_loop is loop and timers is not None:
        return timers
    timers = _ASYNCIO_TIMERS.get(loop)
    if timers is None:
        timers = _ASYNCIO_TIMERS[loop] = _AsyncioTimers(loop)
    _last_asyncio = (loop, timers)
    return timers


class _TrioTimers(_TimerQueue):
    """trio: the wake-up is the deadline of one system task's cancel scope."""

    def __init__(self) -> None:
        super().__init__()
        self.scope: Any = None  # the service's sleeping scope, while it sleeps

    def _arm(self, when: float) -> None:
        self.armed = when
        if self.scope is not None:
            self.scope.deadline = when

    async def serve(self) -> None:
        import trio

        while True:
            with trio.CancelScope(deadline=self.armed) as scope:
                self.scope = scope
                try:
                    await trio.sleep_forever()
                finally:
                    self.scope = None
            self.armed = math.inf
            due = self.run_due(trio.current_time())
            if due < self.armed:
                self.armed = due


_TRIO_TIMERS: Any = None  # trio.lowlevel.RunVar, made on first use (trio is imported lazily)


def trio_timers() -> _TimerQueue:
    """The timer queue of the current ``trio.run`` (its service task started on first use)."""
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
class _ClockTimer:
    """A timer on an injected clock, delivered to the loop's thread. The clock may fire from
    any thread, and its callback reaches the loop only later: cancelling marks the timer, and
    the delivery checks the mark in the loop's thread, so a timer cancelled meanwhile (the
    call it was for has ended) never runs."""

    __slots__ = ("_args", "_callback", "_deliver", "_timer", "cancelled")

    def __init__(
        self,
        clock: TimerClock,
        delay: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        deliver: Callable[..., object],
    ) -> None:
        self._callback = callback
        self._args = args
        self._deliver = deliver
        self.cancelled = False
        self._timer = clock.call_at(clock() + delay, self._fire)

    def _fire(self) -> None:
        # a RuntimeError: the loop is gone, so nobody waits for this timer any more
        with contextlib.suppress(RuntimeError):
            self._deliver(self._run)

    def _run(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._callback(*self._args)

    def cancel(self) -> None:
        self.cancelled = True
        self._timer.cancel()


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
        return _ClockTimer(clock, delay, callback, args, in_loop_thread(loop))
    if loop is not None:
        handle: Cancellable = asyncio_timers(loop).call_at(loop.time() + delay, callback, args)
        return handle
    import trio

    handle = trio_timers().call_at(trio.current_time() + delay, callback, args)
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
