"""Retry: call again after a transient failure, with backoff and jitter.

Run: ``python examples/retry.py``

1. A flaky call that fails twice, then succeeds: three attempts are enough.
2. Retrying on a *result* (an HTTP-like 503 status) instead of an exception.
3. Giving up: the last exception propagates unchanged, with a note saying how many attempts.
4. Retrying an inline block with ``for attempt in retry.attempts(): with attempt: ...``.
"""

from __future__ import annotations

import resilient as rs
from resilient.telemetry import Event, RetryScheduled


def show_retries(event: Event) -> None:
    """A listener: print each scheduled retry."""
    if isinstance(event, RetryScheduled):
        print(f"    attempt {event.attempt} failed ({event.error!r}); next in {event.delay:.3f}s")


failures_left = 2


@rs.Retry(
    "flaky",
    attempts=3,
    wait=rs.wait_exponential(initial=0.01, max=0.1),  # full jitter by default
    on=(ConnectionError,),  # only transient errors deserve a retry
    on_event=show_retries,
)
def fetch_price(sku: str) -> int:
    global failures_left
    if failures_left > 0:
        failures_left -= 1
        raise ConnectionError("connection reset")
    return 1200


statuses = iter([503, 503, 200])


@rs.Retry("status", attempts=5, wait=0.01, on_result=lambda status: status >= 500)
def ping() -> int:
    return next(statuses)


@rs.Retry("hopeless", attempts=3, wait=0.01, on_event=show_retries)
def always_down() -> None:
    raise TimeoutError("still down")


def main() -> None:
    print("1. flaky call, retried on ConnectionError:")
    print(f"   price = {fetch_price('mug')}")

    print("2. retry on a result (503 means try again):")
    print(f"   final status = {ping()}")

    print("3. giving up re-raises the last error itself:")
    try:
        always_down()
    except TimeoutError as exc:
        print(f"   {type(exc).__name__}: {exc}; notes: {getattr(exc, '__notes__', [])}")

    print("4. an inline block:")
    retry = rs.Retry("inline", attempts=4, wait=0.01, on=(KeyError,))
    tries = 0
    for attempt in retry.attempts():
        with attempt:
            tries += 1
            if tries < 3:
                raise KeyError("not there yet")
            print(f"   block succeeded on try {tries}")


if __name__ == "__main__":
    main()
