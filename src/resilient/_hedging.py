"""The race of one hedged call once it has more than one attempt: async and threads.

``Hedge._acall`` runs the first attempt inline, in the caller's task, and only builds an
:class:`AsyncRace` when a second attempt is due (the delay passed without an answer, or the
first attempt failed). From then on the race is driven from the event loop's thread by three
kinds of events, all handled here: a timer (the next attempt is due), a detached attempt
ending (:func:`_attempt`), and the caller's inline attempt ending. The pure decisions (when
the next attempt is due, whether it may start, who won) are those of
:class:`~resilient._core.hedge.HedgeRace`.

No attempt outlives the call: every detached attempt runs in its own ``anyio.CancelScope``;
when the race is decided (or the caller is cancelled) every other attempt's scope is
cancelled and the caller awaits their ends, shielded, before it returns or re-raises. A
detached attempt that wins while the inline one still runs interrupts the caller's inline
await (``task.cancel()`` on asyncio, taken back with ``uncancel()``; a ``trio.CancelScope``
on trio). Detached attempts also get the caller's deadline (``rs.remaining()``) as their
scope's deadline, since they do not run inside the caller's ``Timeout``.

:class:`ThreadRace` is the sync twin: every attempt runs on a worker thread of the timeout's
pool (:mod:`resilient._thread_cache`) and the caller waits on a condition. Python cannot stop
a thread, so losing attempts are *abandoned*: they finish in the background and their
outcome is discarded.
"""

from __future__ import annotations

import contextvars
import math
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._core.hedge import HedgeRace
from ._deadline import current_deadline
from ._thread_cache import POOL
from ._timers import Cancellable, TimerClock, call_later, spawn_detached
from ._types import Args, AsyncFn, Fn, Kwargs
from .errors import _add_note

if TYPE_CHECKING:
    import asyncio

    import anyio

__all__ = ["AsyncRace", "Hedge", "ThreadRace", "fire"]


class Hedge(Protocol):
    """What a race uses of its :class:`resilient.Hedge` (this module sits below it)."""

    @property
    def name(self) -> str: ...
    @property
    def max_hedged(self) -> int: ...
    @property
    def _clock(self) -> Callable[[], float]: ...
    @property
    def _timer_clock(self) -> TimerClock | None: ...
    def _expected_latency(self) -> float | None: ...
    def _record(self, seconds: float) -> None: ...
    def _handled(self, error: BaseException) -> bool: ...
    def _hedge_started(self, attempt: int) -> None: ...
    def _hedge_finished(self, winner: int, attempts: int) -> None: ...


_INTERRUPT = "resilient hedge: another attempt answered first"


def _note_failed(error: BaseException, name: str, attempts: int) -> None:
    _add_note(error, f"resilient: hedge {name!r}: all {attempts} attempts failed")


