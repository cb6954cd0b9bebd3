"""Saga throughput: sagas/s for a 3-step no-op saga, in memory, on SQLite and on PostgreSQL,
beside the raw cost of the same log writes without the engine.

    .venv/bin/python benchmarks/saga.py [--n 500] [--rounds 5] [--pg-only | --no-pg]

The 3-step saga's log has 8 records (created, 3 x started/succeeded, completed). The raw
baselines write them as the store did before schema 2, one transaction each (8 commits):
"raw SQL" with sqlite3, "raw psycopg" with psycopg on one connection per worker; "raw store"
calls the SQLite store's methods with pre-built events, one record per call.

PostgreSQL (``RESILIENT_BENCH_POSTGRES_DSN``, default the test server on 127.0.0.1; skipped
with a message when it does not answer) runs 1, 8 and 32 concurrent sagas: the engine from
threads (``run_sync``) and from asyncio tasks (``await run``), against raw psycopg from as many
threads, all in the same run, each in a schema of its own that is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

import resilient as rs
from resilient.saga import LogKind, NewSaga, SagaLogEvent, SagaStatus
from resilient.telemetry import configure_telemetry

STEPS = ("a", "b", "c")


def build(store: rs.SagaStore, *, is_async: bool) -> rs.Saga:
    saga = rs.Saga("bench", store=store)
    for name in STEPS:
        if is_async:

            async def step(ctx: rs.SagaContext) -> None:
                return None

        else:

            def step(ctx: rs.SagaContext) -> None:  # type: ignore[misc]
                return None

        saga.add_step(name, step)
    return saga


class _Bench:
    """Interleaved rounds: every configuration runs one round in turn, ``rounds`` times, and
    the best round counts (the machine is shared; the best round is the least disturbed)."""

    def __init__(self, per_round: int, rounds: int) -> None:
        self.per_round = per_round
        self.rounds = rounds
        self.cases: dict[str, Callable[[int], float]] = {}
        self.best: dict[str, float] = {}

    def add(self, name: str, one: Callable[[str], None]) -> None:
        counter = iter(range(10**9))
        one(f"{name}-warm")

        def round_(n: int) -> float:
            ids = [f"{name}-{next(counter)}" for _ in range(n)]
            start = time.perf_counter()
            for sid in ids:
                one(sid)
            return n / (time.perf_counter() - start)

        self.cases[name] = round_

    def add_async(self, name: str, saga: rs.Saga) -> None:
        counter = iter(range(10**9))

        async def go(ids: list[str]) -> float:
            start = time.perf_counter()
            for sid in ids:
                await saga.run(None, sid)
            return len(ids) / (time.perf_counter() - start)

        anyio.run(go, [f"{name}-warm"])

        def round_(n: int) -> float:
            ids = [f"{name}-{next(counter)}" for _ in range(n)]
            result: float = anyio.run(go, ids)
            return result

        self.cases[name] = round_

    def add_rate(self, name: str, rate: Callable[[int, str], float]) -> None:
        """A case that runs ``n`` sagas its own way (concurrently) and returns sagas/s."""
        counter = iter(range(10**9))
        rate(8, f"{name}-warm")
        self.cases[name] = lambda n: rate(n, f"{name}-{next(counter)}")

    def run(self) -> dict[str, float]:
        for _ in range(self.rounds):
            for name, round_ in self.cases.items():
                self.best[name] = max(self.best.get(name, 0.0), round_(self.per_round))
        return self.best


def raw_store_one(store: rs.SQLiteSagaStore) -> Callable[[str], None]:
    def one(sid: str) -> None:
        now = time.time()
        created = SagaLogEvent(LogKind.SAGA_CREATED, at=now)
        store.create_sync(
            NewSaga(sid, "bench@1", "h", "{}", "ih", None, "me", now + 30, now, None, (created,))
        )
        for name in STEPS:
            store.append_sync(sid, 1, [SagaLogEvent(LogKind.STEP_STARTED, name, 1, "", now)])
            store.append_sync(
                sid, 1, [SagaLogEvent(LogKind.STEP_SUCCEEDED, name, 1, '{"result":null}', now)]
            )
        store.append_sync(
            sid,
            1,
            [SagaLogEvent(LogKind.SAGA_COMPLETED, None, None, '{"value":null}', now)],
            SagaStatus.COMPLETED,
        )

    return one


def raw_sql_one(path: Path) -> Callable[[str], None]:
    rs.SQLiteSagaStore(path).close()  # same schema
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")

    def append(
        sid: str, seq: int, kind: str, step: str | None, body: str, status: str | None
    ) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("SELECT epoch, last_seq FROM sagas WHERE id = ?", (sid,)).fetchone()
        conn.execute(
            "INSERT INTO saga_events (saga_id, seq, kind, step, attempt, payload, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sid, seq, kind, step, 1, body, time.time()),
        )
        if status is None:
            conn.execute(
                "UPDATE sagas SET last_seq = ?, updated_at = ? WHERE id = ?",
                (seq, time.time(), sid),
            )
        else:
            conn.execute(
                "UPDATE sagas SET last_seq = ?, updated_at = ?, status = ? WHERE id = ?",
                (seq, time.time(), status, sid),
            )
        conn.execute("COMMIT")

    def one(sid: str) -> None:
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT OR IGNORE INTO sagas VALUES (?, 'bench@1', 'h', 'running', 1, 'me', ?, 0, "
            "NULL, 0, '{}', 'ih', NULL, ?, ?, 1)",
            (sid, now + 30, now, now),
        )
        conn.execute(
            "INSERT INTO saga_events VALUES (?, 1, 'SAGA_CREATED', NULL, NULL, '', ?)", (sid, now)
        )
        conn.execute("COMMIT")
        seq = 1
        for name in STEPS:
            seq += 1
            append(sid, seq, "STEP_STARTED", name, "", None)
            seq += 1
            append(sid, seq, "STEP_SUCCEEDED", name, '{"result":null}', None)
        append(sid, seq + 1, "SAGA_COMPLETED", None, '{"value":null}', "completed")

    return one


PG_DSN = os.environ.get("RESILIENT_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
CONCURRENCY = (1, 8, 32)


def pg_problem() -> str | None:
    """Why the PostgreSQL rows cannot run, or None."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        psycopg.connect(PG_DSN, connect_timeout=2).close()
    except psycopg.Error as err:
        return f"PostgreSQL not reachable at {PG_DSN}: {str(err).strip()[:120]}"
    return None


