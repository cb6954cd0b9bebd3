"""End to end: the shop's services as real processes on loopback, driven over HTTP.

orders, payments and two notifications replicas. The orders service's ``payments`` breaker is
configured through the environment with a tiny window and a short open time, so breaking
payments opens it after a handful of orders and healing it closes it again within seconds;
payments sheds load past two requests in flight. Every wait is a poll with a bounded deadline;
no assertion depends on how fast the machine is (a "fast enough" check compares with a delay
the services were told to add, never with a guess at the machine's speed).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

httpx = pytest.importorskip(
    "httpx", reason="needs the examples extra: pip install -e '.[examples]'"
)
pytest.importorskip("starlette", reason="needs the examples extra: pip install -e '.[examples]'")
pytest.importorskip("uvicorn", reason="needs the examples extra: pip install -e '.[examples]'")

from examples.shop.cluster import ShopCluster, breaker_states, metric_samples  # noqa: E402

# Long enough that the fail-fast check right after the breaker opened cannot slip into
# HALF_OPEN on a loaded machine (a trial call would reach payments), short enough to heal fast.
OPEN_SECONDS = 3.0
SHED_LIMIT = 2  # payments' load shedding: requests in flight before it answers 503
POLICY_ENV = {
    "RESILIENT__PAYMENTS__BREAKER__WINDOW_SIZE": "6",
    "RESILIENT__PAYMENTS__BREAKER__MINIMUM_CALLS": "6",
    "RESILIENT__PAYMENTS__BREAKER__FAILURE_RATE_THRESHOLD": "0.5",
    "RESILIENT__PAYMENTS__BREAKER__OPEN_DURATION": f"{OPEN_SECONDS}s",
    "RESILIENT__PAYMENTS__RETRY__ATTEMPTS": "3",
    "RESILIENT__PAYMENTS__RETRY__WAIT": "10ms",
    "RESILIENT__PAYMENTS__TIMEOUT__SECONDS": "10s",
    "RESILIENT__PAYMENTS_ATTEMPT__TIMEOUT__SECONDS": "500ms",
    "RESILIENT__RECOMMENDATIONS_ATTEMPT__TIMEOUT__SECONDS": "300ms",
    "RESILIENT__PAYMENTS_SHED__BULKHEAD__MAX_CONCURRENT": str(SHED_LIMIT),
}
DEADLINE = 20.0


@pytest.fixture(scope="module")
def shop() -> Iterator[ShopCluster]:
    cluster = ShopCluster(POLICY_ENV, notification_replicas=2)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def http(shop: ShopCluster) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client
        # every test leaves the dependencies healthy for the next one
        assert shop.payments is not None
        for service in (shop.payments, *shop.replicas):
            client.post(f"{service.url}/chaos", json={})


def _urls(shop: ShopCluster) -> tuple[str, str, str]:
    assert shop.orders and shop.payments and shop.notifications
    return shop.orders.url, shop.payments.url, shop.notifications.url


def _state(http: httpx.Client, orders: str, breaker: str) -> str | None:
    return breaker_states(http.get(f"{orders}/metrics").text).get(breaker)


def _metric(http: httpx.Client, url: str, metric: str, **match: str) -> float:
    """The sum of ``metric``'s samples whose labels include ``match``, from ``url``/metrics."""
    return sum(
        value
        for labels, value in metric_samples(http.get(f"{url}/metrics").text, metric)
        if all(labels.get(k) == v for k, v in match.items())
    )


def _until(what: str, check: Callable[[], bool], shop: ShopCluster, step: float = 0.05) -> None:
    """Poll ``check`` until it holds; fail with the services' logs after ``DEADLINE``."""
    end = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting until {what}\n{shop.logs()}")
        time.sleep(step)


class _Orders:
    """Places orders with fresh ids and remembers every answer."""

    def __init__(self, http: httpx.Client, url: str, prefix: str) -> None:
        self.http, self.url, self.prefix = http, url, prefix
        self.answers: list[tuple[int, dict[str, Any]]] = []

    def place(self, **fields: Any) -> tuple[int, dict[str, Any]]:
        body = {
            "order_id": f"{self.prefix}-{len(self.answers)}",
            "customer": "ada",
            "amount_cents": 1000 + len(self.answers),
            **fields,
        }
        response = self.http.post(f"{self.url}/orders", json=body)
        answer = (response.status_code, response.json())
        self.answers.append(answer)
        return answer


