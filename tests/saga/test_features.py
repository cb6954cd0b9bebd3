"""SAGA.md features beyond the first round: long backoffs that SUSPEND the saga, the recovery
loop that resumes it, ``continue_on_compensation_error``, the saga environment variables and
``run(detach=True)``."""

from __future__ import annotations

import logging
import threading
from typing import Any

import anyio
import pytest
from saga_fixtures import A, B, C, D, Shop, order_saga

import resilient as rs
from resilient.saga import LogKind, SagaFilter, SagaStatus
from resilient.telemetry import SagaEvent
from resilient.testing import FakeClock


def kinds(saga: rs.Saga, saga_id: str) -> list[str]:
    return [e.kind for e in saga.admin.timeline(saga_id)]


def retry(clock: FakeClock, attempts: int = 3) -> rs.Retry:
    return rs.Retry(attempts=attempts, wait=1.0, sleep=clock.sleep, clock=clock)


def on_completed(event: anyio.Event | threading.Event) -> Any:
    def listen(ev: Any) -> None:
        if isinstance(ev, SagaEvent) and ev.kind == "saga_completed":
            event.set()

    return listen


# -- long backoff: SUSPENDED -----------------------------------------------------------------------
@pytest.mark.anyio
async def test_long_backoff_suspends_releases_the_lease_and_recovery_resumes(
    clock: FakeClock,
) -> None:
    store = rs.InMemorySagaStore()
    shop = Shop()
    shop.script(C, ConnectionError("mail server down"))
    saga = order_saga(shop, store=store, clock=clock, forward_retry_delay=60.0)
    started = clock()

    result = await saga.run({}, saga_id="sus")  # C's retry is 60 s away > suspend_after=30 s

    assert result.status is SagaStatus.SUSPENDED
    rec = await store.load("sus")
    assert rec is not None and rec.status is SagaStatus.SUSPENDED
    assert rec.owner is None and rec.lease_until == 0.0  # nobody holds it while it waits
    assert rec.next_attempt_at == started + 60.0
    assert clock.sleeps == []  # nothing slept in process
    assert kinds(saga, "sus")[-2:] == [LogKind.STEP_RETRY_SCHEDULED, LogKind.SAGA_SUSPENDED]

    again = await saga.run({}, saga_id="sus")  # a duplicate start does not wait for an hour
    assert again.status is SagaStatus.SUSPENDED and again.replayed
    assert (await saga.recover()).outcomes == {}  # not due yet
    assert len(shop.invoked("do", C)) == 1

    clock.advance(61.0)
    assert (await saga.recover()).outcomes == {"sus": SagaStatus.COMPLETED}
    assert [c[3] for c in shop.invoked("do", C)] == [1, 2]  # the attempt count survived
    assert not shop.invoked("undo")
    rec = await store.load("sus")
    assert rec is not None and rec.status is SagaStatus.COMPLETED


@pytest.mark.anyio
async def test_backoff_within_suspend_after_waits_in_process(clock: FakeClock) -> None:
    shop = Shop()
    shop.script(C, ConnectionError("mail server down"))
    saga = order_saga(shop, clock=clock, forward_retry_delay=60.0, suspend_after=120.0)
    result = await saga.run({}, saga_id="short")
    assert result.status is SagaStatus.COMPLETED
    assert clock.sleeps == [60.0]
    assert LogKind.SAGA_SUSPENDED not in kinds(saga, "short")


