"""``resilient.saga.barrier``: exactly-once effects through the participant's own database,
even for a participant that does not deduplicate by itself."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import resilient as rs
from resilient.saga import SagaStatus, barrier
from resilient.saga.testing import CrashPoint, SimulatedCrash, crash_at
from resilient.testing import FakeClock


class Bank:
    """A participant writing charges and refunds in its own SQLite database."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("CREATE TABLE IF NOT EXISTS moves (saga TEXT, kind TEXT)")

    def charge(self, ctx: rs.SagaContext) -> str:
        self.conn.execute("BEGIN")
        if barrier(self.conn, ctx):
            self.conn.execute("INSERT INTO moves VALUES (?, 'charge')", (ctx.saga_id,))
        self.conn.execute("COMMIT")
        return "charged"

    def refund(self, ctx: rs.SagaContext, done: object) -> None:
        self.conn.execute("BEGIN")
        if barrier(self.conn, ctx):
            self.conn.execute("INSERT INTO moves VALUES (?, 'refund')", (ctx.saga_id,))
        self.conn.execute("COMMIT")

    def moves(self) -> list[tuple[str, str]]:
        return list(self.conn.execute("SELECT saga, kind FROM moves ORDER BY rowid"))


def build(bank: Bank, store: rs.SagaStore, clock: FakeClock, in_doubt: str = "retry") -> rs.Saga:
    saga = rs.Saga("bank", store=store, clock=clock)
    saga.add_step("charge", bank.charge, compensate=bank.refund, in_doubt=in_doubt)
    saga.add_step("ship", lambda ctx: None)
    return saga


def test_barrier_deduplicates_a_step_rerun_after_a_crash(tmp_path: Path, clock: FakeClock) -> None:
    bank = Bank(tmp_path / "bank.db")
    store = rs.InMemorySagaStore()
    with crash_at(CrashPoint.AFTER_STEP_EFFECT, "charge"), pytest.raises(SimulatedCrash):
        build(bank, store, clock).run_sync({}, saga_id="b1")
    clock.advance(31)
    assert build(bank, store, clock).recover_sync().outcomes == {"b1": SagaStatus.COMPLETED}
    assert bank.moves() == [("b1", "charge")]  # invoked twice, charged once


def test_barrier_null_compensation_and_hanging_step(tmp_path: Path, clock: FakeClock) -> None:
    bank = Bank(tmp_path / "bank.db")
    store = rs.InMemorySagaStore()
    with crash_at(CrashPoint.AFTER_STEP_STARTED, "charge"), pytest.raises(SimulatedCrash):
        build(bank, store, clock, in_doubt="compensate").run_sync({}, saga_id="b2")
    clock.advance(31)
    saga = build(bank, store, clock, in_doubt="compensate")
    assert saga.recover_sync().outcomes == {"b2": SagaStatus.COMPENSATED}
    assert bank.moves() == []  # the charge never ran: the refund was a null compensation
    late = rs.SagaContext("b2", {}, {}, "charge")  # a zombie's charge arriving afterwards
    bank.charge(late)
    assert bank.moves() == []  # hanging call: skipped


def test_barrier_validates_arguments(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    ctx = rs.SagaContext("s", {}, {}, "a")
    with pytest.raises(ValueError, match="paramstyle"):
        barrier(conn, ctx, paramstyle="named")
    with pytest.raises(ValueError, match="table"):
        barrier(conn, ctx, table="x; DROP TABLE y")
