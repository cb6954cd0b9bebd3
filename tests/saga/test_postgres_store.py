"""S26 on PostgreSQL: the store conformance suite against :class:`PostgresSagaStore`, plus what
only a server store has (SKIP LOCKED claims, schema isolation, several store objects as
several service instances) and the optional-driver behaviour.

Needs psycopg and a reachable server (``RESILIENT_TEST_POSTGRES_DSN``, default
``postgresql://postgres@127.0.0.1:5432/test``); skipped with the reason otherwise. Every test
gets its own schema, dropped at the end, so runs never see each other's sagas.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from saga_fixtures import A, B, C, D, Shop, order_saga
from store_conformance import NOW, StoreConformance, ev, new

import resilient as rs
from resilient.saga import LogKind, SagaStatus, store_from_url
from resilient.saga.testing import CrashPoint, Ledger, SimulatedCrash, crash_at

DSN = os.environ.get("RESILIENT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _server_problem() -> str | None:
    """Why the PostgreSQL tests cannot run here, or ``None`` when they can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'resilient-patterns[postgres]')"
    try:
        psycopg.connect(DSN, connect_timeout=2).close()
    except psycopg.Error as err:
        return f"PostgreSQL not reachable at {DSN}: {str(err).strip()[:200]}"
    return None


_PROBLEM = _server_problem()
_NO_DRIVER = _PROBLEM is not None and _PROBLEM.startswith("psycopg is not installed")
needs_pg = pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or "")


def _drop(schema: str) -> None:
    import psycopg

    with psycopg.connect(DSN, autocommit=True, connect_timeout=2) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def schema() -> Iterator[str]:
    """A schema name unique to this test, dropped (with everything in it) afterwards."""
    name = f"rs_test_{uuid.uuid4().hex[:12]}"
    yield name
    _drop(name)


@pytest.fixture
def stores(schema: str) -> Iterator[Callable[..., rs.PostgresSagaStore]]:
    """Make stores on the test's schema (as separate service instances would); all closed
    at the end."""
    made: list[rs.PostgresSagaStore] = []

    def make(**kw: Any) -> rs.PostgresSagaStore:
        store = rs.PostgresSagaStore(DSN, schema=schema, **kw)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@needs_pg
class TestPostgresStore(StoreConformance):
    @pytest.fixture
    def store(self, stores: Callable[..., rs.PostgresSagaStore]) -> rs.PostgresSagaStore:
        return stores()


def _raw() -> Any:
    import psycopg

    return psycopg.connect(DSN, autocommit=True, connect_timeout=2)


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn`` in a thread; the list gets its result or its exception."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as err:
            out.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


@needs_pg
def test_claim_skips_a_saga_locked_by_another_transaction(
    stores: Callable[..., rs.PostgresSagaStore], schema: str
) -> None:
    store = stores()
    store.create_sync(new("busy", lease_until=NOW - 1))
    store.create_sync(new("free", lease_until=NOW - 1))
    with _raw() as other, other.transaction():
        other.execute(f'SELECT 1 FROM "{schema}".sagas WHERE id = %s FOR UPDATE', ("busy",))
        # not blocked by the lock: the locked saga is skipped, the free one is claimed
        thread, out = _in_thread(lambda: store.claim_sync("n2", NOW, 30.0, 10))
        thread.join(timeout=30)  # a guard against hanging, not a timing assertion
        assert not thread.is_alive() and [r.id for r in out[0]] == ["free"]
    assert [r.id for r in store.claim_sync("n3", NOW, 30.0, 10)] == ["busy"]


