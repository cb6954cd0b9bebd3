"""LoadShedding: a policy's rejection becomes 503/429 + Retry-After before the app sees it.

First plain-ASGI unit tests (the middleware driven directly, on asyncio and trio: rejections,
headers, pass-through scopes, cancellation), then Starlette and FastAPI apps under uvicorn on
loopback with a real client sending concurrent requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from http_servers import UvicornThread, wait_until

import resilient as rs
from resilient.asgi import LoadShedding

Message = dict[str, Any]


# -- driving the middleware directly -----------------------------------------------------------
class Exchange:
    """One ASGI call: what the app received and what was sent back."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope
        self.sent: list[Message] = []
        self.receive_calls = 0

    async def receive(self) -> Message:
        self.receive_calls += 1
        if self.receive_calls == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.sent[0]["headers"]}


def http_scope(path: str = "/orders") -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}


class App:
    """An ASGI app that answers 200 (reading the body first) and remembers each call."""

    def __init__(self, block: anyio.Event | None = None) -> None:
        self.calls: list[tuple[Any, Any, Any]] = []
        self.block = block
        self.entered = anyio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append((scope, receive, send))
        self.entered.set()
        if scope["type"] != "http":
            return
        await receive()
        if self.block is not None:
            await self.block.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Refusing(rs.Policy):
    """A policy refusing every call with a given rejection (stands in for a rate limiter)."""

    kind = "refusing"

    def __init__(self, error: rs.PolicyRejectedError) -> None:
        super().__init__()
        self.error = error

    def _call(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        raise self.error

    async def _acall(self, fn: Callable[..., Awaitable[Any]], args: Any, kwargs: Any) -> Any:
        raise self.error


@pytest.mark.anyio
async def test_full_bulkhead_answers_503_without_touching_the_request(anyio_backend: str) -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1)
    release = anyio.Event()
    app = App(block=release)
    shed = LoadShedding(app, bulkhead)
    first, second = Exchange(http_scope()), Exchange(http_scope())
    async with anyio.create_task_group() as tg:
        tg.start_soon(shed, first.scope, first.receive, first.send)
        await app.entered.wait()
        await shed(second.scope, second.receive, second.send)
        assert second.status == 503
        assert second.headers["retry-after"] == "1"
        assert second.headers["content-length"] == str(len(second.sent[1]["body"]))
        assert second.receive_calls == 0  # the body was never read
        assert len(app.calls) == 1  # the app never saw it
        release.set()
    assert first.status == 200
    assert bulkhead.in_flight == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (rs.RateLimitedError("api", 2.3), 429, "3"),
        (rs.RateLimitedError("api", 0.01), 429, "1"),
        (rs.RateLimitedError("api", None), 429, "7"),
        (rs.CircuitOpenError("api", 12.0), 503, "12"),
        (rs.BulkheadFullError("api", 4, 0), 503, "7"),
    ],
)
async def test_status_and_retry_after_follow_the_rejection(
    anyio_backend: str, error: rs.PolicyRejectedError, status: int, retry_after: str
) -> None:
    app = App()
    exchange = Exchange(http_scope())
    await LoadShedding(app, Refusing(error), retry_after=7)(
        exchange.scope, exchange.receive, exchange.send
    )
    assert (exchange.status, exchange.headers["retry-after"]) == (status, retry_after)
    assert exchange.headers["content-type"].startswith("text/plain")
    assert exchange.sent[1]["type"] == "http.response.body" and exchange.sent[1]["body"]
    assert app.calls == []


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["lifespan", "websocket"])
async def test_other_scopes_pass_through_untouched(anyio_backend: str, kind: str) -> None:
    app = App()
    shed = LoadShedding(app, Refusing(rs.BulkheadFullError("api", 1, 0)))
    scope: dict[str, Any] = {"type": kind, "path": "/ws"}

    async def receive() -> Message:
        return {}

    async def send(message: Message) -> None:
        pass

    await shed(scope, receive, send)
    assert app.calls == [(scope, receive, send)]


