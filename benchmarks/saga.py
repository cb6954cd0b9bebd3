"""Saga throughput: sagas/s for a 3-step no-op saga, in memory and on SQLite, beside the raw
cost of the same SQLite writes without the engine.

    .venv/bin/python benchmarks/saga.py [--n 2000]

A 3-step saga writes 8 log transactions (created, 3 x started/succeeded, completed). "raw SQL"
runs the same statements with sqlite3 directly; "raw store" calls the store's methods with
pre-built events (the store's own cost included). The engine's overhead is reported against
both; the target is < 25% over the raw writes.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="sagas per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configure_telemetry(metrics=False, tracing=False)  # measure the engine, not the sinks
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        bench = _Bench(args.n, args.rounds)
        mem_sync = build(rs.InMemorySagaStore(), is_async=False)
        sql_sync = build(rs.SQLiteSagaStore(d / "engine.db"), is_async=False)
        bench.add("engine, memory, run_sync", lambda sid: mem_sync.run_sync(None, sid))
        bench.add_async("engine, memory, await run", build(rs.InMemorySagaStore(), is_async=True))
        bench.add("engine, SQLite, run_sync", lambda sid: sql_sync.run_sync(None, sid))
        bench.add_async(
            "engine, SQLite, await run", build(rs.SQLiteSagaStore(d / "a.db"), is_async=True)
        )
        bench.add("raw store writes, SQLite", raw_store_one(rs.SQLiteSagaStore(d / "raw.db")))
        bench.add("raw SQL writes, SQLite", raw_sql_one(d / "sql.db"))
        results = bench.run()
    width = max(map(len, results))
    for name, value in results.items():
        print(f"{name:<{width}}  {value:>9.0f} sagas/s  {1e6 / value:>8.1f} us/saga")
    engine = results["engine, SQLite, run_sync"]
    for base in ("raw store writes, SQLite", "raw SQL writes, SQLite"):
        over = results[base] / engine - 1
        print(f"engine (run_sync, SQLite) over {base}: {over:+.1%}")


if __name__ == "__main__":
    main()
