"""httpx transports that run every request under a resilience policy (extra ``httpx``).

Wrap any httpx transport and hand the result to a client::

    policy = rs.pipeline(rs.Retry(), rs.CircuitBreaker())
    client = httpx.Client(transport=ResilientTransport(policy))

Each request passes through the policy chosen for it: ``per_host[host]``, else ``policy`` (a
policy or pipeline, or a callable ``request -> policy``). What the transport adds to a plain
``policy.call(...)``:

- **failure statuses are failures without losing the response.** A response whose status is
  in ``failure_statuses`` (default 429, 500, 502, 503, 504) is read (so its connection goes
  back to the pool) and raised *inside* the policy as an internal error carrying it, so Retry,
  the breaker and a Fallback treat it like any other failure. Outside the policy the transport
  catches it and returns the response: when retries run out the caller gets the LAST response,
  exactly as plain httpx would have returned it. Connect, read and other transport errors
  (``httpx.TransportError``) are failures and propagate as themselves.
- **only requests that are safe to repeat are repeated.** Methods in ``retry_methods``
  (default GET, HEAD, OPTIONS, PUT, DELETE) and requests carrying an ``Idempotency-Key``
  header may be retried. Any other request (a ``POST``), and any request whose body is a
  stream that cannot be sent twice, still goes through the whole policy (the breaker counts
  its failures, the timeouts bound it) but a ``Retry`` in it gives up after the first failure.
- **Retry-After is honoured.** On a failure status, the server's ``Retry-After``
  (delta-seconds or an HTTP-date, RFC 9110) becomes the error's ``retry_after``: ``Retry``
  waits at least that long before the next attempt, and gives up at once when the wait would
  pass its ``max_delay`` or the enclosing deadline. A value that is neither form (negative,
  fractional, a garbage date) is ignored and logged once per transport.
- **deadlines reach the socket.** Each attempt's httpx timeouts (connect, read, write, pool)
  are capped by ``rs.remaining()``, so a request inside ``rs.Timeout(0.5)`` gives up after
  0.5 s even in sync code, where the timeout cannot interrupt the thread.
- **OpenTelemetry attributes on the policy's own span.** When tracing is on, the span the
  policy opened around an attempt (the innermost one) gets the HTTP client semantic-convention
  attributes (``http.request.method``, ``url.full``, ``server.address``, ``server.port``,
  ``http.response.status_code``, ``error.type``, ``http.request.resend_count``). The transport
  opens no span of its own.

Responses the caller never sees (earlier attempts, an attempt abandoned by a sync
``Timeout``, results replaced by a Fallback) are closed, so no connection leaks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio
import httpx
from opentelemetry import trace

from ._deadline import _DEADLINE
from ._http import (
    DEFAULT_FAILURE_STATUSES,
    IDEMPOTENT,
    StatusFailure,
    failure_statuses,
    is_transient,
    parse_retry_after,
)
from ._no_retry import NO_RETRY
from ._policy import Policy
from .errors import RetryExhaustedError
from .telemetry import _otel
from .telemetry._hub import STATE

__all__ = [
    "DEFAULT_FAILURE_STATUSES",
    "IDEMPOTENT",
    "AsyncResilientTransport",
    "PolicySelector",
    "ResilientTransport",
    "is_transient",
]

_log = logging.getLogger("resilient.httpx")

PolicySelector = Callable[[httpx.Request], "Policy | None"]
"""A callable choosing the policy of one request (``None``: send it without one)."""

_MIN_TIMEOUT = 0.001
"""The smallest timeout handed to httpx when the deadline has (nearly) passed: zero would mean
"non-blocking" to a socket, not "give up"."""

_TIMEOUT_KEYS = ("connect", "read", "write", "pool")

# OpenTelemetry's well-known methods; any other goes out as "_OTHER" plus the original.
_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)


def _capped(extensions: dict[str, Any], deadline: float) -> dict[str, Any]:
    """``extensions`` with every timeout at most the seconds left before ``deadline``."""
    left = max(deadline - time.monotonic(), _MIN_TIMEOUT)
    timeout = extensions.get("timeout")
    if not isinstance(timeout, Mapping):
        capped = dict.fromkeys(_TIMEOUT_KEYS, left)
    else:
        capped = {k: left if v is None or v > left else v for k, v in timeout.items()}
        for key in _TIMEOUT_KEYS:
            capped.setdefault(key, left)
    return {**extensions, "timeout": capped}


def _tracing_parent() -> Any:
    """The span current before the policy runs, or ``None`` when no policy can open a span
    (tracing off, or no OpenTelemetry SDK): then attempts are not annotated at all."""
    if not STATE.tracing or (
        _otel.api()._TRACER_PROVIDER is None and STATE.tracer_provider is None
    ):
        return None
    return trace.get_current_span()


def _annotate(
    parent: Any,
    request: httpx.Request,
    attempt: int,
    status: int | None,
    error: BaseException | None,
) -> None:
    """Put the HTTP client attributes on the span the policy opened around this attempt (the
    current one, if it is not the caller's own)."""
    span = trace.get_current_span()
    if span is parent or not span.is_recording():
        return
    url = request.url
    method = request.method
    attributes: dict[str, Any] = {
        "http.request.method": method if method in _KNOWN_METHODS else "_OTHER",
        "server.address": url.host,
        "server.port": url.port or (443 if url.scheme == "https" else 80),
        "url.full": str(url.copy_with(username=None, password=None) if url.userinfo else url),
    }
    if method not in _KNOWN_METHODS:
        attributes["http.request.method_original"] = method
    if attempt > 1:
        attributes["http.request.resend_count"] = attempt - 1
    if status is not None:
        attributes["http.response.status_code"] = status
    if error is not None:
        kind = type(error)
        attributes["error.type"] = (
            str(status) if status is not None else f"{kind.__module__}.{kind.__qualname__}"
        )
    span.set_attributes(attributes)


def _rebuilt(response: httpx.Response, body: bytes, request: httpx.Request) -> httpx.Response:
    """A response equal to ``response`` whose raw body is the already-read ``body``: the
    connection went back to the pool, and the caller still reads the body (decoded as usual,
    streamed or not) as if nothing happened."""
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(body),
        extensions=response.extensions,
        request=request,
    )


