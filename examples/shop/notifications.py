"""The notifications service: tells customers about their orders, and suggests products.

Endpoints (JSON):

- ``POST /notifications`` ``{idempotency_key, order_id, customer, text}``: send once per key
  (a repeated key is acknowledged without sending again).
- ``GET /notifications``: everything sent.
- ``GET /recommendations/{customer}``: a few product suggestions; the orders service treats
  this read as non-critical and falls back to a cache when it fails.
- ``GET/POST /chaos``: the fault switch (applies to ``notifications`` and
  ``recommendations`` unless told otherwise).

Run: ``python -m examples.shop.notifications --port 0``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .common import Chaos, ChaosFault, chaos_route, health_route, read_json, run_service

__all__ = ["CATALOGUE", "create_app", "main", "recommend"]

CATALOGUE = ("kettle", "teapot", "mug", "tea-sampler", "strainer", "cosy", "honey", "biscuits")


def recommend(customer: str, count: int = 3) -> list[str]:
    """A stable pick of ``count`` products for ``customer`` (same customer, same picks)."""
    digest = hashlib.sha256(customer.encode()).digest()
    start = digest[0] % len(CATALOGUE)
    return [CATALOGUE[(start + i) % len(CATALOGUE)] for i in range(count)]


def create_app() -> Starlette:
    """The notifications ASGI app (nothing sent yet, fault switch healthy)."""
    sent: dict[str, dict[str, Any]] = {}
    chaos = Chaos(endpoints=frozenset({"notifications", "recommendations"}))

    async def notify(request: Request) -> JSONResponse:
        try:
            body = await read_json(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        key = body.get("idempotency_key")
        if not isinstance(key, str) or not key:
            return JSONResponse({"error": f"idempotency_key must be a string, got {key!r}"}, 400)
        try:
            fail_after = await chaos.before("notifications")
        except ChaosFault as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        replayed = key in sent
        if not replayed:
            sent[key] = {
                "idempotency_key": key,
                "order_id": str(body.get("order_id", "")),
                "customer": str(body.get("customer", "")),
                "text": str(body.get("text", "")),
            }
        if fail_after:
            return JSONResponse({"error": "chaos: sent, then failed to answer"}, 503)
        return JSONResponse({**sent[key], "replayed": replayed}, 200 if replayed else 201)

    async def list_sent(request: Request) -> JSONResponse:
        return JSONResponse({"notifications": list(sent.values())})

    async def recommendations(request: Request) -> JSONResponse:
        customer = str(request.path_params["customer"])
        try:
            await chaos.before("recommendations")
        except ChaosFault as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse({"customer": customer, "products": recommend(customer)})

    return Starlette(
        routes=[
            health_route("notifications"),
            chaos_route(chaos),
            Route("/notifications", notify, methods=["POST"]),
            Route("/notifications", list_sent, methods=["GET"]),
            Route("/recommendations/{customer}", recommendations, methods=["GET"]),
        ]
    )


def main(argv: Iterable[str] | None = None) -> None:
    """``python -m examples.shop.notifications --port N``."""
    run_service("notifications", create_app, argv)


if __name__ == "__main__":
    main()
