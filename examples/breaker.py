"""Circuit breaker: stop hammering a dependency that keeps failing, then probe it carefully.

Run: ``python examples/breaker.py``

A fake "inventory" dependency fails while it is down. The breaker watches the last 4 calls;
once half of them failed it OPENS and rejects calls at once with ``CircuitOpenError`` (the
function is not even called). After ``open_duration`` one trial call is let through
(HALF_OPEN): success closes the breaker again. Every state change is printed by a listener.
"""

from __future__ import annotations

import time

import resilient as rs
from resilient.telemetry import BreakerStateChanged, Event

inventory_up = True
calls_made = 0


def print_state_changes(event: Event) -> None:
    """A per-breaker listener: print every transition as it happens."""
    if isinstance(event, BreakerStateChanged):
        print(f"    breaker: {event.from_state} -> {event.to_state}")


breaker = rs.CircuitBreaker(
    "inventory",
    window_size=4,  # look at the last 4 calls
    minimum_calls=4,  # ... once there are 4
    failure_rate_threshold=0.5,  # open when half of them failed
    open_duration=0.3,  # stay open 0.3 s, then let one trial call through
    on_event=print_state_changes,
)


@breaker
def stock_level(sku: str) -> int:
    """The protected call: a dependency that is either up or down."""
    global calls_made
    calls_made += 1
    if not inventory_up:
        raise ConnectionError("inventory is down")
    return 42


def attempt(label: str) -> None:
    try:
        print(f"{label}: stock={stock_level('mug')}  (state {breaker.state.value})")
    except rs.CircuitOpenError as exc:
        print(f"{label}: rejected without calling: {exc}")
    except ConnectionError as exc:
        print(f"{label}: failed: {exc}  (state {breaker.state.value})")


def main() -> None:
    global inventory_up
    print("1. inventory is up")
    for i in range(2):
        attempt(f"  call {i + 1}")

    print("2. inventory goes down: failures fill the window and the breaker opens")
    inventory_up = False
    for i in range(2, 7):
        attempt(f"  call {i + 1}")
    before = calls_made
    attempt("  call 8")
    assert calls_made == before, "an open breaker must not call the function"
    assert breaker.state == "open"

    print("3. inventory recovers; after open_duration a trial call closes the breaker")
    inventory_up = True
    time.sleep(0.35)
    attempt("  trial")
    attempt("  call 10")
    assert breaker.state == "closed"

    print("4. manual control: force_open() for maintenance, reset() to close")
    breaker.force_open()
    attempt("  during maintenance")
    breaker.reset()
    attempt("  after reset")
    print(f"the dependency was called {calls_made} times for 12 attempts")


if __name__ == "__main__":
    main()