@pytest.mark.anyio
async def test_excluded_paths_bypass_the_policy(anyio_backend: str) -> None:
    app = App()
    shed = LoadShedding(app, Refusing(rs.BulkheadFullError("api", 1, 0)), exclude_paths=["/health"])
    health, orders = Exchange(http_scope("/health")), Exchange(http_scope("/orders"))
    await shed(health.scope, health.receive, health.send)
    await shed(orders.scope, orders.receive, orders.send)
    assert (health.status, orders.status) == (200, 503)


@pytest.mark.anyio
async def test_a_rejection_raised_by_the_app_itself_propagates(anyio_backend: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise rs.CircuitOpenError("dependency", 5.0)

    exchange = Exchange(http_scope())
    with pytest.raises(rs.CircuitOpenError):
        await LoadShedding(app, rs.Bulkhead(max_concurrent=1))(
            exchange.scope, exchange.receive, exchange.send
        )
    assert exchange.sent == []


@pytest.mark.anyio
async def test_cancellation_releases_the_slot(anyio_backend: str) -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1)
    app = App(block=anyio.Event())  # never released
    shed = LoadShedding(app, bulkhead)
    exchange = Exchange(http_scope())
    async with anyio.create_task_group() as tg:
        tg.start_soon(shed, exchange.scope, exchange.receive, exchange.send)
        await app.entered.wait()
        assert bulkhead.in_flight == 1
        tg.cancel_scope.cancel()
    assert bulkhead.in_flight == 0
    again = Exchange(http_scope())
    app.block = None
    await shed(again.scope, again.receive, again.send)
    assert again.status == 200


@pytest.mark.anyio
async def test_a_queued_request_waits_for_a_slot(anyio_backend: str) -> None:
    bulkhead = rs.Bulkhead(max_concurrent=1, max_queued=1)
    release = anyio.Event()
    app = App(block=release)
    shed = LoadShedding(app, bulkhead)
    first, second = Exchange(http_scope()), Exchange(http_scope())
    async with anyio.create_task_group() as tg:
        tg.start_soon(shed, first.scope, first.receive, first.send)
        await app.entered.wait()
        tg.start_soon(shed, second.scope, second.receive, second.send)
        while bulkhead.queued == 0:
            await anyio.lowlevel.checkpoint()
        assert second.sent == [] and second.receive_calls == 0
        release.set()
    assert (first.status, second.status) == (200, 200)


