"""The writer thread of a SQLite saga store: the async appends and creates of every task in the
process, committed by ONE thread, several per transaction (group commit).

Why: a SQLite file has one writer at a time, so tasks writing through anyio's worker threads
(one thread hop per write) queue on the file's lock anyway, each paying its own hop and its
own commit. Here a task hands its write to the store's writer thread and waits on an
``anyio.Event`` that the thread sets through the task's own event loop
(``_waiters.TaskWaiter``); the thread takes every write waiting at that moment and commits them
in one ``BEGIN IMMEDIATE`` transaction, each inside a savepoint so one write's failure (a
``StaleEpoch``) undoes only that write. While it commits, the next writes queue up for the
next transaction. Measured in ``benchmarks/saga.py``: see docs/saga.md, Performance.

A transaction that fails as a whole (the file locked past ``busy_timeout``, an I/O error)
hands each of its writes back to the store's blocking path, one by one, so a write gets the
store's outage handling (bounded retries, ``SagaStoreUnavailable``) exactly as a blocking
call would. Waiting callers are never cancelled mid-write (like ``anyio.to_thread``): a
cancellation is delivered once the write is durable or failed.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import anyio

from .._waiters import TaskWaiter

__all__ = ["GroupWriter"]

# a write: (in a transaction on ``conn``) -> result; ``alone()`` -> result runs it on its own
InTransaction = Callable[[sqlite3.Connection], Any]


class _Job:
    __slots__ = ("alone", "error", "in_tx", "result", "waiter")

    def __init__(self, in_tx: InTransaction, alone: Callable[[], Any]) -> None:
        self.in_tx = in_tx
        self.alone = alone
        self.waiter = TaskWaiter()
        self.result: Any = None
        self.error: BaseException | None = None


class GroupWriter:
    """One daemon thread per store, started by the first async write, committing batches."""

    def __init__(
        self,
        name: str,
        connection: Callable[[], sqlite3.Connection],
        transaction: Callable[[], Any],
    ) -> None:
        self._name = name
        self._connection = connection  # the writer thread's own connection
        self._transaction = transaction  # ``store._write``: BEGIN IMMEDIATE .. COMMIT
        self._queue: list[_Job] = []
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False

    async def submit(self, in_tx: InTransaction, alone: Callable[[], Any]) -> Any:
        """Run ``in_tx`` in the next group transaction and return its result (or raise its
        error). ``alone`` is the same write through the store's blocking path, used when the
        group transaction as a whole fails."""
        job = _Job(in_tx, alone)
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self._name} is closed")
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"resilient-saga-writer {self._name}", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        with anyio.CancelScope(shield=True):  # the write is in the thread's hands now
            await job.waiter.event.wait()
        if job.error is not None:
            try:
                raise job.error
            finally:
                job.error = None  # no traceback <-> frame cycle
        return job.result

    def close(self) -> None:
        """Finish the queued writes, then stop the thread."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            self._commit(batch)
            for job in batch:
                job.waiter.wake()

    def _commit(self, batch: list[_Job]) -> None:
        try:
            with self._transaction() as conn:
                for i, job in enumerate(batch):
                    conn.execute(f"SAVEPOINT w{i}")
                    try:
                        job.result = job.in_tx(conn)
                    except Exception as exc:  # this write only: its savepoint is undone
                        conn.execute(f"ROLLBACK TO w{i}")
                        job.error = exc
                    conn.execute(f"RELEASE w{i}")
        except Exception:
            # the transaction failed as a whole: nothing of it is durable; each write goes
            # again on its own, through the store's outage handling
            for job in batch:
                job.result = job.error = None
                try:
                    job.result = job.alone()
                except Exception as exc:
                    job.error = exc
        except BaseException as exc:  # pragma: no cover - interpreter shutdown
            for job in batch:
                job.error = exc
            raise
