"""The transport and the preset against a real server: uvicorn on loopback, httpx on the wire.

The server counts what reaches it, so "3 requests on the wire" and "the open breaker kept the
request off the wire" are checked on the server side. Waits between retries go through an
injected sleep that records them instead of sleeping.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
import httpx
import pytest
from http_servers import ScriptedApp, wait_until

import resilient as rs
from resilient import presets
from resilient.httpx import IDEMPOTENT, AsyncResilientTransport, ResilientTransport
from resilient.testing import FakeClock

HTTP_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
HTTP_DATE_EPOCH = 1445412480.0
BUSY = (503, {"Retry-After": "1"})
OK = (200, {})

Scripted = tuple[ScriptedApp, str]


def _name() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


# -- Retry-After, three requests on the wire ---------------------------------------------------
def test_retry_after_seconds_sync(scripted: Scripted, key: str) -> None:
    app, url = scripted
    path = app.script(key, [BUSY, BUSY, OK])
    waits: list[float] = []
    name = _name()
    policy = presets.http(name, retry={"sleep": waits.append})
    with presets.http_client(name, policy=policy, base_url=url) as client:
        response = client.get(path)
    assert (response.status_code, response.text) == (200, "200 #3")
    assert app.count(key) == 3
    assert len(waits) == 2 and all(w >= 1.0 for w in waits) and sum(waits) >= 2.0


@pytest.mark.anyio
async def test_retry_after_seconds_async(scripted: Scripted, key: str, anyio_backend: str) -> None:
    app, url = scripted
    path = app.script(key, [BUSY, BUSY, OK])
    waits: list[float] = []
    name = _name()
    policy = presets.http(name, retry={"sleep": waits.append})
    async with presets.http_client(name, async_=True, policy=policy, base_url=url) as client:
        response = await client.get(path)
    assert (response.status_code, response.text) == (200, "200 #3")
    assert app.count(key) == 3
    assert len(waits) == 2 and all(w >= 1.0 for w in waits) and sum(waits) >= 2.0


def test_retry_after_http_date_sync(scripted: Scripted, key: str) -> None:
    app, url = scripted
    busy = (503, {"Retry-After": HTTP_DATE})
    path = app.script(key, [busy, busy, OK])
    waits: list[float] = []
    policy = presets.http(_name(), retry={"sleep": waits.append})
    wall = FakeClock(HTTP_DATE_EPOCH - 1.25)  # the server's date is 1.25 s ahead of "now"
    transport = ResilientTransport(policy, wall_clock=wall)
    with httpx.Client(transport=transport, base_url=url) as client:
        response = client.get(path)
    assert response.status_code == 200
    assert app.count(key) == 3
    assert waits == [1.25, 1.25]


@pytest.mark.anyio
async def test_retry_after_http_date_async(
    scripted: Scripted, key: str, anyio_backend: str
) -> None:
    app, url = scripted
    busy = (503, {"Retry-After": HTTP_DATE})
    path = app.script(key, [busy, busy, OK])
    waits: list[float] = []
    policy = presets.http(_name(), retry={"sleep": waits.append})
    transport = AsyncResilientTransport(policy, wall_clock=FakeClock(HTTP_DATE_EPOCH - 1.25))
    async with httpx.AsyncClient(transport=transport, base_url=url) as client:
        response = await client.get(path)
    assert response.status_code == 200
    assert app.count(key) == 3
    assert waits == [1.25, 1.25]


# -- POST --------------------------------------------------------------------------------------
def _post_counts(send: Any, app: ScriptedApp) -> list[tuple[int, int]]:
    results = []
    for headers, opted_in in (({}, False), ({"Idempotency-Key": "k-1"}, False), ({}, True)):
        key = uuid.uuid4().hex
        path = app.script(key, [BUSY])
        status = send(path, headers, opted_in)
        results.append((status, app.count(key)))
    return results


def test_post_is_retried_only_with_idempotency_key_or_opt_in_sync(scripted: Scripted) -> None:
    app, url = scripted
    waits: list[float] = []
    policy = rs.Retry(attempts=3, sleep=waits.append)

    def send(path: str, headers: dict[str, str], opted_in: bool) -> int:
        methods = IDEMPOTENT | {"POST"} if opted_in else IDEMPOTENT
        transport = ResilientTransport(policy, retry_methods=methods)
        with httpx.Client(transport=transport, base_url=url) as client:
            return client.post(path, json={"order": 1}, headers=headers).status_code

    assert _post_counts(send, app) == [(503, 1), (503, 3), (503, 3)]


@pytest.mark.anyio
async def test_post_is_retried_only_with_idempotency_key_or_opt_in_async(
    scripted: Scripted, anyio_backend: str
) -> None:
    app, url = scripted
    policy = rs.Retry(attempts=3, sleep=lambda seconds: None)
    results = []
    for headers, methods in (
        ({}, IDEMPOTENT),
        ({"Idempotency-Key": "k-1"}, IDEMPOTENT),
        ({}, IDEMPOTENT | {"POST"}),
    ):
        key = uuid.uuid4().hex
        path = app.script(key, [BUSY])
        transport = AsyncResilientTransport(policy, retry_methods=methods)
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            response = await client.post(path, json={"order": 1}, headers=headers)
        results.append((response.status_code, app.count(key)))
    assert results == [(503, 1), (503, 3), (503, 3)]


# -- the breaker keeps requests off the wire ----------------------------------------------------
def test_open_breaker_fails_fast_without_reaching_the_server_sync(
    scripted: Scripted, key: str
) -> None:
    app, url = scripted
    path = app.script(key, [(500, {})])
    breaker = rs.CircuitBreaker(window_size=4, minimum_calls=4, failure_rate_threshold=0.5)
    with httpx.Client(transport=ResilientTransport(breaker), base_url=url) as client:
        statuses = [client.get(path).status_code for _ in range(4)]
        for _ in range(5):
            with pytest.raises(rs.CircuitOpenError):
                client.get(path)
    assert statuses == [500] * 4
    assert app.count(key) == 4


@pytest.mark.anyio
async def test_open_breaker_fails_fast_without_reaching_the_server_async(
    scripted: Scripted, key: str, anyio_backend: str
) -> None:
    app, url = scripted
    path = app.script(key, [(502, {})])
    name = _name()
    policy = presets.http(
        name,
        retry={"sleep": lambda s: None},
        breaker={"window_type": "count", "window_size": 4, "minimum_calls": 4},
    )
    async with presets.http_client(name, async_=True, policy=policy, base_url=url) as client:
        first = await client.get(path)  # 3 attempts, 3 failures in the window
        # the 4th attempt opens the breaker; the retry after it is rejected without a request
        with pytest.raises(rs.CircuitOpenError):
            await client.get(path)
        with pytest.raises(rs.CircuitOpenError):
            await client.get(path)
    assert first.status_code == 502
    assert app.count(key) == 4


# -- deadlines reach the socket -------------------------------------------------------------------
def test_request_inside_a_timeout_gives_up_in_time_sync(scripted: Scripted, key: str) -> None:
    app, url = scripted
    transport = ResilientTransport(rs.CircuitBreaker())
    with httpx.Client(transport=transport, base_url=url, timeout=30.0) as client:
        start = time.monotonic()
        with pytest.raises(httpx.TimeoutException), rs.Timeout(0.5):
            client.get(f"/stall/{key}")
        elapsed = time.monotonic() - start
    assert elapsed < 3.0  # not the server's 5 s stall, nor the client's 30 s
    wait_until(lambda: key in app.disconnected, what="the server to see the client leave")


def test_sync_timeout_policy_also_ends_the_abandoned_request(scripted: Scripted, key: str) -> None:
    app, url = scripted
    transport = ResilientTransport(rs.Timeout(0.5))
    with httpx.Client(transport=transport, base_url=url, timeout=30.0) as client:
        start = time.monotonic()
        # the Timeout gives up at 0.5 s; the request's own (capped) socket timeout expires at
        # about the same instant, and on a busy machine either may be seen first
        with pytest.raises((rs.TimeoutExceeded, httpx.TimeoutException)):
            client.get(f"/stall/{key}")
        assert time.monotonic() - start < 3.0
    # the worker thread the Timeout abandoned had its socket timeout capped too
    wait_until(lambda: key in app.disconnected, what="the abandoned request to give up")


@pytest.mark.anyio
async def test_request_inside_a_timeout_gives_up_in_time_async(
    scripted: Scripted, key: str, anyio_backend: str
) -> None:
    app, url = scripted
    transport = AsyncResilientTransport(rs.CircuitBreaker())
    async with httpx.AsyncClient(transport=transport, base_url=url, timeout=30.0) as client:
        start = time.monotonic()
        with pytest.raises((rs.TimeoutExceeded, httpx.TimeoutException)):
            async with rs.Timeout(0.5):
                await client.get(f"/stall/{key}")
        elapsed = time.monotonic() - start
    assert elapsed < 3.0
    await anyio.to_thread.run_sync(lambda: wait_until(lambda: key in app.disconnected))
