"""A rate limiter's share of one fleet-wide token bucket in Redis (the ``BUCKET`` script).

The bucket lives in Redis and refills on the server's clock, so the fleet as a whole never
admits more than ``burst + rate * elapsed`` calls, however many replicas there are. A round trip
per call would cost every call a network hop, so a replica takes tokens in *leases*: when its
local lease is empty it asks for as many tokens as it used in the last ``sync_interval``
(at least 1, at most what the fleet gains in one interval, and never more than ``burst``), and
spends them locally. Tokens a replica holds but does not use within a ``sync_interval`` are
given back by the sync thread (a given-back token fills the bucket only up to ``burst``).

What that costs in consistency: the limit is never exceeded (every admitted call spent a token
the bucket handed out), but a token leased by an idle replica is unavailable to a busy one
for up to two sync intervals, so the fleet may admit slightly *less* than the limit, and a
replica may be turned away while another holds a few tokens. Order across replicas is not
first come, first served.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from ._link import Backend, Command, text
from ._scripts import BUCKET, bucket_key

__all__ = ["RedisBucket"]


class RedisBucket:
    """One rate limiter's link to the fleet's bucket; see the module docstring.

    :meth:`take` answers ``(True, 0.0)`` (a token is this caller's), ``(False, retry_after)``
    (the fleet has none: the next one is due in ``retry_after`` seconds), or ``None`` when
    the backend is unreachable (the rate limiter then decides with its local bucket).
    """

    def __init__(self, backend: Backend, name: str, rate: float, per: float, burst: int) -> None:
        self._backend = backend
        self._key = bucket_key(backend.prefix, name)
        self._interval_us = per / rate * 1_000_000
        self._burst = burst
        per_sync = rate / per * backend.sync_interval
        self._max_lease = max(1, min(burst, math.floor(per_sync)))
        self._lock = threading.Lock()
        self._leased = 0  # tokens held by this replica, not yet spent
        self._leased_at = 0.0  # (monotonic) when the fleet last handed out a lease
        self._used = 0  # tokens spent since the last sync: the next lease's size
        self._lease_size = 1
        self._fleet_tokens = float(burst)

    @property
    def tokens(self) -> float:
        """Tokens in the fleet's bucket at the last exchange, plus those leased here."""
        return min(float(self._burst), self._fleet_tokens + self._leased)

    @property
    def max_lease(self) -> float:
        """The most tokens one replica holds at once."""
        return self._max_lease

    def take(self) -> tuple[bool, float] | None:
        """Take one token for a call; see the class docstring."""
        with self._lock:
            if self._leased:
                self._leased -= 1
                self._used += 1
                return True, 0.0
            want = self._lease_size
        if not self._backend.connected:
            return None
        try:
            reply = self._backend._call(
                BUCKET, [self._key], [repr(self._interval_us), self._burst, want, 0]
            )
        except Exception:
            return None
        granted, wait_us, left = int(reply[0]), int(reply[1]), float(text(reply[2]))
        with self._lock:
            self._fleet_tokens = left
            if granted:
                self._leased += granted - 1
                self._leased_at = time.monotonic()
                self._used += 1
                return True, 0.0
        return False, wait_us / 1_000_000

    # -- the sync thread ------------------------------------------------------------------------
    def sync_command(self) -> Command | None:
        """Give back a lease that sat unused for a sync interval; size the next lease."""
        with self._lock:
            self._lease_size = max(1, min(self._max_lease, self._used))
            self._used = 0
            stale = time.monotonic() - self._leased_at >= self._backend.sync_interval
            if not (self._leased and stale):
                return None
            back, self._leased = self._leased, 0
        return BUCKET, [self._key], [repr(self._interval_us), self._burst, 0, back]

    def synced(self, reply: Any) -> None:
        with self._lock:
            self._fleet_tokens = float(text(reply[2]))

    def offline(self) -> None:
        with self._lock:
            self._leased = 0  # the local bucket decides now
