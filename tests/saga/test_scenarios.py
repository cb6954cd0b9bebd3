"""The acceptance scenarios of SAGA.md 4.9, one named test each (S26 is the store
conformance suite in ``test_store_conformance.py``, S28 the stateful test in
``test_stateful.py``). "Exactly once" always means one row in the ledger."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from saga_fixtures import A, B, C, D, Shop, order_saga

import resilient as rs
from resilient.saga import DeadlineExceeded, LogKind, SagaInterrupted, SagaStatus
from resilient.saga.testing import CrashPoint, Ledger, SimulatedCrash, crash_at
from resilient.telemetry import SagaEvent, configure_telemetry, reset_telemetry
from resilient.testing import FakeClock

HERE = Path(__file__).parent
LEASE = 30.0


def kinds(saga: rs.Saga, saga_id: str) -> list[str]:
    return [f"{e.kind}:{e.step}" if e.step else e.kind for e in saga.admin.timeline(saga_id)]


def retry(clock: FakeClock, attempts: int = 3, wait: float = 1.0) -> rs.Retry:
    return rs.Retry(attempts=attempts, wait=wait, sleep=clock.sleep, clock=clock)


def restart(shop: Shop, store: rs.SagaStore, clock: FakeClock, **kw: Any) -> rs.Saga:
    """A new process: a new saga object (new node id) once every lease has expired."""
    clock.advance(LEASE + 1)
    return order_saga(shop, store=store, clock=clock, **kw)


def sample(registry: CollectorRegistry, metric: str, **labels: str) -> float:
    value = registry.get_sample_value(metric, labels)
    return 0.0 if value is None else value


# -- happy path and failures ---------------------------------------------------------------------
@pytest.mark.anyio
async def test_s01_happy_path(clock: FakeClock, ledger: Ledger) -> None:
    shop = Shop(ledger)
    saga = order_saga(shop, clock=clock)
    result = await saga.run({"order": 1}, saga_id="o1")
    assert result.status is SagaStatus.COMPLETED
    assert result.value == {"step": C, "saga": "o1"}
    assert result.results[A] == {"step": A, "saga": "o1"}
    assert shop.order() == [f"do:{A}", f"do:{B}", f"do:{C}"]
    assert ledger.effects() == [("o1:" + A, A), ("o1:" + B, B), ("o1:" + C, C)]
    assert kinds(saga, "o1") == [
        LogKind.SAGA_CREATED,
        f"STEP_STARTED:{A}",
        f"STEP_SUCCEEDED:{A}",
        f"STEP_STARTED:{B}",
        f"STEP_SUCCEEDED:{B}",
        f"STEP_STARTED:{C}",
        f"STEP_SUCCEEDED:{C}",
        LogKind.SAGA_COMPLETED,
    ]


@pytest.mark.anyio
async def test_s02_business_rejection_compensates_in_reverse(
    clock: FakeClock, ledger: Ledger
) -> None:
    shop = Shop(ledger)
    shop.script(D, rs.Rejected("card declined"))
    saga = order_saga(shop, long=True, clock=clock)
    with pytest.raises(rs.SagaFailed) as info:
        await saga.run({}, saga_id="o2")
    err = info.value
    assert isinstance(err.__cause__, rs.Rejected)
    assert err.step == D and err.saga_id == "o2"
    assert err.result.status is SagaStatus.COMPENSATED
    assert shop.order() == [f"do:{A}", f"do:{B}", f"do:{D}", f"undo:{B}", f"undo:{A}"]
    assert [c[4] for c in shop.invoked("undo")] == [
        {"step": B, "saga": "o2"},
        {"step": A, "saga": "o2"},
    ]
    assert ledger.count(f"undo {B}") == 1 and ledger.count(f"undo {A}") == 1
    assert (await saga.store.load("o2")).status is SagaStatus.COMPENSATED  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_s03_transient_failure_then_success_same_key(clock: FakeClock) -> None:
    shop = Shop()
    shop.script(A, ConnectionError("1"), ConnectionError("2"))
    saga = order_saga(shop, clock=clock, policies={A: retry(clock, attempts=3, wait=2.0)})
    await saga.run({}, saga_id="o3")
    calls = shop.invoked("do", A)
    assert [c[2] for c in calls] == ["o3:" + A] * 3
    assert [c[3] for c in calls] == [1, 2, 3]
    assert clock.sleeps == [2.0, 2.0]
    started = [
        e.attempt for e in saga.admin.timeline("o3") if e.kind == "STEP_STARTED" and e.step == A
    ]
    failed = [e.attempt for e in saga.admin.timeline("o3") if e.kind == "STEP_FAILED"]
    assert started == [1, 2, 3] and failed == [1, 2]


@pytest.mark.anyio
async def test_s04_timeout_is_unknown_outcome_and_compensates(
    clock: FakeClock, ledger: Ledger
) -> None:
    shop = Shop(ledger)
    shop.script(B, "hang", "hang")
    policy = rs.pipeline(retry(clock, attempts=2), rs.Timeout(0.02))
    saga = order_saga(shop, clock=clock, policies={B: policy})
    with pytest.raises(rs.SagaFailed) as info:
        await saga.run({}, saga_id="o4")
    assert isinstance(info.value.__cause__, rs.TimeoutExceeded)
    assert shop.order()[-2:] == [f"undo:{B}", f"undo:{A}"]
    assert shop.invoked("undo", B)[0][4] is None  # outcome unknown: done=None
    assert len(shop.invoked("do", B)) == 2
    # the charge happened (once: same key on both attempts) and was refunded: no net effect
    effects = dict(ledger.effects())
    assert effects["o4:" + B] == B and effects[f"o4:{B}:undo"] == f"undo {B}"
    assert effects["o4:" + A] == A and effects[f"o4:{A}:undo"] == f"undo {A}"


# -- idempotency ----------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_s14_duplicate_start_while_running(clock: FakeClock) -> None:
    shop = Shop()
    gate = anyio.Event()
    saga = rs.Saga("dup", clock=clock)
    invocations = []

    @saga.step()
    async def only(ctx: rs.SagaContext) -> int:
        invocations.append(ctx.attempt)
        await gate.wait()
        return 42

    results: list[Any] = []

    async def caller() -> None:
        results.append(await saga.run({"x": 1}, saga_id="k"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        tg.start_soon(caller)
        for _ in range(20):
            await anyio.sleep(0.001)
        gate.set()
    assert invocations == [1]
    assert [r.value for r in results] == [42, 42]
    assert sorted(r.replayed for r in results) == [False, True]
    assert shop.calls == []


@pytest.mark.anyio
async def test_s15_duplicate_start_after_completion(clock: FakeClock) -> None:
    shop = Shop()
    saga = order_saga(shop, clock=clock)
    first = await saga.run({"a": 1}, saga_id="o15")
    n = len(shop.calls)
    again = await saga.run({"a": 1}, saga_id="o15")
    assert len(shop.calls) == n
    assert again.replayed and again.value == first.value and again.status is first.status


@pytest.mark.anyio
async def test_s16_same_key_different_input(clock: FakeClock) -> None:
    shop = Shop()
    saga = order_saga(shop, clock=clock)
    await saga.run({"a": 1}, saga_id="o16")
    n = len(shop.calls)
    with pytest.raises(rs.IdempotencyConflict, match="o16"):
        await saga.run({"a": 2}, saga_id="o16")
    assert len(shop.calls) == n


# -- cancellation ---------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_s19_caller_cancellation_compensates_then_propagates(clock: FakeClock) -> None:
    shop = Shop()
    shop.script(B, "hang")
    hanging = shop.hanging = anyio.Event()
    saga = order_saga(shop, clock=clock)
    finished = False
    with anyio.CancelScope() as scope:

        async def cancel_when_b_runs() -> None:
            await hanging.wait()
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_when_b_runs)
            await saga.run({}, saga_id="o19")
            finished = True
    assert scope.cancelled_caught and not finished
    assert shop.order() == [f"do:{A}", f"do:{B}", f"undo:{B}", f"undo:{A}"]
    assert shop.invoked("undo", B)[0][4] is None
    rec = await saga.store.load("o19")
    assert rec is not None and rec.status is SagaStatus.COMPENSATED


# -- deadlines ------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_s21_deadline_passes_during_backoff_compensates(clock: FakeClock) -> None:
    shop = Shop()
    shop.script(A, *(ConnectionError(str(i)) for i in range(5)))
    saga = order_saga(
        shop, clock=clock, deadline=5.0, policies={A: retry(clock, attempts=5, wait=3.0)}
    )
    with pytest.raises(rs.SagaFailed) as info:
        await saga.run({}, saga_id="o21")
    assert isinstance(info.value.__cause__, DeadlineExceeded)
    assert len(shop.invoked("do", A)) == 2  # t=0 and t=3; at t=6 the deadline has passed
    assert shop.order()[-1] == f"undo:{A}" and shop.invoked("undo", A)[0][4] is None
    assert "DEADLINE_EXCEEDED:" + A in kinds(saga, "o21")
    assert info.value.result.status is SagaStatus.COMPENSATED


# -- codec ----------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_s24_unencodable_result_goes_stuck_and_never_reruns(clock: FakeClock) -> None:
    saga = rs.Saga("codec", clock=clock)
    calls = []

    @saga.step()
    async def make(ctx: rs.SagaContext) -> object:
        calls.append(ctx.attempt)
        return object()

    with pytest.raises(rs.SagaStuck) as info:
        await saga.run({}, saga_id="c1")
    assert info.value.reason == "unencodable" and info.value.step == "make"
    succeeded = [e for e in saga.admin.timeline("c1") if e.kind == LogKind.STEP_SUCCEEDED]
    assert len(succeeded) == 1 and "unencodable" in succeeded[0].data
    clock.advance(LEASE * 2)
    report = await saga.recover()
    with pytest.raises(rs.SagaStuck):
        await saga.run({}, saga_id="c1")
    assert calls == [1] and report.outcomes == {}


# -- crash recovery in a real child process (os._exit(137) at a named crash point) ----------------
def crash_child(tmp_path: Path, point: CrashPoint, step: str, saga_id: str, *flags: str) -> None:
    env = {**os.environ, "RESILIENT_SAGA_CRASH_AT": f"{point.value}:{step}"}
    env.pop("RESILIENT_SAGA_STORE", None)
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "saga_child.py"),
            "run",
            str(tmp_path / "sagas.db"),
            str(tmp_path / "ledger.db"),
            saga_id,
            *flags,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 137, proc.stderr


def recovering(tmp_path: Path, shop: Shop, **kw: Any) -> rs.Saga:
    """The saga as a new process registers it, with every lease already expired."""
    import time

    return order_saga(
        shop,
        is_async=False,
        store=rs.SQLiteSagaStore(tmp_path / "sagas.db"),
        clock=lambda: time.time() + 3600,
        **kw,
    )


def test_s05_kill_after_step_recorded_resumes(tmp_path: Path) -> None:
    crash_child(tmp_path, CrashPoint.AFTER_STEP_RECORDED, B, "s5", "long")
    ledger = Ledger(tmp_path / "ledger.db")
    assert [op for _, op in ledger.effects()] == [A, B]
    shop = Shop(ledger)
    saga = recovering(tmp_path, shop, long=True)
    report = saga.recover_sync()
    assert report.outcomes == {"s5": SagaStatus.COMPLETED}
    assert shop.order() == [f"do:{D}", f"do:{C}"]  # only the next steps, once each
    assert [op for _, op in ledger.effects()] == [A, B, D, C]


def test_s06_kill_after_step_recorded_on_recovery_compensate(tmp_path: Path) -> None:
    crash_child(tmp_path, CrashPoint.AFTER_STEP_RECORDED, B, "s6", "long")
    ledger = Ledger(tmp_path / "ledger.db")
    shop = Shop(ledger)
    saga = recovering(tmp_path, shop, long=True, on_recovery="compensate")
    assert saga.recover_sync().outcomes == {"s6": SagaStatus.COMPENSATED}
    assert shop.order() == [f"undo:{B}", f"undo:{A}"]
    assert not shop.invoked("do", D)
    assert [op for _, op in ledger.effects()] == [A, B, f"undo {B}", f"undo {A}"]


def test_s07_kill_in_the_gap_reinvokes_with_same_key(tmp_path: Path) -> None:
    crash_child(tmp_path, CrashPoint.AFTER_STEP_EFFECT, B, "s7", "long")
    ledger = Ledger(tmp_path / "ledger.db")
    assert ledger.count(B) == 1  # the charge happened, its outcome was never recorded
    shop = Shop(ledger)
    saga = recovering(tmp_path, shop, long=True)
    assert saga.recover_sync().outcomes == {"s7": SagaStatus.COMPLETED}
    assert shop.invoked("do", B)[0][2] == "s7:" + B and shop.invoked("do", B)[0][3] == 2
    assert ledger.count(B) == 1 and ledger.deliveries("s7:" + B) == 2  # deduplicated
    assert shop.order() == [f"do:{B}", f"do:{D}", f"do:{C}"]


def test_s09_kill_during_compensation_resumes_undo(tmp_path: Path) -> None:
    # D is rejected in the child, which then dies right after C(B) took effect
    crash_child(tmp_path, CrashPoint.AFTER_COMP_EFFECT, B, "s9", "long", "reject")
    ledger = Ledger(tmp_path / "ledger.db")
    assert [op for _, op in ledger.effects()] == [A, B, f"undo {B}"]
    shop = Shop(ledger)
    saga = recovering(tmp_path, shop, long=True)
    assert saga.recover_sync().outcomes == {"s9": SagaStatus.COMPENSATED}
    assert shop.order() == [f"undo:{B}", f"undo:{A}"]
    assert shop.invoked("undo", B)[0][2] == f"s9:{B}:undo"
    assert [op for _, op in ledger.effects()] == [A, B, f"undo {B}", f"undo {A}"]


def test_s17_two_recovery_processes_share_fifty_orphans(tmp_path: Path) -> None:
    import json
    import time

    ledger = Ledger(tmp_path / "ledger.db")
    shop = Shop(ledger)
    store = rs.SQLiteSagaStore(tmp_path / "sagas.db")
    saga = order_saga(shop, is_async=False, store=store, long=True)
    ids = [f"o{i:02d}" for i in range(50)]
    for sid in ids:
        with crash_at(CrashPoint.AFTER_STEP_RECORDED, A), pytest.raises(SimulatedCrash):
            saga.run_sync({"order": sid}, saga_id=sid)
    store.close()
    del saga
    gc.collect()
    cmd = [
        sys.executable,
        str(HERE / "saga_child.py"),
        "recover",
        str(tmp_path / "sagas.db"),
        str(tmp_path / "ledger.db"),
        "long",
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    done = [json.loads(o[0]) for o in outs]
    assert set(done[0]) | set(done[1]) == set(ids)
    assert not set(done[0]) & set(done[1])  # each saga claimed by exactly one worker
    assert all(v == "completed" for d in done for v in d.values())
    for sid in ids:
        for step in (A, B, D, C):
            assert ledger.deliveries(f"{sid}:{step}") == 1  # no recorded step invoked twice
    check = recovering(tmp_path, Shop(ledger), long=True)
    assert {s.status for s in check.admin.list(limit=100)} == {SagaStatus.COMPLETED}
    del time


# -- in-doubt, pivot, compensation failures (in-process crashes: SimulatedCrash) -----------------
@pytest.mark.anyio
async def test_s08_kill_in_gap_with_escalate_goes_stuck(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    shop = Shop()
    events: list[SagaEvent] = []
    saga = rs.Saga("pay", store=store, clock=clock)
    saga.add_step(A, shop.astep(A), compensate=shop.aundo(A))
    saga.add_step(B, shop.astep(B), compensate=shop.aundo(B), in_doubt="escalate")
    with crash_at(CrashPoint.AFTER_STEP_EFFECT, B), pytest.raises(SimulatedCrash):
        await saga.run({}, saga_id="s8")
    clock.advance(LEASE + 1)
    again = rs.Saga("pay", store=store, clock=clock, on_event=events.append)
    again.add_step(A, shop.astep(A), compensate=shop.aundo(A))
    again.add_step(B, shop.astep(B), compensate=shop.aundo(B), in_doubt="escalate")
    n = len(shop.calls)
    report = await again.recover()
    assert report.outcomes == {"s8": SagaStatus.STUCK}
    assert len(shop.calls) == n  # not re-invoked
    stuck = [e for e in events if e.kind == "saga_stuck"]
    assert len(stuck) == 1 and stuck[0].detail == "in_doubt" and stuck[0].step == B
    with pytest.raises(rs.SagaStuck) as info:
        await again.run({}, saga_id="s8")
    assert info.value.reason == "in_doubt"
    # the operator checked the payment provider: safe to call again with the same key
    result = await again.admin.aretry("s8")
    assert result.status is SagaStatus.COMPLETED
    assert shop.invoked("do", B)[-1][2:4] == ("s8:" + B, 2)


@pytest.mark.anyio
async def test_s10_kill_after_pivot_with_deadline_passed_finishes_forward(
    clock: FakeClock,
) -> None:
    store = rs.InMemorySagaStore()
    shop = Shop()
    saga = order_saga(shop, long=True, store=store, clock=clock, deadline=10.0)
    with crash_at(CrashPoint.AFTER_STEP_RECORDED, D), pytest.raises(SimulatedCrash):
        await saga.run({}, saga_id="s10")
    clock.advance(100.0)  # the deadline is long gone
    again = restart(shop, store, clock, long=True, deadline=10.0)
    assert (await again.recover()).outcomes == {"s10": SagaStatus.COMPLETED}
    assert not shop.invoked("undo")
    assert shop.order()[-1] == f"do:{C}"
    assert "DEADLINE_EXCEEDED:" + C in kinds(again, "s10")


@pytest.mark.anyio
async def test_s11_compensation_fails_transiently_then_succeeds(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    shop = Shop()
    shop.script(D, rs.Rejected("no"))
    shop.script(f"undo:{B}", *(ConnectionError(f"refund {i}") for i in range(3)))
    saga = order_saga(shop, long=True, clock=clock, undo_policy=retry(clock, attempts=5))
    with pytest.raises(rs.SagaFailed):
        await saga.run({}, saga_id="s11")
    undo_b = [i for i, c in enumerate(shop.calls) if c[:2] == ("undo", B)]
    undo_a = [i for i, c in enumerate(shop.calls) if c[:2] == ("undo", A)]
    assert len(undo_b) == 4 and len(undo_a) == 1
    assert undo_a[0] > max(undo_b)  # C(A) only after C(B) succeeded
    assert sample(registry, "resilient_saga_compensation_failures_total", saga="order", step=B) == 3
    assert sample(registry, "resilient_saga_total", name="order", outcome="compensated") == 1


def _stuck_saga(clock: FakeClock, shop: Shop, **kw: Any) -> rs.Saga:
    shop.script(D, rs.Rejected("no"))
    shop.script(f"undo:{B}", *(ConnectionError(f"refund {i}") for i in range(3)))
    return order_saga(shop, long=True, clock=clock, undo_policy=retry(clock, attempts=3), **kw)


@pytest.mark.anyio
async def test_s12_compensation_fails_permanently_then_admin_retry(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    shop = Shop()
    saga = _stuck_saga(clock, shop)
    with pytest.raises(rs.SagaStuck) as info:
        await saga.run({}, saga_id="s12")
    assert info.value.step == B and info.value.reason == "compensation_failed"
    assert isinstance(info.value.__cause__, ConnectionError)
    assert not shop.invoked("undo", A)  # nothing before B is undone while B is unresolved
    assert sample(registry, "resilient_saga_stuck", saga="order") == 1
    assert [s.id for s in saga.admin.list(status="stuck")] == ["s12"]
    result = await saga.admin.aretry("s12")  # the refund service is fixed now
    assert result.status is SagaStatus.COMPENSATED
    assert shop.order()[-2:] == [f"undo:{B}", f"undo:{A}"]
    assert sample(registry, "resilient_saga_stuck", saga="order") == 0


@pytest.mark.anyio
async def test_s12_mark_compensated_continues_with_earlier_steps(clock: FakeClock) -> None:
    shop = Shop()
    saga = _stuck_saga(clock, shop)
    with pytest.raises(rs.SagaStuck):
        await saga.run({}, saga_id="s12b")
    with pytest.raises(ValueError, match="stuck compensating step"):
        await saga.admin.amark_compensated("s12b", A)
    n_undo_b = len(shop.invoked("undo", B))
    with pytest.raises(TypeError, match="amark_compensated"):
        saga.admin.mark_compensated("s12b", B)  # async steps need the async twin
    result = await saga.admin.amark_compensated("s12b", B, note="refunded by hand")
    assert result.status is SagaStatus.COMPENSATED
    assert len(shop.invoked("undo", B)) == n_undo_b
    assert shop.order()[-1] == f"undo:{A}"


@pytest.mark.anyio
async def test_s13_retriable_step_survives_restarts_and_is_never_compensated(
    clock: FakeClock,
) -> None:
    store = rs.InMemorySagaStore()
    shop = Shop()
    crash = SimulatedCrash(CrashPoint.AFTER_STEP_STARTED, C)
    shop.script(C, ConnectionError("1"), ConnectionError("2"), crash, ConnectionError("4"), crash)
    saga = order_saga(shop, store=store, clock=clock, forward_retry_delay=10.0)
    with pytest.raises(SimulatedCrash):
        await saga.run({}, saga_id="s13")
    rec = await store.load("s13")
    assert rec is not None and rec.next_attempt_at > 0  # the schedule is durable
    for _ in range(2):
        saga = restart(shop, store, clock)
        try:
            report = await saga.recover()
        except SimulatedCrash:
            continue
    assert report.outcomes == {"s13": SagaStatus.COMPLETED}
    assert [c[3] for c in shop.invoked("do", C)] == [1, 2, 3, 4, 5, 6]
    assert not shop.invoked("undo")
    assert len(shop.invoked("do", A)) == 1 and len(shop.invoked("do", B)) == 1


# -- fencing --------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_s18_zombie_worker_is_fenced_out(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    store = rs.InMemorySagaStore()
    shop = Shop()
    paused = anyio.Event()
    resume = anyio.Event()
    zombie_calls = 0

    async def slow_b(ctx: rs.SagaContext) -> str:
        nonlocal zombie_calls
        shop.calls.append(("do", B, ctx.idempotency_key, ctx.attempt, None))
        if ctx.attempt == 1:  # worker A: pauses (SIGSTOP) past its lease
            zombie_calls += 1
            paused.set()
            await resume.wait()
        return "charged"

    def build() -> rs.Saga:
        s = rs.Saga("zombie", store=store, clock=clock)
        s.add_step(A, shop.astep(A), compensate=shop.aundo(A))
        s.add_step(B, slow_b, pivot=True)
        s.add_step(C, shop.astep(C), retriable=True)
        return s

    worker_a, worker_b = build(), build()
    outcome: list[BaseException] = []

    async def run_a() -> None:
        try:
            await worker_a.run({}, saga_id="z")
        except rs.StaleEpoch as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_a)
        await paused.wait()
        clock.advance(LEASE + 1)
        report = await worker_b.recover()
        assert report.outcomes == {"z": SagaStatus.COMPLETED}
        resume.set()
    assert len(outcome) == 1 and isinstance(outcome[0], rs.StaleEpoch)
    assert zombie_calls == 1 and len(shop.invoked("do", C)) == 1  # A made no further call
    assert sample(registry, "resilient_saga_stale_epoch_total") == 1
    assert (await store.load("z")).status is SagaStatus.COMPLETED  # type: ignore[union-attr]


# -- versions and poison pills --------------------------------------------------------------------
@pytest.mark.anyio
async def test_s22_unknown_version_is_skipped_until_registered(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    shop = Shop()

    async def crash_under_v1() -> None:
        # in a frame of its own, so nothing (not even the traceback pytest keeps) still
        # references the v1 definition once this returns: the process "restarted" without it
        v1 = order_saga(shop, store=store, clock=clock)
        with crash_at(CrashPoint.AFTER_STEP_RECORDED, A):
            try:
                await v1.run({}, saga_id="s22")
            except SimulatedCrash:
                pass  # not pytest.raises: its ExceptionInfo keeps the frames (and v1) alive
            else:
                pytest.fail("the armed crash point did not fire")

    await crash_under_v1()
    gc.collect()
    clock.advance(LEASE + 1)
    v2 = rs.Saga("order", store=store, clock=clock, version=2)
    v2.add_step("only", shop.astep("only"))
    before = await store.load("s22")
    report = await v2.recover()
    assert isinstance(report.skipped["s22"], rs.UnknownSagaVersion) and not report.outcomes
    assert await store.load("s22") == before  # untouched
    # v1 changed its steps without a version bump: detected by the steps hash
    changed = rs.Saga("order", store=store, clock=clock, version=1)
    changed.add_step(A, shop.astep(A))
    changed.add_step("other", shop.astep("other"))
    report = await v2.recover()
    assert "other steps" in str(report.skipped["s22"])
    del changed
    gc.collect()
    v1_again = order_saga(shop, store=store, clock=clock)
    report = await v2.recover()  # v2's recovery drives v1 sagas with the v1 definition
    assert report.outcomes == {"s22": SagaStatus.COMPLETED}
    assert shop.order() == [f"do:{A}", f"do:{B}", f"do:{C}"]
    del v1_again


@pytest.mark.anyio
async def test_s23_poison_pill_ends_stuck_after_max_recoveries(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    shop = Shop()
    shop.script(B, *(SimulatedCrash(CrashPoint.AFTER_STEP_STARTED, B) for _ in range(10)))
    saga = order_saga(shop, store=store, clock=clock)
    with pytest.raises(SimulatedCrash):
        await saga.run({}, saga_id="s23")
    crashes = 0
    for _ in range(10):
        saga = restart(shop, store, clock)
        try:
            report = await saga.recover()
        except SimulatedCrash:
            crashes += 1
            continue
        break
    assert crashes == 5
    assert report.outcomes == {"s23": SagaStatus.STUCK}
    with pytest.raises(rs.SagaStuck) as info:
        await saga.run({}, saga_id="s23")
    assert info.value.reason == "max_recoveries"
    assert len(shop.invoked("do", B)) == 6


# -- shutdown -------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_s20_runner_shutdown_releases_lease_without_compensating(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    shop = Shop()
    shop.script(B, "hang")
    hanging = shop.hanging = anyio.Event()
    first = order_saga(shop, store=store, clock=clock)
    interrupted: list[BaseException] = []

    async def run() -> None:
        try:
            await first.run({}, saga_id="s20")
        except SagaInterrupted as exc:
            interrupted.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await hanging.wait()
        await first.aclose()
    assert len(interrupted) == 1 and not shop.invoked("undo")
    rec = await store.load("s20")
    assert rec is not None and rec.status is SagaStatus.RUNNING and rec.owner is None
    second = order_saga(shop, store=store, clock=clock)  # no need to wait for the lease
    assert (await second.recover()).outcomes == {"s20": SagaStatus.COMPLETED}
    assert shop.order()[-2:] == [f"do:{B}", f"do:{C}"] and not shop.invoked("undo")


# -- sync parity (S25): S1, S2, S5, S7 and S12 through run_sync with plain functions ------------
def test_s25_sync_parity_happy_path_and_rejection(clock: FakeClock, ledger: Ledger) -> None:
    shop = Shop(ledger)
    saga = order_saga(shop, is_async=False, clock=clock, long=True)
    assert saga.run_sync({}, saga_id="p1").status is SagaStatus.COMPLETED
    assert shop.order() == [f"do:{A}", f"do:{B}", f"do:{D}", f"do:{C}"]
    shop.calls.clear()
    shop.script(D, rs.Rejected("no"))
    with pytest.raises(rs.SagaFailed) as info:
        saga.run_sync({}, saga_id="p2")
    assert isinstance(info.value.__cause__, rs.Rejected)
    assert shop.order() == [f"do:{A}", f"do:{B}", f"do:{D}", f"undo:{B}", f"undo:{A}"]


def test_s25_sync_parity_crash_recovery(clock: FakeClock, ledger: Ledger) -> None:
    store = rs.SQLiteSagaStore(Path(str(ledger.path)).with_name("sagas.db"))
    shop = Shop(ledger)
    saga = order_saga(shop, is_async=False, store=store, clock=clock, long=True)
    with crash_at(CrashPoint.AFTER_STEP_RECORDED, B), pytest.raises(SimulatedCrash):
        saga.run_sync({}, saga_id="p5")
    with crash_at(CrashPoint.AFTER_STEP_EFFECT, B), pytest.raises(SimulatedCrash):
        saga.run_sync({}, saga_id="p7")
    shop.calls.clear()
    again = restart(shop, store, clock, is_async=False, long=True)
    report = again.recover_sync()
    assert report.outcomes == {"p5": SagaStatus.COMPLETED, "p7": SagaStatus.COMPLETED}
    assert len(shop.invoked("do", B)) == 1  # only p7's in-doubt B, with the same key
    assert shop.invoked("do", B)[0][2] == "p7:" + B
    assert ledger.count(B) == 2 and ledger.deliveries("p7:" + B) == 2


def test_s25_sync_parity_stuck_then_admin_retry(clock: FakeClock) -> None:
    shop = Shop()
    shop.script(D, rs.Rejected("no"))
    shop.script(f"undo:{B}", *(ConnectionError(str(i)) for i in range(3)))
    saga = order_saga(
        shop, is_async=False, long=True, clock=clock, undo_policy=retry(clock, attempts=3)
    )
    with pytest.raises(rs.SagaStuck):
        saga.run_sync({}, saga_id="p12")
    assert saga.admin.retry("p12").status is SagaStatus.COMPENSATED
    assert shop.order()[-2:] == [f"undo:{B}", f"undo:{A}"]


def test_run_sync_works_from_a_thread_without_event_loop(clock: FakeClock) -> None:
    import threading

    shop = Shop()
    saga = order_saga(shop, is_async=False, clock=clock)
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(saga.run_sync({"t": 1}, saga_id="th")))
    t.start()
    t.join(10)
    assert out and out[0].status is SagaStatus.COMPLETED


# -- observability --------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_s27_spans_metrics_and_trace_link(
    clock: FakeClock, ledger: Ledger, registry: CollectorRegistry
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    configure_telemetry(tracer_provider=provider)
    try:
        store = rs.InMemorySagaStore()
        shop = Shop(ledger)
        shop.script(A, ConnectionError("once"))
        saga = order_saga(shop, store=store, clock=clock, policies={A: retry(clock)})
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("request") as request:
            await saga.run({}, saga_id="t1")
            with crash_at(CrashPoint.AFTER_STEP_RECORDED, B), pytest.raises(SimulatedCrash):
                await saga.run({}, saga_id="t2")
        spans = exporter.get_finished_spans()
        roots = [s for s in spans if s.name == "saga order"]
        assert len(roots) == 2
        t1 = roots[0]
        under = {t1.context.span_id}
        for _ in spans:  # spans finish children first: walk until no new descendant appears
            for s in spans:
                if s.parent is not None and s.parent.span_id in under:
                    under.add(s.context.span_id)
        children = [s for s in spans if s.name.startswith("saga.") and s.context.span_id in under]
        assert sorted(s.name for s in children) == sorted(
            [f"saga.step {A}", f"saga.step {A}", f"saga.step {B}", f"saga.step {C}"]
        )
        assert {s.attributes["saga.attempt"] for s in children if s.name.endswith(A)} == {1, 2}
        exporter.clear()
        again = restart(shop, store, clock, policies={A: retry(clock)})
        await again.recover()
        recovered = [s for s in exporter.get_finished_spans() if s.name == "saga order"]
        assert len(recovered) == 1
        assert [link.context.trace_id for link in recovered[0].links] == [
            request.get_span_context().trace_id
        ]
        # the Prometheus counters equal the ledger's effect counts
        for step in (A, B, C):
            ok = sample(
                registry,
                "resilient_saga_step_seconds_count",
                saga="order",
                step=step,
                phase="forward",
                outcome="success",
            )
            assert ok == ledger.count(step) == 2
        assert sample(registry, "resilient_saga_total", name="order", outcome="completed") == 2
        assert sample(registry, "resilient_saga_recovered_total", saga="order") == 1
        assert sample(registry, "resilient_saga_started_total", saga="order") == 2
    finally:
        reset_telemetry()