@needs_pg
def test_append_racing_a_takeover_is_fenced(
    stores: Callable[..., rs.PostgresSagaStore], schema: str
) -> None:
    # Another instance bumps the epoch while our append waits for the row: once that commits
    # the append must see the new epoch (re-checked after the wait) and write nothing.
    store = stores()
    store.create_sync(new())
    with _raw() as other:
        with other.transaction():
            other.execute(f'UPDATE "{schema}".sagas SET epoch = epoch + 1 WHERE id = %s', ("s1",))
            thread, out = _in_thread(
                lambda: store.append_sync("s1", 1, [ev(LogKind.STEP_STARTED, "a", 1)])
            )
            with _raw() as watch:  # wait until the append is blocked on the row lock
                for _ in range(3000):
                    waiting = watch.execute(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid IN "
                        "(SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                        "AND query LIKE %s)",
                        ("resilient-saga", f'%UPDATE "{schema}".sagas%'),
                    ).fetchone()
                    if waiting and waiting[0]:
                        break
                    thread.join(timeout=0.01)
                else:
                    pytest.fail("the append never waited for the row lock")
        thread.join(timeout=30)
    assert isinstance(out[0], rs.StaleEpoch) and (out[0].epoch, out[0].current) == (1, 2)
    rec = store.load_sync("s1")
    assert rec is not None and len(rec.events) == 1


@needs_pg
def test_instances_share_sagas_and_never_claim_the_same_one(
    stores: Callable[..., rs.PostgresSagaStore],
) -> None:
    one, two = stores(), stores()
    for i in range(30):
        one.create_sync(new(f"c{i:02d}", lease_until=NOW - 1))
    claimed: list[list[str]] = [[], [], [], []]
    instances = [one, two, stores(), stores()]

    def worker(n: int) -> None:
        while got := instances[n].claim_sync(f"w{n}", NOW, 30.0, 2):
            claimed[n].extend(r.id for r in got)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = sorted(sid for ids in claimed for sid in ids)
    assert flat == [f"c{i:02d}" for i in range(30)]
    rec = two.load_sync("c07")
    assert rec is not None and rec.epoch == 2 and rec.owner in {"w0", "w1", "w2", "w3"}
    with pytest.raises(rs.StaleEpoch):
        one.append_sync("c07", 1, [ev(LogKind.STEP_STARTED, "a", 1)])


@needs_pg
def test_schema_is_created_once_under_concurrent_start(schema: str) -> None:
    # Instances booting together must not race on CREATE TABLE (catalog unique violations).
    results: list[Any] = []
    threads = []
    for _ in range(4):
        thread, out = _in_thread(lambda: rs.PostgresSagaStore(DSN, schema=schema))
        threads.append(thread)
        results.append(out)
    for thread in threads:
        thread.join(timeout=60)
    made = [out[0] for out in results]
    assert all(isinstance(s, rs.PostgresSagaStore) for s in made), made
    made[0].create_sync(new())
    assert made[3].load_sync("s1") is not None
    with _raw() as conn:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            (f'"{schema}".sagas', f'"{schema}".sagas_unfinished'),
        ).fetchone()
    assert row == (True, True)
    for store in made:
        store.close()


@needs_pg
def test_schemas_isolate_stores(stores: Callable[..., rs.PostgresSagaStore]) -> None:
    other_schema = f"rs_test_{uuid.uuid4().hex[:12]}"
    try:
        other = rs.PostgresSagaStore(DSN, schema=other_schema)
        stores().create_sync(new())
        assert other.load_sync("s1") is None
        assert other.claim_sync("n2", NOW + 3600, 30.0, 10) == []
        other.close()
    finally:
        _drop(other_schema)


@needs_pg
def test_without_schema_the_tables_go_to_the_search_path(schema: str) -> None:
    with _raw() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    store = rs.PostgresSagaStore(f"{DSN}?options=-csearch_path%3D{schema}", pool_size=0)
    store.create_sync(new())
    store.close()
    qualified = rs.PostgresSagaStore(DSN, schema=schema)
    assert qualified.load_sync("s1") is not None  # the same tables
    qualified.close()


