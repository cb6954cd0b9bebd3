"""The fleet breaker's Redis script through real breakers and links, syncs driven by the test.

What the model test (``test_redis_breaker_model.py``) leaves out because it keeps time still
and syncs after every call: batches of many calls, the count window trimming its oldest batch,
the time window, slow calls, a trial that overruns ``half_open_max_wait``, a trial left by a
replica that went away, backoff across the fleet, a lost record, concurrent threads, and what
a replica publishes when the fleet changes under it.

Needs the machine's Redis (skipped, naming it, otherwise).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from fleet_helpers import DirectState, fleet_state, record

import resilient as rs
from resilient.telemetry import BreakerStateChanged
from resilient.testing import FakeClock

MakeDirect = Callable[..., DirectState]


def fail() -> None:
    raise ConnectionError("dependency down")


def ok() -> int:
    return 1


def run(breaker: rs.CircuitBreaker, fn: Callable[[], Any], times: int = 1) -> None:
    for _ in range(times):
        with contextlib.suppress(ConnectionError):
            breaker.call(fn)


def replica(state: DirectState, name: str = "dep", **options: Any) -> rs.CircuitBreaker:
    breaker = rs.CircuitBreaker(name, state=state, **options)  # type: ignore[arg-type]
    state.sync()
    assert breaker._shared_core.online
    return breaker


def test_batches_of_all_replicas_add_up_to_one_window(
    direct: MakeDirect, client: Any, prefix: str
) -> None:
    a, b = direct(), direct()
    options = {"window_size": 100, "minimum_calls": 20, "failure_rate_threshold": 0.5}
    ra, rb = replica(a, **options), replica(b, **options)
    run(ra, fail, 9)
    run(ra, ok, 2)
    run(rb, ok, 8)
    a.sync()
    b.sync()
    assert fleet_state(client, prefix, "dep") is rs.BreakerState.CLOSED  # 19 calls: too few
    assert ra.metrics.calls == 11 and rb.metrics.calls == 19  # a has not seen b's batch yet
    run(rb, fail)  # the 20th call, 10 failures of 20: the rate reaches the threshold
    b.sync()
    assert fleet_state(client, prefix, "dep") is rs.BreakerState.OPEN
    assert rb.state is rs.BreakerState.OPEN
    assert ra.state is rs.BreakerState.CLOSED  # until a's next sync
    a.sync()
    assert ra.state is rs.BreakerState.OPEN
    with pytest.raises(rs.CircuitOpenError):
        ra.call(ok)


def test_a_count_window_trims_its_oldest_batch_proportionally(
    direct: MakeDirect, client: Any, prefix: str
) -> None:
    a = direct()
    breaker = replica(a, window_size=10, minimum_calls=10, failure_rate_threshold=1.0)
    run(breaker, fail, 4)
    run(breaker, ok, 4)
    a.sync()  # one batch: 8 calls, 4 failures
    run(breaker, ok, 6)
    a.sync()  # 14 calls in all: 4 of the first batch leave, and half of them were failures
    fields = record(client, prefix, "dep")
    assert float(fields["wc"]) == pytest.approx(10.0)
    assert float(fields["wf"]) == pytest.approx(2.0)
    metrics = breaker.metrics
    assert (metrics.calls, metrics.failures) == (10, 2)
    assert metrics.failure_rate == pytest.approx(0.2)


def test_a_batch_from_an_earlier_epoch_is_dropped(
    direct: MakeDirect, client: Any, prefix: str
) -> None:
    a, b = direct(), direct()
    options = {"window_size": 10, "minimum_calls": 2, "failure_rate_threshold": 1.0}
    ra, rb = replica(a, **options), replica(b, **options)
    run(ra, fail)  # a's batch belongs to the current epoch...
    rb.reset()  # ...which b's reset ends, for the whole fleet
    run(rb, fail)
    b.sync()
    a.sync()  # a's failure arrives after the reset: not counted
    assert float(record(client, prefix, "dep")["wc"]) == 1.0
    assert fleet_state(client, prefix, "dep") is rs.BreakerState.CLOSED


@pytest.mark.slow
def test_a_time_window_forgets_seconds_that_are_over(
    direct: MakeDirect, client: Any, prefix: str
) -> None:
    a = direct()
    breaker = replica(
        a, window_type="time", window_size=1, minimum_calls=5, failure_rate_threshold=0.5
    )
    run(breaker, fail, 3)
    a.sync()
    assert float(record(client, prefix, "dep")["wf"]) == 3.0
    time.sleep(2.05)  # the server's clock must enter a second past the window
    run(breaker, fail, 2)
    a.sync()
    fields = record(client, prefix, "dep")
    assert (float(fields["wc"]), float(fields["wf"])) == (2.0, 2.0)
    assert fields["st"] == "closed"  # 2 calls: below minimum_calls, the old 3 are gone


def test_slow_calls_open_the_fleet_breaker(direct: MakeDirect, client: Any, prefix: str) -> None:
    clock = FakeClock()
    a = direct()
    breaker = replica(
        a,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.5,
        window_size=4,
        minimum_calls=4,
        clock=clock,
    )

    def slow() -> int:
        clock.advance(2.0)
        return 1

    run(breaker, slow, 2)
    run(breaker, ok, 2)
    assert a.woken >= 1  # a slow call asks for an early sync, as a failure does
    a.sync()
    assert fleet_state(client, prefix, "dep") is rs.BreakerState.OPEN


def test_failures_ask_for_an_early_sync_successes_do_not(direct: MakeDirect) -> None:
    a = direct()
    breaker = replica(a)
    woken = a.woken
    run(breaker, ok, 10)
    assert a.woken == woken
    run(breaker, fail)
    assert a.woken == woken + 1


def test_a_trial_that_overruns_half_open_max_wait_reopens_the_fleet(
    direct: MakeDirect, client: Any, prefix: str
) -> None:
    a, b = direct(), direct()
    options = {
        "window_size": 1,
        "minimum_calls": 1,
        "open_duration": 0.0,
        "half_open_max_wait": 0.05,
    }
    ra, rb = replica(a, **options), replica(b, **options)
    run(ra, fail)
    a.sync()
    b.sync()
    with ra:  # the trial hangs
        assert fleet_state(client, prefix, "dep") is rs.BreakerState.HALF_OPEN
        with pytest.raises(rs.CircuitOpenError) as full:
            rb.call(ok)
        assert full.value.reason == "half_open_full"
        time.sleep(0.1)  # the server's clock passes the trial's deadline
        b.sync()  # ...the fleet re-opens, dated at the deadline, and with open_duration 0
        # half-opens again: a new round, in which b may take the trial
        assert rb.call(ok) == 1
    assert fleet_state(client, prefix, "dep") is rs.BreakerState.CLOSED
    a.sync()
    assert ra.state is rs.BreakerState.CLOSED  # a's late report changed nothing


def test_the_trial_of_a_replica_that_went_away_goes_back(
    direct: MakeDirect, client: Any, prefix: str
) -> None:
    a, b = direct(lease=0.05), direct(lease=0.05)
    options = {"window_size": 1, "minimum_calls": 1, "open_duration": 0.0}
    ra, rb = replica(a, **options), replica(b, **options)
    run(ra, fail)
    a.sync()
    b.sync()
    ra._enter()  # a takes the only trial and is never heard of again
    with pytest.raises(rs.CircuitOpenError):
        rb.call(ok)
    time.sleep(0.1)  # longer than a's lease
    b.sync()  # (b was told the round is full: it asks again after its next sync)
    assert rb.call(ok) == 1  # a's slot came back: b's trial closes the breaker
    assert fleet_state(client, prefix, "dep") is rs.BreakerState.CLOSED


def test_backoff_and_jitter_count_openings_fleet_wide(
    direct: MakeDirect, client: Any, prefix: str
) -> None:
    a, b = direct(), direct()
    options: dict[str, Any] = {
        "window_size": 1,
        "minimum_calls": 1,
        "open_duration": lambda times: 0.0 if times == 1 else 100.0 * times,
        "open_jitter": 0.5,
        "rng": lambda: 0.5,
    }
    ra, rb = replica(a, **options), replica(b, **options)
    run(ra, fail)  # a opens the fleet (first opening: 0 s, so it half-opens at once)
    a.sync()
    b.sync()
    assert rb.state is rs.BreakerState.HALF_OPEN
    run(rb, fail)  # b's trial fails: the fleet's second opening, backed off
    fields = record(client, prefix, "dep")
    assert fields["st"] == "open" and fields["no"] == "2"
    # open_duration(2) * (1 + open_jitter * rng()) = 200 * 1.25
    server = client.time()
    now_us = server[0] * 1_000_000 + server[1]
    assert (int(float(fields["ou"])) - now_us) / 1e6 == pytest.approx(250.0, abs=1.0)
    a.sync()
    assert ra.retry_after == pytest.approx(250.0, abs=1.0)


def test_a_lost_record_is_made_anew_and_every_replica_follows(
    direct: MakeDirect, client: Any, prefix: str
) -> None:
    a = direct()
    events: list[Any] = []
    breaker = replica(a, window_size=1, minimum_calls=1, open_duration=3600.0)
    breaker.on_event = events.append
    run(breaker, fail)
    a.sync()
    assert breaker.state is rs.BreakerState.OPEN
    before = record(client, prefix, "dep")["inc"]
    client.delete(*client.keys(f"{prefix}:*"))  # Redis restarted without persistence
    a.sync()
    assert breaker.state is rs.BreakerState.CLOSED
    assert record(client, prefix, "dep")["inc"] != before
    changes = [(e.from_state, e.to_state) for e in events if isinstance(e, BreakerStateChanged)]
    assert changes == [("closed", "open"), ("open", "closed")]


def test_a_replica_publishes_what_the_fleet_decided(direct: MakeDirect) -> None:
    a, b = direct(), direct()
    seen: list[Any] = []
    ra = replica(a, window_size=2, minimum_calls=2)
    rb = replica(b, window_size=2, minimum_calls=2, on_event=seen.append)
    run(ra, fail, 2)
    a.sync()
    b.sync()
    assert [(e.from_state, e.to_state) for e in seen] == [("closed", "open")]
    assert rb.retry_after is not None and 29.0 < rb.retry_after <= 30.0


def test_manual_control_reaches_every_replica(direct: MakeDirect) -> None:
    a, b = direct(), direct()
    ra, rb = replica(a), replica(b)
    ra.force_open()
    b.sync()
    assert rb.state is rs.BreakerState.FORCED_OPEN
    with pytest.raises(rs.CircuitOpenError):
        rb.call(ok)
    rb.disable()
    a.sync()
    assert ra.state is rs.BreakerState.DISABLED
    ra.reset()
    b.sync()
    assert rb.state is rs.BreakerState.CLOSED


def test_calls_from_many_threads_are_all_counted(
    direct: MakeDirect, client: Any, prefix: str
) -> None:
    a = direct()
    breaker = replica(a, window_size=10_000, minimum_calls=10_000)
    stop = threading.Event()

    def syncing() -> None:
        while not stop.is_set():
            a.sync()

    def calling() -> None:
        for i in range(500):
            run(breaker, fail if i % 10 == 0 else ok)

    syncer = threading.Thread(target=syncing)
    syncer.start()
    workers = [threading.Thread(target=calling) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    syncer.join()
    a.sync()
    fields = record(client, prefix, "dep")
    assert (float(fields["wc"]), float(fields["wf"])) == (2000.0, 200.0)