def test_bad_options_are_refused() -> None:
    app = App()
    with pytest.raises(TypeError, match="policy must be"):
        LoadShedding(app, "bulkhead")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="app must be"):
        LoadShedding(None, rs.Bulkhead(max_concurrent=1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exclude_paths"):
        LoadShedding(app, rs.Bulkhead(max_concurrent=1), exclude_paths="/health")
    with pytest.raises(ValueError, match="exclude_paths"):
        LoadShedding(app, rs.Bulkhead(max_concurrent=1), exclude_paths=["health"])
    with pytest.raises(ValueError, match="retry_after"):
        LoadShedding(app, rs.Bulkhead(max_concurrent=1), retry_after=-1)


# -- Starlette and FastAPI under uvicorn -----------------------------------------------------------
class Gate:
    """Server-side state of the slow endpoints (used on the server's event loop only)."""

    def __init__(self) -> None:
        self.seen = 0
        self.in_app = 0
        self.max_in_app = 0
        self.released = False
        self.lifespan_started = False
        self._cond: asyncio.Condition | None = None

    @property
    def cond(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def hold(self) -> None:
        async with self.cond:
            self.seen += 1
            self.in_app += 1
            self.max_in_app = max(self.max_in_app, self.in_app)
            self.cond.notify_all()
            await self.cond.wait_for(lambda: self.released)
            self.in_app -= 1

    async def release(self) -> None:
        async with self.cond:
            self.released = True
            self.cond.notify_all()

    async def stats(self, in_app: int) -> dict[str, int]:
        async with self.cond:
            await asyncio.wait_for(self.cond.wait_for(lambda: self.in_app >= in_app), 10.0)
            return {"seen": self.seen, "in_app": self.in_app, "max_in_app": self.max_in_app}

    async def stream(self) -> AsyncIterator[bytes]:
        yield b"first\n"
        async with self.cond:
            await self.cond.wait_for(lambda: self.released)
        yield b"second\n"


EXCLUDED = {"/release", "/stats"}


def starlette_app(gate: Gate, bulkhead: rs.Bulkhead) -> Any:
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    async def slow(request: Request) -> PlainTextResponse:
        await gate.hold()
        return PlainTextResponse("served")

    async def release(request: Request) -> PlainTextResponse:
        await gate.release()
        return PlainTextResponse("released")

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(await gate.stats(int(request.query_params.get("in_app", 0))))

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(gate.stream())

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        gate.lifespan_started = True
        yield

    app = Starlette(
        routes=[
            Route("/slow", slow),
            Route("/release", release),
            Route("/stats", stats),
            Route("/stream", stream),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(LoadShedding, policy=bulkhead, exclude_paths=EXCLUDED)
    return app


def fastapi_app(gate: Gate, bulkhead: rs.Bulkhead) -> Any:
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gate.lifespan_started = True
        yield

    api = FastAPI(lifespan=lifespan)

    @api.get("/slow")
    async def slow() -> str:
        await gate.hold()
        return "served"

    @api.get("/release")
    async def release() -> str:
        await gate.release()
        return "released"

    @api.get("/stats")
    async def stats(in_app: int = 0) -> dict[str, int]:
        return await gate.stats(in_app)

    @api.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(gate.stream())

    return LoadShedding(api, bulkhead, exclude_paths=EXCLUDED)


Served = tuple[str, Gate, rs.Bulkhead]


@pytest.fixture(params=["starlette", "fastapi"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    if request.param == "fastapi":
        pytest.importorskip("fastapi", reason="needs fastapi: pip install -e '.[dev]'")
    else:
        pytest.importorskip("starlette", reason="needs starlette: pip install -e '.[dev]'")
    gate = Gate()
    bulkhead = rs.Bulkhead(max_concurrent=2)
    build = fastapi_app if request.param == "fastapi" else starlette_app
    with UvicornThread(build(gate, bulkhead), lifespan="on") as server:
        yield server.url, gate, bulkhead


@pytest.mark.anyio
async def test_two_served_at_a_time_the_rest_shed(served: Served, anyio_backend: str) -> None:
    url, gate, bulkhead = served
    assert gate.lifespan_started  # the lifespan scope went through the middleware
    results: list[tuple[int, str | None, str]] = []
    shed_all = anyio.Event()

    async def one(client: httpx.AsyncClient) -> None:
        response = await client.get("/slow")
        results.append((response.status_code, response.headers.get("retry-after"), response.text))
        if len(results) == 8:
            shed_all.set()

    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one, client)
            with anyio.fail_after(20):
                await shed_all.wait()
            stats = (await client.get("/stats", params={"in_app": 2})).json()
            assert stats == {"seen": 2, "in_app": 2, "max_in_app": 2}
            assert bulkhead.in_flight == 2
            await client.get("/release")
        final = (await client.get("/stats")).json()
    shed = [r for r in results if r[0] == 503]
    served_ok = [r for r in results if r[0] == 200]
    assert len(shed) == 8 and all(r[1] == "1" for r in shed)
    assert len(served_ok) == 2 and all(r[2].strip('"') == "served" for r in served_ok)
    assert final == {"seen": 2, "in_app": 0, "max_in_app": 2}  # the app never saw the 8
    await anyio.to_thread.run_sync(lambda: wait_until(lambda: bulkhead.in_flight == 0))


@pytest.mark.anyio
async def test_admission_is_held_while_streaming_and_released_on_disconnect(
    served: Served, anyio_backend: str
) -> None:
    url, _, bulkhead = served
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        async with client.stream("GET", "/stream") as response:
            async for chunk in response.aiter_raw():
                assert chunk == b"first\n"
                break
            assert bulkhead.in_flight == 1  # held for the whole response, not just its start
        # the client went away mid-stream; let the app try to finish its response
        await client.get("/release")
    await anyio.to_thread.run_sync(lambda: wait_until(lambda: bulkhead.in_flight == 0))