class _Settings:
    """What both transports share: the validated options and the per-request decisions."""

    def __init__(
        self,
        policy: object,
        per_host: Mapping[str, Policy | None] | None,
        retry_methods: Iterable[str],
        statuses: object,
        wall_clock: Callable[[], float],
    ) -> None:
        if policy is None or isinstance(policy, Policy):
            self.policy: Policy | None = policy
            self.selector: PolicySelector | None = None
        elif callable(policy):
            self.policy = None
            self.selector = policy
        else:
            raise TypeError(
                f"policy must be a resilient policy or pipeline, a callable request -> policy, "
                f"or None, got {policy!r}"
            )
        self.per_host: dict[str, Policy | None] = {}
        if per_host is not None:
            if not isinstance(per_host, Mapping):
                raise TypeError(
                    f"per_host must be a mapping of host -> policy, got {per_host!r}; "
                    f"e.g. per_host={{'api.example.com': rs.CircuitBreaker()}}"
                )
            for host, chosen in per_host.items():
                if not isinstance(host, str) or not host.strip():
                    raise TypeError(f"per_host: keys must be host names, got {host!r}")
                if chosen is not None and not isinstance(chosen, Policy):
                    raise TypeError(
                        f"per_host[{host!r}] must be a resilient policy or None, got {chosen!r}"
                    )
                self.per_host[host.strip().lower()] = chosen
        if isinstance(retry_methods, (str, bytes)) or not isinstance(retry_methods, Iterable):
            raise TypeError(
                f"retry_methods must be a collection of HTTP methods, got {retry_methods!r}; "
                f"e.g. retry_methods={{'GET', 'PUT'}}"
            )
        methods: set[str] = set()
        for method in retry_methods:
            if not isinstance(method, str) or not method.strip():
                raise TypeError(
                    f"retry_methods: {method!r} (in {retry_methods!r}) is not an HTTP method"
                )
            methods.add(method.strip().upper())
        self.retry_methods = frozenset(methods)
        self._methods_text = ", ".join(sorted(methods)) or "none"
        self.statuses = failure_statuses(statuses)
        if not callable(wall_clock):
            raise TypeError(
                f"wall_clock must be a callable returning epoch seconds, got {wall_clock!r}"
            )
        self.wall_clock = wall_clock
        self._warn_lock = threading.Lock()
        self._warned = False

    def policy_for(self, request: httpx.Request) -> Policy | None:
        per_host = self.per_host
        if per_host:
            url = request.url
            if url.port is not None:
                key = f"{url.host}:{url.port}"
                if key in per_host:
                    return per_host[key]
            if url.host in per_host:
                return per_host[url.host]
        if self.selector is None:
            return self.policy
        chosen = self.selector(request)
        if chosen is not None and not isinstance(chosen, Policy):
            raise TypeError(
                f"the policy selector {self.selector!r} returned {chosen!r} for "
                f"{request.method} {request.url}; it must return a resilient policy or None"
            )
        return chosen

    def not_repeatable(self, request: httpx.Request) -> str | None:
        """Why ``request`` must not be sent twice, or ``None`` when it may be."""
        if request.method not in self.retry_methods and "idempotency-key" not in request.headers:
            return (
                f"{request.method} is not among retry_methods ({self._methods_text}) and the "
                f"request has no Idempotency-Key header"
            )
        if not isinstance(request.stream, httpx.ByteStream):
            return (
                "the request body is a stream, which cannot be sent twice (call "
                "request.read() first to buffer it)"
            )
        return None

    def failure(self, exchange: _Exchange, response: httpx.Response) -> StatusFailure:
        """The error that carries a failure-status ``response`` through the policy."""
        hint: float | None = None
        value = response.headers.get("retry-after")
        if value is not None:
            seconds = parse_retry_after(value, self.wall_clock())
            if seconds is None:
                self._bad_retry_after(value, exchange.request)
            elif seconds > 0.0:
                hint = seconds
        return StatusFailure(response, hint, exchange)

    def _bad_retry_after(self, value: str, request: httpx.Request) -> None:
        with self._warn_lock:
            if self._warned:
                return
            self._warned = True
        _log.warning(
            "ignoring invalid Retry-After header %r in a response to %s %s: expected a "
            "number of seconds >= 0 or an HTTP date (RFC 9110); the retry policy's own wait "
            "is used. Further invalid values seen by this transport are not logged.",
            value,
            request.method,
            request.url,
        )

    def unwrap(self, exchange: _Exchange, error: Exception) -> httpx.Response | None:
        """The response to return for ``error`` escaping the policy, or ``None`` (re-raise):
        our own failure status, or a ``RetryExhaustedError`` whose last result is a response
        of this exchange (a user's ``Retry(on_result=...)`` ran out)."""
        if isinstance(error, StatusFailure):
            if error._owner is exchange:
                return error.response  # type: ignore[no-any-return]
            return None
        if isinstance(error, RetryExhaustedError):
            last = error.last_result
            if isinstance(last, httpx.Response) and any(r is last for r in exchange.opened):
                return last
        return None