@needs_pg
def test_pool_reuses_connections_and_survives_a_dropped_one(
    stores: Callable[..., rs.PostgresSagaStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    from resilient.saga import _postgres

    store = stores(pool_size=1)
    store.create_sync(new())

    def backend_pid() -> int:
        with store._conn() as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return int(row[0])

    pid = backend_pid()
    store.load_sync("s1")
    assert backend_pid() == pid  # the same connection served the next operations
    with _raw() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    monkeypatch.setattr(_postgres, "_PING_AFTER_IDLE", 0.0)  # as if idle for a while
    rec = store.load_sync("s1")  # the dead connection is noticed and replaced
    assert rec is not None and backend_pid() != pid
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.load_sync("s1")


@needs_pg
def test_pool_size_bounds_the_connections_and_statements_are_prepared(
    stores: Callable[..., rs.PostgresSagaStore], schema: str
) -> None:
    store = stores(pool_size=3)
    for i in range(3):
        store.create_sync(new(f"p{i}"))
    threads = [
        _in_thread(lambda i=i: store.append_sync(f"p{i % 3}", 1, [ev(LogKind.STEP_STARTED)]))
        for i in range(12)
    ]
    for thread, _ in threads:
        thread.join(timeout=60)
    assert [out for _, out in threads] == [[None]] * 12
    stats = store._pool.get_stats()
    assert stats["pool_max"] == 3 and stats["connections_num"] <= 3
    # which pooled connection ran which statement is up to the threads: check a store with
    # one connection, whose every statement ran on the connection inspected
    single = stores(pool_size=1)
    single.create_sync(new("p-single"))
    single.append_sync("p-single", 1, [ev(LogKind.STEP_STARTED)])
    with single._conn() as conn:
        prepared = conn.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            (f'%"{schema}".sagas%',),
        ).fetchone()
    assert prepared is not None and prepared[0] >= 1  # prepared on its first use


@needs_pg
def test_pool_size_zero_opens_a_connection_per_operation(
    stores: Callable[..., rs.PostgresSagaStore],
) -> None:
    store = stores(pool_size=0)
    store.create_sync(new())
    store.append_sync("s1", 1, [ev(LogKind.SAGA_COMPLETED)], SagaStatus.COMPLETED)
    rec = store.load_sync("s1")
    assert rec is not None and rec.status is SagaStatus.COMPLETED
    assert store._pool is None


@needs_pg
def test_store_urls(schema: str) -> None:
    store = store_from_url(f"{DSN}?schema={schema}&connect_timeout=3")
    assert isinstance(store, rs.PostgresSagaStore) and store.schema == schema
    store.create_sync(new())
    store.close()
    alias = store_from_url(DSN.replace("postgresql://", "postgres://", 1) + f"?schema={schema}")
    assert isinstance(alias, rs.PostgresSagaStore) and alias.load_sync("s1") is not None
    assert schema in repr(alias) and "127.0.0.1" in repr(alias)
    alias.close()


@needs_pg
def test_store_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="dsn"):
        rs.PostgresSagaStore("")
    with pytest.raises(ValueError, match="dsn"):
        rs.PostgresSagaStore("nonsense_option=1")
    with pytest.raises(ValueError, match="schema"):
        rs.PostgresSagaStore(DSN, schema="")
    with pytest.raises(ValueError, match="schema"):
        rs.PostgresSagaStore(DSN, schema="x" * 64)
    with pytest.raises(ValueError, match="pool_size"):
        rs.PostgresSagaStore(DSN, pool_size=-1)
    with pytest.raises(TypeError, match="pool_size"):
        rs.PostgresSagaStore(DSN, pool_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="connect_timeout"):
        rs.PostgresSagaStore(DSN, connect_timeout=0)


@pytest.mark.skipif(_NO_DRIVER, reason="psycopg is not installed")
def test_url_of_refusing_server_is_store_unavailable_without_the_password() -> None:
    # the CLI reports it like a bad --store (exit 2); see test_store_outages.py for a server
    # that never answers at all
    with pytest.raises(rs.SagaStoreUnavailable, match="was unavailable") as info:
        store_from_url("postgresql://bob:hunter2@127.0.0.1:1/db?connect_timeout=2&outage_timeout=2")
    assert "hunter2" not in str(info.value) and "Connection refused" in str(info.value)
    assert info.value.saga_id is None and info.value.operation == "connect"
    with pytest.raises(rs.ConfigError, match="outage_timeout"):
        store_from_url("postgresql://bob:hunter2@127.0.0.1:1/db?outage_timeout=soon")