def _ledger_by_order(http: httpx.Client, payments: str) -> dict[str, dict[str, int]]:
    ledger = http.get(f"{payments}/ledger").json()
    per_order: dict[str, dict[str, int]] = defaultdict(lambda: {"charged": 0, "refunded": 0})
    for charge in ledger["charges"]:
        per_order[charge["order_id"]]["charged"] += charge["amount_cents"]
    for refund in ledger["refunds"]:
        per_order[refund["order_id"]]["refunded"] += refund["amount_cents"]
    return per_order


def test_breaker_opens_fails_fast_refunds_and_closes_after_payments_heals(
    shop: ShopCluster, http: httpx.Client
) -> None:
    orders, payments, _ = _urls(shop)
    place = _Orders(http, orders, "breaker")

    status, body = place.place()
    assert (status, body["status"]) == (201, "completed"), body
    assert _state(http, orders, "payments") == "closed"

    # Break payments: every charge is recorded and THEN answered with 503, the nastiest case
    # (the order service cannot know the customer was charged).
    http.post(f"{payments}/chaos", json={"after_commit": 1.0})

    def opened() -> bool:
        status, body = place.place()
        assert status in (502, 503), body
        assert body["status"] == "compensated", body
        return _state(http, orders, "payments") == "open"

    _until("the payments breaker opens", opened, shop)

    # Open: the next order is refused at once, without reaching payments at all.
    charges_before = len(http.get(f"{payments}/ledger").json()["charges"])
    status, body = place.place()
    assert status == 503, body
    assert body["reason"] == "CircuitOpenError"
    assert body["status"] == "compensated"
    assert 0 < body["retry_after"] <= OPEN_SECONDS
    assert len(http.get(f"{payments}/ledger").json()["charges"]) == charges_before

    # Every rolled-back order was refunded exactly what it was charged, and some of them had
    # really been charged (in doubt) before the failure.
    ledger = _ledger_by_order(http, payments)
    compensated = [b["order_id"] for s, b in place.answers if b["status"] == "compensated"]
    assert compensated
    for order_id in compensated:
        assert ledger[order_id]["refunded"] == ledger[order_id]["charged"], (order_id, ledger)
    assert any(ledger[o]["charged"] > 0 for o in compensated)
    first = place.answers[0][1]["order_id"]
    assert ledger[first] == {"charged": 1000, "refunded": 0}

    # Heal payments: after open_duration a trial call goes through and the breaker closes.
    http.post(f"{payments}/chaos", json={})
    completed: list[str] = []

    def closed_again() -> bool:
        status, body = place.place()
        if status == 201:
            completed.append(body["order_id"])
        return bool(completed) and _state(http, orders, "payments") == "closed"

    _until("the payments breaker closes again", closed_again, shop, step=0.2)
    ledger = _ledger_by_order(http, payments)
    assert ledger[completed[-1]]["charged"] > 0
    assert ledger[completed[-1]]["refunded"] == 0

    metrics = http.get(f"{orders}/metrics").text
    sagas = {
        labels["outcome"]: value
        for labels, value in metric_samples(metrics, "resilient_saga_total")
        if labels["name"] == "place-order"
    }
    assert sagas.get("compensated", 0) >= len(compensated)
    assert sagas.get("completed", 0) >= 2


def test_recommendations_fall_back_to_the_cache_while_their_service_is_down(
    shop: ShopCluster, http: httpx.Client
) -> None:
    orders, _, _ = _urls(shop)
    live = http.get(f"{orders}/recommendations/grace").json()
    assert live["source"] == "live"

    for replica in shop.replicas:  # reads take turns among the replicas: break them all
        http.post(f"{replica.url}/chaos", json={"fault": 1.0, "endpoints": ["recommendations"]})
    cached = http.get(f"{orders}/recommendations/grace")
    assert cached.status_code == 200
    assert cached.json() == {"customer": "grace", "products": live["products"], "source": "cache"}
    stranger = http.get(f"{orders}/recommendations/nobody-seen").json()
    assert stranger["source"] == "cache" and stranger["products"]

    # Orders do not depend on the recommendations read: they keep completing.
    status, body = _Orders(http, orders, "during-recs-outage").place()
    assert status == 201, body

    for replica in shop.replicas:
        http.post(f"{replica.url}/chaos", json={})
    _until(
        "recommendations are live again",
        lambda: http.get(f"{orders}/recommendations/grace").json()["source"] == "live",
        shop,
        step=0.2,
    )


