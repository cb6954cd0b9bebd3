"""What the shop services share: the chaos switch, the metrics route and the way they are served.

Every service listens on 127.0.0.1 only. ``--port 0`` (the default) lets the kernel pick a free
port; the service prints ``READY http://127.0.0.1:<port>`` on its first stdout line so whoever
started it (the demo, the tests, :class:`examples.shop.cluster.ShopCluster`) learns the port
without a race between "find a free port" and "bind it".

The chaos switch is built on ``rs.chaos``: per endpoint, a ``Latency``, a ``Result`` (a canned
``429 Too Many Requests`` with ``Retry-After``), a ``Fault`` before the work and a ``Fault``
after it, all switched off until ``POST /chaos`` switches some on. Being library policies, the
injections are counted in ``/metrics`` with the outcome ``injected``, reproducible per seed,
and can also be switched on at start-up from the environment
(``RESILIENT__PAYMENTS_CHARGES__CHAOS_FAULT__ENABLED=true``, ``..._RATE=0.2``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import resilient as rs

__all__ = [
    "HOST",
    "THROTTLED",
    "ASGIApp",
    "ChaosFault",
    "ChaosSwitch",
    "health_route",
    "metrics_route",
    "read_json",
    "run_service",
]

HOST = "127.0.0.1"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

THROTTLED: dict[str, int] = {"status": 429, "retry_after": 1}
"""What the chaos ``Result`` answers instead of the endpoint: a throttling server's reply."""


class ChaosFault(Exception):
    """A chaos ``Fault`` decided this request fails (the service answers 503)."""


@dataclass(frozen=True)
class _EndpointChaos:
    """The chaos policies of one endpoint. ``before`` is their pipeline (latency, then a
    canned answer, then a fault): it keeps them referenced, since ``rs.chaos.policies()``
    holds them weakly."""

    latency: rs.chaos.Latency
    throttle: rs.chaos.Result
    fault: rs.chaos.Fault
    after_commit: rs.chaos.Fault
    before: rs.Pipeline


async def _no_answer() -> None:
    return None


_FIELDS = ("endpoints", "latency", "latency_rate", "fault", "after_commit", "throttle")


def _share(body: dict[str, Any], field: str, default: float = 0.0) -> float:
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{field} must be a number between 0 and 1, got {value!r}")
    return float(value)


