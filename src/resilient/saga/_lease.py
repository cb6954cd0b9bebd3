"""Leases: a running saga is leased to its process for ``saga.lease`` seconds and renewed
every ``lease / 3`` while it runs, so recovery elsewhere takes over only a saga whose process
stopped renewing (its lease expired); the epoch fence, not the lease, is what keeps two
processes from both recording.

An async run renews from a :func:`heartbeat` task of its own; sync runs (no event loop) are
renewed by one daemon thread per process, :data:`KEEPER`. A renewal that finds the lease taken
marks the run lost (reading the saga once to learn the epoch it lost to), and its driver stops
it with ``StaleEpoch``. A renewal that fails (the store is down) is a log line, not a lost
lease: the epoch still fences the run if another process takes the saga over meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import anyio

from ._protocol import _Run

__all__ = ["KEEPER", "heartbeat"]

_log = logging.getLogger("resilient.saga")


def _renewal_failed(run: _Run, exc: Exception) -> None:
    # one line, no traceback: during a store outage this repeats every lease/3 per run
    _log.warning("saga %r: renewing its lease failed (%s: %s)", run.id, type(exc).__name__, exc)


async def heartbeat(
    run: _Run, scope: anyio.CancelScope, lost: Callable[[int | None], None]
) -> None:
    """Renew ``run``'s lease until ``scope`` is cancelled (the run ended) or the lease is lost
    (then call ``lost`` with the saga's current epoch, ``None`` if it cannot be read)."""
    saga = run.saga
    store = saga.store
    with scope:
        while True:
            await anyio.sleep(saga.lease / 3)
            until = saga._clock() + saga.lease
            try:
                ok = await store.renew(run.id, saga.node_id, run.epoch, until)
            except Exception as exc:  # a store blip is not a lost lease: the epoch still fences
                _renewal_failed(run, exc)
                continue
            if not ok and not run.state.status.finished:
                current: int | None = None
                try:
                    record = await store.load(run.id)
                    current = None if record is None else record.epoch
                except Exception:  # the epoch is for the message; losing is what matters
                    pass
                lost(current)
                return


class _Lease:
    """A sync run's hold on its saga, renewed by the :data:`KEEPER` thread."""

    __slots__ = ("lost", "lost_to", "run")

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.lost = False
        self.lost_to: int | None = None  # the saga's epoch when the lease was found taken


class _LeaseKeeper:
    """One daemon thread per process renewing the leases of every sync run, each every
    ``lease / 3`` seconds (async runs renew from a task of their own)."""

    _TICK = 0.5

    def __init__(self) -> None:
        self._leases: dict[_Lease, float] = {}  # lease -> monotonic time of the next renewal
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, run: _Run) -> _Lease:
        lease = _Lease(run)
        with self._lock:
            self._leases[lease] = time.monotonic() + run.saga.lease / 3
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="resilient-saga-leases", daemon=True
                )
                self._thread.start()
        return lease

    def drop(self, lease: _Lease) -> None:
        with self._lock:
            self._leases.pop(lease, None)

    def _loop(self) -> None:
        while True:
            time.sleep(self._TICK)
            now = time.monotonic()
            with self._lock:
                due = [lease for lease, at in self._leases.items() if at <= now]
            for lease in due:
                run = lease.run
                saga = run.saga
                try:
                    ok = saga._blocking_store.renew_sync(
                        run.id, saga.node_id, run.epoch, saga._clock() + saga.lease
                    )
                except Exception as exc:  # a flaky store must not kill the keeper thread
                    _renewal_failed(run, exc)
                    continue
                if not ok and not run.state.status.finished:
                    try:
                        record = saga._blocking_store.load_sync(run.id)
                        lease.lost_to = None if record is None else record.epoch
                    except Exception:  # the epoch is for the message; losing is what matters
                        pass
                    lease.lost = True
                with self._lock:
                    if lease in self._leases:
                        self._leases[lease] = now + saga.lease / 3


KEEPER = _LeaseKeeper()