def test_placing_the_same_order_twice_charges_once(shop: ShopCluster, http: httpx.Client) -> None:
    orders, payments, _ = _urls(shop)
    body = {"order_id": "idempotent-1", "customer": "lin", "amount_cents": 4200}
    first = http.post(f"{orders}/orders", json=body)
    again = http.post(f"{orders}/orders", json=body)
    assert first.status_code == again.status_code == 201
    assert first.json()["replayed"] is False and again.json()["replayed"] is True
    assert again.json()["charge"] == first.json()["charge"]
    assert _ledger_by_order(http, payments)["idempotent-1"] == {"charged": 4200, "refunded": 0}

    conflict = http.post(f"{orders}/orders", json={**body, "amount_cents": 1})
    assert conflict.status_code == 409


def test_a_declined_payment_rolls_the_order_back_without_a_refund(
    shop: ShopCluster, http: httpx.Client
) -> None:
    orders, payments, _ = _urls(shop)
    status, body = _Orders(http, orders, "declined").place(amount_cents=10_000_000)
    assert status == 422, body
    assert (body["status"], body["reason"]) == ("compensated", "Rejected")
    ledger = _ledger_by_order(http, payments)
    assert ledger[body["order_id"]] == {"charged": 0, "refunded": 0}
    assert http.get(f"{orders}/orders/{body['order_id']}").json()["status"] == "compensated"


def test_a_charge_arriving_after_its_refund_is_refused(
    shop: ShopCluster, http: httpx.Client
) -> None:
    # The orders service gave up on a slow charge and refunded its key; when the slow request
    # finally reaches payments it must not charge, or "refunded == charged" breaks. The
    # refund of a charge that never happened leaves a tombstone (a null undo).
    _, payments, _ = _urls(shop)
    refund = http.post(f"{payments}/refunds", headers={"Idempotency-Key": "late:charge:undo"})
    assert refund.status_code == 200 and refund.json() is None
    assert refund.headers["Saga-Ledger-Outcome"] == "null_undo"
    late = http.post(
        f"{payments}/charges",
        json={"order_id": "late", "amount_cents": 700},
        headers={"Idempotency-Key": "late:charge"},
    )
    assert (late.status_code, late.headers["Saga-Ledger-Outcome"]) == (409, "late")
    assert _ledger_by_order(http, payments)["late"] == {"charged": 0, "refunded": 0}


def test_a_charge_from_a_fenced_out_owner_is_refused(shop: ShopCluster, http: httpx.Client) -> None:
    # Saga-Epoch grows on every takeover of a saga: a repeat carrying an older epoch than one
    # payments has seen for the key comes from a process that lost the saga.
    _, payments, _ = _urls(shop)
    body = {"order_id": "fenced", "amount_cents": 300}
    first = http.post(
        f"{payments}/charges",
        json=body,
        headers={"Idempotency-Key": "fenced:charge", "Saga-Epoch": "2"},
    )
    assert first.status_code == 201, first.text
    stale = http.post(
        f"{payments}/charges",
        json=body,
        headers={"Idempotency-Key": "fenced:charge", "Saga-Epoch": "1"},
    )
    assert (stale.status_code, stale.headers["Saga-Ledger-Outcome"]) == (409, "stale")
    assert _ledger_by_order(http, payments)["fenced"] == {"charged": 300, "refunded": 0}


def test_the_chaos_switch_refuses_what_it_does_not_know(
    shop: ShopCluster, http: httpx.Client
) -> None:
    _, payments, _ = _urls(shop)
    for bad in ({"error_rate": 1.0}, {"fault": 2}, {"endpoints": ["nowhere"]}, {"latency": -1}):
        answer = http.post(f"{payments}/chaos", json=bad)
        assert answer.status_code == 400, (bad, answer.text)
    policies = http.get(f"{payments}/chaos").json()["policies"]
    kinds = {(p["name"], p["kind"]) for p in policies}
    assert ("payments.charges", "chaos_latency") in kinds
    assert ("payments.charges", "chaos_result") in kinds
    assert ("payments.charges.after-commit", "chaos_fault") in kinds
    assert not any(p["enabled"] for p in policies)


