"""Wake-up handles for callers waiting in a queue shared by threads, asyncio and trio.

A bulkhead (or a rate limiter) keeps ONE first-come-first-served queue for every caller of a
policy instance, whatever it runs on. The queue holds these handles; whoever frees capacity
pops the longest waiter and calls ``wake()`` on it, from any thread:

* a **thread** waits on its own pre-acquired ``threading.Lock``; ``wake`` unlocks it;
* a **task** waits on its own ``anyio.Event``. Neither asyncio nor trio objects may be touched
  from a foreign thread, so the handle captures its loop's thread-safe scheduler when it is
  made (``loop.call_soon_threadsafe`` on asyncio, the ``TrioToken.run_sync_soon`` on trio) and
  ``wake`` schedules ``event.set`` through it. No polling, and no thread is ever blocked on
  behalf of a task. ``wake`` returns ``False`` when that loop is already gone, so the caller
  can pass the capacity on instead of leaking it.

A queue whose waiters may be woken more than once (the rate limiter's: "a token is yours", and
"you are first in line now: time the next token") calls ``wake`` at most once per ``wait``
under its own lock, and ``rearm`` after a wait that ended for another reason (a timeout), so
the next ``wait`` blocks again.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

__all__ = ["TaskWaiter", "ThreadWaiter", "Waiter", "threadsafe_scheduler"]


class ThreadWaiter:
    """A blocked thread: a lock created held; ``wake`` unlocks it, ``wait`` acquires it."""

    __slots__ = ("_gate",)

    def __init__(self) -> None:
        self._gate = threading.Lock()
        self._gate.acquire()

    def wait(self, timeout: float | None) -> bool:
        if timeout is None:
            return self._gate.acquire()
        # ``Lock.acquire`` refuses timeouts past ``TIMEOUT_MAX`` (OverflowError): such a
        # finite queue_timeout means "practically forever", so wait that long instead.
        return self._gate.acquire(timeout=min(timeout, threading.TIMEOUT_MAX))

    def wake(self) -> bool:
        self._gate.release()
        return True

    def rearm(self) -> None:
        """Swallow a ``wake`` that the last ``wait`` did not consume (it had timed out)."""
        self._gate.acquire(blocking=False)


def threadsafe_scheduler() -> Callable[[Callable[[], object]], object]:
    """How to run a callback on the current event loop from any thread."""
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_task():
        schedule: Callable[[Callable[[], object]], object] = (
            trio.lowlevel.current_trio_token().run_sync_soon
        )
        return schedule
    import asyncio  # a task waits: its event loop is running, so this is loaded already

    return asyncio.get_running_loop().call_soon_threadsafe


class TaskWaiter:
    """A waiting asyncio or trio task: an ``anyio.Event`` set through its own loop."""

    __slots__ = ("_schedule", "event")

    def __init__(self) -> None:
        import anyio

        self.event = anyio.Event()
        self._schedule = threadsafe_scheduler()

    def wake(self) -> bool:
        try:
            self._schedule(self.event.set)
        except RuntimeError:  # loop closed / trio run finished: nobody will take the slot
            return False
        return True

    def rearm(self) -> None:
        """A fresh event for the next wait (a ``set`` already scheduled hits the old one)."""
        import anyio  # already loaded: this waiter's task runs on it

        self.event = anyio.Event()


Waiter = ThreadWaiter | TaskWaiter
"""Either kind: what a FIFO queue shared by threads and tasks holds."""
