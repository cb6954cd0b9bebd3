"""Leases: a running saga is leased to its process for ``saga.lease`` seconds and renewed
every ``lease / 3`` while it runs, so recovery elsewhere takes over only a saga whose process
stopped renewing (its lease expired); the epoch fence, not the lease, is what keeps two
processes from both recording.

An async run renews from a :func:`heartbeat` task of its own; sync runs (no event loop) are
renewed by one daemon thread per process, :data:`KEEPER`. A renewal that finds the lease taken
marks the run lost, and its driver stops it with ``StaleEpoch``.
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


async def heartbeat(run: _Run, scope: anyio.CancelScope, lost: Callable[[], None]) -> None:
    """Renew ``run``'s lease until ``scope`` is cancelled (the run ended) or the lease is lost
    (then call ``lost``)."""
    saga = run.saga
    store = saga.store
    with scope:
        while True:
            await anyio.sleep(saga.lease / 3)
            until = saga._clock() + saga.lease
            try:
                ok = await store.renew(run.id, saga.node_id, run.epoch, until)
            except Exception:  # a store blip is not a lost lease: the epoch still fences
                _log.exception("renewing the lease of saga %r failed", run.id)
                continue
            if not ok and not run.state.status.finished:
                lost()
                return


class _Lease:
    """A sync run's hold on its saga, renewed by the :data:`KEEPER` thread."""

    __slots__ = ("lost", "run")

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.lost = False


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
                except Exception:  # a flaky store must not kill the keeper thread
                    _log.exception("renewing the lease of saga %r failed", run.id)
                    continue
                if not ok and not run.state.status.finished:
                    lease.lost = True
                with self._lock:
                    if lease in self._leases:
                        self._leases[lease] = now + saga.lease / 3


KEEPER = _LeaseKeeper()
