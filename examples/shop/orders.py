"""The orders service: places an order as a saga, protects every outgoing call.

What it shows:

- **named policies from the environment**: every call to another service goes through
  ``rs.policy(<name>, ...)`` (``payments``, ``refunds``, ``notifications``,
  ``recommendations``). The code gives sensible defaults; an operator (or a test) overrides
  any field with ``RESILIENT__<NAME>__<KIND>__<FIELD>``, e.g.
  ``RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION=500ms``.
- **a saga on a durable log**: ``POST /orders`` runs ``place-order`` — reserve stock, charge
  the payment, send the notification — on an ``rs.SQLiteSagaStore`` in ``SHOP_DATA_DIR`` (a
  temp dir by default). When a step fails, the started steps are compensated in reverse: the
  charge is refunded (by the charge's idempotency key, so an in-doubt charge is refunded too),
  the stock released. The order id is the saga id, so a client retrying ``POST /orders`` with
  the same id gets the stored outcome instead of a second order.
- **fail fast**: while the ``payments`` breaker is open, orders are refused in a millisecond
  (503 with ``retry_after``) instead of each waiting for a timeout.
- **a fallback for a non-critical read**: ``GET /recommendations/{customer}`` answers from
  the last good answer (or a bestseller list) when the recommendations dependency is down.
- ``GET /metrics``: Prometheus text (``resilient_breaker_state``, ``resilient_calls_total``,
  ``resilient_saga_total``, ...).

Environment: ``SHOP_PAYMENTS_URL``, ``SHOP_NOTIFICATIONS_URL`` (required),
``SHOP_DATA_DIR`` (optional), ``RESILIENT__...`` (optional policy tuning).

Run: ``python -m examples.shop.orders --port 0``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import resilient as rs

from .common import health_route, read_json, run_service

__all__ = ["BESTSELLERS", "Inventory", "ServiceUnavailable", "create_app", "main"]

BESTSELLERS = ["tea-sampler", "mug", "kettle"]
"""What recommendations fall back to for a customer never seen before."""


class ServiceUnavailable(Exception):
    """A dependency answered 5xx (or 429): worth retrying, and a failure for its breaker."""

    def __init__(self, service: str, status: int, detail: str) -> None:
        super().__init__(f"{service} answered {status}: {detail}")
        self.service = service
        self.status = status


class Inventory:
    """Stock per product and reservations by idempotency key (in memory, one event loop).

    ``reserve`` and ``release`` are idempotent on the key, as saga steps and compensations must
    be: a retried reservation does not take stock twice, a repeated release does not give it
    back twice, and releasing a reservation that never happened is a no-op.
    """

    def __init__(self, stock: dict[str, int]) -> None:
        self.stock = dict(stock)
        self.reservations: dict[str, tuple[str, int]] = {}

    def reserve(self, key: str, sku: str, qty: int) -> dict[str, Any]:
        """Take ``qty`` of ``sku``; raise :class:`resilient.Rejected` when there is not enough."""
        if key not in self.reservations:
            available = self.stock.get(sku, 0)
            if available < qty:
                raise rs.Rejected(f"out of stock: {sku!r} has {available}, {qty} wanted")
            self.stock[sku] = available - qty
            self.reservations[key] = (sku, qty)
        sku, qty = self.reservations[key]
        return {"reservation": key, "sku": sku, "qty": qty}

    def release(self, key: str) -> None:
        """Give a reservation's stock back (once; nothing to do when none was made)."""
        found = self.reservations.pop(key, None)
        if found is not None:
            sku, qty = found
            self.stock[sku] = self.stock.get(sku, 0) + qty


_customer: ContextVar[str] = ContextVar("shop_customer", default="")


def _check_response(service: str, response: httpx.Response) -> dict[str, Any]:
    """Turn an HTTP answer into a result or the error the policies understand."""
    if response.status_code >= 500 or response.status_code == 429:
        raise ServiceUnavailable(service, response.status_code, response.text[:200])
    body: dict[str, Any] = response.json()
    if response.status_code >= 400:
        # A business "no" (declined card, bad request): a saga step must not retry it and the
        # breaker must not count it as the dependency failing.
        raise rs.Rejected(f"{service} refused: {body.get('error', response.status_code)}")
    return body


