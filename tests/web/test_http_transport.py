"""ResilientTransport / AsyncResilientTransport against in-memory upstreams (httpx.MockTransport).

Every behaviour runs in three modes: the sync transport, and the async one on asyncio and on
trio. Upstream responses carry a stream that records whether it was closed, so the tests can
prove that no response the caller never sees is left open (a leaked pooled connection).
"""

from __future__ import annotations

import gzip
import logging
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import resilient as rs
from resilient.httpx import IDEMPOTENT, AsyncResilientTransport, ResilientTransport, is_transient
from resilient.telemetry import reset_telemetry
from resilient.testing import FakeClock

HTTP_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
HTTP_DATE_EPOCH = 1445412480.0


class TrackedStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that records whether it was closed (a pooled connection released)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield self.body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


Answer = tuple[int, dict[str, str]] | BaseException


class Upstream:
    """Answers from a script (the last answer repeats); records requests and bodies."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers) or [(200, {})]
        self.requests: list[httpx.Request] = []
        self.streams: list[TrackedStream] = []
        self.timeouts: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.timeouts.append(dict(request.extensions.get("timeout", {})))
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, BaseException):
            raise answer
        status, headers = answer
        stream = TrackedStream(f"{status} #{len(self.requests)}".encode())
        self.streams.append(stream)
        return httpx.Response(status, headers=headers, stream=stream)

    @property
    def count(self) -> int:
        return len(self.requests)


Send = Callable[..., httpx.Response]


@pytest.fixture(params=["sync", "asyncio", "trio"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client(mode: str, policy: Any, upstream: Any, **options: Any) -> Send:
    """``send(method, url, **kwargs) -> response`` through a resilient transport in ``mode``
    (the async transports run one event loop per request, on ``mode``'s backend)."""
    inner = upstream if isinstance(upstream, httpx.MockTransport) else httpx.MockTransport(upstream)
    if mode == "sync":
        sync_client = httpx.Client(transport=ResilientTransport(policy, transport=inner, **options))
        return sync_client.request
    transport = AsyncResilientTransport(policy, transport=inner, **options)

    def send(method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=transport) as async_client:
                return await async_client.request(method, url, **kwargs)

        return anyio.run(go, backend=mode)

    return send


def retry(waits: list[float], attempts: int = 3, **kwargs: Any) -> rs.Retry:
    return rs.Retry(attempts=attempts, wait=0.1, sleep=waits.append, **kwargs)


# -- failure statuses ------------------------------------------------------------------------
def test_last_response_is_returned_when_retries_run_out(mode: str) -> None:
    waits: list[float] = []
    upstream = Upstream((503, {}))
    response = client(mode, retry(waits), upstream)("GET", "http://svc/x")
    assert response.status_code == 503
    assert response.text == "503 #3"  # the LAST response, body intact
    assert upstream.count == 3
    assert waits == [0.1, 0.1]
    assert all(s.closed for s in upstream.streams)  # read, connection released


def test_success_after_failure_statuses(mode: str) -> None:
    waits: list[float] = []
    upstream = Upstream((503, {}), (502, {}), (200, {}))
    response = client(mode, retry(waits), upstream)("GET", "http://svc/x")
    assert (response.status_code, response.text, upstream.count) == (200, "200 #3", 3)
    assert all(s.closed for s in upstream.streams)


def test_other_statuses_are_not_failures(mode: str) -> None:
    waits: list[float] = []
    upstream = Upstream((404, {}))
    response = client(mode, retry(waits), upstream)("GET", "http://svc/x")
    assert (response.status_code, upstream.count, waits) == (404, 1, [])


def test_failure_statuses_are_configurable_with_classes(mode: str) -> None:
    waits: list[float] = []
    upstream = Upstream((404, {}), (501, {}), (200, {}))
    send = client(mode, retry(waits), upstream, failure_statuses=("4xx", "5xx"))
    assert send("GET", "http://svc/x").status_code == 200
    assert upstream.count == 3


def test_a_streamed_final_failure_response_is_readable(mode: str) -> None:
    upstream = Upstream((500, {}))
    if mode == "sync":
        policy = rs.Retry(attempts=2, wait=0.0)
        transport = ResilientTransport(policy, transport=httpx.MockTransport(upstream))
        with httpx.Client(transport=transport) as c, c.stream("GET", "http://svc/") as r:
            chunks = list(r.iter_bytes())
    else:
        atransport = AsyncResilientTransport(
            rs.Retry(attempts=2, wait=0.0), transport=httpx.MockTransport(upstream)
        )

        async def go() -> list[bytes]:
            async with (
                httpx.AsyncClient(transport=atransport) as c,
                c.stream("GET", "http://svc/") as r,
            ):
                return [chunk async for chunk in r.aiter_bytes()]

        chunks = anyio.run(go, backend=mode)
    assert b"".join(chunks) == b"500 #2"


def test_encoded_failure_body_is_decoded_once(mode: str) -> None:
    def gzipped(request: httpx.Request) -> httpx.Response:
        stream = TrackedStream(gzip.compress(b"try later"))
        return httpx.Response(503, headers={"content-encoding": "gzip"}, stream=stream)

    response = client(mode, rs.Retry(attempts=2, wait=0.0), gzipped)("GET", "http://svc/")
    assert (response.status_code, response.text) == (503, "try later")


def test_successful_responses_stream_through_unread() -> None:
    upstream = Upstream((200, {}))
    transport = ResilientTransport(rs.CircuitBreaker(), transport=httpx.MockTransport(upstream))
    with httpx.Client(transport=transport) as c:
        with c.stream("GET", "http://svc/") as response:
            (stream,) = upstream.streams
            assert not stream.closed  # the transport neither buffered nor closed it
            assert response.read() == b"200 #1"
        assert stream.closed


# -- Retry-After -------------------------------------------------------------------------------
def test_retry_after_seconds_feed_the_wait(mode: str) -> None:
    waits: list[float] = []
    upstream = Upstream((503, {"Retry-After": "2"}), (429, {"retry-after": "3"}), (200, {}))
    assert client(mode, retry(waits), upstream)("GET", "http://svc/").status_code == 200
    assert waits == [2.0, 3.0]


def test_retry_after_http_date_feeds_the_wait(mode: str) -> None:
    waits: list[float] = []
    upstream = Upstream((503, {"Retry-After": HTTP_DATE}), (200, {}))
    wall = FakeClock(HTTP_DATE_EPOCH - 1.5)
    send = client(mode, retry(waits), upstream, wall_clock=wall)
    assert send("GET", "http://svc/").status_code == 200
    assert waits == [1.5]


def test_retry_after_in_the_past_means_the_policy_own_wait(mode: str) -> None:
    waits: list[float] = []
    upstream = Upstream((503, {"Retry-After": HTTP_DATE}), (503, {"Retry-After": "0"}), (200, {}))
    send = client(mode, retry(waits), upstream, wall_clock=FakeClock(HTTP_DATE_EPOCH + 60))
    assert send("GET", "http://svc/").status_code == 200
    assert waits == [0.1, 0.1]


def test_bad_retry_after_is_ignored_and_logged_once(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad = ["-1", "soon", "Mon, 99 Foo 2015 07:28:00 GMT", "1.5", "", "\u00b2"]
    waits: list[float] = []
    upstream = Upstream(*[(503, {"Retry-After": value}) for value in bad], (200, {}))
    send = client(mode, retry(waits, attempts=len(bad) + 1), upstream)
    with caplog.at_level(logging.WARNING, logger="resilient.httpx"):
        assert send("GET", "http://svc/").status_code == 200
        upstream.answers = [(503, {"Retry-After": "-5"}), (200, {})]
        upstream.requests.clear()
        assert send("GET", "http://svc/").status_code == 200
    assert waits == [0.1] * (len(bad) + 1)
    records = [r for r in caplog.records if r.name == "resilient.httpx"]
    assert len(records) == 1
    assert "Retry-After" in records[0].getMessage() and "'-1'" in records[0].getMessage()


def test_retry_after_beyond_the_deadline_ends_retrying_at_once(mode: str) -> None:
    waits: list[float] = []
    upstream = Upstream((503, {"Retry-After": "600"}), (200, {}))
    policy = rs.pipeline(rs.Timeout(30.0), retry(waits))
    response = client(mode, policy, upstream)("GET", "http://svc/")
    assert (response.status_code, upstream.count, waits) == (503, 1, [])


# -- what is retried ---------------------------------------------------------------------------
def test_post_is_not_retried_but_the_breaker_counts_it(mode: str) -> None:
    waits: list[float] = []
    breaker = rs.CircuitBreaker(window_size=10, minimum_calls=10)
    upstream = Upstream((503, {}))
    response = client(mode, rs.pipeline(retry(waits), breaker), upstream)("POST", "http://svc/")
    assert (response.status_code, upstream.count, waits) == (503, 1, [])
    assert breaker.metrics.failures == 1


def test_post_with_idempotency_key_is_retried(mode: str) -> None:
    waits: list[float] = []
    upstream = Upstream((503, {}))
    send = client(mode, retry(waits), upstream)
    send("POST", "http://svc/", headers={"Idempotency-Key": "order-42"}, content=b"{}")
    assert upstream.count == 3
    assert [r.content for r in upstream.requests] == [b"{}"] * 3


def test_post_is_retried_when_opted_in(mode: str) -> None:
    waits: list[float] = []
    upstream = Upstream((503, {}))
    send = client(mode, retry(waits), upstream, retry_methods=IDEMPOTENT | {"post"})
    assert send("POST", "http://svc/", json={"a": 1}).status_code == 503
    assert upstream.count == 3


@pytest.mark.parametrize("method", sorted(IDEMPOTENT))
def test_idempotent_methods_are_retried(mode: str, method: str) -> None:
    upstream = Upstream((503, {}), (200, {}))
    assert client(mode, retry([]), upstream)(method, "http://svc/").status_code == 200
    assert upstream.count == 2


def test_streaming_request_body_is_not_retried(mode: str) -> None:
    upstream = Upstream((503, {}))
    if mode == "sync":
        body: Any = iter([b"chunk-1", b"chunk-2"])
    else:

        async def chunks() -> AsyncIterator[bytes]:
            yield b"chunk-1"
            yield b"chunk-2"

        body = chunks()
    response = client(mode, retry([]), upstream)("PUT", "http://svc/", content=body)
    assert (response.status_code, upstream.count) == (503, 1)
    assert upstream.requests[0].content == b"chunk-1chunk-2"


def test_transport_errors_are_failures_and_retried_when_safe(mode: str) -> None:
    waits: list[float] = []
    upstream = Upstream(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), (200, {}))
    breaker = rs.CircuitBreaker(window_size=10, minimum_calls=10)
    send = client(mode, rs.pipeline(retry(waits), breaker), upstream)
    assert send("GET", "http://svc/").status_code == 200
    assert breaker.metrics.failures == 2
    upstream.answers = [httpx.ConnectError("refused")]
    upstream.requests.clear()
    with pytest.raises(httpx.ConnectError):
        send("POST", "http://svc/")
    assert upstream.count == 1


def test_breaker_opens_on_failure_statuses_and_stops_requests(mode: str) -> None:
    upstream = Upstream((500, {}))
    breaker = rs.CircuitBreaker(window_size=2, minimum_calls=2, failure_rate_threshold=1.0)
    send = client(mode, breaker, upstream)
    assert [send("GET", "http://svc/").status_code for _ in range(2)] == [500, 500]
    for _ in range(3):
        with pytest.raises(rs.CircuitOpenError):
            send("GET", "http://svc/")
    assert upstream.count == 2


# -- choosing the policy ---------------------------------------------------------------------
def test_per_host_then_default_policy(mode: str) -> None:
    a, b, default = (rs.CircuitBreaker(name=n) for n in ("a", "b", "default"))
    upstream = Upstream((200, {}))
    per_host = {"A.example": a, "b.example:8080": b, "c": None}
    send = client(mode, default, upstream, per_host=per_host)
    for url in ("http://a.example/", "http://b.example:8080/", "http://b.example/", "http://c/"):
        send("GET", url)
    assert (a.metrics.calls, b.metrics.calls, default.metrics.calls) == (1, 1, 1)
    assert upstream.count == 4


def test_policy_selector(mode: str) -> None:
    chosen = rs.CircuitBreaker()
    upstream = Upstream((200, {}))

    def select(request: httpx.Request) -> rs.Policy | None:
        return None if request.url.path == "/health" else chosen

    send = client(mode, select, upstream)
    send("GET", "http://svc/health")
    send("GET", "http://svc/orders")
    assert chosen.metrics.calls == 1
    assert upstream.count == 2
    bad = client(mode, lambda request: "breaker", upstream)
    with pytest.raises(TypeError, match="must return a resilient policy or None"):
        bad("GET", "http://svc/")


# -- deadlines -------------------------------------------------------------------------------
def test_each_attempt_timeout_is_capped_by_the_remaining_budget(mode: str) -> None:
    upstream = Upstream((200, {}))
    send = client(mode, rs.Timeout(2.0), upstream)
    response = send("GET", "http://svc/", timeout=httpx.Timeout(5.0, connect=1.0))
    (seen,) = upstream.timeouts
    assert all(0.0 < seen[k] <= 2.0 for k in ("read", "write", "pool"))  # 5 s capped to 2 s
    assert seen["connect"] == 1.0  # already tighter than the budget
    # the request the caller holds keeps its own settings
    assert response.request.extensions["timeout"]["read"] == 5.0


def test_without_a_deadline_timeouts_are_untouched(mode: str) -> None:
    upstream = Upstream((200, {}))
    send = client(mode, rs.CircuitBreaker(), upstream)
    send("GET", "http://svc/", timeout=7.0)
    assert upstream.timeouts == [dict.fromkeys(("connect", "read", "write", "pool"), 7.0)]


def test_an_enclosing_deadline_caps_requests_without_a_policy() -> None:
    upstream = Upstream((200, {}))
    send = client("sync", None, upstream)
    with rs.Timeout(1.0):
        send("GET", "http://svc/", timeout=None)
    (seen,) = upstream.timeouts
    assert all(0.0 < v <= 1.0 for v in seen.values())  # no timeout at all became the budget


# -- other policies' results ----------------------------------------------------------------
def test_fallback_response_replaces_the_failure_and_the_failure_is_closed(mode: str) -> None:
    upstream = Upstream((503, {}))

    def cached(error: Exception) -> httpx.Response:
        assert isinstance(error, rs.ResilienceError)
        assert getattr(error, "response").status_code == 503  # noqa: B009 - documented attribute
        return httpx.Response(200, text="cached")

    response = client(mode, rs.Fallback(handler=cached), upstream)("GET", "http://svc/")
    assert (response.status_code, response.text) == (200, "cached")
    assert all(s.closed for s in upstream.streams)


def test_a_policy_returning_something_else_is_a_type_error(mode: str) -> None:
    send = client(mode, rs.Fallback("oops"), Upstream((503, {})))
    with pytest.raises(TypeError, match=r"must return an httpx\.Response"):
        send("GET", "http://svc/")


def test_result_retries_return_the_last_response_and_close_the_others(mode: str) -> None:
    upstream = Upstream((404, {}))
    policy = rs.Retry(attempts=3, wait=0.0, on_result=lambda r: r.status_code == 404)
    response = client(mode, policy, upstream)("GET", "http://svc/")
    assert (response.status_code, response.text, upstream.count) == (404, "404 #3", 3)
    assert all(s.closed for s in upstream.streams)  # two discarded, the last read by the client


def test_non_transient_errors_propagate_unchanged(mode: str) -> None:
    upstream = Upstream(httpx.UnsupportedProtocol("ftp?"))
    policy = rs.Retry(attempts=3, wait=0.0, on=is_transient)
    with pytest.raises(httpx.UnsupportedProtocol):
        client(mode, policy, upstream)("GET", "http://svc/")
    assert upstream.count == 1


# -- cancellation and abandoned attempts --------------------------------------------------------
@pytest.mark.anyio
async def test_cancelling_the_caller_is_not_a_failure(anyio_backend: str) -> None:
    entered = anyio.Event()

    async def stuck(request: httpx.Request) -> httpx.Response:
        entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    breaker = rs.CircuitBreaker(window_size=1, minimum_calls=1)
    transport = AsyncResilientTransport(breaker, transport=httpx.MockTransport(stuck))
    async with httpx.AsyncClient(transport=transport) as c, anyio.create_task_group() as tg:

        async def call() -> None:
            await c.get("http://svc/")

        tg.start_soon(call)
        await entered.wait()
        tg.cancel_scope.cancel()
    assert breaker.metrics.calls == 0
    assert breaker.state is rs.BreakerState.CLOSED


def test_a_response_arriving_after_a_sync_timeout_gave_up_is_closed() -> None:
    release = threading.Event()
    late = TrackedStream(b"late")

    def slow(request: httpx.Request) -> httpx.Response:
        release.wait(10)
        return httpx.Response(200, stream=late)

    transport = ResilientTransport(rs.Timeout(0.05), transport=httpx.MockTransport(slow))
    with httpx.Client(transport=transport) as c, pytest.raises(rs.TimeoutExceeded):
        c.get("http://svc/")
    release.set()
    from http_servers import wait_until

    wait_until(lambda: late.closed, what="the abandoned response to be closed")


# -- spans -------------------------------------------------------------------------------------
@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rs.configure_telemetry(tracer_provider=provider, tracing=True, registry=CollectorRegistry())
    yield exporter
    reset_telemetry()


def test_attempt_spans_carry_http_semantic_conventions(
    mode: str, spans: InMemorySpanExporter
) -> None:
    upstream = Upstream((503, {}), (200, {}))
    policy = rs.pipeline(rs.Retry(name="svc", attempts=2, wait=0.0), rs.CircuitBreaker(name="svc"))
    client(mode, policy, upstream)("GET", "http://user:secret@api.example:8443/items?id=1")
    finished = spans.get_finished_spans()
    assert sorted(s.name for s in finished) == ["breaker svc", "breaker svc", "retry svc"]
    first, second = (s for s in finished if s.name == "breaker svc")
    assert first.attributes is not None and second.attributes is not None
    assert dict(first.attributes) == {
        "resilient.policy": "breaker",
        "resilient.name": "svc",
        "resilient.outcome": "failure",
        "http.request.method": "GET",
        "server.address": "api.example",
        "server.port": 8443,
        "url.full": "http://api.example:8443/items?id=1",
        "http.response.status_code": 503,
        "error.type": "503",
    }
    assert second.attributes["http.response.status_code"] == 200
    assert second.attributes["http.request.resend_count"] == 1
    assert "error.type" not in second.attributes
    (outer,) = (s for s in finished if s.name == "retry svc")
    assert outer.attributes is not None and "http.request.method" not in outer.attributes


def test_transport_error_type_on_the_span(spans: InMemorySpanExporter) -> None:
    upstream = Upstream(httpx.ConnectError("refused"))
    with pytest.raises(httpx.ConnectError):
        client("sync", rs.CircuitBreaker(name="svc"), upstream)("PATCH", "http://svc/")
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["error.type"] == "httpx.ConnectError"
    assert span.attributes["server.port"] == 80


# -- construction --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("statuses", "error", "fragment"),
    [
        ((600,), ValueError, "600"),
        (("6xx",), ValueError, "unknown status class '6xx'"),
        (("503",), ValueError, "'503'"),
        ((99, 503), ValueError, "99"),
        ((True,), TypeError, "True"),
        ((503.0,), TypeError, "503.0"),
        (503, TypeError, "collection"),
        ("5xx", TypeError, "collection"),
    ],
)
def test_bad_failure_statuses_are_refused(statuses: Any, error: type, fragment: str) -> None:
    for cls in (ResilientTransport, AsyncResilientTransport):
        with pytest.raises(error, match="failure_statuses") as info:
            cls(None, transport=httpx.MockTransport(Upstream()), failure_statuses=statuses)
        assert fragment in str(info.value)


