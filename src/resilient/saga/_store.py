"""The store protocol (SAGA.md 4.7) and a base class for stores with blocking I/O.

The engine only talks to :class:`SagaStore`, an async protocol, so a future PostgreSQL or
Redis backend can use an async driver. Backends whose I/O blocks (SQLite) or does none
(memory) derive from :class:`BlockingSagaStore`: they write the ``*_sync`` methods once and
get the async methods for free (run in a worker thread when ``offload`` is True), and
``saga.run_sync`` / the CLI call the ``*_sync`` methods directly, without any event loop.
"""

from __future__ import annotations

import abc
import math
import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio
import anyio.to_thread

from ._model import (
    NON_PROGRESS_KINDS,
    CreateResult,
    NewSaga,
    SagaFilter,
    SagaLogEvent,
    SagaRecord,
    SagaStatus,
    SagaSummary,
)

if TYPE_CHECKING:
    from ._durability import Durability
    from ._outage import OutageGuard

__all__ = ["BlockingSagaStore", "SagaStore", "as_blocking", "is_progress", "store_health", "track"]

_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def track(store: Any) -> None:
    """Remember ``store`` (weakly) for :func:`store_health`."""
    with _LIVE_LOCK:
        _LIVE.add(store)


def store_health() -> list[dict[str, Any]]:
    """``store.health()`` of every live saga store of this process (JSON-ready), for a health
    endpoint: which store, what its durability settings promise, whether it is reachable."""
    with _LIVE_LOCK:
        stores = list(_LIVE)
    return [store.health() for store in stores]


def is_progress(events: Sequence[SagaLogEvent]) -> bool:
    """True when appending ``events`` moves the saga forward (resets its recovery count)."""
    return any(ev.kind not in NON_PROGRESS_KINDS for ev in events)