def test_sync_run_suspends_and_the_sync_recovery_loop_resumes(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    shop = Shop()
    shop.script(C, ConnectionError("1"), ConnectionError("2"))
    done = threading.Event()
    saga = order_saga(
        shop,
        is_async=False,
        store=store,
        clock=clock,
        forward_retry_delay=40.0,
        on_event=on_completed(done),
    )
    assert saga.run_sync({}, saga_id="sync-sus").status is SagaStatus.SUSPENDED
    assert store.load_sync("sync-sus").owner is None  # type: ignore[union-attr]

    # the loop advances the fake clock by `interval` per pass; it stops once the saga is done
    worker = threading.Thread(
        target=saga.run_recovery_loop_sync, kwargs={"interval": 10.0, "stop": done}
    )
    worker.start()
    worker.join(timeout=30)
    done.set()
    worker.join()
    assert store.load_sync("sync-sus").status is SagaStatus.COMPLETED  # type: ignore[union-attr]
    # failed at +0, suspended until +40; failed again at resume, suspended for 80 s more
    assert [c[3] for c in shop.invoked("do", C)] == [1, 2, 3]
    assert not shop.invoked("undo")


@pytest.mark.anyio
async def test_recovery_loop_resumes_a_suspended_saga_when_due(clock: FakeClock) -> None:
    shop = Shop()
    shop.script(C, ConnectionError("down"))
    done = anyio.Event()
    seen: list[str] = []
    completed = on_completed(done)

    def listen(ev: Any) -> None:
        seen.append(ev.kind)
        completed(ev)

    saga = order_saga(
        shop,
        clock=clock,
        forward_retry_delay=300.0,
        forward_retry_max_delay=600.0,
        on_event=listen,
    )
    assert (await saga.run({}, saga_id="loop")).status is SagaStatus.SUSPENDED
    assert seen[-1] == "saga_suspended"
    t0 = clock()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: saga.run_recovery_loop(interval=60.0))
            await done.wait()
            tg.cancel_scope.cancel()
    assert clock() - t0 >= 300.0  # resumed only once due
    assert len(shop.invoked("do", C)) == 2


@pytest.mark.anyio
async def test_recovery_loop_survives_a_failing_pass(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    class FlakyStore(rs.InMemorySagaStore):
        failures = 1

        def query_sync(self, filt: SagaFilter) -> list[Any]:
            if self.failures:
                self.failures -= 1
                raise OSError("store unreachable")
            return super().query_sync(filt)

    store = FlakyStore()
    shop = Shop()
    shop.script(C, ConnectionError("down"))
    done = anyio.Event()
    saga = order_saga(
        shop, store=store, clock=clock, forward_retry_delay=45.0, on_event=on_completed(done)
    )
    await saga.run({}, saga_id="flaky")
    with caplog.at_level(logging.ERROR, logger="resilient.saga"), anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: saga.run_recovery_loop(interval=30.0))
            await done.wait()
            tg.cancel_scope.cancel()
    assert "recovery pass failed" in caplog.text


# -- continue_on_compensation_error ------------------------------------------------------------
def _failing_refund(shop: Shop, clock: FakeClock, **kw: Any) -> rs.Saga:
    shop.script(D, rs.Rejected("no"))
    shop.script(f"undo:{B}", *(ConnectionError(f"refund {i}") for i in range(3)))
    return order_saga(shop, long=True, clock=clock, undo_policy=retry(clock), **kw)


@pytest.mark.anyio
async def test_continue_on_compensation_error_undoes_the_rest_and_still_ends_stuck(
    clock: FakeClock,
) -> None:
    shop = Shop()
    saga = _failing_refund(shop, clock, continue_on_compensation_error=True)
    with pytest.raises(rs.SagaStuck) as info:
        await saga.run({}, saga_id="best-effort")
    assert info.value.step == B and info.value.reason == "compensation_failed"
    assert shop.order()[-1] == f"undo:{A}"  # went on past the failed undo of B
    result = info.value.result
    assert result.status is SagaStatus.STUCK  # never COMPENSATED with an undo missing

    fixed = await saga.admin.aretry("best-effort")  # refunds work again
    assert fixed.status is SagaStatus.COMPENSATED
    assert len(shop.invoked("undo", A)) == 1  # A's undo is done: not repeated
    assert len(shop.invoked("undo", B)) == 4


@pytest.mark.anyio
async def test_continue_on_compensation_error_names_every_failed_undo(clock: FakeClock) -> None:
    shop = Shop()
    shop.script(f"undo:{A}", *(ConnectionError(f"release {i}") for i in range(3)))
    saga = _failing_refund(shop, clock, continue_on_compensation_error=True)
    with pytest.raises(rs.SagaStuck) as info:
        await saga.run({}, saga_id="both")
    assert info.value.step == B
    assert "'charge_payment'" in str(info.value) and "'reserve_inventory'" in str(info.value)
    stuck = [e for e in saga.admin.timeline("both") if e.kind == LogKind.SAGA_STUCK]
    assert stuck[-1].data["failed_steps"] == [B, A]