def test_resilient_imports_without_psycopg() -> None:
    # psycopg is optional: importing resilient must work without it, and building the store
    # must say how to install it.
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import resilient as rs\n"
        "from resilient.saga import store_from_url\n"
        "for make, error in ((lambda: rs.PostgresSagaStore('postgresql://h/db'), ImportError),\n"
        "                    (lambda: store_from_url('postgres://h/db'), rs.ConfigError)):\n"
        "    try:\n"
        "        make()\n"
        "    except error as err:\n"
        "        assert 'resilient-patterns[postgres]' in str(err), err\n"
        "    else:\n"
        "        raise SystemExit(f'no {error}')\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "ok"), proc.stderr


# -- sagas end to end on PostgreSQL ---------------------------------------------------------------
@needs_pg
@pytest.mark.anyio
async def test_saga_crashed_on_one_instance_is_recovered_by_another(
    stores: Callable[..., rs.PostgresSagaStore], tmp_path: Path
) -> None:
    from resilient.testing import FakeClock

    clock = FakeClock(1_000_000.0)
    ledger = Ledger(tmp_path / "ledger.db")
    shop = Shop(ledger)
    first = order_saga(shop, store=stores(), clock=clock)
    with crash_at(CrashPoint.AFTER_STEP_EFFECT, B), pytest.raises(SimulatedCrash):
        await first.run({"order": 1}, saga_id="pg1")
    clock.advance(31.0)  # the crashed instance's lease expires
    second = order_saga(shop, store=stores(), clock=clock)
    report = await second.recover()
    assert report.outcomes == {"pg1": SagaStatus.COMPLETED}
    assert ledger.deliveries(f"pg1:{B}") == 2  # in doubt: re-invoked with the same key...
    assert [op for _, op in ledger.effects()] == [A, B, C]  # ...but one effect each
    again = await second.run({"order": 1}, saga_id="pg1")  # idempotent on saga_id
    assert again.status is SagaStatus.COMPLETED and len(shop.invoked("do", A)) == 1


@needs_pg
def test_s17_two_recovery_workers_share_orphans(
    stores: Callable[..., rs.PostgresSagaStore], tmp_path: Path
) -> None:
    # S17 on PostgreSQL: two instances (own store, own saga object, own node id) recover the
    # same 30 orphans concurrently; each saga is claimed by exactly one of them.
    import time

    ledger = Ledger(tmp_path / "ledger.db")
    saga = order_saga(Shop(ledger), is_async=False, store=stores(), long=True)
    ids = [f"o{i:02d}" for i in range(30)]
    for sid in ids:
        with crash_at(CrashPoint.AFTER_STEP_RECORDED, A), pytest.raises(SimulatedCrash):
            saga.run_sync({"order": sid}, saga_id=sid)
    workers = [
        order_saga(
            Shop(ledger),
            is_async=False,
            long=True,
            store=stores(),
            clock=lambda: time.time() + 3600,  # every lease has expired
        )
        for _ in range(2)
    ]
    runs = [_in_thread(w.recover_sync) for w in workers]
    for thread, _ in runs:
        thread.join(timeout=120)
    reports = [out[0] for _, out in runs]
    assert all(isinstance(r, rs.saga.RecoveryReport) for r in reports), reports
    done = [set(r.outcomes) for r in reports]
    assert done[0] | done[1] == set(ids) and not done[0] & done[1]
    assert {v for r in reports for v in r.outcomes.values()} == {SagaStatus.COMPLETED}
    for sid in ids:
        for step in (A, B, D, C):
            assert ledger.deliveries(f"{sid}:{step}") == 1  # no recorded step invoked twice