def _budget(default: float) -> float:
    """The time left in the enclosing rs.Timeout, handed to httpx so a request never outlives
    its policy's budget."""
    left = rs.remaining()
    return default if left is None else max(0.001, min(default, left))


def _retryable() -> tuple[type[Exception], ...]:
    # Not CircuitOpenError: when the breaker is open we want to fail fast, not wait it out.
    return (httpx.TransportError, ServiceUnavailable, rs.TimeoutExceeded)


def create_app() -> Starlette:
    """The orders ASGI app, wired to the payments and notifications URLs from the environment."""
    payments_url = os.environ.get("SHOP_PAYMENTS_URL", "").rstrip("/")
    notifications_url = os.environ.get("SHOP_NOTIFICATIONS_URL", "").rstrip("/")
    for var, value in (
        ("SHOP_PAYMENTS_URL", payments_url),
        ("SHOP_NOTIFICATIONS_URL", notifications_url),
    ):
        if not value.startswith("http://127.0.0.1:"):
            raise ValueError(f"{var} must be a http://127.0.0.1:<port> URL, got {value!r}")
    data_dir = Path(os.environ.get("SHOP_DATA_DIR") or tempfile.mkdtemp(prefix="shop-orders-"))
    data_dir.mkdir(parents=True, exist_ok=True)

    client = httpx.AsyncClient(timeout=5.0)
    inventory = Inventory({"kettle": 10**9, "teapot": 10**9, "mug": 10**9, "tea-sampler": 10**9})
    orders: dict[str, dict[str, Any]] = {}
    rec_cache: dict[str, list[str]] = {}

    # -- named policies: one instance per name in this process, tunable from the env -------
    fast_backoff = rs.wait_exponential(initial=0.02, max=0.2)
    breaker_defaults: dict[str, Any] = {
        "window_size": 20,
        "minimum_calls": 10,
        "failure_rate_threshold": 0.5,
        "open_duration": 5.0,
        "ignore": (rs.Rejected,),
    }
    payments = rs.policy(
        "payments",
        "retry",
        "breaker",
        "timeout",
        retry={"attempts": 3, "wait": fast_backoff, "on": _retryable()},
        breaker=breaker_defaults,
        timeout={"seconds": 1.0},
    )
    refunds = rs.policy(  # no breaker: a refund must be attempted even while charges fail
        "refunds",
        "retry",
        "timeout",
        retry={"attempts": 8, "wait": fast_backoff, "on": _retryable()},
        timeout={"seconds": 1.0},
    )
    notifications = rs.policy(
        "notifications",
        "retry",
        "breaker",
        "timeout",
        retry={"attempts": 3, "wait": fast_backoff, "on": _retryable()},
        breaker=breaker_defaults,
        timeout={"seconds": 1.0},
    )

    def cached_recommendations(error: Exception | None) -> dict[str, Any]:
        customer = _customer.get()
        return {"customer": customer, "products": rec_cache.get(customer, BESTSELLERS)}

    recommendations = rs.policy(
        "recommendations",
        "fallback",
        "breaker",
        "timeout",
        fallback={"handler": cached_recommendations},
        breaker=breaker_defaults,
        timeout={"seconds": 0.5},
    )

    # -- the saga ------------------------------------------------------------------------------
    store = rs.SQLiteSagaStore(data_dir / "orders-sagas.db")
    saga = rs.Saga("place-order", store=store)

    @saga.step()
    async def reserve(ctx: rs.SagaContext) -> dict[str, Any]:
        return inventory.reserve(ctx.idempotency_key, ctx.data["sku"], ctx.data["qty"])

    @reserve.compensate()
    async def release(ctx: rs.SagaContext, done: dict[str, Any] | None) -> None:
        inventory.release(f"{ctx.saga_id}:reserve")

    @saga.step(policy=payments)
    async def charge(ctx: rs.SagaContext) -> dict[str, Any]:
        response = await client.post(
            f"{payments_url}/charges",
            json={
                "idempotency_key": ctx.idempotency_key,
                "order_id": ctx.saga_id,
                "amount_cents": ctx.data["amount_cents"],
            },
            timeout=_budget(5.0),
        )
        body = _check_response("payments", response)
        return {"charge_id": body["charge_id"], "amount_cents": body["amount_cents"]}

    @charge.compensate(policy=refunds)
    async def refund(ctx: rs.SagaContext, done: dict[str, Any] | None) -> None:
        # done is None when the charge's outcome is unknown (it may have happened before the
        # error): refund by the charge's key and let payments refund whatever it charged.
        response = await client.post(
            f"{payments_url}/refunds",
            json={
                "idempotency_key": ctx.idempotency_key,
                "charge_key": f"{ctx.saga_id}:charge",
                "order_id": ctx.saga_id,
            },
            timeout=_budget(5.0),
        )
        _check_response("payments", response)

    @saga.step(policy=notifications)
    async def notify(ctx: rs.SagaContext) -> dict[str, Any]:
        response = await client.post(
            f"{notifications_url}/notifications",
            json={
                "idempotency_key": ctx.idempotency_key,
                "order_id": ctx.saga_id,
                "customer": ctx.data["customer"],
                "text": f"Your order of {ctx.data['qty']} x {ctx.data['sku']} is confirmed.",
            },
            timeout=_budget(5.0),
        )
        body = _check_response("notifications", response)
        return {"notified": body["idempotency_key"]}

    # -- endpoints -----------------------------------------------------------------------------
    async def place_order(request: Request) -> JSONResponse:
        try:
            body = await read_json(request)
            data = {
                "customer": str(body.get("customer", "guest")),
                "sku": str(body.get("sku", "mug")),
                "qty": int(body.get("qty", 1)),
                "amount_cents": int(body.get("amount_cents", 1200)),
            }
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        order_id = str(body.get("order_id") or uuid.uuid4().hex)
        start = time.perf_counter()
        answer, status = await _run_saga(order_id, data)
        answer["elapsed_ms"] = round((time.perf_counter() - start) * 1000, 2)
        orders[order_id] = {**data, **answer}
        return JSONResponse(answer, status_code=status)

    async def _run_saga(order_id: str, data: dict[str, Any]) -> tuple[dict[str, Any], int]:
        base: dict[str, Any] = {"order_id": order_id}
        try:
            result = await saga.run(data, saga_id=order_id)
        except rs.SagaFailed as exc:
            cause = exc.__cause__
            base.update(status="compensated", reason=type(cause).__name__, detail=str(cause))
            if isinstance(cause, rs.CircuitOpenError):
                base["retry_after"] = cause.retry_after
                return base, 503
            if isinstance(cause, rs.Rejected):
                return base, 422
            return base, 502
        except rs.SagaStuck as exc:
            base.update(status="stuck", reason=exc.reason, detail=str(exc))
            return base, 500
        except rs.IdempotencyConflict as exc:
            base.update(status="conflict", detail=str(exc))
            return base, 409
        base.update(status=result.status.value, replayed=result.replayed)
        charged = result.results.get("charge")
        if isinstance(charged, dict):
            base["charge"] = charged
        return base, 201 if result.status == rs.SagaStatus.COMPLETED else 500

    async def get_order(request: Request) -> JSONResponse:
        found = orders.get(str(request.path_params["order_id"]))
        if found is None:
            return JSONResponse({"error": "no such order"}, status_code=404)
        return JSONResponse(found)

    async def list_orders(request: Request) -> JSONResponse:
        return JSONResponse({"orders": list(orders.values())})

    async def get_recommendations(request: Request) -> JSONResponse:
        customer = str(request.path_params["customer"])
        _customer.set(customer)

        async def fetch() -> dict[str, Any]:
            response = await client.get(
                f"{notifications_url}/recommendations/{customer}", timeout=_budget(5.0)
            )
            body = _check_response("recommendations", response)
            rec_cache[customer] = list(body["products"])
            return {"customer": customer, "products": body["products"], "source": "live"}

        answer = await recommendations.acall(fetch)
        answer.setdefault("source", "cache")
        return JSONResponse(answer)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()
            store.close()

    return Starlette(
        routes=[
            health_route("orders"),
            Route("/orders", place_order, methods=["POST"]),
            Route("/orders", list_orders, methods=["GET"]),
            Route("/orders/{order_id}", get_order, methods=["GET"]),
            Route("/recommendations/{customer}", get_recommendations, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def main(argv: Iterable[str] | None = None) -> None:
    """``python -m examples.shop.orders --port N``."""
    run_service("orders", create_app, argv)


if __name__ == "__main__":
    main()
