"""The orders service: places an order as a saga, protects every outgoing call.

What it shows:

- **HTTP clients from the presets**: every call to another service goes through an httpx
  client built by ``resilient.presets.http_client`` — the standard pipeline (total timeout >
  retry > circuit breaker > attempt timeout) in a ``resilient.httpx`` transport, one per
  dependency: ``payments``, ``refunds``, ``notifications``, ``recommendations``. The
  transport retries only requests that are safe to repeat (GETs, and POSTs carrying an
  ``Idempotency-Key``), counts 429/5xx answers as failures without losing them, and waits at
  least the server's ``Retry-After`` before trying again (``shop_retry_after_honoured_total``
  counts those waits). The code gives defaults; an operator (or a test) overrides any field
  with ``RESILIENT__<NAME>__<KIND>__<FIELD>``, e.g.
  ``RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION=500ms`` or
  ``RESILIENT__PAYMENTS_ATTEMPT__TIMEOUT__SECONDS=250ms``.
- **a saga on a durable log**: ``POST /orders`` runs ``place-order`` — reserve stock, charge
  the payment (the pivot), send the notification (retried until it is sent) — on an
  ``rs.SQLiteSagaStore`` in ``SHOP_DATA_DIR`` (a temp dir by default). When the reservation or
  the charge fails, the started steps are compensated in reverse: the charge is refunded (an
  in-doubt charge too: payments' ledger refunds whatever was charged under the step's key, and
  refuses a charge arriving after its refund), the stock released. Requests to payments and
  notifications carry ``participant_headers(ctx)`` (``Idempotency-Key``, ``Saga-Epoch``).
  The order id is the saga id, so a client retrying ``POST /orders`` with the same id gets the
  stored outcome instead of a second order.
- **hedging a slow replica**: ``SHOP_NOTIFICATIONS_URL`` may list several replicas (comma
  separated). The notification goes to the next replica in turn, under ``rs.Hedge``: when it
  has not answered after the hedge's delay (50 ms; ``RESILIENT__NOTIFICATIONS__HEDGE__DELAY``)
  the same request (same ``Idempotency-Key``) goes to the next replica, and the first answer
  wins. ``POST /hedge {"enabled": false}`` switches hedging off (the demo compares both).
- **fail fast**: while the ``payments`` breaker is open, orders are refused in a millisecond
  (503 with ``retry_after``) instead of each waiting for a timeout.
- **a fallback for a non-critical read**: ``GET /recommendations/{customer}`` answers from
  the last good answer (or a bestseller list) when the recommendations dependency is down.
- ``GET /metrics``: Prometheus text (``resilient_breaker_state``, ``resilient_calls_total``,
  ``resilient_saga_total``, ``resilient_hedge_attempts_total``, ...).

Environment: ``SHOP_PAYMENTS_URL``, ``SHOP_NOTIFICATIONS_URL`` (required),
``SHOP_DATA_DIR``, ``SHOP_HEDGE`` (``off`` starts with hedging off), ``RESILIENT__...``.

Run: ``python -m examples.shop.orders --port 0``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import resilient as rs
from resilient import presets
from resilient.saga import participant_headers
from resilient.telemetry import Event, RetryScheduled

from .common import ASGIApp, health_route, metrics_route, read_json, run_service

__all__ = [
    "BESTSELLERS",
    "FencedOut",
    "Inventory",
    "ServiceUnavailable",
    "count_retry_after",
    "create_app",
    "main",
]

BESTSELLERS = ["tea-sampler", "mug", "kettle"]
"""What recommendations fall back to for a customer never seen before."""

RETRY_AFTER_HONOURED = Counter(
    "shop_retry_after_honoured",
    "Retries of an outgoing request that waited at least the server's Retry-After",
    ["client", "status"],
)
RETRY_AFTER_WAITED = Counter(
    "shop_retry_after_waited_seconds",
    "Seconds waited before retries that honoured a server's Retry-After",
    ["client"],
)


class ServiceUnavailable(Exception):
    """A dependency still answered 5xx (or 429) after the client's retries."""

    def __init__(self, service: str, status: int, detail: str) -> None:
        super().__init__(f"{service} answered {status}: {detail}")
        self.service = service
        self.status = status


class FencedOut(Exception):
    """A participant answered 409: this process's call came after another process took the
    saga over (a late or stale call). Only a fenced-out process receives it."""


