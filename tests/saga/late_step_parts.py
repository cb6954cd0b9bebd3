"""The parts of the late-step test (``test_late_steps.py``): three participants of one ``charge``
step, and the saga that calls them.

* ``payments`` is an HTTP service (``python late_step_parts.py serve DB FD``, uvicorn on an
  inherited listening socket) whose endpoints are ``resilient.saga.ParticipantLedger``
  endpoints: ``POST /charges`` (forward) and ``POST /refunds`` (undo), keyed by the
  ``Idempotency-Key`` and ``Saga-Epoch`` headers the saga sends (``participant_headers``);
* ``bank`` writes through ``resilient.saga.barrier`` in its own SQLite file;
* ``points`` deduplicates on ``ctx.idempotency_key`` only (``resilient.saga.testing.Ledger``),
  and its undo looks the effect up by the step's key: what docs/saga.md says is *not* enough.

The ``charge`` step of the owning process (``late_step_child.py``) announces itself and waits
for a line on stdin before calling anything, so the test can freeze it (SIGSTOP) exactly
there; the recovering process's ``charge`` fails at once, so its compensation runs with
``done=None`` while the frozen owner's calls are still to come.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

import resilient as rs
from resilient.saga import LedgerCall, ParticipantLedger, barrier, participant_headers
from resilient.saga.testing import Ledger

STEP = "charge"
CENTS = 1200


# -- the HTTP participant ------------------------------------------------------------------------
def payments_app(db: str) -> Any:
    """The payments service: a ParticipantLedger in the service's own SQLite file."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    ledger = ParticipantLedger(db)
    with ledger.transaction() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS charges (key TEXT PRIMARY KEY, cents INT)")
        conn.execute("CREATE TABLE IF NOT EXISTS refunds (key TEXT PRIMARY KEY, cents INT)")

    @ledger.forward_endpoint
    def charges(call: LedgerCall) -> dict[str, Any]:
        call.conn.execute("INSERT INTO charges VALUES (?, ?)", (call.key, call.body["cents"]))
        return {"charged": call.body["cents"]}

    @ledger.undo_endpoint
    def refunds(call: LedgerCall) -> dict[str, Any]:
        cents = call.done["charged"]
        call.conn.execute("INSERT INTO refunds VALUES (?, ?)", (call.key, cents))
        return {"refunded": cents}

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/charges", charges, methods=["POST"]),
            Route("/refunds", refunds, methods=["POST"]),
            Route("/health", health),
        ]
    )


def payments_rows(db: str | Path) -> dict[str, list[tuple[Any, ...]]]:
    """What the payments service holds: its business rows and its ledger."""
    with sqlite3.connect(db) as conn:
        return {
            "charges": conn.execute("SELECT key, cents FROM charges").fetchall(),
            "refunds": conn.execute("SELECT key, cents FROM refunds").fetchall(),
            "ledger": conn.execute(
                "SELECT key, state, epoch FROM resilient_participant_ledger"
            ).fetchall(),
        }


# -- the SQL participant -------------------------------------------------------------------------
def bank_moves(db: str | Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS moves (key TEXT, kind TEXT)")
        return conn.execute("SELECT key, kind FROM moves ORDER BY rowid").fetchall()


def _bank_write(db: str, ctx: rs.SagaContext, kind: str) -> bool:
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS moves (key TEXT, kind TEXT)")
        conn.execute("BEGIN IMMEDIATE")
        wrote = barrier(conn, ctx)
        if wrote:
            conn.execute("INSERT INTO moves VALUES (?, ?)", (ctx.idempotency_key, kind))
        conn.execute("COMMIT")
        return wrote
    finally:
        conn.close()


# -- the saga ------------------------------------------------------------------------------------
def late_saga(
    store: rs.SagaStore,
    dirs: dict[str, str],
    *,
    before_calls: Callable[[], None] | None = None,
    clock: Callable[[], float] | None = None,
    report: dict[str, Any] | None = None,
) -> rs.Saga:
    """One step, ``charge``, calling the three participants, with a compensation undoing
    each. ``before_calls``: run at the start of ``charge`` (the owner waits there; ``None``:
    this process's ``charge`` fails before calling anything). ``report`` collects what the
    participants answered to this process."""
    out = report if report is not None else {}
    points = Ledger(dirs["points"])
    saga = rs.Saga("late-step", store=store, clock=clock)

    def charge(ctx: rs.SagaContext) -> dict[str, Any]:
        if before_calls is None:
            raise ConnectionError("payments unreachable from this process")
        before_calls()
        out["epoch"] = ctx.epoch
        response = httpx.post(
            f"{dirs['payments']}/charges",
            json={"cents": CENTS},
            headers=participant_headers(ctx),
            timeout=30,
        )
        out["payments"] = [response.status_code, response.headers.get("saga-ledger-outcome")]
        out["bank"] = _bank_write(dirs["bank"], ctx, "charge")
        out["points"] = points.apply(ctx.idempotency_key, "charge")
        return {"charged": CENTS}

    def refund(ctx: rs.SagaContext, done: dict[str, Any] | None) -> None:
        out["undo_done"] = done
        response = httpx.post(
            f"{dirs['payments']}/refunds", headers=participant_headers(ctx), timeout=30
        )
        response.raise_for_status()
        out["refund"] = [response.status_code, response.headers.get("saga-ledger-outcome")]
        _bank_write(dirs["bank"], ctx, "refund")
        # key-only: undo what is recorded under the step's key, if anything
        if points.has(f"{ctx.saga_id}:{ctx.step}"):
            points.apply(ctx.idempotency_key, "refund")

    saga.add_step(STEP, charge, compensate=refund)
    return saga


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        import uvicorn

        uvicorn.run(payments_app(sys.argv[2]), fd=int(sys.argv[3]), log_level="warning")