def _threads(workers: int, n: int, one: Callable[[str, int], None], prefix: str) -> float:
    """``n`` sagas spread over ``workers`` threads (``one(saga_id, worker)``); sagas/s."""
    ids = iter([f"{prefix}-{i}" for i in range(n)])
    lock = threading.Lock()

    def work(worker: int) -> None:
        while True:
            with lock:
                sid = next(ids, None)
            if sid is None:
                return
            one(sid, worker)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return n / (time.perf_counter() - start)


def _tasks(workers: int, n: int, saga: rs.Saga, prefix: str) -> float:
    """``n`` sagas spread over ``workers`` asyncio tasks; sagas/s."""

    async def go() -> float:
        ids = iter([f"{prefix}-{i}" for i in range(n)])

        async def work() -> None:
            for sid in ids:
                await saga.run(None, sid)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(work)
        return n / (time.perf_counter() - start)

    result: float = anyio.run(go, backend="asyncio")
    return result


class _RawPostgres:
    """The 8 log transactions of one saga with psycopg directly, as the store wrote them
    before schema 2: one transaction per record, the row update fenced by the epoch."""

    def __init__(self, schema: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.t = f'"{schema}".'
        self._conns: list[Any] = []

    def rate(self, workers: int, n: int, prefix: str) -> float:
        """sagas/s with one connection per worker thread (opened before the clock starts)."""
        self._conns = [self._psycopg.connect(PG_DSN, autocommit=True) for _ in range(workers)]
        try:
            return _threads(workers, n, self.one, prefix)
        finally:
            for conn in self._conns:
                conn.close()

    def one(self, sid: str, worker: int) -> None:
        conn = self._conns[worker]
        t = self.t
        now = time.time()
        with conn.transaction():
            conn.execute(
                f"INSERT INTO {t}sagas (id, definition, steps_hash, status, epoch, owner, "
                "lease_until, next_attempt_at, deadline, recoveries, input, input_hash, "
                "trace_context, created_at, updated_at, last_seq) VALUES (%s, 'bench@1', 'h', "
                "'running', 1, 'me', %s, 0, NULL, 0, 'null', 'ih', NULL, %s, %s, 1) "
                "ON CONFLICT (id) DO NOTHING",
                (sid, now + 30, now, now),
            )
            conn.execute(
                f"INSERT INTO {t}saga_events (saga_id, kind, step, attempt, payload, at, seq) "
                "VALUES (%s, 'SAGA_CREATED', NULL, NULL, '', %s, 1)",
                (sid, now),
            )
        records = [
            record
            for s in STEPS
            for record in (("STEP_STARTED", s, ""), ("STEP_SUCCEEDED", s, '{"result":null}'))
        ]
        for kind, step, body in [*records, ("SAGA_COMPLETED", None, '{"value":null}')]:
            with conn.transaction():
                status = "completed" if kind == "SAGA_COMPLETED" else None
                row = conn.execute(
                    f"UPDATE {t}sagas SET last_seq = last_seq + 1, updated_at = %s, "
                    "status = COALESCE(%s, status) WHERE id = %s AND epoch = 1 RETURNING last_seq",
                    (time.time(), status, sid),
                ).fetchone()
                conn.execute(
                    f"INSERT INTO {t}saga_events (saga_id, kind, step, attempt, payload, at, seq) "
                    "VALUES (%s, %s, %s, 1, %s, %s, %s)",
                    (sid, kind, step, body, time.time(), row[0]),
                )


def postgres_rows(per_round: int, rounds: int) -> dict[str, float]:
    """Engine (threads, asyncio tasks) and raw psycopg at 1, 8 and 32 concurrent sagas."""
    import psycopg

    schemas = [f"rs_bench_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    # one store for both engines: at most max(CONCURRENCY) connections (the server is shared)
    store = rs.PostgresSagaStore(PG_DSN, schema=schemas[0], pool_size=max(CONCURRENCY))
    rs.PostgresSagaStore(PG_DSN, schema=schemas[1]).close()  # the same tables for raw psycopg
    raw = _RawPostgres(schemas[1])
    sync_saga = build(store, is_async=False)
    async_saga = build(store, is_async=True)

    def engine_threads(c: int) -> Callable[[int, str], float]:
        return lambda n, p: _threads(c, n, lambda sid, _: sync_saga.run_sync(None, sid), p)

    def engine_tasks(c: int) -> Callable[[int, str], float]:
        return lambda n, p: _tasks(c, n, async_saga, p)

    def raw_threads(c: int) -> Callable[[int, str], float]:
        return lambda n, p: raw.rate(c, n, p)

    cases: dict[str, Callable[[int, str], float]] = {}
    for c in CONCURRENCY:
        cases[f"PostgreSQL x{c:<2}  engine, run_sync threads"] = engine_threads(c)
        cases[f"PostgreSQL x{c:<2}  engine, await run (asyncio)"] = engine_tasks(c)
        cases[f"PostgreSQL x{c:<2}  raw psycopg, 8 commits"] = raw_threads(c)
    best: dict[str, float] = {}
    try:
        for name, case in cases.items():  # warm up: connections, prepared statements
            case(max(8, per_round // 10), f"warm-{abs(hash(name))}")
        for r in range(rounds):
            for name, case in cases.items():
                rate = case(per_round, f"r{r}-{abs(hash(name))}")
                best[name] = max(best.get(name, 0.0), rate)
    finally:
        store.close()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="sagas per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pg-n", type=int, default=400, help="PostgreSQL sagas per round")
    parser.add_argument("--pg-rounds", type=int, default=3)
    parser.add_argument("--pg-only", action="store_true", help="only the PostgreSQL rows")
    parser.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL rows")
    args = parser.parse_args()
    configure_telemetry(metrics=False, tracing=False)  # measure the engine, not the sinks
    if not args.pg_only:
        local_rows(args.n, args.rounds)
    if not args.no_pg:
        problem = pg_problem()
        if problem is not None:
            print(f"PostgreSQL rows skipped: {problem}")
            return
        results = postgres_rows(args.pg_n, args.pg_rounds)
        print()
        width = max(map(len, results))
        for name, value in results.items():
            print(f"{name:<{width}}  {value:>9.0f} sagas/s")
        for c in CONCURRENCY:
            raw = results[f"PostgreSQL x{c:<2}  raw psycopg, 8 commits"]
            for how in ("run_sync threads", "await run (asyncio)"):
                engine = results[f"PostgreSQL x{c:<2}  engine, {how}"]
                print(f"x{c:<2} engine ({how}) / raw psycopg: {engine / raw:.2f}")


def local_rows(n: int, rounds: int) -> None:
    """Memory and SQLite rows (sequential sagas)."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        bench = _Bench(n, rounds)
        mem_sync = build(rs.InMemorySagaStore(), is_async=False)
        sql_sync = build(rs.SQLiteSagaStore(d / "engine.db"), is_async=False)
        bench.add("engine, memory, run_sync", lambda sid: mem_sync.run_sync(None, sid))
        bench.add_async("engine, memory, await run", build(rs.InMemorySagaStore(), is_async=True))
        bench.add("engine, SQLite, run_sync", lambda sid: sql_sync.run_sync(None, sid))
        bench.add_async(
            "engine, SQLite, await run", build(rs.SQLiteSagaStore(d / "a.db"), is_async=True)
        )
        async_sql = build(rs.SQLiteSagaStore(d / "a8.db"), is_async=True)
        bench.add_rate(
            "engine, SQLite, await run, 8 concurrent", lambda n, p: _tasks(8, n, async_sql, p)
        )
        bench.add("raw store writes, SQLite", raw_store_one(rs.SQLiteSagaStore(d / "raw.db")))
        bench.add("raw SQL writes, SQLite", raw_sql_one(d / "sql.db"))
        results = bench.run()
    width = max(map(len, results))
    for name, value in results.items():
        print(f"{name:<{width}}  {value:>9.0f} sagas/s  {1e6 / value:>8.1f} us/saga")
    engine = results["engine, SQLite, run_sync"]
    for name in ("engine, SQLite, await run", "engine, SQLite, await run, 8 concurrent"):
        print(f"{name} / run_sync: {results[name] / engine:.2f}")
    for base in ("raw store writes, SQLite", "raw SQL writes, SQLite"):
        over = results[base] / engine - 1
        print(f"engine (run_sync, SQLite) over {base}: {over:+.1%}")


if __name__ == "__main__":
    main()