class AsyncRace:
    """One async hedged call with more than one attempt (see the module docstring).

    Everything here runs in the event loop's thread (timers and detached tasks included),
    so the state needs no lock."""

    __slots__ = (
        "_all_done",
        "_changed",
        "args",
        "context",
        "core",
        "deadline",
        "error",
        "expected",
        "fatal",
        "fn",
        "inline_running",
        "interrupt",
        "interrupted",
        "kwargs",
        "live",
        "loop",
        "policy",
        "result",
        "scopes",
        "tasks",
        "timer",
    )

    def __init__(
        self,
        policy: Hedge,
        fn: AsyncFn,
        args: Args,
        kwargs: Kwargs,
        *,
        start: float,
        delay: float | None,
        loop: asyncio.AbstractEventLoop | None,
        context: contextvars.Context,
        interrupt: Callable[..., Any] | None,
    ) -> None:
        self.policy = policy
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.loop = loop
        self.context = context
        self.core = HedgeRace(policy.max_hedged + 1, delay, start)
        self.deadline = context.run(current_deadline)
        self.expected = policy._expected_latency()
        self.interrupt = interrupt
        self.inline_running = interrupt is not None
        self.interrupted = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.fatal: BaseException | None = None
        self.live = 0
        self.scopes: dict[int, anyio.CancelScope] = {}
        self.tasks: dict[int, Any] = {}  # asyncio holds tasks weakly: keep them alive here
        self.timer: Cancellable | None = None
        self._changed: anyio.Event | None = None
        self._all_done: anyio.Event | None = None

    # -- starting attempts ---------------------------------------------------------------------
    @property
    def over(self) -> bool:
        """True once an answer won, an error ended the call, or every attempt failed."""
        return self.fatal is not None or self.core.over

    def remaining(self) -> float | None:
        deadline = self.deadline
        return None if deadline is None else deadline - time.monotonic()

    def advance(self) -> None:
        """Start every attempt that is due and may start; arm the timer for the next one."""
        core = self.core
        policy = self.policy
        while self.fatal is None:
            due = core.next_due()
            if due is None:
                break
            now = policy._clock()
            if due > now:
                self._arm(due - now)
                break
            if not core.may_start(now, self.remaining(), self.expected):
                core.max_attempts = core.started  # no time left for another: stop starting
                break
            self._spawn(core.start(now))
        self._notify()

    def _arm(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = call_later(
            seconds,
            _on_timer,
            (self,),
            loop=self.loop,
            clock=self.policy._timer_clock,
        )

    def _spawn(self, number: int) -> None:
        self.live += 1
        self.policy._hedge_started(number)
        task = spawn_detached(self.loop, self.context.copy(), _attempt, self, number)
        if task is not None:
            self.tasks[number] = task

    # -- outcomes ---------------------------------------------------------------------------------
    def answered(self, number: int, result: Any) -> None:
        if self.core.answered(number) and self.fatal is None:
            self.result = result
            self._decided()
        self._notify()

    def failed(self, number: int, error: BaseException) -> None:
        if self.policy._handled(error):
            self.core.failed_one()
            if not self.core.winner:
                self.error = error
                self.advance()
        else:
            self.core.cancelled_one()
            if self.fatal is None and not self.core.winner:
                self.fatal = error  # not an error the hedge handles: it ends the call
                self._decided()
        self._notify()

    def _decided(self) -> None:
        """The race is over: stop the timer, cancel every other attempt (inline included)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for scope in self.scopes.values():
            scope.cancel()
        if self.inline_running and not self.interrupted and self.interrupt is not None:
            self.interrupted = True
            if self.loop is not None:
                self.interrupt(_INTERRUPT)
            else:
                self.interrupt()

    def abandon(self) -> None:
        """The caller is cancelled: cancel every attempt and start no other."""
        self.core.max_attempts = self.core.started
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for scope in self.scopes.values():
            scope.cancel()

    def _notify(self) -> None:
        changed = self._changed
        if changed is not None:
            changed.set()
        if self.live == 0 and self._all_done is not None:
            self._all_done.set()

    # -- the caller's side ------------------------------------------------------------------------
    def inline_ended(self, answered: bool, result: Any, error: BaseException | None) -> None:
        """The caller's inline attempt (number 1) returned ``result`` or raised ``error``."""
        self.inline_running = False
        if answered:
            self.answered(1, result)
        elif error is not None:
            self.failed(1, error)
        else:  # interrupted: another attempt already won
            self.core.cancelled_one()

    async def finish(self) -> Any:
        """Wait for the verdict, cancel and await every other attempt, then answer or raise."""
        import anyio  # loaded when a hedge first races, not with the package

        try:
            while not self.over:
                self._changed = anyio.Event()
                await self._changed.wait()
        except BaseException:
            self.abandon()
            await self._join()
            raise
        self._decided()
        await self._join()
        self.policy._hedge_finished(self.core.winner, self.core.started)
        if self.fatal is not None:
            raise self.fatal
        if self.core.winner:
            return self.result
        error = self.error
        assert error is not None
        _note_failed(error, self.policy.name, self.core.started)
        raise error

    async def cancel_all(self) -> None:
        """The caller was cancelled during its inline attempt: cancel every other attempt and
        await their ends (the caller then re-raises its cancellation)."""
        if self.inline_running:
            self.inline_running = False
            self.core.cancelled_one()
        self.abandon()
        await self._join()

    async def _join(self) -> None:
        """Await the end of every detached attempt (shielded: also while being cancelled)."""
        import anyio  # loaded when a hedge first races, not with the package

        if self.live == 0:
            return
        with anyio.CancelScope(shield=True):
            while self.live:
                self._all_done = anyio.Event()
                await self._all_done.wait()


async def _attempt(race: AsyncRace, number: int) -> None:
    """One detached attempt: report its answer or error to the race; end quietly when the
    race cancels it. Only a cancellation from outside (the run shutting down) escapes."""
    import anyio  # loaded when a hedge first races, not with the package

    deadline = race.deadline
    scope = anyio.CancelScope(
        deadline=math.inf
        if deadline is None
        else anyio.current_time() + (deadline - time.monotonic())
    )
    race.scopes[number] = scope
    reported = False
    cancelled = anyio.get_cancelled_exc_class()
    try:
        with scope:
            try:
                result = await race.fn(*race.args, **race.kwargs)
            except cancelled:
                raise
            except BaseException as exc:  # handed to the caller, which raises it
                reported = True
                race.failed(number, exc)
            else:
                reported = True
                race.answered(number, result)
    finally:
        del race.scopes[number]
        race.tasks.pop(number, None)
        race.live -= 1
        if not reported:
            race.core.cancelled_one()
        race._notify()


def _on_timer(race: AsyncRace) -> None:
    race.timer = None
    if not race.over:
        race.core.due_now = True  # the timer is the authority: loop clocks may fire early
        race.advance()


def fire(
    policy: Hedge,
    box: list[AsyncRace],
    fn: AsyncFn,
    args: Args,
    kwargs: Kwargs,
    inline: Any,
    start: float,
    delay: float,
    context: contextvars.Context,
) -> None:
    """The first hedge timer of a call fired: build the race (in the box the caller looks
    in when its inline attempt ends) and start attempt 2. ``inline`` is what interrupts the
    inline attempt: the caller's asyncio task, or its trio cancel scope; ``context`` is a copy
    of the caller's context, taken when the call began."""
    aio: Any = sys.modules.get("asyncio")
    loop = inline.get_loop() if aio is not None and isinstance(inline, aio.Task) else None
    interrupt = inline.cancel
    race = AsyncRace(
        policy, fn, args, kwargs, start=start, delay=delay, loop=loop, context=context,
        interrupt=interrupt,
    )  # fmt: skip
    box.append(race)
    race.core.due_now = True
    race.advance()


# -- threads ------------------------------------------------------------------------------------
class _Job:
    """One attempt on a worker thread; reports to its race when done."""

    __slots__ = ("_ctx", "_number", "_race")

    def __init__(self, race: ThreadRace, number: int, ctx: contextvars.Context) -> None:
        self._race = race
        self._number = number
        self._ctx = ctx

    def run(self) -> None:
        race = self._race
        try:
            result = self._ctx.run(race.fn, *race.args, **race.kwargs)
        except BaseException as exc:  # handed to the caller, which raises it
            race.report(self._number, False, None, exc)
        else:
            race.report(self._number, True, result, None)


class ThreadRace:
    """One sync hedged call: every attempt on a worker thread, the caller waiting for the
    first answer (see the module docstring)."""

    def __init__(
        self,
        policy: Hedge,
        fn: Fn,
        args: Args,
        kwargs: Kwargs,
        *,
        start: float,
        delay: float | None,
    ) -> None:
        self.policy = policy
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.context = contextvars.copy_context()
        self.core = HedgeRace(policy.max_hedged + 1, delay, start)
        self.start = start
        self.cond = threading.Condition(threading.RLock())
        self.version = 0  # moves on every report and timer: a waiter never misses one
        self.result: Any = None
        self.error: BaseException | None = None
        self.fatal: BaseException | None = None
        self.first_latency: float | None = None
        self.first_done = False

    def report(self, number: int, answered: bool, result: Any, error: BaseException | None) -> None:
        with self.cond:
            core = self.core
            if number == 1:
                self.first_done = True
                if answered:
                    self.first_latency = self.policy._clock() - self.start
            if answered:
                if core.answered(number) and self.fatal is None:
                    self.result = result
            elif error is not None and self.policy._handled(error):
                core.failed_one()
                if not core.winner:
                    self.error = error
            else:
                core.cancelled_one()
                if self.fatal is None and not core.winner:
                    self.fatal = error
            self.version += 1
            self.cond.notify_all()

    def _wake(self) -> None:
        with self.cond:
            self.version += 1
            self.cond.notify_all()

    def _submit(self, number: int) -> None:
        if number > 1:
            self.policy._hedge_started(number)
        POOL.submit(_Job(self, number, self.context.copy()))

    def run(self) -> Any:
        """Start attempt 1, hedge as due, return the first answer (or raise)."""
        policy = self.policy
        clock = policy._clock
        tclock: TimerClock | None = policy._timer_clock
        expected = policy._expected_latency()
        timer: Cancellable | None = None
        armed_for: float | None = None
        self._submit(1)
        try:
            while True:
                with self.cond:
                    core = self.core
                    if self.fatal is not None or core.over:
                        break
                    version = self.version
                    now = clock()
                    due = core.next_due()
                    start_next = False
                    if due is not None and due <= now:
                        if core.may_start(now, _remaining(), expected):
                            start_next = True
                            number = core.start(now)
                        else:
                            core.max_attempts = core.started
                            continue
                    if not start_next:
                        wait: float | None = None
                        if due is not None:
                            if tclock is None:
                                wait = due - now
                            elif armed_for != due:
                                if timer is not None:
                                    timer.cancel()
                                armed_for = due
                                timer = tclock.call_at(due, self._wake)
                        while self.version == version:
                            if not self.cond.wait(wait) and wait is not None:
                                break  # the next attempt is due by the real clock
                        continue
                self._submit(number)
        finally:
            if timer is not None:
                timer.cancel()
        if self.first_latency is not None:
            policy._record(self.first_latency)
        elif self.core.winner and not self.first_done:  # censored: it ran at least this long
            policy._record(clock() - self.start)
        policy._hedge_finished(self.core.winner, self.core.started)
        if self.fatal is not None:
            raise self.fatal
        if self.core.winner:
            return self.result
        error = self.error
        assert error is not None
        _note_failed(error, policy.name, self.core.started)
        raise error


def _remaining() -> float | None:
    deadline = current_deadline()
    return None if deadline is None else deadline - time.monotonic()
