"""Worker threads for calls the caller must be able to stop waiting for.

A sync ``Timeout`` cannot interrupt a running function (Python cannot stop a thread), so it runs
the function on a worker thread and waits at most its budget; on expiry the worker is
abandoned and finishes in the background. Starting a thread per call costs far more than
handing the call to a parked one, so workers are cached: a finished worker parks and takes the
next job, and exits after ``idle_timeout`` seconds without one.

The pool is unbounded on purpose: a bounded pool would make a new call wait behind abandoned
ones, and the caller's budget would be spent in a queue instead of in the call.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["POOL", "Job", "Runnable", "WorkerPool"]


class Runnable(Protocol):
    """What a worker runs: anything with ``run()`` (a :class:`Job`, a hedge's attempt)."""

    def run(self) -> None: ...


class Job:
    """One sync call handed to a worker; the caller waits on ``_done`` (created held)."""

    __slots__ = ("_args", "_ctx", "_done", "_fn", "_kwargs", "error", "result")

    def __init__(
        self,
        ctx: contextvars.Context,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._ctx: contextvars.Context | None = ctx
        self._fn: Callable[..., Any] | None = fn
        self._args = args
        self._kwargs = kwargs
        self.result: Any = None
        self.error: BaseException | None = None
        self._done = threading.Lock()
        self._done.acquire()

    def run(self) -> None:
        ctx, fn = self._ctx, self._fn
        assert ctx is not None and fn is not None
        try:
            self.result = ctx.run(fn, *self._args, **self._kwargs)
        except BaseException as exc:  # handed to the caller, which re-raises it
            self.error = exc
        finally:
            self._ctx = self._fn = None
            self._args, self._kwargs = (), {}
            self._done.release()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when the call finished. A budget beyond
        ``threading.TIMEOUT_MAX`` (which ``Lock.acquire`` refuses) waits that long instead."""
        return self._done.acquire(timeout=min(max(0.0, timeout), threading.TIMEOUT_MAX))


class _Worker:
    """A daemon thread that runs jobs until it has been idle for ``idle_timeout`` seconds."""

    __slots__ = ("_job", "_pool", "_wake")

    def __init__(self, pool: WorkerPool, job: Runnable, number: int) -> None:
        self._pool = pool
        self._job: Runnable | None = job
        self._wake = threading.Lock()
        self._wake.acquire()
        threading.Thread(target=self._loop, name=f"resilient-timeout-{number}", daemon=True).start()

    def give(self, job: Runnable) -> None:
        self._job = job
        self._wake.release()

    def _loop(self) -> None:
        pool = self._pool
        while True:
            job, self._job = self._job, None
            if job is not None:
                job.run()
                del job  # drop the job (and its result) before idling
            pool._park(self)
            if not self._wake.acquire(timeout=pool.idle_timeout):
                if pool._retire(self):
                    return
                self._wake.acquire()  # popped by submit() just now: its job is on the way


class WorkerPool:
    """Hands each job to an idle worker (most recently used first) or a new one.

    Unbounded on purpose: a bounded pool would make a new call wait behind abandoned ones,
    and the caller's budget would be spent in a queue instead of in the call.
    """

    def __init__(self, idle_timeout: float = 30.0) -> None:
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._numbers = itertools.count(1)

    def submit(self, job: Runnable) -> None:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            _Worker(self, job, next(self._numbers))
        else:
            worker.give(job)

    def _park(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def _retire(self, worker: _Worker) -> bool:
        """True when ``worker`` left the idle list and may exit."""
        with self._lock:
            try:
                self._idle.remove(worker)
            except ValueError:
                return False
            return True

    def _after_fork(self) -> None:
        # the idle threads do not exist in a forked child: forget them
        self._lock = threading.Lock()
        self._idle = []


POOL = WorkerPool()
"""The process-wide pool: sync timeouts and sync hedges (and anything else that must not wait
past a deadline) hand their calls to it."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=POOL._after_fork)