def _not_a_response(policy: Policy, result: object, request: httpx.Request) -> TypeError:
    return TypeError(
        f"policy {policy!r} returned {result!r} for {request.method} {request.url}; a policy "
        f"used by a resilient transport must return an httpx.Response (a Fallback's value or "
        f"handler must produce one)"
    )


class _Exchange:
    """One request's trip through the policy: the attempts and the responses they opened.

    ``opened`` lists every response an attempt returned unread; when the policy is done, all
    but the one handed to the caller are closed. ``done`` (under ``lock``) tells an attempt
    finishing after that (a sync ``Timeout`` abandoned its worker thread) to close its own.
    """

    __slots__ = (
        "attempts",
        "done",
        "extensions",
        "lock",
        "opened",
        "parent",
        "request",
        "settings",
    )

    def __init__(self, settings: _Settings, request: httpx.Request) -> None:
        self.settings = settings
        self.request = request
        self.extensions: dict[str, Any] = request.extensions
        self.parent = _tracing_parent()
        self.attempts = 0
        self.opened: list[httpx.Response] = []
        self.lock = threading.Lock()
        self.done = False

    def prepare(self) -> int:
        """Start an attempt: cap its timeouts by the current deadline; its number."""
        self.attempts += 1
        deadline = _DEADLINE.get()
        if deadline is not None:
            self.request.extensions = _capped(self.extensions, deadline)
        else:
            self.request.extensions = self.extensions
        return self.attempts

    def keep(self, response: httpx.Response) -> bool:
        with self.lock:
            if self.done:
                return False
            self.opened.append(response)
            return True

    def finish(self, returned: object) -> list[httpx.Response]:
        """End the exchange; the responses to close (all opened but ``returned``)."""
        with self.lock:
            self.done = True
            opened, self.opened = self.opened, []
        self.request.extensions = self.extensions
        return [r for r in opened if r is not returned]


