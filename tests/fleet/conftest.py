"""Fixtures of the fleet tests (``rs.RedisState``); helpers live in ``fleet_helpers.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from fleet_helpers import (
    REDIS_URL,
    DirectState,
    RedisServer,
    drop_prefix,
    new_prefix,
    redis_problem,
)

import resilient as rs


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis; the test is skipped, naming it, when it does not answer."""
    problem = redis_problem()
    if problem is not None:
        pytest.skip(problem)
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    value = new_prefix()
    yield value
    drop_prefix(redis_url, value)


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def make_state(redis_url: str, prefix: str) -> Iterator[Callable[..., rs.RedisState]]:
    """``make_state(**options)``: a RedisState on the test's prefix (one per replica),
    closed after the test."""
    made: list[rs.RedisState] = []

    def make(url: str | None = None, **options: Any) -> rs.RedisState:
        options.setdefault("prefix", prefix)
        state = rs.RedisState(url or redis_url, **options)
        made.append(state)
        return state

    yield make
    for state in made:
        state.close()


@pytest.fixture
def direct(client: Any, prefix: str) -> Callable[..., DirectState]:
    """``direct(**options)``: a replica whose syncs the test drives (no sync thread)."""

    def make(**options: Any) -> DirectState:
        return DirectState(client, prefix, **options)

    return make


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own on a free port (skipped without redis-server)."""
    try:
        server = RedisServer()
    except RuntimeError as error:
        pytest.skip(f"{error}: the outage tests start and kill a server of their own")
    server.start()
    yield server
    server.stop()
