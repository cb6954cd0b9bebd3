"""The payments service: charges and refunds, each exactly once, never a charge after its refund.

A saga participant built on ``resilient.saga.ParticipantLedger`` (SQLite, ``payments.db`` in
``SHOP_DATA_DIR``): every request is keyed by its ``Idempotency-Key`` header (and fenced by
``Saga-Epoch``), which the orders service sends with ``participant_headers(ctx)``.

Endpoints (JSON):

- ``POST /charges`` ``{order_id, amount_cents}``: charge once per key (201; a repeated key
  answers the first charge with 200). Amounts above ``DECLINE_ABOVE_CENTS`` are declined with
  402 (a business "no", recorded: asking again gets the same answer). A charge arriving
  *after* the refund of its key (a slow request the orders service had given up on) is
  refused with 409 and charges nothing: the refund left a tombstone.
- ``POST /refunds`` (key ``<order>:charge:undo``, no body needed): refund what the charge of
  that order charged (201), or nothing when it never happened (200, body ``null``; the
  tombstone then refuses a late charge). Once per key.
- ``GET /ledger``: every charge and refund, so a test can check "refunded exactly what it
  charged" per order.
- ``GET/POST /chaos``: the chaos switch (applies to ``charges`` unless told otherwise).
- ``GET /metrics``: Prometheus metrics, load shedding and chaos injections included.

The whole app sits behind ``resilient.asgi.LoadShedding`` with a bulkhead named
``payments-shed`` (``RESILIENT__PAYMENTS_SHED__BULKHEAD__MAX_CONCURRENT``, default 16):
past that many requests in flight, a request is answered ``503`` with ``Retry-After: 1``
before its body is read, and the orders service's client waits that long before retrying.

Run: ``python -m examples.shop.payments --port 0``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import resilient as rs
from resilient.asgi import LoadShedding
from resilient.saga import LedgerCall, ParticipantLedger

from .common import ASGIApp, ChaosSwitch, health_route, metrics_route, run_service

__all__ = ["DECLINE_ABOVE_CENTS", "SHED_PATHS_EXCLUDED", "charge", "create_app", "main", "refund"]

DECLINE_ABOVE_CENTS = 100_000

SHED_PATHS_EXCLUDED = frozenset({"/health", "/metrics", "/chaos", "/ledger"})
"""Paths load shedding never refuses: the operator's and the tests' view of the service."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS charges (id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, "
    "order_id TEXT NOT NULL, amount_cents INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS refunds (id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, "
    "order_id TEXT NOT NULL, amount_cents INTEGER NOT NULL)",
)


def charge(call: LedgerCall) -> dict[str, Any]:
    """The charge effect: runs once per key, inside the ledger's transaction."""
    body = call.body if isinstance(call.body, dict) else {}
    amount = body.get("amount_cents")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise rs.Rejected(f"amount_cents must be an int > 0, got {amount!r}")
    if amount > DECLINE_ABOVE_CENTS:
        raise rs.Rejected(f"declined: {amount} cents is above the limit")
    order_id = str(body.get("order_id") or call.key.rsplit(":", 1)[0])
    row = call.conn.execute(
        "INSERT INTO charges (key, order_id, amount_cents) VALUES (?, ?, ?)",
        (call.key, order_id, amount),
    )
    return {"charge_id": f"ch_{row.lastrowid}", "order_id": order_id, "amount_cents": amount}


def refund(call: LedgerCall) -> dict[str, Any]:
    """The refund effect: runs only when the charge happened; ``call.done`` is its result."""
    done = call.done
    row = call.conn.execute(
        "INSERT INTO refunds (key, order_id, amount_cents) VALUES (?, ?, ?)",
        (call.key, done["order_id"], done["amount_cents"]),
    )
    return {"refund_id": f"re_{row.lastrowid}", **done}


def create_app() -> ASGIApp:
    """The payments ASGI app: ledger in ``SHOP_DATA_DIR`` (a temp dir by default), chaos off,
    behind load shedding."""
    data_dir = Path(os.environ.get("SHOP_DATA_DIR") or tempfile.mkdtemp(prefix="shop-payments-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    ledger = ParticipantLedger(data_dir / "payments.db")
    with ledger.transaction() as conn:
        for statement in _SCHEMA:
            conn.execute(statement)
    chaos = ChaosSwitch("payments", ["charges", "refunds"], defaults=["charges"])

    def read_ledger() -> dict[str, list[dict[str, Any]]]:
        with ledger.transaction() as conn:
            return {
                table: [
                    {"key": key, "order_id": order_id, "amount_cents": cents}
                    for key, order_id, cents in conn.execute(
                        f"SELECT key, order_id, amount_cents FROM {table} ORDER BY id"
                    )
                ]
                for table in ("charges", "refunds")
            }

    async def ledger_view(request: Request) -> JSONResponse:
        return JSONResponse(await anyio.to_thread.run_sync(read_ledger))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            ledger.close()

    app = Starlette(
        routes=[
            health_route("payments"),
            metrics_route(),
            chaos.route(),
            Route(
                "/charges",
                chaos.guard("charges", ledger.forward_endpoint(charge, rejected_status=402)),
                methods=["POST"],
            ),
            Route(
                "/refunds", chaos.guard("refunds", ledger.undo_endpoint(refund)), methods=["POST"]
            ),
            Route("/ledger", ledger_view, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    shed = rs.Bulkhead.from_env("payments-shed", max_concurrent=16)
    return LoadShedding(app, shed, exclude_paths=SHED_PATHS_EXCLUDED)


def main(argv: Iterable[str] | None = None) -> None:
    """``python -m examples.shop.payments --port N``."""
    run_service("payments", create_app, argv)


if __name__ == "__main__":
    main()
