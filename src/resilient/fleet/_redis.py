"""``RedisState``: one Redis shared by every replica's breakers and rate limiters.

One ``RedisState`` owns one redis-py client and one daemon thread, the *sync thread*, which
every ``sync_interval`` sends each bound policy's batch and brings back the fleet's state in
one pipelined round trip (one script call per policy). A failure asks for an early sync (at
most one per 5 ms, or per ``sync_interval / 10`` if shorter), so a breaker opened by one
replica's failures opens there after one round trip and everywhere else at their next sync.

Redis unreachable: the first failed exchange marks the backend down (one warning in the log,
``resilient_state_backend_up`` = 0 for every bound policy), every bound policy continues on
local state, and the sync thread retries with exponential backoff (``wait_exponential`` with
equal jitter, from ``sync_interval`` up to a second or so) until Redis answers again (one info
line, gauge 1, each policy adopts the fleet's state at its next sync). Nothing here ever
raises into a protected call.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry as _RedisRetry
from tenacity import RetryCallState

from .. import _validate as v
from .._state import BreakerHost
from ..errors import ConfigError
from ..waits import wait_exponential
from ._breaker import RedisBreakerLink
from ._bucket import RedisBucket
from ._link import Synced

__all__ = ["RedisState"]

_log = logging.getLogger("resilient.fleet")

_PREFIX = v.text("prefix")
_SYNC_INTERVAL = v.duration("sync_interval", zero=False)

# Clients built from a URL: a dead or hung server costs a caller (a half-open trial, a token
# refill) at most this long, and redis-py does not retry on its own (we do, with backoff).
_DEFAULT_TIMEOUT = 1.0
_KEY_TTL_MS = 24 * 3600 * 1000  # state nobody has synced for a day is forgotten
_SCHEMES = ("redis", "rediss", "unix")
_QUERY_OPTIONS = frozenset(
    {
        "db",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_read_size",
        "retry_on_timeout",
        "max_connections",
        "health_check_interval",
        "client_name",
        "protocol",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_check_hostname",
        "timeout",
    }
)
# What a sync client can take over from an asyncio client's connection settings.
_ASYNC_SETTINGS = (
    "host",
    "port",
    "path",
    "db",
    "username",
    "password",
    "credential_provider",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "client_name",
    "encoding",
    "encoding_errors",
    "decode_responses",
    "protocol",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_check_hostname",
)

_live: weakref.WeakSet[RedisState] = weakref.WeakSet()


def _url_error(url: str, why: str) -> ConfigError:
    return ConfigError(
        f"url_or_client must be a Redis URL such as redis://host:6379/0 (or a redis client), "
        f"got {url!r}: {why}"
    )


def _check_url(url: str) -> str:
    """A Redis URL that redis-py will read as meant, or ``ConfigError`` naming it. (redis-py
    itself passes unknown query options through as keyword arguments and silently drops a
    database path that is not a number.) Returns the URL without its password, for logs."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise _url_error(url, str(error)) from None
    if parts.scheme not in _SCHEMES:
        raise _url_error(url, f"the scheme must be one of {', '.join(_SCHEMES)}")
    if parts.scheme == "unix":
        if not parts.path:
            raise _url_error(url, "a unix URL names the socket's path")
    else:
        if not parts.hostname:
            raise _url_error(url, "it names no host")
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise _url_error(url, f"the database {db!r} is not a number")
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _QUERY_OPTIONS:
            raise _url_error(url, f"unknown option {key!r}")
        if key == "db" and not value.isdigit():
            raise _url_error(url, f"the database {value!r} is not a number")
    host = parts.hostname or ""
    where = f"{parts.scheme}://{host}{f':{port}' if port is not None else ''}{parts.path}"
    return where


def _from_url(url: str) -> tuple[redis.Redis, str]:
    where = _check_url(url)
    options = {key for key, _ in parse_qsl(urlsplit(url).query)}
    kwargs: dict[str, Any] = {"retry": _RedisRetry(NoBackoff(), 0)}
    if "socket_timeout" not in options and "timeout" not in options:
        kwargs["socket_timeout"] = _DEFAULT_TIMEOUT
    if "socket_connect_timeout" not in options:
        kwargs["socket_connect_timeout"] = _DEFAULT_TIMEOUT
    try:
        client = redis.Redis.from_url(url, **kwargs)
    except (ValueError, TypeError) as error:
        raise _url_error(url, str(error)) from None
    return client, where


def _from_async(client: Any) -> tuple[redis.Redis, str]:
    """A sync client with the connection settings of an asyncio one: the sync thread and the
    callers' short requests run outside any event loop, where an asyncio client cannot go."""
    pool = client.connection_pool
    settings = pool.connection_kwargs
    kwargs = {key: settings[key] for key in _ASYNC_SETTINGS if key in settings}
    kind = pool.connection_class.__name__
    connection_class: type[redis.Connection] | type[redis.UnixDomainSocketConnection]
    if "path" in kwargs or kind == "UnixDomainSocketConnection":
        connection_class = redis.UnixDomainSocketConnection
    elif kind == "SSLConnection":
        connection_class = redis.SSLConnection
    else:
        connection_class = redis.Connection
    sync_pool = redis.ConnectionPool(connection_class=connection_class, **kwargs)
    return redis.Redis(connection_pool=sync_pool), _describe(kwargs)