def test_other_bad_options_are_refused() -> None:
    mock = httpx.MockTransport(Upstream())
    with pytest.raises(TypeError, match="policy must be"):
        ResilientTransport(42, transport=mock)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry_methods"):
        ResilientTransport(None, transport=mock, retry_methods="GET")
    with pytest.raises(TypeError, match="retry_methods"):
        ResilientTransport(None, transport=mock, retry_methods=["GET", 1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"per_host\['x'\]"):
        ResilientTransport(None, transport=mock, per_host={"x": "breaker"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="per_host must be a mapping"):
        ResilientTransport(None, transport=mock, per_host=[("x", None)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sync httpx transport"):
        ResilientTransport(None, transport=httpx.AsyncHTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="async httpx transport"):
        AsyncResilientTransport(None, transport=httpx.HTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="wall_clock"):
        ResilientTransport(None, transport=mock, wall_clock=0)  # type: ignore[arg-type]


def test_closing_closes_the_wrapped_transport() -> None:
    closed: list[str] = []

    class Inner(httpx.MockTransport):
        def close(self) -> None:
            closed.append("sync")

        async def aclose(self) -> None:
            closed.append("async")

    with httpx.Client(transport=ResilientTransport(None, transport=Inner(Upstream()))):
        pass

    async def go() -> None:
        transport = AsyncResilientTransport(None, transport=Inner(Upstream()))
        async with httpx.AsyncClient(transport=transport):
            pass

    anyio.run(go)
    assert closed == ["sync", "async"]


def test_the_default_inner_transports_are_httpx_own() -> None:
    assert "HTTPTransport" in repr(ResilientTransport(rs.CircuitBreaker()))
    assert "AsyncHTTPTransport" in repr(AsyncResilientTransport(rs.CircuitBreaker()))


def test_import_resilient_does_not_import_http_libraries() -> None:
    code = (
        "import sys, resilient, resilient.presets, resilient.asgi; "
        "loaded = sorted(m for m in ('httpx', 'httpcore', 'starlette', 'fastapi', 'uvicorn') "
        "if m in sys.modules); print(loaded)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
