"""What the three shop services share: the fault switch and the way they are served.

Every service listens on 127.0.0.1 only. ``--port 0`` (the default) lets the kernel pick a free
port; the service prints ``READY http://127.0.0.1:<port>`` on its first stdout line so whoever
started it (the demo, the tests, :class:`examples.shop.cluster.ShopCluster`) learns the port
without a race between "find a free port" and "bind it".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = [
    "HOST",
    "Chaos",
    "ChaosFault",
    "chaos_route",
    "health_route",
    "read_json",
    "run_service",
]

HOST = "127.0.0.1"


class ChaosFault(Exception):
    """The fault switch decided this request fails (the handler answers 503)."""


@dataclass
class Chaos:
    """A fault switch: make some endpoints slow and/or fail a fraction of their requests.

    ``error_rate`` is the fraction of requests that fail with 503. ``after_commit`` is the
    fraction of those failures that happen *after* the service did the work (the caller sees
    an error although the effect happened: the in-doubt case idempotency keys exist for).
    ``latency`` seconds are added to every affected request. ``endpoints`` names the endpoints
    the switch applies to.
    """

    endpoints: frozenset[str]
    error_rate: float = 0.0
    after_commit: float = 0.0
    latency: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    def configure(self, body: dict[str, Any]) -> None:
        """Apply a ``POST /chaos`` body; fields left out are reset to "healthy"."""
        error_rate = float(body.get("error_rate", 0.0))
        after_commit = float(body.get("after_commit", 0.0))
        latency = float(body.get("latency", 0.0))
        for name, value in (("error_rate", error_rate), ("after_commit", after_commit)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency!r}")
        endpoints = body.get("endpoints")
        if endpoints is not None:
            if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
                raise ValueError(f"endpoints must be a list of strings, got {endpoints!r}")
            self.endpoints = frozenset(endpoints)
        self.error_rate, self.after_commit, self.latency = error_rate, after_commit, latency

    def as_dict(self) -> dict[str, Any]:
        """The current setting, as ``GET /chaos`` shows it."""
        return {
            "endpoints": sorted(self.endpoints),
            "error_rate": self.error_rate,
            "after_commit": self.after_commit,
            "latency": self.latency,
        }

    async def before(self, endpoint: str) -> bool:
        """Delay and maybe fail ``endpoint`` before it does its work.

        Returns True when the request must fail *after* its work (the caller then raises
        :class:`ChaosFault` once the effect is recorded); raises :class:`ChaosFault` now when
        it must fail before.
        """
        if endpoint not in self.endpoints:
            return False
        if self.latency > 0:
            await anyio.sleep(self.latency)
        if self.error_rate <= 0 or self.rng.random() >= self.error_rate:
            return False
        if self.rng.random() < self.after_commit:
            return True
        raise ChaosFault(f"chaos: {endpoint} failed before doing its work")


def chaos_route(chaos: Chaos) -> Route:
    """``GET /chaos`` shows the fault switch, ``POST /chaos`` sets it (``{}`` heals)."""

    async def endpoint(request: Request) -> JSONResponse:
        if request.method == "POST":
            try:
                chaos.configure(await read_json(request))
            except (TypeError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(chaos.as_dict())

    return Route("/chaos", endpoint, methods=["GET", "POST"])


def health_route(service: str) -> Route:
    """``GET /health``: answers as soon as the service accepts requests."""

    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({"service": service, "status": "ok", "pid": os.getpid()})

    return Route("/health", endpoint, methods=["GET"])


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
    service: str, app_factory: Callable[[], Starlette], argv: Iterable[str] | None = None
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
    except ValueError as exc:  # bad configuration: say what is wrong, without a traceback
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
