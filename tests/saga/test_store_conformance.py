"""S26: the conformance suite on the in-memory and the SQLite store, plus SQLite specifics."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from store_conformance import NOW, StoreConformance, ev, new

import resilient as rs
from resilient.saga import LogKind, SagaStatus, store_from_url


class TestInMemoryStore(StoreConformance):
    @pytest.fixture
    def store(self) -> rs.InMemorySagaStore:
        return rs.InMemorySagaStore()


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> rs.SQLiteSagaStore:
        return rs.SQLiteSagaStore(tmp_path / "sagas.db")


def test_sqlite_survives_reopening_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = rs.SQLiteSagaStore(path, durability="power")
    store.create_sync(new())
    store.append_sync("s1", 1, [ev(LogKind.STEP_STARTED, "a", 1)])
    store.close()
    again = rs.SQLiteSagaStore(path)
    rec = again.load_sync("s1")
    assert rec is not None and [e.kind for e in rec.events][-1] == LogKind.STEP_STARTED
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_sqlite_store_validates_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        rs.SQLiteSagaStore(tmp_path / "x.db", durability="fsync")
    with pytest.raises(ValueError, match="path"):
        rs.SQLiteSagaStore("")
    with pytest.raises(ValueError, match="busy_timeout"):
        rs.SQLiteSagaStore(tmp_path / "x.db", busy_timeout=-1)


def test_store_urls(tmp_path: Path) -> None:
    assert isinstance(store_from_url("memory://"), rs.InMemorySagaStore)
    store = store_from_url(f"sqlite:///{tmp_path}/u.db?durability=power")
    assert isinstance(store, rs.SQLiteSagaStore) and store.durability.mode == "power"
    assert store.durability.power_loss and store.durability.settings["synchronous"] == "FULL"
    with pytest.raises(ValueError, match="unsupported"):
        store_from_url("redis://x")
    with pytest.raises(ValueError, match="unknown option"):
        store_from_url("sqlite:///x.db?mode=ro")


def test_sqlite_sagas_are_visible_across_store_objects(tmp_path: Path) -> None:
    one = rs.SQLiteSagaStore(tmp_path / "s.db")
    two = rs.SQLiteSagaStore(tmp_path / "s.db")
    one.create_sync(new(lease_until=NOW - 1))
    (rec,) = two.claim_sync("n2", NOW, 30.0, 1)
    assert one.claim_sync("n3", NOW, 30.0, 1) == []
    two.append_sync("s1", rec.epoch, [ev(LogKind.SAGA_COMPLETED)], SagaStatus.COMPLETED)
    assert one.load_sync("s1").status is SagaStatus.COMPLETED  # type: ignore[union-attr]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count open files")
def test_sqlite_does_not_keep_connections_of_finished_threads(tmp_path: Path) -> None:
    # async callers run store calls in worker threads that come and go (idle ones exit):
    # a long-lived service must not accumulate one open connection per thread it ever used
    path = tmp_path / "t.db"
    store = rs.SQLiteSagaStore(path)
    store.create_sync(new())

    def open_on_db() -> int:
        fds = Path("/proc/self/fd").iterdir()
        return sum(1 for fd in fds if fd.resolve(strict=False) == path.resolve())

    for _ in range(10):
        worker = threading.Thread(target=store.load_sync, args=("s1",))
        worker.start()
        worker.join()
    # this thread's connection, the latest worker's, and one descriptor SQLite's unix VFS
    # parks for reuse while other connections hold locks on the file: a bound, not a count
    assert open_on_db() <= 3, "connections of finished threads are closed"
    store.close()
    assert open_on_db() == 0