class _SyncExchange(_Exchange):
    __slots__ = ("transport",)

    def __init__(self, settings: _Settings, request: httpx.Request, inner: httpx.BaseTransport):
        super().__init__(settings, request)
        self.transport = inner

    def send(self) -> httpx.Response:
        """One attempt (what the policy calls)."""
        attempt = self.prepare()
        request = self.request
        parent = self.parent
        try:
            response = self.transport.handle_request(request)
        except Exception as exc:
            if parent is not None:
                _annotate(parent, request, attempt, None, exc)
            raise
        status = response.status_code
        if status in self.settings.statuses:
            if not response.is_stream_consumed:  # else it was built in memory, already read
                try:
                    body = b"".join(response.iter_raw())
                finally:
                    response.close()
                response = _rebuilt(response, body, request)
            failure = self.settings.failure(self, response)
            if parent is not None:
                _annotate(parent, request, attempt, status, failure)
            raise failure
        if parent is not None:
            _annotate(parent, request, attempt, status, None)
        if not self.keep(response):  # nobody is waiting for it any more
            response.close()
        return response


class _AsyncExchange(_Exchange):
    __slots__ = ("transport",)

    def __init__(
        self, settings: _Settings, request: httpx.Request, inner: httpx.AsyncBaseTransport
    ):
        super().__init__(settings, request)
        self.transport = inner

    async def send(self) -> httpx.Response:
        """One attempt (what the policy calls)."""
        attempt = self.prepare()
        request = self.request
        parent = self.parent
        try:
            response = await self.transport.handle_async_request(request)
        except Exception as exc:
            if parent is not None:
                _annotate(parent, request, attempt, None, exc)
            raise
        status = response.status_code
        if status in self.settings.statuses:
            if not response.is_stream_consumed:  # else it was built in memory, already read
                try:
                    body = b"".join([chunk async for chunk in response.aiter_raw()])
                finally:
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
                response = _rebuilt(response, body, request)
            failure = self.settings.failure(self, response)
            if parent is not None:
                _annotate(parent, request, attempt, status, failure)
            raise failure
        if parent is not None:
            _annotate(parent, request, attempt, status, None)
        if not self.keep(response):  # nobody is waiting for it any more
            with anyio.CancelScope(shield=True):
                await response.aclose()
        return response


def _close_quietly(response: httpx.Response) -> None:
    with contextlib.suppress(Exception):  # a broken connection is dropped by the pool anyway
        response.close()


