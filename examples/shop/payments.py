"""The payments service: charges and refunds, each exactly once per idempotency key.

Endpoints (JSON):

- ``POST /charges`` ``{idempotency_key, order_id, amount_cents}``: charge once per key; a
  repeated key returns the first charge (``"replayed": true``) instead of charging twice.
  Amounts above ``DECLINE_ABOVE_CENTS`` are declined with 402 (a business "no", not an outage).
- ``POST /refunds`` ``{idempotency_key, charge_key, order_id}``: refund whatever was charged
  under ``charge_key`` (0 when nothing was: the charge may never have happened), once per key.
  A charge that arrives *after* the refund of its key (a slow request the orders service had
  already given up on) is refused with 409: it was cancelled before it happened.
- ``GET /ledger``: every charge and refund, so a test can check "refunded exactly what it
  charged" per order.
- ``GET/POST /chaos``: the fault switch (applies to ``charges`` unless told otherwise).

Run: ``python -m examples.shop.payments --port 0``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .common import Chaos, ChaosFault, chaos_route, health_route, read_json, run_service

__all__ = ["DECLINE_ABOVE_CENTS", "LateCharge", "Ledger", "create_app", "main"]

DECLINE_ABOVE_CENTS = 100_000


class LateCharge(Exception):
    """A charge arrived after its refund: refusing it keeps "refunded == charged" true."""


class Ledger:
    """Charges and refunds by idempotency key (in memory; one event loop, no awaits inside)."""

    def __init__(self) -> None:
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self._refunded_charges: set[str] = set()
        self._ids = itertools.count(1)

    def charge(self, key: str, order_id: str, amount_cents: int) -> tuple[dict[str, Any], bool]:
        """Charge once per ``key``; returns (charge, replayed). Raises :class:`LateCharge`
        when the key was already refunded (the refund cancelled a charge still in flight)."""
        found = self.charges.get(key)
        if found is not None:
            return found, True
        if key in self._refunded_charges:
            raise LateCharge(f"charge {key!r} was cancelled by a refund before it arrived")
        charge = {
            "charge_id": f"ch_{next(self._ids)}",
            "idempotency_key": key,
            "order_id": order_id,
            "amount_cents": amount_cents,
        }
        self.charges[key] = charge
        return charge, False

    def refund(self, key: str, charge_key: str, order_id: str) -> tuple[dict[str, Any], bool]:
        """Refund the charge made under ``charge_key`` once per ``key``; returns
        (refund, replayed). A charge is refunded at most once whatever the refund key."""
        found = self.refunds.get(key)
        if found is not None:
            return found, True
        charge = self.charges.get(charge_key)
        amount = 0
        if charge is not None and charge_key not in self._refunded_charges:
            amount = int(charge["amount_cents"])
        # Remember the key even when nothing was charged yet, so a late charge is refused.
        self._refunded_charges.add(charge_key)
        refund = {
            "refund_id": f"re_{next(self._ids)}",
            "idempotency_key": key,
            "charge_key": charge_key,
            "order_id": charge["order_id"] if charge is not None else order_id,
            "amount_cents": amount,
        }
        self.refunds[key] = refund
        return refund, False


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} must be a {kind.__name__}, got {value!r}")
    return value


def create_app() -> Starlette:
    """The payments ASGI app (a fresh ledger and a healthy fault switch)."""
    ledger = Ledger()
    chaos = Chaos(endpoints=frozenset({"charges"}))

    async def charges(request: Request) -> JSONResponse:
        try:
            body = await read_json(request)
            key = _field(body, "idempotency_key", str)
            order_id = _field(body, "order_id", str)
            amount = _field(body, "amount_cents", int)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if amount <= 0:
            return JSONResponse({"error": f"amount_cents must be > 0, got {amount}"}, 400)
        try:
            fail_after = await chaos.before("charges")
        except ChaosFault as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        if amount > DECLINE_ABOVE_CENTS:
            return JSONResponse(
                {"error": f"declined: {amount} cents is above the limit", "declined": True}, 402
            )
        try:
            charge, replayed = ledger.charge(key, order_id, amount)
        except LateCharge as exc:
            return JSONResponse({"error": str(exc), "cancelled": True}, status_code=409)
        if fail_after:
            return JSONResponse({"error": "chaos: charged, then failed to answer"}, 503)
        return JSONResponse({**charge, "replayed": replayed}, status_code=200 if replayed else 201)

    async def refunds(request: Request) -> JSONResponse:
        try:
            body = await read_json(request)
            key = _field(body, "idempotency_key", str)
            charge_key = _field(body, "charge_key", str)
            order_id = str(body.get("order_id", ""))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            fail_after = await chaos.before("refunds")
        except ChaosFault as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        refund, replayed = ledger.refund(key, charge_key, order_id)
        if fail_after:
            return JSONResponse({"error": "chaos: refunded, then failed to answer"}, 503)
        return JSONResponse({**refund, "replayed": replayed}, status_code=200 if replayed else 201)

    async def ledger_view(request: Request) -> JSONResponse:
        return JSONResponse(
            {"charges": list(ledger.charges.values()), "refunds": list(ledger.refunds.values())}
        )

    return Starlette(
        routes=[
            health_route("payments"),
            chaos_route(chaos),
            Route("/charges", charges, methods=["POST"]),
            Route("/refunds", refunds, methods=["POST"]),
            Route("/ledger", ledger_view, methods=["GET"]),
        ]
    )


def main(argv: Iterable[str] | None = None) -> None:
    """``python -m examples.shop.payments --port N``."""
    run_service("payments", create_app, argv)


if __name__ == "__main__":
    main()
