"""The shop's chaos switch and participants, in process (no servers: httpx's ASGI transport).

The end-to-end tests (``test_shop_e2e.py``) drive the same services as real processes; these
check the switch's semantics exactly, on asyncio and trio: an after-commit fault answers 503
although the charge was recorded, the throttle answers 429 with ``Retry-After``, the policies
can be switched on from the environment at start-up, and the ledger endpoints refuse a charge
that arrives after its refund.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

httpx = pytest.importorskip(
    "httpx", reason="needs the examples extra: pip install -e '.[examples]'"
)
pytest.importorskip("starlette", reason="needs the examples extra: pip install -e '.[examples]'")
pytest.importorskip("uvicorn", reason="needs the examples extra: pip install -e '.[examples]'")

from examples.shop import notifications, payments  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("SHOP_DATA_DIR", str(tmp_path))
    transport = httpx.ASGITransport(app=payments.create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://payments") as client:
        yield client


def _key(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def test_an_after_commit_fault_answers_503_after_the_charge_was_recorded(
    pay: httpx.AsyncClient,
) -> None:
    assert (await pay.post("/chaos", json={"after_commit": 1.0})).status_code == 200
    body = {"order_id": "o1", "amount_cents": 500}
    failed = await pay.post("/charges", json=body, headers=_key("o1:charge"))
    assert failed.status_code == 503
    assert "after doing the work" in failed.json()["error"]
    charges = (await pay.get("/ledger")).json()["charges"]
    assert charges == [{"key": "o1:charge", "order_id": "o1", "amount_cents": 500}]

    await pay.post("/chaos", json={})
    again = await pay.post("/charges", json=body, headers=_key("o1:charge"))
    assert (again.status_code, again.headers["Saga-Ledger-Outcome"]) == (200, "repeat")
    assert again.json()["amount_cents"] == 500
    assert len((await pay.get("/ledger")).json()["charges"]) == 1


async def test_a_fault_before_the_work_charges_nothing(pay: httpx.AsyncClient) -> None:
    await pay.post("/chaos", json={"fault": 1.0})
    failed = await pay.post(
        "/charges", json={"order_id": "o2", "amount_cents": 500}, headers=_key("o2:charge")
    )
    assert failed.status_code == 503
    assert "before doing the work" in failed.json()["error"]
    assert (await pay.get("/ledger")).json() == {"charges": [], "refunds": []}


async def test_the_throttle_answers_429_with_retry_after(pay: httpx.AsyncClient) -> None:
    await pay.post("/chaos", json={"throttle": 1.0})
    throttled = await pay.post(
        "/charges", json={"order_id": "o3", "amount_cents": 500}, headers=_key("o3:charge")
    )
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "1")
    assert (await pay.get("/ledger")).json()["charges"] == []
    # refunds are not in the default endpoints: the throttle did not touch them
    refund = await pay.post("/refunds", headers=_key("o3:charge:undo"))
    assert refund.status_code == 200 and refund.json() is None


async def test_a_refund_then_a_late_charge_and_a_decline(pay: httpx.AsyncClient) -> None:
    body = {"order_id": "o4", "amount_cents": 900}
    charged = await pay.post("/charges", json=body, headers=_key("o4:charge"))
    assert charged.status_code == 201
    refunded = await pay.post("/refunds", headers=_key("o4:charge:undo"))
    assert refunded.status_code == 201 and refunded.json()["amount_cents"] == 900
    assert (await pay.post("/refunds", headers=_key("o4:charge:undo"))).status_code == 200

    null = await pay.post("/refunds", headers=_key("o5:charge:undo"))
    assert null.headers["Saga-Ledger-Outcome"] == "null_undo"
    late = await pay.post(
        "/charges", json={"order_id": "o5", "amount_cents": 1}, headers=_key("o5:charge")
    )
    assert late.status_code == 409

    declined = await pay.post(
        "/charges",
        json={"order_id": "o6", "amount_cents": payments.DECLINE_ABOVE_CENTS + 1},
        headers=_key("o6:charge"),
    )
    assert declined.status_code == 402 and "declined" in declined.json()["error"]
    ledger = (await pay.get("/ledger")).json()
    assert [c["order_id"] for c in ledger["charges"]] == ["o4"]
    assert [(r["order_id"], r["amount_cents"]) for r in ledger["refunds"]] == [("o4", 900)]


async def test_chaos_can_be_switched_on_from_the_environment_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    monkeypatch.setenv("SHOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RESILIENT__NOTIFICATIONS_RECOMMENDATIONS__CHAOS_FAULT__ENABLED", "true")
    monkeypatch.setenv("RESILIENT__NOTIFICATIONS_RECOMMENDATIONS__CHAOS_FAULT__RATE", "1")
    transport = httpx.ASGITransport(app=notifications.create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://n") as client:
        assert (await client.get("/recommendations/ada")).status_code == 503
        sent = await client.post(
            "/notifications", json={"order_id": "o7", "text": "hi"}, headers=_key("o7:notify")
        )
        assert sent.status_code == 201 and sent.json()["replica"] == "1"
        await client.post("/chaos", json={})
        assert (await client.get("/recommendations/ada")).status_code == 200