class ResilientTransport(httpx.BaseTransport):
    """A sync httpx transport running every request under a resilience policy.

    ``policy``: a policy or pipeline, a callable ``request -> policy`` (returning ``None``
    sends that request without one), or ``None`` (only ``per_host`` hosts get a policy).
    ``per_host``: ``{host: policy}`` (``"host"`` or ``"host:port"``), consulted first.
    ``transport``: the transport that really sends (default: a new ``httpx.HTTPTransport()``;
    pass your own for TLS, proxies, limits, or an ``httpx.MockTransport`` in tests).
    ``retry_methods``: methods that may be retried (plus any request with an
    ``Idempotency-Key`` header). ``failure_statuses``: status codes (or classes such as
    ``"5xx"``) that count as failures. ``wall_clock``: epoch seconds, to turn an HTTP-date
    ``Retry-After`` into a wait (injectable for tests).

    Closing the transport (or the client using it) closes the wrapped transport. Use one
    transport per client; one client may be shared by threads, like any httpx client.
    """

    def __init__(
        self,
        policy: Policy | PolicySelector | None,
        *,
        per_host: Mapping[str, Policy | None] | None = None,
        transport: httpx.BaseTransport | None = None,
        retry_methods: Iterable[str] = IDEMPOTENT,
        failure_statuses: Iterable[int | str] = DEFAULT_FAILURE_STATUSES,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = _Settings(policy, per_host, retry_methods, failure_statuses, wall_clock)
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise TypeError(
                f"transport must be a sync httpx transport (httpx.BaseTransport), got "
                f"{transport!r}; use AsyncResilientTransport with an httpx.AsyncClient"
            )
        self._transport = transport if transport is not None else httpx.HTTPTransport()

    def __repr__(self) -> str:
        s = self._settings
        chosen = s.policy if s.selector is None else s.selector
        return f"<ResilientTransport policy={chosen!r} over {self._transport!r}>"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` under its policy; a failure status that outlived the policy comes
        back as the last response. Policy rejections and timeouts propagate as errors."""
        settings = self._settings
        policy = settings.policy_for(request)
        if policy is None:
            deadline = _DEADLINE.get()
            if deadline is None:
                return self._transport.handle_request(request)
            extensions = request.extensions
            request.extensions = _capped(extensions, deadline)
            try:
                return self._transport.handle_request(request)
            finally:
                request.extensions = extensions
        exchange = _SyncExchange(settings, request, self._transport)
        token = NO_RETRY.set(settings.not_repeatable(request))
        result: Any = None
        try:
            try:
                result = policy.call(exchange.send)
            except Exception as exc:
                result = settings.unwrap(exchange, exc)
                if result is None:
                    raise
            if not isinstance(result, httpx.Response):
                raise _not_a_response(policy, result, request)
            return result
        finally:
            NO_RETRY.reset(token)
            for leftover in exchange.finish(result):
                _close_quietly(leftover)

    def close(self) -> None:
        """Close the wrapped transport (its connection pool)."""
        self._transport.close()


class AsyncResilientTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`ResilientTransport`, for ``httpx.AsyncClient`` (asyncio and
    trio); same options, default inner transport ``httpx.AsyncHTTPTransport()``.

    Cancelling the caller cancels the attempt in flight (it is never counted as a failure) and
    closes any response it had opened.
    """

    def __init__(
        self,
        policy: Policy | PolicySelector | None,
        *,
        per_host: Mapping[str, Policy | None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_methods: Iterable[str] = IDEMPOTENT,
        failure_statuses: Iterable[int | str] = DEFAULT_FAILURE_STATUSES,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = _Settings(policy, per_host, retry_methods, failure_statuses, wall_clock)
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"transport must be an async httpx transport (httpx.AsyncBaseTransport), got "
                f"{transport!r}; use ResilientTransport with an httpx.Client"
            )
        self._transport = transport if transport is not None else httpx.AsyncHTTPTransport()

    def __repr__(self) -> str:
        s = self._settings
        chosen = s.policy if s.selector is None else s.selector
        return f"<AsyncResilientTransport policy={chosen!r} over {self._transport!r}>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` under its policy (see :meth:`ResilientTransport.handle_request`)."""
        settings = self._settings
        policy = settings.policy_for(request)
        if policy is None:
            deadline = _DEADLINE.get()
            if deadline is None:
                return await self._transport.handle_async_request(request)
            extensions = request.extensions
            request.extensions = _capped(extensions, deadline)
            try:
                return await self._transport.handle_async_request(request)
            finally:
                request.extensions = extensions
        exchange = _AsyncExchange(settings, request, self._transport)
        token = NO_RETRY.set(settings.not_repeatable(request))
        result: Any = None
        try:
            try:
                result = await policy.acall(exchange.send)
            except Exception as exc:
                result = settings.unwrap(exchange, exc)
                if result is None:
                    raise
            if not isinstance(result, httpx.Response):
                raise _not_a_response(policy, result, request)
            return result
        finally:
            NO_RETRY.reset(token)
            leftovers = exchange.finish(result)
            if leftovers:
                with anyio.CancelScope(shield=True):
                    for leftover in leftovers:
                        with contextlib.suppress(Exception):
                            await leftover.aclose()

    async def aclose(self) -> None:
        """Close the wrapped transport (its connection pool)."""
        await self._transport.aclose()
