"""The fleet's token bucket (the rate limiter's side of ``RedisState``), through its links,
with syncs driven by the test: leases, giving back, the limit across replicas, outages.

Needs the machine's Redis (skipped, naming it, otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fleet_helpers import DirectState

from resilient.fleet._bucket import RedisBucket

MakeDirect = Callable[..., DirectState]


def tokens_in_redis(client: Any, prefix: str, name: str) -> float:
    return float(client.hget(f"{prefix}:{{ratelimit:{name}}}", "tk"))


def take_all(bucket: RedisBucket) -> tuple[int, float]:
    """Take until refused: (tokens taken, the refusal's retry_after)."""
    taken = 0
    while True:
        answer = bucket.take()
        assert answer is not None
        granted, retry_after = answer
        if not granted:
            return taken, retry_after
        taken += 1


def test_a_full_bucket_gives_burst_tokens_then_says_when_the_next_comes(
    direct: MakeDirect,
) -> None:
    state = direct()
    bucket = state._bind_bucket("api", rate=1.0, per=10.0, burst=5)  # a token every 10 s
    taken, retry_after = take_all(bucket)
    assert taken == 5
    assert 9.0 < retry_after <= 10.0


def test_replicas_share_one_bucket(direct: MakeDirect) -> None:
    buckets = [direct()._bind_bucket("api", rate=1.0, per=60.0, burst=6) for _ in range(3)]
    taken = [take_all(bucket)[0] for bucket in buckets]
    assert taken == [6, 0, 0]  # the first replica emptied the fleet's bucket


def test_leases_follow_the_demand_and_are_capped(direct: MakeDirect) -> None:
    state = direct(interval=0.05)
    bucket = state._bind_bucket("api", rate=2000.0, per=1.0, burst=1000)
    assert bucket.max_lease == 100  # what the fleet gains in one sync interval
    for _ in range(31):  # leases of 1: nothing was used before
        assert bucket.take() == (True, 0.0)
        assert bucket._leased == 0
    state.sync()  # 31 tokens used in this interval: the next lease is 31
    assert bucket.take() == (True, 0.0)
    assert bucket._leased == 30  # 31 granted, 1 spent
    for _ in range(300):
        bucket.take()
    state.sync()
    assert bucket._lease_size == 100  # capped at max_lease


def test_an_unused_lease_goes_back_to_the_fleet(
    direct: MakeDirect, client: Any, prefix: str
) -> None:
    state = direct(interval=60.0)
    # 1000 tokens an hour: 16 per sync interval (the most a lease holds), and no refill to
    # speak of while the test runs
    bucket = state._bind_bucket("api", rate=1000.0, per=3600.0, burst=20)
    assert bucket.max_lease == 16
    for _ in range(10):
        bucket.take()
    state.sync()  # the next lease will be 10 tokens
    assert bucket.take() == (True, 0.0)  # takes a lease of 10, spends 1
    assert tokens_in_redis(client, prefix, "api") == pytest.approx(0.0, abs=0.05)
    state.sync()  # the lease is fresh: kept
    assert bucket._leased == 9
    bucket._leased_at -= 60.0  # ...until it has sat unused for a sync interval
    state.sync()  # then the sync gives its 9 tokens back
    assert bucket._leased == 0
    assert tokens_in_redis(client, prefix, "api") == pytest.approx(9.0, abs=0.05)
    assert bucket.tokens == pytest.approx(9.0, abs=0.05)
    other = direct()._bind_bucket("api", rate=1000.0, per=3600.0, burst=20)
    assert take_all(other)[0] == 9  # another replica can have them


def test_given_back_tokens_never_overfill_the_bucket(
    direct: MakeDirect, client: Any, prefix: str
) -> None:
    state = direct(interval=0.01)
    bucket = state._bind_bucket("api", rate=1000.0, per=1.0, burst=10)
    for _ in range(10):
        bucket.take()
    state.sync()
    bucket.take()  # a lease of up to 10
    time.sleep(0.05)  # meanwhile the bucket refills to burst on its own
    state.sync()  # the give-back is capped at burst
    assert tokens_in_redis(client, prefix, "api") <= 10.0


def test_the_fleet_never_admits_more_than_the_bucket_allows(
    direct: MakeDirect, client: Any
) -> None:
    rate, burst = 200.0, 20
    buckets = [
        direct(interval=0.01)._bind_bucket("api", rate=rate, per=1.0, burst=burst) for _ in range(3)
    ]
    states = [bucket._backend for bucket in buckets]
    server_start = client.time()
    admitted = 0
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        for bucket, state in zip(buckets, states, strict=True):
            answer = bucket.take()
            assert answer is not None
            admitted += answer[0]
            state.sync()
    server_end = client.time()
    elapsed = (server_end[0] - server_start[0]) + (server_end[1] - server_start[1]) / 1e6
    assert admitted <= burst + rate * elapsed + 1
    assert admitted >= rate * elapsed * 0.5  # and it did admit at about the rate


def test_offline_the_bucket_steps_aside(direct: MakeDirect) -> None:
    state = direct()
    bucket = state._bind_bucket("api", rate=1.0, per=1.0, burst=5)
    state.connected = False
    assert bucket.take() is None  # the rate limiter decides with its local bucket
    state.connected = True
    assert bucket.take() == (True, 0.0)
    bucket.offline()  # a lease held when Redis went away is dropped
    assert bucket._leased == 0
