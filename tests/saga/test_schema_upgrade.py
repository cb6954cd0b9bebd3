"""Schema version 2: a store opened on a database of the first layout upgrades it in place and
goes on with the sagas in it (SQLite and PostgreSQL). The old layout is built from its DDL,
kept as a fixture (``schema_v1.py``), and the logs in it are written the way the old code
wrote them: one transaction per record."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from saga_fixtures import A, B, C, D, Shop, order_saga
from schema_v1 import SQLITE_DDL, pg_ddl, write_v1_saga
from test_postgres_store import DSN, _drop, _raw, needs_pg

import resilient as rs
from resilient.saga import LogKind, SagaStatus

ORPHAN = [
    ("STEP_STARTED", A, 1, ""),
    ("STEP_SUCCEEDED", A, 1, '{"result":{"step":"' + A + '"}}'),
    ("STEP_STARTED", B, 1, ""),
    ("STEP_SUCCEEDED", B, 1, '{"result":{"step":"' + B + '"}}'),
]
DONE = [
    *ORPHAN,
    ("STEP_STARTED", D, 1, ""),
    ("STEP_SUCCEEDED", D, 1, "{}"),
    ("STEP_STARTED", C, 1, ""),
    ("STEP_SUCCEEDED", C, 1, "{}"),
    ("SAGA_COMPLETED", None, None, '{"value":null}'),
]


def _saga(shop: Shop, store: rs.SagaStore) -> rs.Saga:
    return order_saga(
        shop, long=True, is_async=False, store=store, clock=lambda: time.time() + 3600
    )


def _hash() -> str:
    return _saga(Shop(), rs.InMemorySagaStore())._definition().hash


def _check_upgraded(store: Any, shop: Shop) -> None:
    """The old sagas read as they were written, and the orphan is finished from its log."""
    done = store.load_sync("done")
    assert done is not None and done.status is SagaStatus.COMPLETED
    assert [e.kind for e in done.events] == ["SAGA_CREATED"] + [r[0] for r in DONE]
    report = _saga(shop, store).recover_sync()
    assert report.outcomes == {"orphan": SagaStatus.COMPLETED}
    assert shop.order() == [f"do:{D}", f"do:{C}"]  # A and B are recorded: not re-invoked
    orphan = store.load_sync("orphan")
    assert orphan is not None and orphan.events[-1].kind == LogKind.SAGA_COMPLETED
    # a new saga in the upgraded tables, with the combined writes
    assert _saga(Shop(), store).run_sync({"order": 2}, saga_id="new").status.value == "completed"


# -- SQLite ---------------------------------------------------------------------------------------
def _v1_file(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(SQLITE_DDL)
    h = _hash()
    write_v1_saga(conn, "?", "", "orphan", ORPHAN, steps_hash=h)
    write_v1_saga(conn, "?", "", "done", DONE, status="completed", steps_hash=h)
    conn.close()


def _sqlite_layout(path: Path) -> tuple[set[str], list[int]]:
    conn = sqlite3.connect(path)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    versions = [r[0] for r in conn.execute("SELECT version FROM saga_schema")]
    conn.close()
    return indexes, versions


def test_sqlite_store_upgrades_a_layout_1_file(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _v1_file(path)
    store = rs.SQLiteSagaStore(path)
    indexes, versions = _sqlite_layout(path)
    assert "sagas_unfinished" in indexes and "sagas_due" not in indexes
    assert versions == [2]
    _check_upgraded(store, Shop())
    store.close()
    again = rs.SQLiteSagaStore(path)  # opening an upgraded file changes nothing
    assert _sqlite_layout(path)[1] == [2]
    again.close()


def test_sqlite_processes_opening_an_old_file_together_upgrade_it_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _v1_file(path)
    out: list[Any] = []

    def open_store() -> None:
        try:
            out.append(rs.SQLiteSagaStore(path))
        except Exception as err:
            out.append(err)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(isinstance(s, rs.SQLiteSagaStore) for s in out), out
    assert _sqlite_layout(path)[1] == [2]


def test_sqlite_store_refuses_a_newer_layout(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    rs.SQLiteSagaStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE saga_schema SET version = 3")
    conn.close()
    with pytest.raises(RuntimeError, match=r"layout version 3.*understands \(2\)"):
        rs.SQLiteSagaStore(path)


# -- PostgreSQL -----------------------------------------------------------------------------------
@pytest.fixture
def pg_schema() -> Iterator[str]:
    import uuid

    name = f"rs_test_{uuid.uuid4().hex[:12]}"
    yield name
    _drop(name)


def _v1_schema(schema: str) -> None:
    t = f'"{schema}".'
    h = _hash()
    with _raw() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        for ddl in pg_ddl(t):
            conn.execute(ddl)
        write_v1_saga(conn, "%s", t, "orphan", ORPHAN, steps_hash=h)
        write_v1_saga(conn, "%s", t, "done", DONE, status="completed", steps_hash=h)


def _pg_layout(schema: str) -> tuple[set[str], list[int]]:
    with _raw() as conn:
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)
            )
        }
        versions = [r[0] for r in conn.execute(f'SELECT version FROM "{schema}".saga_schema')]
    return indexes, versions


@needs_pg
def test_postgres_store_upgrades_a_layout_1_schema(pg_schema: str) -> None:
    _v1_schema(pg_schema)
    store = rs.PostgresSagaStore(DSN, schema=pg_schema)
    try:
        indexes, versions = _pg_layout(pg_schema)
        assert "sagas_unfinished" in indexes and "sagas_due" not in indexes
        assert versions == [2]
        _check_upgraded(store, Shop())
    finally:
        store.close()


@needs_pg
def test_postgres_instances_starting_on_an_old_schema_upgrade_it_once(pg_schema: str) -> None:
    _v1_schema(pg_schema)
    made: list[Any] = []
    make: Callable[[], None] = lambda: made.append(  # noqa: E731
        rs.PostgresSagaStore(DSN, schema=pg_schema, pool_size=1)
    )
    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(made) == 4 and _pg_layout(pg_schema)[1] == [2]
    for store in made:
        store.close()


@needs_pg
def test_postgres_store_refuses_a_newer_layout(pg_schema: str) -> None:
    rs.PostgresSagaStore(DSN, schema=pg_schema).close()
    with _raw() as conn:
        conn.execute(f'UPDATE "{pg_schema}".saga_schema SET version = 3')
    with pytest.raises(RuntimeError, match="layout version 3"):
        rs.PostgresSagaStore(DSN, schema=pg_schema)
