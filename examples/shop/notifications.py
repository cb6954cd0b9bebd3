"""The notifications service: tells customers about their orders, and suggests products.

A saga participant built on ``resilient.saga.ParticipantLedger``: the orders saga sends its
``notify`` step with ``participant_headers(ctx)`` and the ledger sends each notification once
per ``Idempotency-Key``. Several replicas may run side by side (``SHOP_REPLICA`` names each);
they share one ledger (``notifications.db`` in ``SHOP_DATA_DIR``), so the same notification
sent to two replicas — a hedged request — is still sent once.

Endpoints (JSON):

- ``POST /notifications`` ``{order_id, customer, text}``: send once per key (201; a repeated
  key answers what was sent, with 200). No undo: the saga sends it after its pivot.
- ``GET /notifications``: everything sent (by any replica).
- ``GET /recommendations/{customer}``: a few product suggestions; the orders service treats
  this read as non-critical and falls back to a cache when it fails.
- ``GET/POST /chaos``: the chaos switch (applies to ``notifications`` and
  ``recommendations`` unless told otherwise).
- ``GET /metrics``: Prometheus metrics.

Run: ``python -m examples.shop.notifications --port 0``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, request_response

from resilient.saga import LedgerCall, ParticipantLedger

from .common import ASGIApp, ChaosSwitch, health_route, metrics_route, run_service

__all__ = ["CATALOGUE", "create_app", "main", "recommend"]

CATALOGUE = ("kettle", "teapot", "mug", "tea-sampler", "strainer", "cosy", "honey", "biscuits")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS notifications (id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, "
    "order_id TEXT NOT NULL, customer TEXT NOT NULL, text TEXT NOT NULL, replica TEXT NOT NULL)"
)


def recommend(customer: str, count: int = 3) -> list[str]:
    """A stable pick of ``count`` products for ``customer`` (same customer, same picks)."""
    digest = hashlib.sha256(customer.encode()).digest()
    start = digest[0] % len(CATALOGUE)
    return [CATALOGUE[(start + i) % len(CATALOGUE)] for i in range(count)]


def create_app() -> ASGIApp:
    """The notifications ASGI app (replica ``SHOP_REPLICA``, ledger in ``SHOP_DATA_DIR``)."""
    replica = os.environ.get("SHOP_REPLICA", "1")
    data_dir = Path(
        os.environ.get("SHOP_DATA_DIR") or tempfile.mkdtemp(prefix="shop-notifications-")
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    ledger = ParticipantLedger(data_dir / "notifications.db")
    with ledger.transaction() as conn:
        conn.execute(_SCHEMA)
    chaos = ChaosSwitch("notifications", ["notifications", "recommendations"])

    def notify(call: LedgerCall) -> dict[str, Any]:
        body = call.body if isinstance(call.body, dict) else {}
        sent = {
            "order_id": str(body.get("order_id") or call.key.rsplit(":", 1)[0]),
            "customer": str(body.get("customer", "")),
            "text": str(body.get("text", "")),
            "replica": replica,
        }
        call.conn.execute(
            "INSERT INTO notifications (key, order_id, customer, text, replica) "
            "VALUES (?, ?, ?, ?, ?)",
            (call.key, *sent.values()),
        )
        return {"key": call.key, **sent}

    def read_sent() -> list[dict[str, Any]]:
        with ledger.transaction() as conn:
            rows = conn.execute(
                "SELECT key, order_id, customer, text, replica FROM notifications ORDER BY id"
            ).fetchall()
        names = ("key", "order_id", "customer", "text", "replica")
        return [dict(zip(names, row, strict=True)) for row in rows]

    async def list_sent(request: Request) -> JSONResponse:
        return JSONResponse({"notifications": await anyio.to_thread.run_sync(read_sent)})

    async def recommendations(request: Request) -> JSONResponse:
        customer = str(request.path_params["customer"])
        return JSONResponse({"customer": customer, "products": recommend(customer)})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            ledger.close()

    return Starlette(
        routes=[
            health_route("notifications", replica=replica),
            metrics_route(),
            chaos.route(),
            Route(
                "/notifications",
                chaos.guard("notifications", ledger.forward_endpoint(notify)),
                methods=["POST"],
            ),
            Route("/notifications", list_sent, methods=["GET"]),
            Route(
                "/recommendations/{customer}",
                chaos.guard("recommendations", request_response(recommendations)),
                methods=["GET"],
            ),
        ],
        lifespan=lifespan,
    )


def main(argv: Iterable[str] | None = None) -> None:
    """``python -m examples.shop.notifications --port N``."""
    run_service("notifications", create_app, argv)


if __name__ == "__main__":
    main()
