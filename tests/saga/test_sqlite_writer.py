"""The SQLite store's writer thread: async writes of many tasks committed several per
transaction (group commit), each write's failure its own, a failed group transaction redone
write by write through the store's blocking path."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from store_conformance import NOW, ev, new

import resilient as rs
from resilient.saga import LogKind

pytestmark = pytest.mark.anyio


async def _hold_writer(store: rs.SQLiteSagaStore, release: threading.Event) -> Any:
    """Submit a write that keeps the writer thread busy until ``release`` is set."""

    def blocked(conn: sqlite3.Connection) -> str:
        release.wait(60)
        return "held"

    return await store._writer.submit(blocked, lambda: "alone")


async def test_waiting_writes_share_one_transaction_and_fail_alone(tmp_path: Path) -> None:
    store = rs.SQLiteSagaStore(tmp_path / "w.db")
    for i in range(12):
        store.create_sync(new(f"s{i}"))
    batches: list[int] = []
    commit = store._writer._commit
    store._writer._commit = lambda batch: (batches.append(len(batch)), commit(batch))[1]  # type: ignore[method-assign]
    release = threading.Event()
    results: dict[str, Any] = {}

    async def append(i: int) -> None:
        epoch = 2 if i == 5 else 1  # s5: a fenced-out writer
        try:
            await store.append(f"s{i}", epoch, [ev(LogKind.STEP_STARTED, "a", 1)])
            results[f"s{i}"] = "ok"
        except rs.StaleEpoch as exc:
            results[f"s{i}"] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(_hold_writer, store, release)
        while not batches:  # the writer thread took the blocking write
            await anyio.lowlevel.checkpoint()
        for i in range(12):
            tg.start_soon(append, i)
        while len(store._writer._queue) < 12:
            await anyio.lowlevel.checkpoint()
        release.set()
    assert batches == [1, 12]  # the twelve appends went in one transaction
    assert isinstance(results.pop("s5"), rs.StaleEpoch)
    assert set(results.values()) == {"ok"}
    for i in range(12):
        rec = store.load_sync(f"s{i}")
        assert rec is not None and len(rec.events) == (1 if i == 5 else 2)
    store.close()


async def test_a_failed_group_transaction_is_redone_write_by_write(tmp_path: Path) -> None:
    store = rs.SQLiteSagaStore(tmp_path / "w.db")
    for i in range(3):
        store.create_sync(new(f"s{i}", lease_until=NOW - 1))
    real = store._writer._transaction
    failures = [sqlite3.OperationalError("disk I/O error")]

    def flaky() -> Any:
        if failures:
            raise failures.pop()
        return real()

    store._writer._transaction = flaky
    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(store.append, f"s{i}", 1, [ev(LogKind.STEP_STARTED, "a", 1)])
    created = await store.create(new("fresh"))
    assert created.created
    for i in range(3):
        rec = store.load_sync(f"s{i}")
        assert rec is not None and [e.kind for e in rec.events][-1] == LogKind.STEP_STARTED
        assert len(rec.events) == 2  # once, not twice
    store.close()


async def test_sagas_run_concurrently_through_the_writer(tmp_path: Path) -> None:
    store = rs.SQLiteSagaStore(tmp_path / "w.db")
    saga = rs.Saga("w", store=store)

    async def step(ctx: rs.SagaContext) -> int:
        await anyio.lowlevel.checkpoint()
        return 1

    saga.add_step("a", step).add_step("b", step)
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(saga.run, None, f"r{i}")
    assert {r.status.value for r in saga.admin.list(limit=50)} == {"completed"}
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.append("r1", 1, [ev(LogKind.ADMIN)])