def _describe(settings: dict[str, Any]) -> str:
    if "path" in settings:
        return f"unix://{settings['path']}"
    return f"redis://{settings.get('host', 'localhost')}:{settings.get('port', 6379)}/" + str(
        settings.get("db", 0)
    )


def _client_for(url_or_client: object) -> tuple[redis.Redis, str, bool]:
    """``(client, description for logs, whether we own the client)``."""
    if isinstance(url_or_client, str):
        client, where = _from_url(url_or_client)
        return client, where, True
    if isinstance(url_or_client, redis.Redis):
        return url_or_client, _describe(url_or_client.connection_pool.connection_kwargs), False
    try:
        import redis.asyncio as aioredis
    except ImportError:  # pragma: no cover - redis-py always ships redis.asyncio
        aioredis = None  # type: ignore[assignment]
    if aioredis is not None and isinstance(url_or_client, aioredis.Redis):
        client, where = _from_async(url_or_client)
        return client, where, True
    raise TypeError(
        "url_or_client must be a Redis URL (redis://host:6379/0), a redis.Redis or a "
        f"redis.asyncio.Redis client, got {url_or_client!r}"
    )


class RedisState:
    """Shared state in Redis for a fleet of replicas: ``CircuitBreaker(..., state=...)``.

    ``url_or_client`` is a Redis URL (``redis://host:6379/0``; ``rediss://`` for TLS,
    ``unix:///path``) or a ready ``redis.Redis`` / ``redis.asyncio.Redis`` client (an asyncio
    client lends its connection settings to a sync client of ours: the state is kept by a
    thread, outside any event loop). A malformed URL raises :class:`resilient.ConfigError`;
    an unreachable server is not an error: policies run on local state until it answers.

    ``prefix`` starts every key (isolate environments or test runs with it); a policy's keys
    are ``<prefix>:{breaker:<name>}...``, so every replica shares the policy of the same name.
    ``sync_interval`` (seconds) is how stale a replica's view of the fleet may get: each
    replica exchanges its batched counts and the fleet's state that often.

    One ``RedisState`` (one connection pool, one sync thread) serves any number of policies;
    share it. :attr:`connected` says whether the last exchange succeeded; :meth:`close` stops
    the thread (and closes the client when it was built from a URL).
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis | Any,
        *,
        prefix: str = "resilient",
        sync_interval: float = 0.05,
    ) -> None:
        self._prefix = _PREFIX(prefix)
        self._interval = _SYNC_INTERVAL(sync_interval)
        self._client, self._where, self._owns_client = _client_for(url_or_client)
        self._lease = max(2.0, 20 * self._interval)  # a silent replica's trials go back
        # early syncs (after a failure) are at least this far apart: a failure storm costs a
        # bounded number of round trips, and an opening still spreads within milliseconds
        self._early_gap = min(0.005, self._interval / 10)
        self._backoff = wait_exponential(
            initial=self._interval, max=max(1.0, 4 * self._interval), jitter="equal"
        )
        self._lock = threading.Lock()
        self._links: weakref.WeakSet[Any] = weakref.WeakSet()
        self._shas: dict[str, str] = {}
        self._up = False
        self._outage_logged = False
        self._closed = False
        self._new_process()
        _live.add(self)

    def _new_process(self) -> None:
        """State that must not cross a fork: the replica id, the thread and its event."""
        self._rid = uuid.uuid4().hex[:16]
        self._wake_event = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "connected" if self._up else "not connected"
        return (
            f"<RedisState {self._where} prefix={self._prefix!r} "
            f"sync_interval={self._interval:g} {state}>"
        )

    # -- public view ------------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        """What every key starts with."""
        return self._prefix

    @property
    def sync_interval(self) -> float:
        """Seconds between two exchanges of a replica with the fleet."""
        return self._interval

    @property
    def connected(self) -> bool:
        """True when the last exchange with Redis succeeded (the gauge
        ``resilient_state_backend_up`` of every bound policy says the same)."""
        return self._up

    def close(self) -> None:
        """Stop syncing (bound policies continue on local state) and close the client if it
        was built from a URL."""
        with self._lock:
            self._closed = True
            self._up = False
            thread = self._thread
        self._wake_event.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        self._went_offline()
        if self._owns_client:
            self._client.close()

    # -- binding policies -------------------------------------------------------------------------
    def _bind_breaker(self, breaker: BreakerHost) -> RedisBreakerLink:
        link = RedisBreakerLink(self, breaker)
        self._attach(link)
        return link

    def _bind_bucket(self, name: str, rate: float, per: float, burst: int) -> RedisBucket:
        """The fleet's token bucket for the rate limiter ``name`` (``rate`` per ``per``
        seconds, ``burst`` tokens at most)."""
        bucket = RedisBucket(self, name, rate, per, burst)
        self._attach(bucket)
        return bucket

    def _attach(self, link: Synced) -> None:
        with self._lock:
            self._links.add(link)
            closed = self._closed
            if not closed and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(
                    target=self._run, name=f"resilient-redis-state {self._where}", daemon=True
                )
                self._thread.start()
        self._wake()  # the new policy goes online at once, not one interval from now

    # -- helpers for the links --------------------------------------------------------------
    @property
    def _replica_id(self) -> str:
        """This process's id in the fleet (trial ids start with it)."""
        return self._rid

    @property
    def _lease_seconds(self) -> float:
        return self._lease

    @property
    def _key_ttl_ms(self) -> int:
        return _KEY_TTL_MS

    def _up_value(self) -> float:
        """The gauge's value: 1 while connected, else 0."""
        return 1.0 if self._up else 0.0

    def _wake(self) -> None:
        """Ask the sync thread for an exchange now (rate-limited to one per
        5 ms, or to one per ``sync_interval / 10`` if that is shorter)."""
        event = self._wake_event
        if not event.is_set():
            event.set()

    def _call(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script now, in the caller's thread. Raises on any failure, after marking
        the backend down (the caller then continues locally)."""
        try:
            reply = self._run_scripts([(script, list(keys), list(args))])[0]
        except Exception as error:
            self._lost(error)
            raise
        return reply

    def _lost(self, error: BaseException) -> None:
        """An exchange failed: the backend is down until the sync thread gets through."""
        with self._lock:
            self._up = False
            first = not self._outage_logged
            self._outage_logged = True
        if first:
            _log.warning(
                "Redis state backend %s is unreachable (%s: %s); breakers and rate limiters "
                "sharing it continue on local state and reconnect on their own",
                self._where,
                type(error).__name__,
                error,
            )
        self._went_offline()
        self._wake()

    def _went_offline(self) -> None:
        with self._lock:  # (a WeakSet must not change while it is copied)
            links = list(self._links)
        for link in links:
            link.offline()

    # -- Redis ------------------------------------------------------------------------------------
    def _sha(self, script: str) -> str:
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = hashlib.sha1(script.encode()).hexdigest()
        return sha

    def _run_scripts(self, commands: list[tuple[str, list[str], list[Any]]]) -> list[Any]:
        """Run script calls in one pipelined round trip (``EVALSHA``; a server that does not
        know a script, e.g. after a restart, is sent it once and the calls are repeated)."""
        for attempt in (1, 2):
            pipe = self._client.pipeline(transaction=False)
            for script, keys, args in commands:
                pipe.evalsha(self._sha(script), len(keys), *keys, *args)
            replies = pipe.execute(raise_on_error=False)
            missing = {
                script
                for (script, _, _), reply in zip(commands, replies, strict=True)
                if isinstance(reply, NoScriptError)
            }
            if missing and attempt == 1:
                for script in missing:
                    self._client.script_load(script)
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return list(replies)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the sync thread --------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0  # failed exchanges in a row
        while True:
            with self._lock:
                links = list(self._links)
                if self._closed or not links:
                    self._thread = None
                    return
            started = time.monotonic()
            try:
                self._sync(links)
            except Exception as error:
                if not isinstance(error, redis.RedisError | OSError):
                    _log.exception("unexpected error while syncing with %s", self._where)
                attempt += 1
                self._lost(error)
            else:
                if attempt or not self._up:
                    self._back_up()
                attempt = 0
            del links
            self._pause(started, attempt)

    def _pause(self, started: float, attempt: int) -> None:
        """Wait for the next exchange: ``sync_interval`` after the last one began, or earlier
        when woken (never sooner than ``_early_gap`` after it); while Redis is down,
        the backoff delay, whatever wakes us."""
        event = self._wake_event
        if attempt:
            state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
            state.attempt_number = attempt
            until = started + self._backoff(state)
            while not self._closed and (left := until - time.monotonic()) > 0:
                event.wait(left)
                event.clear()
            return
        if event.wait(max(0.0, started + self._interval - time.monotonic())):
            gap = started + self._early_gap - time.monotonic()
            if gap > 0:
                time.sleep(gap)
        event.clear()

    def _sync(self, links: list[Synced]) -> None:
        commands = []
        owners = []
        for link in links:
            command = link.sync_command()
            if command is not None:
                commands.append(command)
                owners.append(link)
        if not commands:
            self._client.ping()  # nothing to exchange: still find out whether Redis is there
            return
        replies = self._run_scripts(commands)
        for link, reply in zip(owners, replies, strict=True):
            link.synced(reply)

    def _back_up(self) -> None:
        with self._lock:
            was_logged = self._outage_logged
            self._up = True
            self._outage_logged = False
        if was_logged:
            _log.info("Redis state backend %s is reachable again", self._where)


def _after_fork_in_child() -> None:
    """A forked replica (a pre-forking server's worker) is a new member of the fleet: its own
    id, and a sync thread of its own (the parent's did not survive the fork)."""
    for state in list(_live):
        state._lock = threading.Lock()
        state._new_process()
        state._up = False
        links = list(state._links)
        if links and not state._closed:
            state._attach(links[0])


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
