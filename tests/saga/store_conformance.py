"""The saga store conformance suite (SAGA.md 4.7, scenario S26).

Every backend must pass it. Subclass :class:`StoreConformance` and provide a ``store``
fixture returning a fresh, empty store; the tests only use the async ``SagaStore`` protocol,
so an async-driver backend (PostgreSQL, Redis) can reuse them unchanged.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from resilient import StaleEpoch
from resilient.saga import (
    LogKind,
    NewSaga,
    SagaFilter,
    SagaLogEvent,
    SagaStatus,
    SagaStore,
)

NOW = 1_000.0


def new(
    saga_id: str = "s1", *, definition: str = "order@1", owner: str = "n1", **kw: Any
) -> NewSaga:
    fields: dict[str, Any] = {
        "id": saga_id,
        "definition": definition,
        "steps_hash": "h1",
        "input": '{"a":1}',
        "input_hash": "ih1",
        "deadline": None,
        "owner": owner,
        "lease_until": NOW + 30,
        "now": NOW,
        "trace_context": None,
        "events": (SagaLogEvent(LogKind.SAGA_CREATED, at=NOW),),
    }
    fields.update(kw)
    return NewSaga(**fields)


def ev(
    kind: str, step: str | None = None, attempt: int | None = None, body: str = ""
) -> SagaLogEvent:
    return SagaLogEvent(kind, step, attempt, body, NOW)


class StoreConformance:
    """Behaviour every ``SagaStore`` must have. Needs a ``store`` fixture."""

    pytestmark = pytest.mark.anyio

    async def test_create_inserts_once(self, store: SagaStore) -> None:
        first = await store.create(new())
        assert first.created
        rec = first.record
        assert (rec.status, rec.epoch, rec.owner, rec.recoveries) == (
            SagaStatus.RUNNING,
            1,
            "n1",
            0,
        )
        again = await store.create(new(input='{"a":2}', input_hash="other", owner="n2"))
        assert not again.created
        assert again.record.input_hash == "ih1" and again.record.owner == "n1"

    async def test_load_returns_log_in_order(self, store: SagaStore) -> None:
        assert await store.load("missing") is None
        await store.create(new())
        await store.append(
            "s1",
            1,
            [
                ev(LogKind.STEP_STARTED, "a", 1),
                ev(LogKind.STEP_SUCCEEDED, "a", 1, '{"result":{"x":[1,2]}}'),
            ],
        )
        await store.append("s1", 1, [ev(LogKind.STEP_STARTED, "b", 1)])
        rec = await store.load("s1")
        assert rec is not None
        assert [(e.seq, e.kind, e.step) for e in rec.events] == [
            (1, LogKind.SAGA_CREATED, None),
            (2, LogKind.STEP_STARTED, "a"),
            (3, LogKind.STEP_SUCCEEDED, "a"),
            (4, LogKind.STEP_STARTED, "b"),
        ]
        assert rec.results == {"a": {"x": [1, 2]}}
        assert rec.data == {"a": 1} and rec.definition == "order@1" and rec.version == 1

    async def test_append_is_fenced_by_epoch(self, store: SagaStore) -> None:
        await store.create(new())
        with pytest.raises(StaleEpoch) as info:
            await store.append("s1", 2, [ev(LogKind.STEP_STARTED, "a", 1)])
        assert info.value.epoch == 2 and info.value.current == 1
        rec = await store.load("s1")
        assert rec is not None and len(rec.events) == 1  # nothing written

    async def test_append_sets_status_and_schedule(self, store: SagaStore) -> None:
        await store.create(new())
        await store.append("s1", 1, [ev(LogKind.SAGA_COMPENSATING)], SagaStatus.COMPENSATING, 55.0)
        rec = await store.load("s1")
        assert rec is not None
        assert (rec.status, rec.next_attempt_at, rec.owner) == (SagaStatus.COMPENSATING, 55.0, "n1")
        await store.append("s1", 1, [ev(LogKind.SAGA_COMPENSATED)], SagaStatus.COMPENSATED)
        rec = await store.load("s1")
        assert rec is not None and rec.status is SagaStatus.COMPENSATED
        assert rec.owner is None and rec.lease_until == 0  # a finished saga holds no lease

    async def test_append_to_unknown_saga_fails(self, store: SagaStore) -> None:
        with pytest.raises(KeyError):
            await store.append("nope", 1, [ev(LogKind.STEP_STARTED, "a", 1)])

    async def test_claim_takes_only_due_expired_unfinished(self, store: SagaStore) -> None:
        await store.create(new("live"))  # lease until NOW + 30
        await store.create(new("expired", lease_until=NOW - 1))
        await store.create(new("later", lease_until=NOW - 1))
        await store.append("later", 1, [ev(LogKind.STEP_RETRY_SCHEDULED)], None, NOW + 100)
        await store.create(new("done", lease_until=NOW - 1))
        await store.append("done", 1, [ev(LogKind.SAGA_COMPLETED)], SagaStatus.COMPLETED)
        got = await store.claim("n2", NOW, 30.0, 10)
        assert [r.id for r in got] == ["expired"]
        rec = got[0]
        assert (rec.owner, rec.lease_until, rec.epoch, rec.recoveries) == ("n2", NOW + 30, 2, 1)
        assert await store.claim("n3", NOW, 30.0, 10) == []  # now leased by n2

    async def test_claim_bumps_epoch_and_fences_the_old_owner(self, store: SagaStore) -> None:
        await store.create(new(lease_until=NOW - 1))
        (rec,) = await store.claim("n2", NOW, 30.0, 1)
        with pytest.raises(StaleEpoch):
            await store.append("s1", 1, [ev(LogKind.STEP_STARTED, "a", 1)])
        await store.append("s1", rec.epoch, [ev(LogKind.STEP_STARTED, "a", 1)])
        assert not await store.renew("s1", "n1", 1, NOW + 99)

    async def test_claim_respects_limit_definitions_and_id(self, store: SagaStore) -> None:
        for i in range(3):
            await store.create(new(f"a{i}", lease_until=NOW - 1))
        await store.create(new("v2", definition="order@2", lease_until=NOW - 1))
        assert len(await store.claim("n2", NOW, 30.0, 2, definitions=["order@1"])) == 2
        got = await store.claim("n2", NOW, 30.0, 5, definitions=["order@2"])
        assert [r.id for r in got] == ["v2"]
        await store.create(new("x", lease_until=NOW - 1))
        assert await store.claim("n2", NOW, 30.0, 5, saga_id="x", definitions=["order@2"]) == []
        assert [r.id for r in await store.claim("n2", NOW, 30.0, 5, saga_id="x")] == ["x"]

    async def test_concurrent_claims_never_share_a_saga(self, store: SagaStore) -> None:
        for i in range(20):
            await store.create(new(f"c{i:02d}", lease_until=NOW - 1))
        claimed: list[list[str]] = [[], [], [], []]

        async def worker(n: int) -> None:
            while True:
                got = await store.claim(f"w{n}", NOW, 30.0, 1)
                if not got:
                    return
                claimed[n].extend(r.id for r in got)

        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(worker, n)
        flat = [sid for ids in claimed for sid in ids]
        assert sorted(flat) == [f"c{i:02d}" for i in range(20)]

    async def test_progress_resets_recoveries(self, store: SagaStore) -> None:
        await store.create(new(lease_until=NOW - 1))
        (rec,) = await store.claim("n2", NOW, 1.0, 1)
        await store.append(
            "s1", rec.epoch, [ev(LogKind.SAGA_RECOVERED), ev(LogKind.STEP_STARTED, "a", 1)]
        )
        (rec,) = await store.claim("n3", NOW + 5, 1.0, 1)
        assert rec.recoveries == 2  # restarting a step is not progress
        await store.append("s1", rec.epoch, [ev(LogKind.STEP_SUCCEEDED, "a", 1, '{"result":1}')])
        loaded = await store.load("s1")
        assert loaded is not None and loaded.recoveries == 0

    async def test_renew_and_release(self, store: SagaStore) -> None:
        await store.create(new())
        assert await store.renew("s1", "n1", 1, NOW + 60)
        assert not await store.renew("s1", "other", 1, NOW + 90)
        rec = await store.load("s1")
        assert rec is not None and rec.lease_until == NOW + 60
        await store.release("s1", "other", 1)  # not the owner: no effect
        assert await store.claim("n2", NOW, 30.0, 1) == []
        await store.release("s1", "n1", 1)
        got = await store.claim("n2", NOW, 30.0, 1)
        assert [r.id for r in got] == ["s1"]
        await store.append("s1", 2, [ev(LogKind.SAGA_COMPLETED)], SagaStatus.COMPLETED)
        assert not await store.renew("s1", "n2", 2, NOW + 99)  # finished: nothing to hold

    async def test_take_fences_any_status(self, store: SagaStore) -> None:
        assert await store.take("missing", "op", NOW, 30.0) is None
        await store.create(new())
        await store.append("s1", 1, [ev(LogKind.SAGA_STUCK)], SagaStatus.STUCK)
        taken = await store.take("s1", "op", NOW, 30.0)
        assert taken is not None and (taken.epoch, taken.owner) == (2, "op")
        assert taken.status is SagaStatus.STUCK and taken.recoveries == 0
        with pytest.raises(StaleEpoch):
            await store.append("s1", 1, [ev(LogKind.ADMIN)])

    async def test_query_filters(self, store: SagaStore) -> None:
        await store.create(new("a"))
        await store.create(new("b", definition="order@2"))
        await store.create(new("c", definition="other@1"))
        await store.create(new("d", definition="order_x@1"))
        await store.create(new("e", definition="Order@1"))  # names are case-sensitive
        await store.append("b", 1, [ev(LogKind.SAGA_STUCK)], SagaStatus.STUCK)
        names = {r.id for r in await store.query(SagaFilter(name="order"))}
        assert names == {"a", "b"}
        stuck = await store.query(SagaFilter(name="order", statuses=(SagaStatus.STUCK,)))
        assert [(r.id, r.definition, r.steps_hash) for r in stuck] == [("b", "order@2", "h1")]
        assert [r.id for r in await store.query(SagaFilter(saga_id="c"))] == ["c"]
        assert len(await store.query(SagaFilter(limit=2))) == 2
