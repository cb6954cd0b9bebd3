"""``LoadShedding``: ASGI middleware that turns a policy's rejection into 503/429 + Retry-After.

A server that accepts every request when it is overloaded answers all of them late; one that
sheds the excess answers most of them on time and tells the rest when to come back. Put a
:class:`resilient.Bulkhead` (or a rate limiter, an adaptive bulkhead, or a pipeline of them:
anything whose refusal is a :class:`resilient.PolicyRejectedError`) in front of the app::

    app = LoadShedding(app, rs.Bulkhead(max_concurrent=50), exclude_paths={"/health"})

Each HTTP request must be admitted by the policy before the app sees it and before its body is
read; the admission is held until the app has finished the response (the last body chunk of a
streaming response included) or was cancelled, whichever comes first. A rejected request gets
``503 Service Unavailable`` (``429 Too Many Requests`` for :class:`resilient.RateLimitedError`)
with a ``Retry-After`` header: the rejection's ``retry_after`` hint in whole seconds, rounded
up, or ``retry_after`` (default 1 s) when the policy gives none (a full bulkhead cannot know
when a slot frees; a second is the usual "soon" that spreads retries out).

Plain ASGI, no framework needed: works with Starlette, FastAPI, Quart, Django or a bare app,
under uvicorn, hypercorn or granian, on asyncio and trio. ``lifespan`` and ``websocket`` scopes
pass through untouched, as do requests to ``exclude_paths`` (health checks must answer even
when the service is saturated: that is when the orchestrator asks).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from ._http import retry_after_header
from ._policy import Policy
from .errors import PolicyRejectedError, RateLimitedError

__all__ = ["ASGIApp", "LoadShedding", "Receive", "Scope", "Send"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Request:
    """One admitted request: the call the policy wraps, and whether it was reached."""

    __slots__ = ("app", "entered", "receive", "scope", "send")

    def __init__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        self.app = app
        self.scope = scope
        self.receive = receive
        self.send = send
        self.entered = False

    async def __call__(self) -> None:
        self.entered = True
        await self.app(self.scope, self.receive, self.send)


class LoadShedding:
    """ASGI middleware admitting each HTTP request through ``policy`` (see the module doc).

    ``app``: the ASGI application to protect. ``policy``: a :class:`resilient.Bulkhead`,
    rate limiter, adaptive bulkhead or a pipeline of them; its rejections become 503 (429 for
    :class:`resilient.RateLimitedError`). ``exclude_paths``: paths (exact matches of the ASGI
    ``path``) that bypass it, e.g. ``{"/health", "/metrics"}``. ``retry_after``: the
    ``Retry-After`` seconds sent when the rejection carries no hint (default 1).

    Starlette and FastAPI: ``app.add_middleware(LoadShedding, policy=bulkhead)`` or wrap the
    app object. A rejection raised by the app itself (say, its own circuit breaker open on a
    dependency) is not turned into a 503 here: it propagates like any other app error.
    """

    def __init__(
        self,
        app: ASGIApp,
        policy: Policy,
        *,
        exclude_paths: Iterable[str] = (),
        retry_after: int = 1,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application (a callable), got {app!r}")
        if not isinstance(policy, Policy):
            raise TypeError(
                f"policy must be a resilient policy (e.g. rs.Bulkhead(max_concurrent=50)), "
                f"got {policy!r}"
            )
        if isinstance(exclude_paths, (str, bytes)) or not isinstance(exclude_paths, Iterable):
            raise TypeError(
                f"exclude_paths must be a collection of paths, got {exclude_paths!r}; "
                f"e.g. exclude_paths={{'/health'}}"
            )
        paths = frozenset(exclude_paths)
        for path in paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(
                    f"exclude_paths: {path!r} (in {exclude_paths!r}) must be a path starting "
                    f"with '/'"
                )
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
            raise ValueError(f"retry_after must be an int >= 0 (seconds), got {retry_after!r}")
        self.app = app
        self.policy = policy
        self.exclude_paths = paths
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"<LoadShedding {self.policy!r} over {self.app!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exclude_paths:
            await self.app(scope, receive, send)
            return
        request = _Request(self.app, scope, receive, send)
        try:
            await self.policy.acall(request)
        except PolicyRejectedError as rejection:
            if request.entered:  # the app's own rejection: not ours to answer
                raise
            await self._reject(rejection, send)

    async def _reject(self, rejection: PolicyRejectedError, send: Send) -> None:
        if isinstance(rejection, RateLimitedError):
            status, body = 429, b"Too many requests: rate limit reached, retry later.\n"
        else:
            status, body = 503, b"Service overloaded: request shed, retry later.\n"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode("ascii")),
                    (b"retry-after", retry_after_header(rejection, self.retry_after).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
