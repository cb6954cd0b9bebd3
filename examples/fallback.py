"""Fallback: answer with something useful when a non-critical call fails.

Run: ``python examples/fallback.py``

1. A fixed value: an empty list of reviews is better than an error page.
2. A handler: serve the last good answer from a cache, or say "unavailable".
3. Only for some errors: fall back when a policy *refused* the call (breaker open), and let
   real bugs propagate.
4. On a result: a "degraded" answer from the dependency is replaced too.
"""

from __future__ import annotations

import resilient as rs

reviews_up = False


@rs.Fallback([], name="reviews")
def reviews(sku: str) -> list[str]:
    if not reviews_up:
        raise ConnectionError("reviews service is down")
    return ["lovely mug"]


price_cache: dict[str, int] = {"mug": 1150}


def cached_price(error: Exception | None) -> int | str:
    """Called with the error that triggered the fallback."""
    print(f"    fallback handler got: {error!r}")
    return price_cache.get("mug", "price unavailable")


@rs.Fallback(handler=cached_price, name="price")
def live_price(sku: str) -> int:
    raise TimeoutError("pricing took too long")


breaker = rs.CircuitBreaker("stock", window_size=2, minimum_calls=2, open_duration=60)
stock_call = rs.pipeline(
    rs.Fallback("unknown", on=(rs.PolicyRejectedError,), name="stock-fallback"), breaker
)


def stock(sku: str) -> int:
    raise ConnectionError("stock service is down")


@rs.Fallback(handler=lambda _: {"items": [], "degraded": True}, on_result=lambda r: r["degraded"])
def search(term: str) -> dict[str, object]:
    return {"items": ["partial"], "degraded": True}


def main() -> None:
    print(f"1. reviews: {reviews('mug')}")
    print("2. price from cache:")
    print(f"   price: {live_price('mug')}")
    print("3. fall back only on rejections:")
    for i in range(3):
        try:
            print(f"   call {i + 1}: stock = {stock_call.call(stock, 'mug')}")
        except ConnectionError as exc:
            print(f"   call {i + 1}: the real error propagates: {exc}")
    print(f"   breaker is {breaker.state.value}")
    print(f"4. search: {search('tea')}")


if __name__ == "__main__":
    main()
