"""Deadlines of async timeouts on asyncio: one loop timer per event loop, not one per call.

``asyncio.timeout`` (and anyio's cancel scope) schedule a loop timer when a timeout is entered
and cancel it when it is left: two heap operations of the event loop and a handle object per
protected call, which made an async ``rs.Timeout`` cost twenty times a breaker. Most timeouts
never fire, so here entering one only appends it to a queue and leaving it marks it done:

* every event loop has one :class:`_LoopDeadlines`: a FIFO queue per timeout length (deadlines
  of one length arrive in deadline order, so each queue is sorted without a heap) and at most
  one loop timer, armed for the earliest deadline of any queue;
* entering (:func:`enter`) appends ``(deadline, task)`` and re-arms the timer only when this
  deadline is earlier than the armed one (a shorter timeout); leaving (:func:`leave`) marks
  the entry done and drops finished entries from the queue's head;
* when the timer fires, every expired entry still running gets ``task.cancel()`` and is marked
  fired; the timer is re-armed for the next live deadline.

The protected call sees an ordinary cancellation at its next ``await`` (its ``finally`` blocks
run); the timeout turns it into ``TimeoutExceeded`` only if this entry fired and nothing else
asked for the cancellation (``Task.uncancel``, as ``asyncio.timeout`` does), so a cancellation
from an enclosing scope always propagates unchanged. Needs ``Task.uncancel`` (Python 3.11+);
callers fall back to a cancel scope on 3.10.

Finished entries behind a long-running one stay queued until it ends; a queue that grows past
its limit is compacted, so memory stays bounded by the live calls.
"""

from __future__ import annotations

import sys
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

__all__ = ["AVAILABLE", "Entry", "cancelled", "enter", "leave", "running_loop"]

AVAILABLE = sys.version_info >= (3, 11)
"""``Task.uncancel``/``cancelling`` exist: the loop-timer timeouts can be used."""

_COMPACT_AT = 1024


def _asyncio() -> Any:
    """asyncio, when something imported it (it is never imported here: on trio, or before an
    event loop runs, the package stays unloaded)."""
    return sys.modules.get("asyncio")


def running_loop() -> Any:
    """The running asyncio event loop of this thread, or ``None`` (no loop, or trio).
    (Hot callers inline it: ``aio = sys.modules.get("asyncio")`` and this expression.)"""
    aio = _asyncio()
    return None if aio is None else aio.events._get_running_loop()


def cancelled(error: BaseException | None) -> bool:
    """True for asyncio's ``CancelledError`` (what a timeout's ``task.cancel()`` raises)."""
    aio = _asyncio()
    return aio is not None and isinstance(error, aio.CancelledError)


class Entry:
    """One entered timeout: its deadline (loop time), task, and what became of it."""

    __slots__ = ("cancelling", "deadline", "done", "fired", "task")

    def __init__(self, deadline: float, task: Any, cancelling: int) -> None:
        self.deadline = deadline
        self.task = task
        self.cancelling = cancelling  # the task's pending cancellations when entered
        self.done = False
        self.fired = False


class _Queue:
    __slots__ = ("entries", "limit")

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        self.limit = _COMPACT_AT


class _LoopDeadlines:
    """The timeouts of one event loop (only ever touched from that loop's thread)."""

    __slots__ = ("__weakref__", "handle", "loop", "queues", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queues: dict[float, _Queue] = {}
        self.handle: asyncio.TimerHandle | None = None
        self.when = float("inf")

    def arm(self, when: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.when = when
        self.handle = self.loop.call_at(when, self.fire)

    def fire(self) -> None:
        self.handle = None
        self.when = float("inf")
        now = self.loop.time()
        earliest = float("inf")
        for seconds, queue in list(self.queues.items()):
            entries = queue.entries
            while entries:
                entry = entries[0]
                if entry.done:
                    entries.popleft()
                elif entry.deadline <= now:
                    entries.popleft()
                    entry.fired = True
                    entry.task.cancel()
                else:
                    earliest = min(earliest, entry.deadline)
                    break
            if not entries:
                del self.queues[seconds]
        if earliest != float("inf"):
            self.arm(earliest)


# The deadlines of the loop seen last (most processes run one loop): read as one tuple, so a
# thread running another loop can never pair this loop with that loop's state.
_last: tuple[Any, _LoopDeadlines | None] = (None, None)
_states: weakref.WeakKeyDictionary[Any, _LoopDeadlines] = weakref.WeakKeyDictionary()


def _deadlines(loop: asyncio.AbstractEventLoop) -> _LoopDeadlines:
    global _last
    cached_loop, state = _last
    if cached_loop is loop and state is not None:
        return state
    found = _states.get(loop)
    if found is None:
        found = _states.setdefault(loop, _LoopDeadlines(loop))
    _last = (loop, found)
    return found


def enter(loop: asyncio.AbstractEventLoop, seconds: float) -> Entry:
    """Start a timeout of ``seconds`` for the current task of ``loop``."""
    task: Any = sys.modules["asyncio"].current_task(loop)  # loaded: a loop is running
    if task is None:
        raise RuntimeError("an async timeout needs to run inside an asyncio task")
    state = _deadlines(loop)
    deadline = loop.time() + seconds
    entry = Entry(deadline, task, task.cancelling())
    queue = state.queues.get(seconds)
    if queue is None:
        queue = state.queues[seconds] = _Queue()
    entries = queue.entries
    entries.append(entry)
    if len(entries) > queue.limit:
        live = deque(e for e in entries if not e.done)
        queue.entries = live
        queue.limit = max(_COMPACT_AT, 2 * len(live))
    if deadline < state.when:
        state.arm(deadline)
    return entry


def leave(loop: asyncio.AbstractEventLoop, entry: Entry, seconds: float) -> bool:
    """End ``entry``'s timeout; ``True`` when it fired and this cancellation is its own (the
    caller turns it into ``TimeoutExceeded``), after giving the cancellation request back."""
    entry.done = True
    queue = _deadlines(loop).queues.get(seconds)
    if queue is not None:
        entries = queue.entries
        while entries and entries[0].done:
            entries.popleft()
    if not entry.fired:
        return False
    return bool(entry.task.uncancel() <= entry.cancelling)