class ChaosSwitch:
    """A service's fault switch, made of ``rs.chaos`` policies named
    ``<service>.<endpoint>`` (the after-commit fault: ``<service>.<endpoint>.after-commit``).

    ``POST /chaos`` with a JSON body sets it; fields left out are off, ``{}`` heals:

    - ``latency`` (seconds) and ``latency_rate`` (share of requests, default 1): a delay
      before the endpoint runs;
    - ``throttle``: share of requests answered ``429`` with ``Retry-After: 1`` without running
      the endpoint (a throttling server, rehearsed);
    - ``fault``: share of requests failing with 503 before the endpoint does its work;
    - ``after_commit``: share of requests failing with 503 *after* the endpoint did its work
      (the caller sees an error although the effect happened: the in-doubt case idempotency
      keys exist for);
    - ``endpoints``: the endpoints these settings apply to (default ``defaults``); every other
      endpoint of the service is switched off.

    Decisions are reproducible: each policy's seed derives from its name and ``seed``.
    """

    def __init__(
        self,
        service: str,
        endpoints: Sequence[str],
        *,
        defaults: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        self.service = service
        self.defaults = tuple(defaults if defaults is not None else endpoints)
        self._endpoints: dict[str, _EndpointChaos] = {}
        for endpoint in endpoints:
            name = f"{service}.{endpoint}"

            def seeded(label: str) -> int:
                return zlib.crc32(label.encode()) ^ seed

            latency = rs.chaos.Latency.from_env(
                name, rate=0.0, seconds=0.0, seed=seeded(name + "/latency"), enabled=False
            )
            throttle = rs.chaos.Result.from_env(
                name, rate=0.0, value=THROTTLED, seed=seeded(name + "/throttle"), enabled=False
            )
            fault = rs.chaos.Fault.from_env(
                name, rate=0.0, error=ChaosFault, seed=seeded(name + "/fault"), enabled=False
            )
            after_commit = rs.chaos.Fault.from_env(
                f"{name}.after-commit",
                rate=0.0,
                error=ChaosFault,
                seed=seeded(name + "/after-commit"),
                enabled=False,
            )
            self._endpoints[endpoint] = _EndpointChaos(
                latency, throttle, fault, after_commit, rs.pipeline(latency, throttle, fault)
            )
        unknown = set(self.defaults) - set(self._endpoints)
        if unknown:
            raise ValueError(f"defaults name unknown endpoints: {sorted(unknown)}")

    def configure(self, body: dict[str, Any]) -> None:
        """Apply a ``POST /chaos`` body (see the class docstring); all or nothing."""
        extra = set(body) - set(_FIELDS)
        if extra:
            raise ValueError(f"unknown fields {sorted(extra)}; expected some of {list(_FIELDS)}")
        endpoints = body.get("endpoints", list(self.defaults))
        if not isinstance(endpoints, list) or not all(e in self._endpoints for e in endpoints):
            raise ValueError(
                f"endpoints must be a list of {sorted(self._endpoints)}, got {endpoints!r}"
            )
        seconds = body.get("latency", 0.0)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError(f"latency must be a number of seconds >= 0, got {seconds!r}")
        latency_rate = _share(body, "latency_rate", 1.0 if seconds > 0 else 0.0)
        fault, after, throttle = (_share(body, f) for f in ("fault", "after_commit", "throttle"))
        for endpoint, chaos in self._endpoints.items():
            on = endpoint in endpoints
            chaos.latency.seconds = float(seconds) if on else 0.0
            for policy, rate in (
                (chaos.latency, latency_rate if seconds > 0 else 0.0),
                (chaos.throttle, throttle),
                (chaos.fault, fault),
                (chaos.after_commit, after),
            ):
                policy.rate = rate if on else 0.0
                policy.enabled = policy.rate > 0

    def view(self) -> list[dict[str, Any]]:
        """Every chaos policy of this service as ``GET /chaos`` shows it (read back from
        ``rs.chaos.policies()``, the library's list of live chaos policies)."""
        prefix = f"{self.service}."
        return [
            {
                "name": p.name,
                "kind": p.kind,
                "enabled": p.enabled,
                "rate": p.rate,
                "calls": p.calls,
                **({"seconds": p.seconds} if isinstance(p, rs.chaos.Latency) else {}),
            }
            for p in rs.chaos.policies()
            if p.name.startswith(prefix)
        ]

    def route(self) -> Route:
        """``GET /chaos`` shows the switch, ``POST /chaos`` sets it (``{}`` heals)."""

        async def endpoint(request: Request) -> JSONResponse:
            if request.method == "POST":
                try:
                    self.configure(await read_json(request))
                except (TypeError, ValueError) as exc:
                    return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse({"policies": self.view()})

        return Route("/chaos", endpoint, methods=["GET", "POST"])

    def guard(self, endpoint: str, app: ASGIApp) -> ASGIApp:
        """``app`` (an ASGI endpoint) behind ``endpoint``'s chaos policies."""
        return _Guarded(self._endpoints[endpoint], app)


class _Guarded:
    """An ASGI app behind one endpoint's chaos policies. A class, not a function, so that
    Starlette's ``Route`` treats it as an ASGI app rather than a request handler."""

    def __init__(self, chaos: _EndpointChaos, app: ASGIApp) -> None:
        self.chaos = chaos
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chaos = self.chaos
        try:
            canned = await chaos.before.acall(_no_answer)
        except ChaosFault as exc:
            await _send_json(send, 503, {"error": f"{exc} (before doing the work)"})
            return
        if canned is not None:  # the throttle Result answered instead of the endpoint
            await _send_json(
                send,
                canned["status"],
                {"error": "chaos: throttled, retry later"},
                [(b"retry-after", str(canned["retry_after"]).encode())],
            )
            return
        if not chaos.after_commit.enabled:
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, receive, hold)  # the work is done (and committed) here
        try:
            await chaos.after_commit.acall(_no_answer)
        except ChaosFault as exc:
            await _send_json(send, 503, {"error": f"{exc} (after doing the work)"})
            return
        for message in held:
            await send(message)


async def _send_json(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def health_route(service: str, **extra: str) -> Route:
    """``GET /health``: answers as soon as the service accepts requests."""

    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({"service": service, "status": "ok", "pid": os.getpid(), **extra})

    return Route("/health", endpoint, methods=["GET"])


def metrics_route() -> Route:
    """``GET /metrics``: this process's Prometheus metrics (``resilient_*`` and the shop's)."""

    async def endpoint(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", endpoint, methods=["GET"])


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (an empty body is ``{}``)."""
    raw = await request.body()
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _watch_parent(parent: int) -> None:
    """Stop this service when the process that started it is gone (no orphans, even when
    the demo or a test run is killed with SIGKILL and cannot clean up)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def run_service(
    service: str, app_factory: Callable[[], ASGIApp], argv: Iterable[str] | None = None
) -> None:
    """Command line entry point of one service: bind 127.0.0.1, announce, serve until SIGTERM."""
    parser = argparse.ArgumentParser(
        prog=f"python -m examples.shop.{service}",
        description=f"The shop's {service} service (listens on {HOST} only).",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the starting process exits (used by the demo and the tests)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {args.port}")

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Without TCP_NODELAY a keep-alive client waits ~40 ms per response (Nagle + delayed ACK:
    # the server writes headers and body separately); accepted sockets inherit the option.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((HOST, args.port))
    sock.listen(128)
    port = sock.getsockname()[1]

    if args.exit_with_parent:
        threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

    try:
        app = app_factory()
    except (ValueError, rs.ConfigError) as exc:  # bad configuration: say what, no traceback
        sock.close()
        parser.error(str(exc))
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    print(f"READY http://{HOST}:{port}", flush=True)
    server.run(sockets=[sock])
    sys.stdout.flush()
