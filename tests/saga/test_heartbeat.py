"""Leases are renewed while a step runs, and a run whose lease was taken over stops (at
once: not retried by the step's policy).

These wait for the heartbeat (every ``lease / 3`` seconds of real time) to act, bounded by
generous deadlines: they assert what happens, never how fast.
"""

from __future__ import annotations

import threading
import time

import anyio
import pytest

import resilient as rs
from resilient.testing import FakeClock

LEASE = 0.3


async def _lease_until(store: rs.InMemorySagaStore, saga_id: str) -> float:
    record = await store.load(saga_id)
    assert record is not None
    return record.lease_until


@pytest.mark.anyio
async def test_lease_is_renewed_while_a_step_runs() -> None:
    store = rs.InMemorySagaStore()
    saga = rs.Saga("heartbeat", store=store, lease=LEASE)
    renewals: list[float] = []

    @saga.step
    async def slow(ctx: rs.SagaContext) -> str:
        first = await _lease_until(store, ctx.saga_id)
        with anyio.fail_after(20):
            while len(renewals) < 2:
                current = await _lease_until(store, ctx.saga_id)
                if current > (renewals[-1] if renewals else first):
                    renewals.append(current)
                await anyio.sleep(0.01)
        return "done"

    result = await saga.run({}, saga_id="beat-1")
    assert result.status is rs.SagaStatus.COMPLETED
    assert len(renewals) == 2 and renewals[0] < renewals[1]


@pytest.mark.anyio
async def test_a_run_whose_lease_was_taken_over_stops_with_stale_epoch() -> None:
    store = rs.InMemorySagaStore()
    saga = rs.Saga("takeover", store=store, lease=LEASE)
    cancelled = anyio.Event()
    after_step: list[str] = []

    @saga.step
    async def hang(ctx: rs.SagaContext) -> str:
        # another process takes the saga over (epoch + 1) while this step still runs
        taken = await store.take(ctx.saga_id, "other-node", time.monotonic(), 60.0)
        assert taken is not None
        try:
            await anyio.sleep(20)
        except BaseException:
            cancelled.set()
            raise
        return "never"

    @saga.step
    async def next_step(ctx: rs.SagaContext) -> None:
        after_step.append("ran")

    with anyio.fail_after(20), pytest.raises(rs.StaleEpoch) as info:
        await saga.run({}, saga_id="taken-1")
    assert cancelled.is_set(), "the in-flight step is cancelled when renewal fails"
    assert after_step == [], "a fenced-out run makes no further invocation"
    # the heartbeat found the takeover, and names the epoch the run lost to
    assert (info.value.epoch, info.value.current, info.value.heartbeat) == (1, 2, True)
    assert "epoch 2" in str(info.value) and "None" not in str(info.value)


def test_a_sync_run_whose_lease_was_taken_over_names_the_epoch_it_lost_to() -> None:
    renewal_refused = threading.Event()

    class Watched(rs.InMemorySagaStore):
        def renew_sync(self, saga_id: str, owner: str, epoch: int, lease_until: float) -> bool:
            ok = super().renew_sync(saga_id, owner, epoch, lease_until)
            if not ok:
                renewal_refused.set()
            return ok

    store = Watched()
    saga = rs.Saga("takeover-sync", store=store, lease=LEASE)

    @saga.step
    def hang(ctx: rs.SagaContext) -> str:
        assert store.take_sync(ctx.saga_id, "other-node", time.monotonic(), 60.0) is not None
        assert renewal_refused.wait(20)  # the lease keeper thread found the takeover
        return "late"

    with pytest.raises(rs.StaleEpoch) as info:
        saga.run_sync({}, saga_id="taken-sync-1")
    assert (info.value.epoch, info.value.current) == (1, 2)
    assert "epoch 2" in str(info.value) and "None" not in str(info.value)


def test_stale_epoch_messages_never_say_none() -> None:
    found = rs.StaleEpoch("s", 3, None, True)
    assert "lease heartbeat" in str(found) and "epoch 3" in str(found)
    refused = rs.StaleEpoch("s", 3)
    assert "None" not in str(found) + str(refused)
    assert "is now at epoch 4" in str(rs.StaleEpoch("s", 3, 4))


@pytest.mark.anyio
async def test_a_failing_lease_renewal_does_not_roll_the_saga_back() -> None:
    # a store blip during renewal is not a lost lease: the epoch fence still protects the
    # saga, so the run carries on (like the sync lease keeper) instead of compensating
    renew_failed = anyio.Event()

    class FlakyRenewStore(rs.InMemorySagaStore):
        def renew_sync(self, saga_id: str, owner: str, epoch: int, lease_until: float) -> bool:
            if not renew_failed.is_set():
                renew_failed.set()
                raise OSError("store unreachable for a moment")
            return super().renew_sync(saga_id, owner, epoch, lease_until)

    saga = rs.Saga("flaky-renew", store=FlakyRenewStore(), lease=LEASE)
    undone: list[str] = []

    @saga.step
    async def wait_for_blip(ctx: rs.SagaContext) -> str:
        with anyio.fail_after(20):
            await renew_failed.wait()
        return "done"

    @wait_for_blip.compensate
    async def undo(ctx: rs.SagaContext, done: str | None) -> None:
        undone.append(ctx.step)

    result = await saga.run({}, saga_id="blip-1")
    assert result.status is rs.SagaStatus.COMPLETED
    assert undone == []


def test_a_fenced_out_attempt_is_not_retried_by_the_step_policy_sync() -> None:
    store = rs.InMemorySagaStore()
    clock = FakeClock()
    retry = rs.Retry(attempts=5, wait=60.0, sleep=clock.sleep)
    saga = rs.Saga("fenced", store=store)
    calls: list[int] = []

    @saga.step(policy=retry)
    def flaky(ctx: rs.SagaContext) -> None:
        calls.append(ctx.attempt)
        store.take_sync(ctx.saga_id, "other-node", time.monotonic(), 60.0)  # epoch + 1
        raise ConnectionError("and then the dependency failed too")

    with pytest.raises(rs.StaleEpoch):
        saga.run_sync({}, saga_id="fenced-1")
    assert calls == [1], "no second attempt by a run that lost the saga"
    assert clock.sleeps == [], "no backoff slept by a fenced-out run"


@pytest.mark.anyio
async def test_a_fenced_out_attempt_is_not_retried_by_the_step_policy_async() -> None:
    store = rs.InMemorySagaStore()
    clock = FakeClock()
    retry = rs.Retry(attempts=5, wait=60.0, sleep=clock.sleep)
    saga = rs.Saga("fenced", store=store)
    calls: list[int] = []

    @saga.step(policy=retry)
    async def flaky(ctx: rs.SagaContext) -> None:
        calls.append(ctx.attempt)
        await store.take(ctx.saga_id, "other-node", time.monotonic(), 60.0)
        raise ConnectionError("and then the dependency failed too")

    with anyio.fail_after(20), pytest.raises(rs.StaleEpoch):
        await saga.run({}, saga_id="fenced-1")
    assert calls == [1], "no second attempt by a run that lost the saga"
    assert clock.sleeps == [], "no backoff slept by a fenced-out run"
