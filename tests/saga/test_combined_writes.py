"""Fewer commits per saga, same write-ahead rule: a step's outcome is committed with the next
record (the next step's STARTED, or SAGA_COMPLETED) and the first STARTED with SAGA_CREATED.

These tests crash at the new combined boundaries, in-process (``crash_at``) and in real
processes (``RESILIENT_SAGA_CRASH_AT``), and check what recovery does from what is durable:

* before the combined commit (the step returned, its outcome is held): the step is in doubt
  and is invoked again with the same key, once;
* after it (the next step's STARTED is durable): the finished step is never invoked again
  and the next one is invoked once;
* and that no STARTED is ever missing before its step runs (the spy store records every
  transaction, and every invocation is checked against the durable log at that instant).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from saga_fixtures import A, B, C, D, Shop, order_saga

import resilient as rs
from resilient.saga import LogKind, SagaLogEvent, SagaStatus
from resilient.saga.testing import CrashPoint, Ledger, SimulatedCrash, crash_at
from resilient.testing import FakeClock

HERE = Path(__file__).parent
LEASE = 30.0


class SpyStore(rs.InMemorySagaStore):
    """An in-memory store that records every transaction as the list of its event kinds."""

    def __init__(self) -> None:
        super().__init__()
        self.transactions: list[list[str]] = []

    def create_sync(self, rec: Any) -> Any:
        result = super().create_sync(rec)
        if result.created:
            self.transactions.append([_name(e) for e in rec.events])
        return result

    def append_sync(
        self,
        saga_id: str,
        epoch: int,
        events: Sequence[SagaLogEvent],
        status: SagaStatus | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        super().append_sync(saga_id, epoch, events, status, next_attempt_at)
        self.transactions.append([_name(e) for e in events])

    def durable(self, saga_id: str) -> list[str]:
        rec = self.load_sync(saga_id)
        return [] if rec is None else [_name(e) for e in rec.events]


def _name(e: SagaLogEvent) -> str:
    return f"{e.kind}:{e.step}" if e.step else e.kind


def _checked_saga(shop: Shop, store: SpyStore, clock: FakeClock, **kw: Any) -> rs.Saga:
    """The long order saga (A, B, D pivot, C), every step asserting the write-ahead rule:
    when it runs, its STARTED for this very attempt is durable."""
    saga = order_saga(shop, long=True, is_async=False, store=store, clock=clock, **kw)
    for sdef in saga._steps.defs:
        inner = sdef.fn

        def run(ctx: rs.SagaContext, inner: Any = inner) -> Any:
            rec = store.load_sync(ctx.saga_id)
            assert rec is not None
            last_started = [
                e.attempt
                for e in rec.events
                if e.kind == LogKind.STEP_STARTED and e.step == ctx.step
            ]
            assert last_started and last_started[-1] == ctx.attempt, "STARTED not durable"
            return inner(ctx)

        sdef.fn = run
    return saga


def test_a_four_step_saga_commits_five_times_with_the_same_log(clock: FakeClock) -> None:
    store = SpyStore()
    shop = Shop()
    saga = _checked_saga(shop, store, clock)
    assert saga.run_sync({"order": 1}, saga_id="o1").status is SagaStatus.COMPLETED
    assert store.transactions == [
        ["SAGA_CREATED", f"STEP_STARTED:{A}"],
        [f"STEP_SUCCEEDED:{A}", f"STEP_STARTED:{B}"],
        [f"STEP_SUCCEEDED:{B}", f"STEP_STARTED:{D}"],
        [f"STEP_SUCCEEDED:{D}", f"STEP_STARTED:{C}"],
        [f"STEP_SUCCEEDED:{C}", "SAGA_COMPLETED"],
    ]  # 5 commits instead of 10, and the log itself is record for record what it was
    assert store.durable("o1") == [e for t in store.transactions for e in t]


@pytest.mark.anyio
async def test_the_async_driver_combines_the_same_way(clock: FakeClock) -> None:
    store = SpyStore()
    saga = order_saga(Shop(), store=store, clock=clock)  # async steps: A, B (pivot), C
    await saga.run({"order": 1}, saga_id="a1")
    assert len(store.transactions) == 4
    assert store.transactions[1] == [f"STEP_SUCCEEDED:{A}", f"STEP_STARTED:{B}"]


def test_a_first_step_with_a_policy_is_started_in_its_own_transaction(clock: FakeClock) -> None:
    # a policy may refuse or queue the call before the attempt: a STARTED written with the
    # creation would then claim an attempt that never began
    store = SpyStore()
    retry = rs.Retry(attempts=2, wait=0.0, sleep=clock.sleep, clock=clock)
    saga = order_saga(Shop(), is_async=False, store=store, clock=clock, policies={A: retry})
    saga.run_sync({}, saga_id="p1")
    assert store.transactions[:2] == [["SAGA_CREATED"], [f"STEP_STARTED:{A}"]]


def test_a_step_that_escalates_when_in_doubt_has_its_outcome_committed_at_once(
    clock: FakeClock,
) -> None:
    # holding its outcome would widen the window in which a crash makes it STUCK
    store = SpyStore()
    saga = rs.Saga("esc", store=store, clock=clock)
    saga.add_step("legacy", lambda ctx: "x", in_doubt="escalate")
    saga.add_step("next", lambda ctx: "y")
    with crash_at(CrashPoint.BEFORE_STEP_STARTED, "next"), pytest.raises(SimulatedCrash):
        saga.run_sync({}, saga_id="e1")
    assert store.durable("e1")[-1] == "STEP_SUCCEEDED:legacy"
    clock.advance(LEASE + 1)
    again = rs.Saga("esc", store=store, clock=clock)
    again.add_step("legacy", lambda ctx: pytest.fail("re-invoked"), in_doubt="escalate")
    again.add_step("next", lambda ctx: "y")
    assert again.recover_sync().outcomes == {"e1": SagaStatus.COMPLETED}


# -- in-process crashes at the combined boundaries --------------------------------------------
def _recover(shop: Shop, store: SpyStore, clock: FakeClock, **kw: Any) -> rs.RecoveryReport:
    clock.advance(LEASE + 1)
    return _checked_saga(shop, store, clock, **kw).recover_sync()


def test_crash_before_the_creation_commit_leaves_nothing(clock: FakeClock) -> None:
    store = SpyStore()
    shop = Shop()
    with crash_at(CrashPoint.BEFORE_STEP_STARTED, A), pytest.raises(SimulatedCrash):
        _checked_saga(shop, store, clock).run_sync({}, saga_id="n1")
    assert store.load_sync("n1") is None and not shop.calls
    # the caller's retry of run(saga_id) starts it afresh
    again = _checked_saga(shop, store, clock).run_sync({}, saga_id="n1")
    assert again.status is SagaStatus.COMPLETED


def test_crash_after_the_creation_commit_invokes_the_first_step_once(clock: FakeClock) -> None:
    store = SpyStore()
    shop = Shop()
    with crash_at(CrashPoint.AFTER_STEP_STARTED, A), pytest.raises(SimulatedCrash):
        _checked_saga(shop, store, clock).run_sync({}, saga_id="n2")
    assert store.durable("n2") == ["SAGA_CREATED", f"STEP_STARTED:{A}"]
    assert not shop.calls
    assert _recover(shop, store, clock).outcomes == {"n2": SagaStatus.COMPLETED}
    assert shop.order() == [f"do:{A}", f"do:{B}", f"do:{D}", f"do:{C}"]
    assert shop.invoked("do", A)[0][2:4] == ("n2:" + A, 2)  # its key, the next attempt


@pytest.mark.parametrize(
    "point", [CrashPoint.AFTER_STEP_EFFECT, "held"], ids=["after-effect", "before-next-started"]
)
def test_crash_before_the_combined_commit_reinvokes_the_step_with_its_key(
    clock: FakeClock, tmp_path: Path, point: Any
) -> None:
    # A returned; its outcome is held for B's STARTED and dies with the process
    store = SpyStore()
    ledger = Ledger(tmp_path / "ledger.db")
    shop = Shop(ledger)
    crash = crash_at(point, A) if point != "held" else crash_at(CrashPoint.BEFORE_STEP_STARTED, B)
    with crash, pytest.raises(SimulatedCrash):
        _checked_saga(shop, store, clock).run_sync({}, saga_id="h1")
    assert store.durable("h1") == ["SAGA_CREATED", f"STEP_STARTED:{A}"]  # A in doubt
    shop.calls.clear()
    assert _recover(shop, store, clock).outcomes == {"h1": SagaStatus.COMPLETED}
    assert shop.order() == [f"do:{A}", f"do:{B}", f"do:{D}", f"do:{C}"]
    assert ledger.count(A) == 1 and ledger.deliveries("h1:" + A) == 2  # deduplicated


def test_crash_after_the_combined_commit_never_reinvokes_the_finished_step(
    clock: FakeClock,
) -> None:
    store = SpyStore()
    shop = Shop()
    with crash_at(CrashPoint.AFTER_STEP_STARTED, B), pytest.raises(SimulatedCrash):
        _checked_saga(shop, store, clock).run_sync({}, saga_id="c1")
    assert store.transactions[-1] == [f"STEP_SUCCEEDED:{A}", f"STEP_STARTED:{B}"]
    shop.calls.clear()
    assert _recover(shop, store, clock).outcomes == {"c1": SagaStatus.COMPLETED}
    assert shop.order() == [f"do:{B}", f"do:{D}", f"do:{C}"]


def test_crash_after_the_combined_commit_under_compensate_rolls_back_both(
    clock: FakeClock,
) -> None:
    # B's STARTED is durable: it may have run, so rolling back undoes it (done=None) and A
    store = SpyStore()
    shop = Shop()
    with crash_at(CrashPoint.AFTER_STEP_STARTED, B), pytest.raises(SimulatedCrash):
        _checked_saga(shop, store, clock).run_sync({}, saga_id="c2")
    shop.calls.clear()
    report = _recover(shop, store, clock, on_recovery="compensate")
    assert report.outcomes == {"c2": SagaStatus.COMPENSATED}
    assert [(c[0], c[1], c[4]) for c in shop.calls] == [
        ("undo", B, None),
        ("undo", A, {"step": A, "saga": "c2"}),
    ]


def test_armed_after_step_recorded_is_the_outcome_alone(clock: FakeClock) -> None:
    # the moment the point names (outcome durable, nothing after it) still exists when armed,
    # so recovery from logs written that way (every log of schema 1) stays tested
    store = SpyStore()
    with crash_at(CrashPoint.AFTER_STEP_RECORDED, B), pytest.raises(SimulatedCrash):
        _checked_saga(Shop(), store, clock).run_sync({}, saga_id="r1")
    assert store.transactions[-1] == [f"STEP_SUCCEEDED:{B}"]
    assert store.durable("r1")[-1] == f"STEP_SUCCEEDED:{B}"


def test_crash_before_the_last_commit_reinvokes_the_last_step(clock: FakeClock) -> None:
    store = SpyStore()
    shop = Shop()
    with crash_at(CrashPoint.AFTER_STEP_EFFECT, C), pytest.raises(SimulatedCrash):
        _checked_saga(shop, store, clock).run_sync({}, saga_id="l1")
    assert store.durable("l1")[-1] == f"STEP_STARTED:{C}"
    shop.calls.clear()
    assert _recover(shop, store, clock).outcomes == {"l1": SagaStatus.COMPLETED}
    assert shop.order() == [f"do:{C}"]


@pytest.mark.anyio
async def test_a_held_outcome_is_committed_before_a_shutdown_releases_the_lease(
    clock: FakeClock,
) -> None:
    # A's outcome is held for B's STARTED while B waits in its bulkhead's queue; a deploy
    # (shutdown) then stops the run: the outcome is committed before the lease is released
    store = SpyStore()
    shop = Shop()
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=1)
    saga = order_saga(shop, store=store, clock=clock, policies={B: bulkhead})
    outcome: list[BaseException] = []

    async def run() -> None:
        try:
            await saga.run({}, saga_id="s1")
        except rs.saga.SagaInterrupted as exc:
            outcome.append(exc)

    async with bulkhead, anyio.create_task_group() as tg:
        tg.start_soon(run)
        while bulkhead.queued == 0:
            await anyio.lowlevel.checkpoint()
        assert store.durable("s1") == ["SAGA_CREATED", f"STEP_STARTED:{A}"]  # A's held
        saga.shutdown()
    assert len(outcome) == 1
    assert store.durable("s1")[-1] == f"STEP_SUCCEEDED:{A}"  # not lost: A is not in doubt
    rec = store.load_sync("s1")
    assert rec is not None and rec.owner is None and not shop.invoked("do", B)


# -- real processes: os._exit(137) at the combined boundaries (SQLite) --------------------------
def _kill_child(tmp_path: Path, spec: str, saga_id: str) -> None:
    env = {**os.environ, "RESILIENT_SAGA_CRASH_AT": spec}
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "saga_child.py"),
            "run",
            str(tmp_path / "sagas.db"),
            str(tmp_path / "ledger.db"),
            saga_id,
            "long",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 137, proc.stderr


def _recover_file(tmp_path: Path, ledger: Ledger) -> tuple[Shop, rs.RecoveryReport]:
    shop = Shop(ledger)
    saga = order_saga(
        shop,
        long=True,
        is_async=False,
        store=rs.SQLiteSagaStore(tmp_path / "sagas.db"),
        clock=lambda: time.time() + 3600,
    )
    return shop, saga.recover_sync()


def test_process_killed_after_the_combined_commit(tmp_path: Path) -> None:
    _kill_child(tmp_path, f"AFTER_STEP_STARTED:{D}", "k1")
    ledger = Ledger(tmp_path / "ledger.db")
    assert [op for _, op in ledger.effects()] == [A, B]
    shop, report = _recover_file(tmp_path, ledger)
    assert report.outcomes == {"k1": SagaStatus.COMPLETED}
    assert shop.order() == [f"do:{D}", f"do:{C}"]  # B is recorded: never invoked again
    assert [op for _, op in ledger.effects()] == [A, B, D, C]


def test_process_killed_while_an_outcome_is_held(tmp_path: Path) -> None:
    _kill_child(tmp_path, f"BEFORE_STEP_STARTED:{D}", "k2")
    ledger = Ledger(tmp_path / "ledger.db")
    assert [op for _, op in ledger.effects()] == [A, B]
    shop, report = _recover_file(tmp_path, ledger)
    assert report.outcomes == {"k2": SagaStatus.COMPLETED}
    assert shop.order() == [f"do:{B}", f"do:{D}", f"do:{C}"]  # B in doubt: again, same key
    assert ledger.deliveries("k2:" + B) == 2 and ledger.count(B) == 1
    assert [op for _, op in ledger.effects()] == [A, B, D, C]


def test_process_killed_before_the_creation_commit(tmp_path: Path) -> None:
    _kill_child(tmp_path, f"BEFORE_STEP_STARTED:{A}", "k3")
    ledger = Ledger(tmp_path / "ledger.db")
    _, report = _recover_file(tmp_path, ledger)
    assert report.outcomes == {} and ledger.effects() == []
    assert rs.SQLiteSagaStore(tmp_path / "sagas.db").load_sync("k3") is None
