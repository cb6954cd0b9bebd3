"""``resilient.saga.ParticipantLedger``: forward / undo / null-undo / late-forward / epoch
semantics on SQLite and PostgreSQL, atomicity with the participant's own writes, a forward
racing its undo, the ASGI endpoints, and ``ctx.epoch`` / ``participant_headers`` on the saga
side. (The real-process scenario is ``test_late_steps.py``.)"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

import resilient as rs
from resilient.saga import (
    EPOCH_HEADER,
    IDEMPOTENCY_HEADER,
    LedgerCall,
    ParticipantLedger,
    participant_headers,
)
from resilient.saga.testing import CrashPoint, SimulatedCrash, crash_at
from resilient.testing import FakeClock

DSN = os.environ.get("RESILIENT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_problem() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'resilient-patterns[postgres]')"
    try:
        psycopg.connect(DSN, connect_timeout=2).close()
    except psycopg.Error as err:
        return f"PostgreSQL not reachable at {DSN}: {str(err).strip()[:200]}"
    return None


_PG = _pg_problem()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ParticipantLedger]:
    """A ledger (and a ``moves`` business table in the same database) per backend."""
    if request.param == "sqlite":
        made = ParticipantLedger(tmp_path / "participant.db")
        table = "moves"
    else:
        if _PG is not None:
            pytest.skip(_PG)
        suffix = uuid.uuid4().hex[:10]
        made = ParticipantLedger(DSN, table=f"ledger_{suffix}")
        table = f"moves_{suffix}"
    with made.transaction() as conn:
        conn.execute(f"CREATE TABLE {table} (key TEXT, kind TEXT, cents INTEGER)")
    made.moves = table  # type: ignore[attr-defined]
    yield made
    if request.param == "postgres":
        with made.transaction() as conn:
            conn.execute(f"DROP TABLE {table}")
            conn.execute(f"DROP TABLE {made.table}")
    made.close()


def _mark(ledger: ParticipantLedger) -> str:
    return "?" if ledger.kind == "sqlite" else "%s"


def charge(ledger: ParticipantLedger, cents: int = 500) -> Any:
    def effect(call: LedgerCall) -> dict[str, Any]:
        m = _mark(ledger)
        call.conn.execute(
            f"INSERT INTO {ledger.moves} VALUES ({m}, 'charge', {m})",  # type: ignore[attr-defined]
            (call.key, cents),
        )
        return {"charged": cents}

    return effect


def refund(ledger: ParticipantLedger) -> Any:
    def effect(call: LedgerCall) -> dict[str, Any]:
        cents = call.done["charged"]
        m = _mark(ledger)
        call.conn.execute(
            f"INSERT INTO {ledger.moves} VALUES ({m}, 'refund', {m})",  # type: ignore[attr-defined]
            (call.key, -cents),
        )
        return {"refunded": cents}

    return effect


def moves(ledger: ParticipantLedger) -> list[tuple[str, str, int]]:
    with ledger.transaction() as conn:
        rows = conn.execute(f"SELECT key, kind, cents FROM {ledger.moves}").fetchall()  # type: ignore[attr-defined]
    return sorted(tuple(r) for r in rows)


def test_forward_repeat_undo_and_late_forward(ledger: ParticipantLedger) -> None:
    first = ledger.forward("s1:charge", charge(ledger))
    assert (first.kind, first.result, first.applied) == ("applied", {"charged": 500}, True)
    again = ledger.forward("s1:charge", charge(ledger, 999))
    assert (again.kind, again.result, again.applied) == ("repeat", {"charged": 500}, False)
    undone = ledger.undo("s1:charge:undo", refund(ledger))
    assert (undone.kind, undone.result) == ("applied", {"refunded": 500})
    assert ledger.undo("s1:charge:undo", refund(ledger)).kind == "repeat"
    assert ledger.forward("s1:charge", charge(ledger)).kind == "late"
    assert moves(ledger) == [("s1:charge", "charge", 500), ("s1:charge", "refund", -500)]
    entry = ledger.entry("s1:charge:undo")
    assert entry is not None and entry.state == "undone"
    assert entry.result == {"charged": 500} and entry.undo_result == {"refunded": 500}


def test_null_undo_leaves_a_tombstone_that_stops_a_late_forward(
    ledger: ParticipantLedger,
) -> None:
    calls: list[str] = []

    def never(call: LedgerCall) -> None:
        calls.append(call.key)

    null = ledger.undo("s2:charge:undo", never)
    assert (null.kind, null.result) == ("null_undo", None) and calls == []
    assert ledger.undo("s2:charge:undo", never).kind == "repeat"
    late = ledger.forward("s2:charge", charge(ledger))
    assert (late.kind, late.applied) == ("late", False)
    assert moves(ledger) == [] and calls == []
    entry = ledger.entry("s2:charge")
    assert entry is not None and entry.state == "tombstone"


def test_rejected_forward_is_recorded_and_rolled_back(ledger: ParticipantLedger) -> None:
    def decline(call: LedgerCall) -> None:
        charge(ledger)(call)  # written, then rolled back with the "no"
        raise rs.Rejected("card declined")

    no = ledger.forward("s3:charge", decline)
    assert (no.kind, no.result) == ("rejected", {"error": "card declined"})
    assert ledger.forward("s3:charge", charge(ledger)).kind == "rejected"  # a "no" stays a no
    assert ledger.undo("s3:charge:undo", refund(ledger)).kind == "null_undo"
    assert ledger.forward("s3:charge", charge(ledger)).kind == "late"
    assert moves(ledger) == []


def test_failing_effect_records_nothing(ledger: ParticipantLedger) -> None:
    def broken(call: LedgerCall) -> None:
        charge(ledger)(call)
        raise ConnectionError("the card network hung up")

    with pytest.raises(ConnectionError):
        ledger.forward("s4:charge", broken)
    assert ledger.entry("s4:charge") is None and moves(ledger) == []
    assert ledger.forward("s4:charge", charge(ledger)).kind == "applied"  # the retry runs it
    with pytest.raises(TypeError, match="JSON"):
        ledger.forward("s5:charge", lambda call: object())
    assert ledger.entry("s5:charge") is None


def test_epoch_fences_a_caller_that_was_taken_over(ledger: ParticipantLedger) -> None:
    assert ledger.forward("s6:charge", charge(ledger), epoch=2).kind == "applied"
    stale = ledger.forward("s6:charge", charge(ledger), epoch=1)
    assert (stale.kind, stale.epoch, stale.result) == ("stale", 2, None)
    assert ledger.forward("s6:charge", charge(ledger), epoch=3).kind == "repeat"
    assert ledger.undo("s6:charge:undo", refund(ledger), epoch=2).kind == "stale"
    assert ledger.undo("s6:charge:undo", refund(ledger), epoch=3).kind == "applied"
    late = ledger.forward("s6:charge", charge(ledger), epoch=1)
    assert late.kind == "late"  # compensated says more than stale
    entry = ledger.entry("s6:charge")
    assert entry is not None and entry.epoch == 3
    assert moves(ledger) == [("s6:charge", "charge", 500), ("s6:charge", "refund", -500)]


def test_a_forward_racing_its_undo_never_leaves_an_effect_behind(
    ledger: ParticipantLedger,
) -> None:
    keys = [f"race{i}:charge" for i in range(24)]
    barrier = threading.Barrier(2)
    outcomes: dict[str, list[str]] = {key: [] for key in keys}

    def run(phase: str) -> None:
        for key in keys:
            barrier.wait(timeout=60)
            if phase == "forward":
                done = ledger.forward(key, charge(ledger))
            else:
                done = ledger.undo(f"{key}:undo", refund(ledger))
            outcomes[key].append(f"{phase}:{done.kind}")

    threads = [threading.Thread(target=run, args=(p,)) for p in ("forward", "undo")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for key in keys:
        assert sorted(outcomes[key]) in (
            ["forward:applied", "undo:applied"],  # the forward won: undone
            ["forward:late", "undo:null_undo"],  # the undo won: the forward is late
        ), outcomes[key]
    assert sum(cents for _, _, cents in moves(ledger)) == 0


def test_bad_input(tmp_path: Path) -> None:
    ledger = ParticipantLedger(tmp_path / "p.db")
    with pytest.raises(ValueError, match="undo"):
        ledger.undo("s1:charge")
    with pytest.raises(ValueError, match="key"):
        ledger.forward("", charge(ledger))
    with pytest.raises(TypeError, match="effect"):
        ledger.forward("s1:charge", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epoch"):
        ledger.forward("s1:charge", charge(ledger), epoch=-1)
    with pytest.raises(ValueError, match="table"):
        ParticipantLedger(tmp_path / "p.db", table="x; DROP TABLE y")
    with pytest.raises(ValueError, match="database"):
        ParticipantLedger("")
    with pytest.raises(ValueError, match="busy_timeout"):
        ParticipantLedger(tmp_path / "p.db", busy_timeout=-1)


@pytest.mark.anyio
async def test_async_calls(tmp_path: Path) -> None:
    ledger = ParticipantLedger(tmp_path / "p.db")
    assert (await ledger.aforward("a:charge", lambda call: 1, epoch=1)).kind == "applied"
    assert (await ledger.aundo("a:charge:undo", lambda call: call.done + 1)).result == 2
    assert (await ledger.aforward("a:charge", lambda call: 1)).kind == "late"


# -- the ASGI endpoints ----------------------------------------------------------------------------
def _app(ledger: ParticipantLedger) -> Starlette:
    @ledger.forward_endpoint(rejected_status=402)
    def charges(call: LedgerCall) -> dict[str, Any]:
        if call.body["cents"] > 10_000:
            raise rs.Rejected("above the limit")
        return {"charged": call.body["cents"], "epoch": call.epoch}

    refunds = ledger.undo_endpoint(lambda call: {"refunded": call.done["charged"]})
    return Starlette(
        routes=[
            Route("/charges", charges, methods=["POST"]),
            Route("/refunds", refunds, methods=["POST"]),
            Route("/cancel", ledger.undo_endpoint(), methods=["POST"]),
        ]
    )


@pytest.mark.anyio
async def test_endpoints(tmp_path: Path) -> None:
    ledger = ParticipantLedger(tmp_path / "p.db")
    transport = httpx.ASGITransport(app=_app(ledger))
    async with httpx.AsyncClient(transport=transport, base_url="http://payments") as client:

        async def post(path: str, key: str | None, body: Any = None, **headers: str) -> Any:
            h = {**headers, **({IDEMPOTENCY_HEADER: key} if key is not None else {})}
            return await client.post(path, json=body, headers=h)

        first = await post("/charges", "o1:charge", {"cents": 700}, **{EPOCH_HEADER: "1"})
        assert (first.status_code, first.json()) == (201, {"charged": 700, "epoch": 1})
        assert first.headers["saga-ledger-outcome"] == "applied"
        again = await post("/charges", "o1:charge", {"cents": 1})
        assert (again.status_code, again.json()) == (200, {"charged": 700, "epoch": 1})
        assert again.headers["saga-ledger-outcome"] == "repeat"
        undo = await post("/refunds", "o1:charge:undo", **{EPOCH_HEADER: "2"})
        assert (undo.status_code, undo.json()) == (201, {"refunded": 700})
        stale = await post("/charges", "o1:charge", {"cents": 700}, **{EPOCH_HEADER: "1"})
        assert stale.status_code == 409 and stale.json()["outcome"] == "late"

        null = await post("/cancel", "o2:charge:undo")
        assert (null.status_code, null.json()) == (200, None)
        assert null.headers["saga-ledger-outcome"] == "null_undo"
        late = await post("/charges", "o2:charge", {"cents": 700})
        assert late.status_code == 409 and late.headers["saga-ledger-outcome"] == "late"

        no = await post("/charges", "o3:charge", {"cents": 20_000})
        assert (no.status_code, no.json()) == (402, {"error": "above the limit"})

        await post("/charges", "o4:charge", {"cents": 5}, **{EPOCH_HEADER: "3"})
        older = await post("/charges", "o4:charge", {"cents": 5}, **{EPOCH_HEADER: "2"})
        assert older.status_code == 409 and older.json()["outcome"] == "stale"

        for path, key, body, headers, match in (
            ("/charges", None, {"cents": 1}, {}, IDEMPOTENCY_HEADER),
            ("/refunds", "o5:charge", None, {}, "undo"),
            ("/charges", "o5:charge", {"cents": 1}, {EPOCH_HEADER: "soon"}, "invalid literal"),
            ("/charges", "o5:charge", {"cents": 1}, {EPOCH_HEADER: "-1"}, EPOCH_HEADER),
        ):
            bad = await post(path, key, body, **headers)
            assert bad.status_code == 400 and match in bad.json()["error"], bad.json()
        raw = await client.post(
            "/charges", content=b"{not json", headers={IDEMPOTENCY_HEADER: "o6:charge"}
        )
        assert raw.status_code == 400
    assert ledger.entry("o5:charge") is None and ledger.entry("o6:charge") is None


# -- the saga side: ctx.epoch and participant_headers ----------------------------------------------
def test_ctx_epoch_grows_on_every_takeover(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    seen: list[tuple[str, int, dict[str, str]]] = []

    def build() -> rs.Saga:
        saga = rs.Saga("epochs", store=store, clock=clock)

        def pay(ctx: rs.SagaContext) -> None:
            seen.append((ctx.phase, ctx.epoch, participant_headers(ctx)))

        def refund(ctx: rs.SagaContext, done: None) -> None:
            seen.append((ctx.phase, ctx.epoch, participant_headers(ctx)))

        saga.add_step("pay", pay, compensate=refund)
        saga.add_step("ship", lambda ctx: (_ for _ in ()).throw(rs.Rejected("no stock")))
        return saga

    with crash_at(CrashPoint.AFTER_STEP_EFFECT, "pay"), pytest.raises(SimulatedCrash):
        build().run_sync({}, saga_id="e1")
    clock.advance(31)
    assert build().recover_sync().outcomes == {"e1": rs.SagaStatus.COMPENSATED}
    assert seen == [
        ("forward", 1, {IDEMPOTENCY_HEADER: "e1:pay", EPOCH_HEADER: "1"}),
        ("forward", 2, {IDEMPOTENCY_HEADER: "e1:pay", EPOCH_HEADER: "2"}),
        ("compensate", 2, {IDEMPOTENCY_HEADER: "e1:pay:undo", EPOCH_HEADER: "2"}),
    ]
    assert "epoch=2" in repr(rs.SagaContext("e1", {}, {}, "pay", epoch=2))


@pytest.mark.anyio
async def test_ctx_epoch_in_async_steps() -> None:
    saga = rs.Saga("epochs-async")
    epochs: list[int] = []

    @saga.step
    async def pay(ctx: rs.SagaContext) -> None:
        await anyio.lowlevel.checkpoint()
        epochs.append(ctx.epoch)

    await saga.run({}, saga_id="ea1")
    assert epochs == [1]
