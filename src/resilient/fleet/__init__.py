"""Shared state for a fleet of replicas (the ``redis`` extra: ``pip install
resilient-patterns[redis]``).

``rs.RedisState(url)`` makes a circuit breaker one breaker for every replica
(``rs.CircuitBreaker("payments", state=rs.RedisState("redis://cache:6379/0"))``): window
counts are summed fleet-wide, transitions are decided atomically in Redis, an opening anywhere
is seen everywhere within ``sync_interval``, and half-open trials are counted fleet-wide. The
design, what it guarantees and what it costs: docs/scaling.md.

This package imports redis-py; ``import resilient`` does not import it (``rs.RedisState``
is resolved on first use).

Files: ``_redis.py`` (``RedisState``: the client, the sync thread, outages),
``_breaker.py`` and ``_bucket.py`` (one policy's link each), ``_link.py`` (what links and the
state see of each other), ``_scripts.py`` (the Lua scripts and the key layout).
"""

from __future__ import annotations

try:
    import redis as _redis  # noqa: F401 - fail here, with the fix, rather than deep inside
except ImportError as error:  # pragma: no cover - the tests run with the extra installed
    raise ImportError(
        "resilient.RedisState needs redis-py: pip install 'resilient-patterns[redis]'"
    ) from error

from ._redis import RedisState

__all__ = ["RedisState"]