def count_retry_after(event: Event) -> None:
    """``on_event`` listener of the clients' retries: count each retry that waited at least
    the ``Retry-After`` the server sent with its 429/503 (the transport turns the header into
    the failure's ``retry_after``; Retry then waits at least that long)."""
    if not isinstance(event, RetryScheduled):
        return
    hint = getattr(event.error, "retry_after", None)
    response = getattr(event.error, "response", None)
    if hint is None or response is None or event.delay + 1e-6 < hint:
        return
    RETRY_AFTER_HONOURED.labels(event.name, str(response.status_code)).inc()
    RETRY_AFTER_WAITED.labels(event.name).inc(event.delay)


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


def _check_response(service: str, response: httpx.Response, declined: int = 422) -> Any:
    """Turn the answer the client's policy let through into a result or an error."""
    status = response.status_code
    if status >= 500 or status == 429:  # still failing after the transport's retries
        raise ServiceUnavailable(service, status, response.text[:200])
    if status == 409:
        raise FencedOut(f"{service} refused a late or stale call: {response.text[:200]}")
    if status >= 400:
        # A business "no" (declined card, bad request): a saga step must not retry it.
        detail = response.json().get("error", status) if status == declined else response.text
        raise rs.Rejected(f"{service} refused: {detail}")
    return response.json()


def _urls(var: str) -> list[str]:
    urls = [u.strip().rstrip("/") for u in os.environ.get(var, "").split(",") if u.strip()]
    if not urls or not all(u.startswith("http://127.0.0.1:") for u in urls):
        raise ValueError(
            f"{var} must be one or more http://127.0.0.1:<port> URLs (comma separated), "
            f"got {os.environ.get(var, '')!r}"
        )
    return urls


def _client(name: str, **retry: Any) -> httpx.AsyncClient:
    """An httpx client whose requests run under ``presets.http(name)``, tuned for calls on
    loopback (a count window and shorter budgets than the preset's 30 s / 10 s) and counting
    the retries that honoured a server's ``Retry-After``; the environment wins over all."""
    fast_backoff = rs.wait_exponential(initial=0.02, max=0.2)
    pipeline = presets.http(
        name,
        timeout={"seconds": 5.0},
        retry={"attempts": 3, "wait": fast_backoff, "on_event": count_retry_after, **retry},
        breaker={
            "window_type": "count",
            "window_size": 20,
            "minimum_calls": 10,
            "failure_rate_threshold": 0.5,
            "open_duration": 5.0,
        },
        attempt_timeout={"seconds": 1.0},
    )
    return presets.http_client(name, async_=True, policy=pipeline)


