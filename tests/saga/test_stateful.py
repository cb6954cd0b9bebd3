"""S28: a Hypothesis state machine over sagas with random step outcomes, random crash points
and random restarts (in-process: in-memory store, SimulatedCrash, FakeClock).

Invariants (SAGA.md 4.9 S28), checked after every rule, plus the write-ahead rule:
1. after a final recovery, every saga is COMPLETED, COMPENSATED or STUCK;
2. compensations run in the reverse of step-start order;
3. nothing before a successful pivot is ever compensated;
4. every forward effect in a COMPENSATED saga has exactly one matching undo in the ledger;
5. no (saga, step, phase) has more than one effect row;
6. a retriable step is never compensated;
7. (write-ahead) a step is invoked only after a durable STARTED record, and never after its
   outcome was recorded SUCCEEDED.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from saga_fixtures import A, B, C, D

import resilient as rs
from resilient.saga import LogKind, SagaContext, SagaStatus
from resilient.saga.testing import CrashPoint, SimulatedCrash, crash_at
from resilient.testing import FakeClock

FORWARD = (A, B, D)
UNDOABLE = (A, B, D)
LEASE = 10.0
FINAL = {SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.STUCK}

forward_actions = st.lists(st.sampled_from(["ok", "fail", "reject", "crash"]), max_size=3)
plans = st.fixed_dictionaries(
    {
        **{s: forward_actions for s in FORWARD},
        C: st.lists(st.sampled_from(["fail", "crash"]), max_size=3),
        **{f"undo:{s}": st.lists(st.sampled_from(["fail", "crash"]), max_size=3) for s in UNDOABLE},
    }
)
crashes = st.none() | st.tuples(st.sampled_from(list(CrashPoint)), st.sampled_from([A, B, D, C]))


class SagaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(1_000_000.0)
        self.store = rs.InMemorySagaStore()
        self.plans: dict[str, dict[str, list[str]]] = {}
        self.keys: dict[str, str] = {}  # idempotency key -> (saga, step, op) of its effect
        self.rows: list[tuple[str, str, str]] = []  # effect rows: (saga, step, op)
        self.invocations: Counter[tuple[str, str, str]] = Counter()
        self.count = 0
        self.saga = self._build()

    # -- participants ---------------------------------------------------------------------------
    def _act(self, ctx: SagaContext, target: str, op: str) -> None:
        self.invocations[(ctx.saga_id, ctx.step, op)] += 1
        queue = self.plans[ctx.saga_id][target]
        action = queue.pop(0) if queue else "ok"
        if action == "fail":
            raise ConnectionError(f"{target} failed")
        if action == "reject":
            raise rs.Rejected(f"{target} rejected")
        if ctx.idempotency_key not in self.keys:  # the participant dedups on the key
            self.keys[ctx.idempotency_key] = op
            self.rows.append((ctx.saga_id, ctx.step, op))
        if action == "crash":
            raise SimulatedCrash(CrashPoint.AFTER_STEP_EFFECT, ctx.step)

    def _step(self, name: str) -> Any:
        def run(ctx: SagaContext) -> str:
            self._act(ctx, name, "do")
            return name

        return run

    def _undo(self, name: str) -> Any:
        def run(ctx: SagaContext, done: Any) -> None:
            self._act(ctx, f"undo:{name}", "undo")

        return run

    def _build(self) -> rs.Saga:
        clock = self.clock

        def retry() -> rs.Retry:
            return rs.Retry(attempts=2, wait=1.0, sleep=clock.sleep, clock=clock)

        saga = rs.Saga("prop", store=self.store, clock=clock, lease=LEASE, forward_retry_delay=1.0)
        saga.add_step(A, self._step(A), self._undo(A), retry(), compensate_policy=retry())
        saga.add_step(B, self._step(B), self._undo(B), retry(), compensate_policy=retry())
        saga.add_step(
            D, self._step(D), self._undo(D), retry(), pivot=True, compensate_policy=retry()
        )
        saga.add_step(C, self._step(C), policy=retry(), retriable=True)
        return saga

    @staticmethod
    def _armed(crash: tuple[CrashPoint, str] | None) -> Any:
        if crash is None:
            from contextlib import nullcontext

            return nullcontext()
        return crash_at(crash[0], crash[1])

    # -- rules ----------------------------------------------------------------------------------
    @rule(plan=plans, crash=crashes)
    def start(self, plan: dict[str, list[str]], crash: tuple[CrashPoint, str] | None) -> None:
        self.count += 1
        saga_id = f"s{self.count}"
        self.plans[saga_id] = {k: list(v) for k, v in plan.items()}
        try:
            with self._armed(crash):
                self.saga.run_sync({"n": self.count}, saga_id=saga_id)
        except (rs.SagaFailed, rs.SagaStuck, SimulatedCrash):
            pass

    @rule(crash=crashes)
    def restart(self, crash: tuple[CrashPoint, str] | None) -> None:
        self.clock.advance(LEASE + 1)
        self.saga = self._build()
        try:
            with self._armed(crash):
                self.saga.recover_sync()
        except SimulatedCrash:
            pass

    @rule()
    def operator_retries_stuck_compensations(self) -> None:
        for row in self.saga.admin.list(status="stuck"):
            rec = self.store.load_sync(row.id)
            assert rec is not None
            stuck = [e for e in rec.events if e.kind == LogKind.SAGA_STUCK][-1]
            if stuck.data.get("reason") == "compensation_failed":
                with contextlib.suppress(SimulatedCrash):
                    self.saga.admin.retry(row.id)

    # -- invariants -----------------------------------------------------------------------------
    @invariant()
    def log_and_ledger_agree(self) -> None:
        for saga_id in self.plans:
            rec = self.store.load_sync(saga_id)
            if rec is None:
                continue
            events = rec.events
            start_order = []
            for e in events:
                if e.kind == LogKind.STEP_STARTED and e.step not in start_order:
                    start_order.append(e.step)
            undo_rows = [s for (sid, s, op) in self.rows if sid == saga_id and op == "undo"]
            # 2. reverse start order
            positions = [start_order.index(s) for s in undo_rows]
            assert positions == sorted(positions, reverse=True), (saga_id, undo_rows, start_order)
            # 3. nothing is compensated once the pivot succeeded
            pivot_ok = any(e.kind == LogKind.STEP_SUCCEEDED and e.step == D for e in events)
            if pivot_ok:
                assert not undo_rows and not any(e.kind == LogKind.COMP_STARTED for e in events)
            # 4. a compensated saga undid every forward effect exactly once
            if rec.status is SagaStatus.COMPENSATED:
                done = {s for (sid, s, op) in self.rows if sid == saga_id and op == "do"}
                assert done <= set(undo_rows) and len(undo_rows) == len(set(undo_rows))
            # 6. the retriable step is never compensated
            assert not any(e.kind == LogKind.COMP_STARTED and e.step == C for e in events)
            assert C not in undo_rows
            # 7. write-ahead: invocations <= STARTED records; none after SUCCEEDED
            for step in (A, B, D, C):
                started = sum(
                    1 for e in events if e.kind == LogKind.STEP_STARTED and e.step == step
                )
                comp_started = sum(
                    1 for e in events if e.kind == LogKind.COMP_STARTED and e.step == step
                )
                assert self.invocations[(saga_id, step, "do")] <= started
                assert self.invocations[(saga_id, step, "undo")] <= comp_started
                seen_success = False
                for e in events:
                    if e.kind == LogKind.STEP_SUCCEEDED and e.step == step:
                        seen_success = True
                    elif e.kind == LogKind.STEP_STARTED and e.step == step:
                        assert not seen_success, (saga_id, step)
        # 5. one effect row per (saga, step, phase)
        assert len(self.rows) == len(set(self.rows))

    def teardown(self) -> None:
        # 1. once nobody crashes any more, every saga reaches a final status
        for _ in range(40):  # scripted crashes are finite: recovery eventually gets through
            self.clock.advance(LEASE + 1)
            self.saga = self._build()
            try:
                self.saga.recover_sync()
            except SimulatedCrash:
                continue
            if all(self.store.load_sync(sid).status in FINAL for sid in self.plans):  # type: ignore[union-attr]
                break
        for saga_id in self.plans:
            rec = self.store.load_sync(saga_id)
            assert rec is not None and rec.status in FINAL, (saga_id, rec and rec.status)
        self.log_and_ledger_agree()


SagaMachine.TestCase.settings = settings(
    SagaMachine.TestCase.settings, max_examples=200, stateful_step_count=10
)
test_s28_stateful = SagaMachine.TestCase
