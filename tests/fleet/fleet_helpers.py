"""Helpers of the fleet tests: where Redis is, a redis-server of a test's own, and a state
backend without a sync thread (the test decides when each replica syncs).

Tests that need the machine's Redis (``RESILIENT_TEST_REDIS``, default
``redis://127.0.0.1:6379/0``) skip, naming it, when it does not answer; tests that start their
own server skip when ``redis-server`` is not installed. Every test works under a key prefix of
its own, so runs sharing one Redis never see each other's state.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis

from resilient._core.breaker import BreakerState
from resilient._state import BreakerHost
from resilient.fleet._breaker import RedisBreakerLink
from resilient.fleet._bucket import RedisBucket

REDIS_URL = os.environ.get("RESILIENT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def redis_problem(url: str = REDIS_URL) -> str | None:
    """Why the tests cannot use the Redis at ``url``, or ``None``."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as error:
        return f"no Redis server answers at {url} ({error}); start one: redis-server"
    return None


def new_prefix() -> str:
    return f"rstest-{uuid.uuid4().hex[:12]}"


def drop_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds (a bound generous
    enough for a loaded machine: these waits are for background work, not timing claims)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {what or condition}")
        time.sleep(0.005)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of the test's own on a free port, keeping nothing on disk; ``stop()``
    kills it (SIGKILL, as a crash would), ``start()`` starts it again on the same port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20.0
        while redis_problem(self.url) is not None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


class DirectState:
    """A state backend with no sync thread: ``sync()`` runs one exchange of every bound
    breaker, when the test says so. Everything else (the links, the scripts, the cores, the
    breakers) is the real code."""

    def __init__(
        self, client: redis.Redis, prefix: str, *, lease: float = 60.0, interval: float = 0.05
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.sync_interval = interval
        self._replica_id = uuid.uuid4().hex[:16]
        self._lease_seconds = lease
        self._key_ttl_ms = 600_000
        self.connected = True
        self.woken = 0
        self.links: list[Any] = []

    def _up_value(self) -> float:
        return 1.0 if self.connected else 0.0

    def _wake(self) -> None:
        self.woken += 1

    def _call(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self.client.eval(script, len(keys), *keys, *args)

    def _lost(self, error: BaseException) -> None:
        raise AssertionError(f"the test's Redis failed: {error!r}")

    def _bind_breaker(self, breaker: BreakerHost) -> RedisBreakerLink:
        link = RedisBreakerLink(self, breaker)
        self.links.append(link)
        return link

    def _bind_bucket(self, name: str, rate: float, per: float, burst: int) -> RedisBucket:
        bucket = RedisBucket(self, name, rate, per, burst)
        self.links.append(bucket)
        return bucket

    def sync(self) -> None:
        for link in self.links:
            command = link.sync_command()
            if command is not None:
                link.synced(self._call(*command))


def record(client: redis.Redis, prefix: str, name: str) -> dict[str, str]:
    """The fleet record of breaker ``name``, decoded."""
    raw = client.hgetall(f"{prefix}:{{breaker:{name}}}")
    return {k.decode(): v.decode() for k, v in raw.items()}


def fleet_state(client: redis.Redis, prefix: str, name: str) -> BreakerState:
    return BreakerState(record(client, prefix, name)["st"])