def create_app() -> ASGIApp:
    """The orders ASGI app, wired to the payments and notifications URLs from the environment."""
    payments_url = _urls("SHOP_PAYMENTS_URL")[0]
    replicas = _urls("SHOP_NOTIFICATIONS_URL")
    data_dir = Path(os.environ.get("SHOP_DATA_DIR") or tempfile.mkdtemp(prefix="shop-orders-"))
    data_dir.mkdir(parents=True, exist_ok=True)

    payments = _client("payments")
    # no breaker for refunds: a refund must be attempted even while charges fail
    refunds = presets.http_client(
        "refunds",
        async_=True,
        policy=presets.http(
            "refunds",
            timeout={"seconds": 10.0},
            retry={
                "attempts": 8,
                "wait": rs.wait_exponential(initial=0.02, max=0.2),
                "on_event": count_retry_after,
            },
            breaker={"enabled": False},
            attempt_timeout={"seconds": 1.0},
        ),
    )
    notifications = _client("notifications")
    recommendations = _client("recommendations")
    hedge = rs.Hedge.from_env("notifications", delay=0.05)
    hedging = {"enabled": os.environ.get("SHOP_HEDGE", "on") != "off"}
    notify_turn, read_turn = itertools.count(), itertools.count()

    inventory = Inventory({"kettle": 10**9, "teapot": 10**9, "mug": 10**9, "tea-sampler": 10**9})
    orders: dict[str, dict[str, Any]] = {}
    rec_cache: dict[str, list[str]] = {}

    def cached_recommendations(error: Exception | None) -> dict[str, Any]:
        customer = _customer.get()
        return {"customer": customer, "products": rec_cache.get(customer, BESTSELLERS)}

    fallback = rs.Fallback(name="recommendations", handler=cached_recommendations)

    # -- the saga ------------------------------------------------------------------------------
    store = rs.SQLiteSagaStore(data_dir / "orders-sagas.db")
    saga = rs.Saga("place-order", store=store, forward_retry_delay=0.2, forward_retry_max_delay=2.0)

    @saga.step()
    async def reserve(ctx: rs.SagaContext) -> dict[str, Any]:
        return inventory.reserve(ctx.idempotency_key, ctx.data["sku"], ctx.data["qty"])

    @reserve.compensate()
    async def release(ctx: rs.SagaContext, done: dict[str, Any] | None) -> None:
        inventory.release(f"{ctx.saga_id}:reserve")

    @saga.step(pivot=True)
    async def charge(ctx: rs.SagaContext) -> dict[str, Any]:
        response = await payments.post(
            f"{payments_url}/charges",
            json={"order_id": ctx.saga_id, "amount_cents": ctx.data["amount_cents"]},
            headers=participant_headers(ctx),
        )
        body = _check_response("payments", response, declined=402)
        return {"charge_id": body["charge_id"], "amount_cents": body["amount_cents"]}

    @charge.compensate()
    async def refund(ctx: rs.SagaContext, done: dict[str, Any] | None) -> None:
        # done is None when the charge's outcome is unknown (it may have happened before the
        # error): payments' ledger refunds whatever was charged under this order's charge key,
        # or leaves a tombstone so that a charge still on its way is refused.
        response = await refunds.post(f"{payments_url}/refunds", headers=participant_headers(ctx))
        _check_response("payments", response)

    @saga.step(retriable=True)  # after the pivot: retried until it is sent, never undone
    async def notify(ctx: rs.SagaContext) -> dict[str, Any]:
        # Orders take turns starting at the next replica; within one call each attempt takes
        # the replica after the previous one's, so a hedge goes to another replica (a shared
        # counter could hand it the slow one again while other orders advance it).
        picks = itertools.count(next(notify_turn))

        async def send() -> httpx.Response:
            replica = replicas[next(picks) % len(replicas)]
            return await notifications.post(
                f"{replica}/notifications",
                json={
                    "order_id": ctx.saga_id,
                    "customer": ctx.data["customer"],
                    "text": f"Your order of {ctx.data['qty']} x {ctx.data['sku']} is confirmed.",
                },
                headers=participant_headers(ctx),
            )

        response = await (hedge.acall(send) if hedging["enabled"] else send())
        body = _check_response("notifications", response)
        return {"notified": body["key"], "replica": body["replica"]}

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
        for step in ("charge", "notify"):
            if isinstance(result.results.get(step), dict):
                base[step] = result.results[step]
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
            replica = replicas[next(read_turn) % len(replicas)]
            response = await recommendations.get(f"{replica}/recommendations/{customer}")
            body = _check_response("recommendations", response)
            rec_cache[customer] = list(body["products"])
            return {"customer": customer, "products": body["products"], "source": "live"}

        answer = await fallback.acall(fetch)
        answer.setdefault("source", "cache")
        return JSONResponse(answer)

    async def hedge_switch(request: Request) -> JSONResponse:
        if request.method == "POST":
            body = await read_json(request)
            enabled = body.get("enabled")
            if not isinstance(enabled, bool):
                problem = f"enabled must be true or false, got {enabled!r}"
                return JSONResponse({"error": problem}, status_code=400)
            hedging["enabled"] = enabled
        return JSONResponse({**hedging, "delay": hedge.current_delay(), "replicas": replicas})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for client in (payments, refunds, notifications, recommendations):
                await client.aclose()
            store.close()

    return Starlette(
        routes=[
            health_route("orders"),
            metrics_route(),
            Route("/orders", place_order, methods=["POST"]),
            Route("/orders", list_orders, methods=["GET"]),
            Route("/orders/{order_id}", get_order, methods=["GET"]),
            Route("/recommendations/{customer}", get_recommendations, methods=["GET"]),
            Route("/hedge", hedge_switch, methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )


def main(argv: Iterable[str] | None = None) -> None:
    """``python -m examples.shop.orders --port N``."""
    run_service("orders", create_app, argv)


if __name__ == "__main__":
    main()