@pytest.mark.anyio
async def test_by_default_a_failed_undo_stops_the_rollback(clock: FakeClock) -> None:
    shop = Shop()
    saga = _failing_refund(shop, clock)
    with pytest.raises(rs.SagaStuck):
        await saga.run({}, saga_id="strict")
    assert not shop.invoked("undo", A)


# -- environment and arguments ---------------------------------------------------------------------
def test_lease_and_recovery_interval_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESILIENT_SAGA_LEASE_SECONDS", "45s")
    monkeypatch.setenv("RESILIENT_SAGA_RECOVERY_INTERVAL", "500ms")
    saga = rs.Saga("env", lease=10.0)
    assert saga.lease == 45.0 and saga.recovery_interval == 0.5  # env wins over code
    monkeypatch.delenv("RESILIENT_SAGA_LEASE_SECONDS")
    monkeypatch.delenv("RESILIENT_SAGA_RECOVERY_INTERVAL")
    saga = rs.Saga("env")
    assert saga.lease == 30.0 and saga.recovery_interval == 10.0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RESILIENT_SAGA_LEASE_SECONDS", "soon"),
        ("RESILIENT_SAGA_LEASE_SECONDS", "0"),
        ("RESILIENT_SAGA_RECOVERY_INTERVAL", "-5s"),
        ("RESILIENT_SAGA_RECOVERY_INTERVAL", "0ms"),
    ],
)
def test_bad_saga_environment_raises_config_error_at_creation(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(rs.ConfigError) as info:
        rs.Saga("env-bad")
    assert variable in str(info.value) and repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"suspend_after": 0}, ValueError, "suspend_after must be > 0, got 0"),
        ({"recovery_interval": "1m"}, TypeError, "recovery_interval must be a number"),
        (
            {"continue_on_compensation_error": "yes"},
            TypeError,
            "continue_on_compensation_error must be a bool, got 'yes'",
        ),
    ],
)
def test_bad_new_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        rs.Saga("args", **kwargs)


# -- detach ----------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_detached_run_survives_the_callers_cancellation() -> None:
    store = rs.InMemorySagaStore()
    entered, release = anyio.Event(), anyio.Event()
    undone: list[str] = []
    finished = anyio.Event()
    saga = rs.Saga("detach", store=store, on_event=on_completed(finished))

    @saga.step
    async def reserve(ctx: rs.SagaContext) -> str:
        return "r1"

    @reserve.compensate
    async def unreserve(ctx: rs.SagaContext, done: str | None) -> None:
        undone.append(ctx.step)

    @saga.step
    async def charge(ctx: rs.SagaContext) -> str:
        entered.set()
        await release.wait()
        return "c1"

    caller = anyio.CancelScope()

    async def call() -> None:
        with caller:
            await saga.run({}, saga_id="d1", detach=True)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: saga.run_recovery_loop(interval=3600.0))
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(call)
            await entered.wait()
            caller.cancel()  # the client went away
            await anyio.wait_all_tasks_blocked()
            assert undone == []
            release.set()
            await finished.wait()
            tg.cancel_scope.cancel()
    rec = await store.load("d1")
    assert rec is not None and rec.status is SagaStatus.COMPLETED and undone == []
    result = await saga.run({}, saga_id="d1")
    assert result.value == "c1" and result.replayed


@pytest.mark.anyio
async def test_detached_run_returns_the_result_and_needs_the_loop() -> None:
    saga = rs.Saga("detach-2")

    @saga.step
    async def only(ctx: rs.SagaContext) -> int:
        return 7

    with pytest.raises(RuntimeError, match=r"needs saga\.run_recovery_loop"):
        await saga.run({}, detach=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: saga.run_recovery_loop(interval=3600.0))
        await anyio.wait_all_tasks_blocked()
        result = await saga.run({}, detach=True)
        tg.cancel_scope.cancel()
    assert result.value == 7 and result.status is SagaStatus.COMPLETED


def test_bad_durability_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("RESILIENT_SAGA_DURABILITY", "paranoid")
    monkeypatch.setenv("RESILIENT_SAGA_STORE", f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(rs.ConfigError, match="RESILIENT_SAGA_DURABILITY='paranoid'"):
        rs.Saga("env-durability")