class _HeldRequest:
    """A request to payments that holds a load-shedding slot until released: its body is
    sent in two chunks, and the second waits for :meth:`release` (the slot is taken before
    the body is read and held until the answer is sent)."""

    def __init__(self, url: str, key: str) -> None:
        self._go = threading.Event()
        self.status: int | None = None

        def body() -> Iterator[bytes]:
            yield b'{"order_id": "held", '
            self._go.wait(DEADLINE)
            yield b'"amount_cents": 100}'

        def send() -> None:
            with httpx.Client(timeout=DEADLINE) as client:
                self.status = client.post(
                    f"{url}/charges", content=body(), headers={"Idempotency-Key": key}
                ).status_code

        self._thread = threading.Thread(target=send, daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._go.set()
        self._thread.join(DEADLINE)


def test_payments_sheds_load_and_orders_retry_after_the_servers_hint(
    shop: ShopCluster, http: httpx.Client
) -> None:
    orders, payments, _ = _urls(shop)
    shed = {"name": "payments-shed"}
    shed_before = _metric(http, payments, "resilient_rejections_total", **shed)
    honoured = {"client": "payments", "status": "503"}
    honoured_before = _metric(http, orders, "shop_retry_after_honoured_total", **honoured)

    held = [_HeldRequest(payments, f"held-{n}:charge") for n in range(SHED_LIMIT)]
    try:
        _until(
            "payments is saturated",
            lambda: _metric(http, payments, "resilient_bulkhead_in_flight", **shed) == SHED_LIMIT,
            shop,
        )
        answers: list[tuple[int, dict[str, Any]]] = []
        placing = threading.Thread(
            target=lambda: answers.append(_Orders(http, orders, "shed").place()), daemon=True
        )
        placing.start()
        _until(
            "payments shed the order's charge",
            lambda: _metric(http, payments, "resilient_rejections_total", **shed) > shed_before,
            shop,
        )
    finally:
        for request in held:
            request.release()
    placing.join(DEADLINE)
    assert [r.status for r in held] == [201] * SHED_LIMIT

    # The client waited the 503's Retry-After (1 s) and tried again, successfully.
    [(status, body)] = answers
    assert status == 201, body
    assert body["elapsed_ms"] >= 1000, body
    assert _metric(http, orders, "shop_retry_after_honoured_total", **honoured) > honoured_before


def test_a_throttled_charge_is_retried_after_the_servers_hint(
    shop: ShopCluster, http: httpx.Client
) -> None:
    # The chaos switch's Result answers 429 with Retry-After: 1 instead of charging.
    orders, payments, _ = _urls(shop)
    honoured = {"client": "payments", "status": "429"}
    before = _metric(http, orders, "shop_retry_after_honoured_total", **honoured)
    http.post(f"{payments}/chaos", json={"throttle": 1.0})
    answers: list[tuple[int, dict[str, Any]]] = []
    placing = threading.Thread(
        target=lambda: answers.append(_Orders(http, orders, "throttled").place()), daemon=True
    )
    placing.start()
    try:
        _until(
            "the client waits out a 429's Retry-After",
            lambda: _metric(http, orders, "shop_retry_after_honoured_total", **honoured) > before,
            shop,
        )
    finally:
        http.post(f"{payments}/chaos", json={})
    placing.join(DEADLINE)
    [(status, body)] = answers
    assert status == 201, body
    assert body["elapsed_ms"] >= 1000, body
    ledger = _ledger_by_order(http, payments)
    assert ledger[body["order_id"]] == {"charged": body["charge"]["amount_cents"], "refunded": 0}


def test_a_hedge_hides_a_slow_notifications_replica(shop: ShopCluster, http: httpx.Client) -> None:
    orders, _, _ = _urls(shop)
    fast, slow = shop.replicas
    delay = 5.0  # far above the hedge's 50 ms: an order waiting for it has not been hedged
    http.post(f"{slow.url}/chaos", json={"latency": delay, "endpoints": ["notifications"]})
    hedged_before = _metric(http, orders, "resilient_hedge_attempts_total", name="notifications")

    # Orders take turns starting at each replica: of two orders, one starts at the slow one.
    place = _Orders(http, orders, "hedged")
    answers = [place.place(), place.place()]
    for status, body in answers:
        assert status == 201, body
        assert body["elapsed_ms"] < delay * 1000, body
        assert body["notify"]["replica"] == "1", body  # the fast replica's answer won
    hedged = _metric(http, orders, "resilient_hedge_attempts_total", name="notifications")
    assert hedged >= hedged_before + 1

    # Both replicas got the slow order's notification; the shared ledger sent it once.
    sent = http.get(f"{fast.url}/notifications").json()["notifications"]
    for _, body in answers:
        assert [n["order_id"] for n in sent].count(body["order_id"]) == 1
