"""Saga: a multi-step business transaction that undoes what it did when a later step fails.

Run: ``python examples/saga.py``

Booking a trip takes three services: a flight, a hotel, a payment. There is no transaction
spanning them, so each step has a *compensation* that undoes it. When a step fails, the saga
runs the compensations of every started step in reverse order and raises ``SagaFailed``.
Every step is recorded in a durable log (SQLite here) before and after it runs: re-running a
finished saga id returns its stored result instead of booking twice, and a saga interrupted
by a crash can be finished by ``saga.recover()`` (see ``docs/saga.md``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import anyio

import resilient as rs

booked: dict[str, list[str]] = {"flights": [], "hotels": [], "payments": []}
hotel_full = False


def build_saga(store: rs.SQLiteSagaStore) -> rs.Saga:
    saga = rs.Saga("book-trip", store=store)

    @saga.step()
    async def flight(ctx: rs.SagaContext) -> dict[str, Any]:
        # ctx.idempotency_key ("<saga id>:flight") lets the airline deduplicate retries
        booked["flights"].append(ctx.idempotency_key)
        print(f"    booked flight to {ctx.data['city']} ({ctx.idempotency_key})")
        return {"seat": "12A"}

    @flight.compensate()
    async def cancel_flight(ctx: rs.SagaContext, done: dict[str, Any] | None) -> None:
        # done is the step's result, or None when it is unknown whether the step took effect
        key = f"{ctx.saga_id}:flight"
        if key in booked["flights"]:
            booked["flights"].remove(key)
        print(f"    cancelled flight (seat {done['seat'] if done else 'unknown'})")

    @saga.step(policy=rs.Retry(attempts=3, wait=0.01, on=(ConnectionError,)))
    async def hotel(ctx: rs.SagaContext) -> dict[str, Any]:
        if hotel_full:
            raise rs.Rejected(f"no rooms left in {ctx.data['city']}")  # a definitive "no"
        booked["hotels"].append(ctx.idempotency_key)
        print("    booked hotel")
        return {"room": 101}

    @hotel.compensate()
    async def cancel_hotel(ctx: rs.SagaContext, done: dict[str, Any] | None) -> None:
        key = f"{ctx.saga_id}:hotel"
        if key in booked["hotels"]:
            booked["hotels"].remove(key)
        print("    cancelled hotel")

    @saga.step()
    async def pay(ctx: rs.SagaContext) -> dict[str, Any]:
        if ctx.data["amount"] > 1000:
            raise RuntimeError("card limit exceeded")
        booked["payments"].append(ctx.idempotency_key)
        print(f"    charged {ctx.data['amount']}")
        return {"paid": ctx.data["amount"]}

    return saga


async def main() -> None:
    global hotel_full
    with tempfile.TemporaryDirectory() as tmp:
        store = rs.SQLiteSagaStore(Path(tmp) / "sagas.db")
        saga = build_saga(store)
        try:
            print("1. everything works:")
            result = await saga.run({"city": "Lisbon", "amount": 400}, saga_id="trip-1")
            print(f"   -> {result.status.value}: {dict(result.results)}")

            print("2. the same saga id again: the stored outcome, nothing booked twice:")
            again = await saga.run({"city": "Lisbon", "amount": 400}, saga_id="trip-1")
            print(f"   -> {again.status.value}, replayed={again.replayed}")

            print("3. payment fails: hotel and flight are compensated, in reverse order:")
            try:
                await saga.run({"city": "Oslo", "amount": 5000}, saga_id="trip-2")
            except rs.SagaFailed as exc:
                print(f"   -> rolled back at step {exc.step!r}: {exc.__cause__!r}")

            print("4. the hotel says no (Rejected): not retried, only the flight is undone:")
            hotel_full = True
            try:
                await saga.run({"city": "Rome", "amount": 300}, saga_id="trip-3")
            except rs.SagaFailed as exc:
                print(f"   -> rolled back at step {exc.step!r}: {exc.__cause__}")
        finally:
            store.close()
    print(f"still booked: {booked}")


if __name__ == "__main__":
    anyio.run(main)