@runtime_checkable
class SagaStore(Protocol):
    """What a saga backend implements. Every write is one atomic transaction, fenced by the
    saga's ``epoch``: a writer whose epoch is not the stored one gets :class:`StaleEpoch`."""

    async def create(self, rec: NewSaga) -> CreateResult:
        """Insert the saga if its id is absent (epoch 1, RUNNING, owned by ``rec.owner``);
        otherwise return the existing record untouched."""
        ...

    async def load(self, saga_id: str) -> SagaRecord | None:
        """The saga with its whole log, or ``None``."""
        ...

    async def append(
        self,
        saga_id: str,
        epoch: int,
        events: Sequence[SagaLogEvent],
        status: SagaStatus | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        """Append ``events`` (and set ``status``/``next_attempt_at`` when given) in one
        transaction; raise StaleEpoch if the stored epoch is not ``epoch``. A finished status
        releases the lease; progress events reset the recovery count."""
        ...

    async def claim(
        self,
        owner: str,
        now: float,
        lease_s: float,
        limit: int,
        *,
        definitions: Sequence[str] | None = None,
        saga_id: str | None = None,
    ) -> list[SagaRecord]:
        """Take up to ``limit`` due sagas (unfinished, lease expired, ``next_attempt_at`` <=
        ``now``), optionally only of ``definitions`` or only ``saga_id``: each gets
        ``owner``, ``lease_until = now + lease_s``, ``epoch += 1`` and ``recoveries += 1``."""
        ...

    async def take(self, saga_id: str, owner: str, now: float, lease_s: float) -> SagaRecord | None:
        """Operator takeover: claim ``saga_id`` whatever its status or lease (epoch += 1,
        recoveries unchanged), so an admin action fences out any other writer."""
        ...

    async def renew(self, saga_id: str, owner: str, epoch: int, lease_until: float) -> bool:
        """Extend the lease if ``owner`` still holds the saga at ``epoch``; False otherwise."""
        ...

    async def release(self, saga_id: str, owner: str, epoch: int) -> None:
        """Give the lease up (the saga stays as it is, for the next claimer)."""
        ...

    async def query(self, filt: SagaFilter) -> list[SagaSummary]:
        """Sagas matching ``filt`` (newest first), without their logs."""
        ...


class BlockingSagaStore(abc.ABC):
    """A store written with blocking methods; the async protocol methods wrap them."""

    #: Run the blocking methods in a worker thread from async code (True for real I/O).
    offload: bool = True

    @abc.abstractmethod
    def create_sync(self, rec: NewSaga) -> CreateResult:
        """Blocking :meth:`SagaStore.create`."""

    @abc.abstractmethod
    def load_sync(self, saga_id: str) -> SagaRecord | None:
        """Blocking :meth:`SagaStore.load`."""

    @abc.abstractmethod
    def append_sync(
        self,
        saga_id: str,
        epoch: int,
        events: Sequence[SagaLogEvent],
        status: SagaStatus | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        """Blocking :meth:`SagaStore.append`."""

    @abc.abstractmethod
    def claim_sync(
        self,
        owner: str,
        now: float,
        lease_s: float,
        limit: int,
        *,
        definitions: Sequence[str] | None = None,
        saga_id: str | None = None,
    ) -> list[SagaRecord]:
        """Blocking :meth:`SagaStore.claim`."""

    @abc.abstractmethod
    def take_sync(self, saga_id: str, owner: str, now: float, lease_s: float) -> SagaRecord | None:
        """Blocking :meth:`SagaStore.take`."""

    @abc.abstractmethod
    def renew_sync(self, saga_id: str, owner: str, epoch: int, lease_until: float) -> bool:
        """Blocking :meth:`SagaStore.renew`."""

    @abc.abstractmethod
    def release_sync(self, saga_id: str, owner: str, epoch: int) -> None:
        """Blocking :meth:`SagaStore.release`."""

    @abc.abstractmethod
    def query_sync(self, filt: SagaFilter) -> list[SagaSummary]:
        """Blocking :meth:`SagaStore.query`."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to free by default
        """Free resources (connections); the store must not be used afterwards."""

    def health(self) -> dict[str, Any]:
        """A JSON-ready snapshot for health endpoints (the durable stores add their settings
        and whether the database is reachable)."""
        durability = getattr(self, "durability", None)
        return {
            "store": repr(self),
            "available": True,
            "durability": durability.as_dict() if durability is not None else None,
        }

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.offload:
            return fn(*args, **kwargs)
        if kwargs:
            return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
        return await anyio.to_thread.run_sync(fn, *args)

    async def create(self, rec: NewSaga) -> CreateResult:
        """See :meth:`SagaStore.create`."""
        result: CreateResult = await self._run(self.create_sync, rec)
        return result

    async def load(self, saga_id: str) -> SagaRecord | None:
        """See :meth:`SagaStore.load`."""
        result: SagaRecord | None = await self._run(self.load_sync, saga_id)
        return result

    async def append(
        self,
        saga_id: str,
        epoch: int,
        events: Sequence[SagaLogEvent],
        status: SagaStatus | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        """See :meth:`SagaStore.append`."""
        await self._run(self.append_sync, saga_id, epoch, events, status, next_attempt_at)

    async def claim(
        self,
        owner: str,
        now: float,
        lease_s: float,
        limit: int,
        *,
        definitions: Sequence[str] | None = None,
        saga_id: str | None = None,
    ) -> list[SagaRecord]:
        """See :meth:`SagaStore.claim`."""
        result: list[SagaRecord] = await self._run(
            self.claim_sync, owner, now, lease_s, limit, definitions=definitions, saga_id=saga_id
        )
        return result

    async def take(self, saga_id: str, owner: str, now: float, lease_s: float) -> SagaRecord | None:
        """See :meth:`SagaStore.take`."""
        result: SagaRecord | None = await self._run(self.take_sync, saga_id, owner, now, lease_s)
        return result

    async def renew(self, saga_id: str, owner: str, epoch: int, lease_until: float) -> bool:
        """See :meth:`SagaStore.renew`."""
        result: bool = await self._run(self.renew_sync, saga_id, owner, epoch, lease_until)
        return result

    async def release(self, saga_id: str, owner: str, epoch: int) -> None:
        """See :meth:`SagaStore.release`."""
        await self._run(self.release_sync, saga_id, owner, epoch)

    async def query(self, filt: SagaFilter) -> list[SagaSummary]:
        """See :meth:`SagaStore.query`."""
        result: list[SagaSummary] = await self._run(self.query_sync, filt)
        return result


class _GuardedStore(BlockingSagaStore):
    """A store on a database that can be out of reach for a while (SQLite, PostgreSQL).

    Each ``*_sync`` method runs one transaction, ``self._<operation>(retried, ...)``, through
    the store's :class:`~resilient.saga._outage.OutageGuard`, so every backend rides out an
    outage the same way; ``retried`` is True when an earlier attempt of the same operation
    failed (maybe after its COMMIT went through). A subclass sets ``_kind``, ``_guard`` and
    ``durability`` and writes the ``_<operation>`` methods.
    """

    _kind: str  # the store's kind in health(): "sqlite", "postgres"
    _guard: OutageGuard
    durability: Durability
    _last_stamp = 0.0  # the last updated_at handed out by _stamp()

    def health(self) -> dict[str, Any]:
        """A JSON-ready snapshot: the store, what its durability settings promise and whether
        its database is reachable."""
        return {
            "store": repr(self),
            "kind": self._kind,
            "durability": self.durability.as_dict(),
            **self._guard.health(),
        }

    def _stamp(self) -> float:
        """``updated_at`` of one append: wall time, strictly increasing in this store, so a
        retried append can tell whether its earlier attempt committed."""
        now = time.time()
        if now <= self._last_stamp:
            now = math.nextafter(self._last_stamp, math.inf)
        self._last_stamp = now
        return now

    def create_sync(self, rec: NewSaga) -> CreateResult:
        """Insert-if-absent on ``rec.id`` in one transaction."""
        result: CreateResult = self._guard.call("create", rec.id, self._create, rec)
        return result

    def load_sync(self, saga_id: str) -> SagaRecord | None:
        """The saga and its log, read in one snapshot."""
        result: SagaRecord | None = self._guard.call("load", saga_id, self._load, saga_id)
        return result

    def append_sync(
        self,
        saga_id: str,
        epoch: int,
        events: Sequence[SagaLogEvent],
        status: SagaStatus | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        """Append in one transaction, fenced by ``epoch``.

        Every append stamps the row's ``updated_at`` with a value unique to it
        (:meth:`_stamp`): a retry that finds the row at its epoch with its own stamp knows the
        earlier attempt committed and does not append the events a second time."""
        if status is not None:
            status = SagaStatus(status)
        self._guard.call(
            "append", saga_id, self._append, saga_id, epoch, events, status, next_attempt_at,
            self._stamp(),
        )  # fmt: skip

    def claim_sync(
        self,
        owner: str,
        now: float,
        lease_s: float,
        limit: int,
        *,
        definitions: Sequence[str] | None = None,
        saga_id: str | None = None,
    ) -> list[SagaRecord]:
        """Claim due sagas in one transaction (see :meth:`SagaStore.claim`)."""
        result: list[SagaRecord] = self._guard.call(
            "claim", saga_id, self._claim, owner, now, lease_s, limit, definitions, saga_id
        )
        return result

    def take_sync(self, saga_id: str, owner: str, now: float, lease_s: float) -> SagaRecord | None:
        """Operator takeover of ``saga_id`` (any status, any lease)."""
        result: SagaRecord | None = self._guard.call(
            "take", saga_id, self._take, saga_id, owner, now, lease_s
        )
        return result

    def renew_sync(self, saga_id: str, owner: str, epoch: int, lease_until: float) -> bool:
        """Extend the lease while ``owner`` holds ``saga_id`` at ``epoch``."""
        # once: the heartbeat renews again at its next tick (see OutageGuard.call_once)
        result: bool = self._guard.call_once(
            "renew", saga_id, self._renew, saga_id, owner, epoch, lease_until
        )
        return result

    def release_sync(self, saga_id: str, owner: str, epoch: int) -> None:
        """Drop the lease (no-op unless ``owner`` holds it at ``epoch``)."""
        # once: a lease that cannot be given back runs out by itself
        self._guard.call_once("release", saga_id, self._release, saga_id, owner, epoch)

    def query_sync(self, filt: SagaFilter) -> list[SagaSummary]:
        """Matching sagas, most recently updated first."""
        result: list[SagaSummary] = self._guard.call("query", filt.saga_id, self._query, filt)
        return result

    # -- one attempt of each operation, one transaction ------------------------------------------
    @abc.abstractmethod
    def _create(self, retried: bool, rec: NewSaga) -> CreateResult: ...

    @abc.abstractmethod
    def _load(self, retried: bool, saga_id: str) -> SagaRecord | None: ...

    @abc.abstractmethod
    def _append(
        self,
        retried: bool,
        saga_id: str,
        epoch: int,
        events: Sequence[SagaLogEvent],
        status: SagaStatus | None,
        next_attempt_at: float | None,
        now: float,
    ) -> None: ...

    @abc.abstractmethod
    def _claim(
        self,
        retried: bool,
        owner: str,
        now: float,
        lease_s: float,
        limit: int,
        definitions: Sequence[str] | None,
        saga_id: str | None,
    ) -> list[SagaRecord]: ...

    @abc.abstractmethod
    def _take(
        self, retried: bool, saga_id: str, owner: str, now: float, lease_s: float
    ) -> SagaRecord | None: ...

    @abc.abstractmethod
    def _renew(
        self, retried: bool, saga_id: str, owner: str, epoch: int, lease_until: float
    ) -> bool: ...

    @abc.abstractmethod
    def _release(self, retried: bool, saga_id: str, owner: str, epoch: int) -> None: ...

    @abc.abstractmethod
    def _query(self, retried: bool, filt: SagaFilter) -> list[SagaSummary]: ...


class _Bridge:
    """Blocking calls on a store that only has the async protocol (no running loop needed)."""

    def __init__(self, store: SagaStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if not name.endswith("_sync"):
            raise AttributeError(name)
        method = getattr(self._store, name[: -len("_sync")])

        def call(*args: Any, **kwargs: Any) -> Any:
            return anyio.run(lambda: method(*args, **kwargs))

        return call


def as_blocking(store: SagaStore | BlockingSagaStore) -> Any:
    """``store``'s ``*_sync`` methods: the store itself when it has them, else a bridge."""
    return store if isinstance(store, BlockingSagaStore) else _Bridge(store)
