"""What the resilient httpx transport costs per request, next to plain httpx.

Two measurements, because a loopback request is noisy and the transport's own cost is small:

1. **On the wire.** A local server (uvicorn on loopback, in a thread of this process) answers
   ``200 ok``; the same ``GET`` goes through plain ``httpx.Client`` / ``httpx.AsyncClient``
   (the baseline: a real request's own cost), through the resilient transport with one
   ``CircuitBreaker`` (the transport's overhead plus the cheapest policy) and with
   ``presets.http(name)`` (total Timeout > Retry > CircuitBreaker > attempt Timeout).
2. **In memory.** The same three, but the wrapped transport answers from memory, so what is
   left is exactly what the resilient layer adds per request (choosing the policy, the
   idempotency check, the deadline cap, the exchange bookkeeping, the policies themselves).
   Divided by the plain request's cost from (1), that is the overhead share.

Contenders are timed in interleaved blocks (round-robin, several rounds, median block; see
``_harness.py``) so drift on a shared machine hits all of them alike, and each is checked to
reach the server (or the in-memory transport) exactly once per request. Telemetry is at its
defaults (metrics on, tracing on, no OpenTelemetry SDK). Target: the transport's overhead
under 5% of the request's own cost.

Usage::

    python benchmarks/http_transport.py            # full run (a minute or two)
    python benchmarks/http_transport.py --quick    # tiny blocks (smoke test)
    python benchmarks/http_transport.py --output benchmarks/results-http.json
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx
import uvicorn
from _harness import (  # the harness sits next to this script
    Contender,
    Counter,
    Runner,
    Scenario,
    ScenarioResult,
    environment,
    format_ns,
    render_table,
    result_to_json,
    write_json,
)

import resilient as rs
from resilient import presets
from resilient.httpx import AsyncResilientTransport, ResilientTransport

BODY = b"ok"


def make_app(counter: Counter) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        counter.n += 1
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"2"), (b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": BODY})

    return app


class Server:
    """uvicorn on a free loopback port, in a daemon thread of this process."""

    def __init__(self, app: Any) -> None:
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
        # without it every response waits ~40 ms for a delayed ACK (Nagle).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        config = uvicorn.Config(app, log_level="error", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def sync_scenario(url: str, counter: Counter) -> tuple[Scenario, list[httpx.Client]]:
    plain = httpx.Client()
    breaker = httpx.Client(transport=ResilientTransport(rs.CircuitBreaker(name="bench-breaker")))
    preset = httpx.Client(transport=ResilientTransport(presets.http("bench-sync")))
    clients = [plain, breaker, preset]

    def status(client: httpx.Client) -> Any:
        def call() -> int:
            return client.get(url).status_code

        return call

    contenders = [
        Contender("httpx.Client", "httpx", "bare", status(plain)),
        Contender("transport + CircuitBreaker", "resilient", "resilient", status(breaker)),
        Contender(
            "transport + presets.http",
            "resilient",
            "resilient",
            status(preset),
            note="4 policies; the two sync Timeouts each run the call on a worker thread",
        ),
    ]
    return Scenario("http", "GET 200", "sync", counter, 1, 200, contenders), clients


def async_scenario(url: str, counter: Counter) -> tuple[Scenario, list[httpx.AsyncClient]]:
    plain = httpx.AsyncClient()
    breaker = httpx.AsyncClient(
        transport=AsyncResilientTransport(rs.CircuitBreaker(name="bench-abreaker"))
    )
    preset = httpx.AsyncClient(transport=AsyncResilientTransport(presets.http("bench-async")))
    clients = [plain, breaker, preset]

    def status(client: httpx.AsyncClient) -> Any:
        async def call() -> int:
            return (await client.get(url)).status_code

        return call

    contenders = [
        Contender("httpx.AsyncClient", "httpx", "bare", status(plain), is_async=True),
        Contender(
            "transport + CircuitBreaker", "resilient", "resilient", status(breaker), is_async=True
        ),
        Contender(
            "transport + presets.http", "resilient", "resilient", status(preset), is_async=True
        ),
    ]
    return Scenario("http", "GET 200", "async", counter, 1, 200, contenders), clients


class InMemory(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A wrapped transport answering ``200 ok`` from memory (counts what reaches it)."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.counter.n += 1
        return httpx.Response(200, stream=httpx.ByteStream(BODY))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.counter.n += 1
        return httpx.Response(200, stream=httpx.ByteStream(BODY))


def memory_scenarios(counter: Counter) -> list[Scenario]:
    """The resilient layer alone: ``handle_request`` over an in-memory transport."""
    inner = InMemory(counter)
    timeouts = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
    request = httpx.Request("GET", "http://svc/items", extensions={"timeout": timeouts})
    sync_rows = [
        ("in-memory transport", "bare", inner),
        (
            "transport + CircuitBreaker",
            "resilient",
            ResilientTransport(rs.CircuitBreaker(name="mem-breaker"), transport=inner),
        ),
        (
            "transport + presets.http",
            "resilient",
            ResilientTransport(presets.http("mem-sync"), transport=inner),
        ),
    ]
    async_rows = [
        ("in-memory transport", "bare", inner),
        (
            "transport + CircuitBreaker",
            "resilient",
            AsyncResilientTransport(rs.CircuitBreaker(name="mem-abreaker"), transport=inner),
        ),
        (
            "transport + presets.http",
            "resilient",
            AsyncResilientTransport(presets.http("mem-async"), transport=inner),
        ),
    ]

    def sync_call(transport: Any) -> Any:
        def call() -> int:
            return int(transport.handle_request(request).status_code)

        return call

    def async_call(transport: Any) -> Any:
        async def call() -> int:
            return int((await transport.handle_async_request(request)).status_code)

        return call

    return [
        Scenario(
            "http",
            "in memory",
            "sync",
            counter,
            1,
            200,
            [Contender(label, "resilient", role, sync_call(t)) for label, role, t in sync_rows],
        ),
        Scenario(
            "http",
            "in memory",
            "async",
            counter,
            1,
            200,
            [
                Contender(label, "resilient", role, async_call(t), is_async=True)
                for label, role, t in async_rows
            ],
        ),
    ]


def summary(wire: list[ScenarioResult], memory: list[ScenarioResult]) -> str:
    """Per mode and contender: the request's cost on the wire, and what the resilient layer
    adds, measured on the wire (noisy) and in memory (exact), as a share of plain httpx."""
    lines = [
        "| mode | contender | per request (wire) | overhead (wire) | overhead (in memory) "
        "| in-memory overhead % of plain request |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for on_wire, in_memory in zip(wire, memory, strict=True):
        plain = next(r for r in on_wire.rows if r.role == "bare")
        for r in on_wire.rows:
            if r.role == "bare":
                lines.append(
                    f"| {on_wire.scenario.mode} | {r.label} | {format_ns(r.ns)} | - | - | - |"
                )
                continue
            mem = in_memory.row(r.label)
            assert mem is not None
            lines.append(
                f"| {on_wire.scenario.mode} | {r.label} | {format_ns(r.ns)} | "
                f"{format_ns(r.overhead)} | {format_ns(mem.overhead)} | "
                f"{100 * mem.overhead / plain.ns:.2f}% |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="tiny blocks (smoke test)")
    parser.add_argument("--output", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    rs.configure_telemetry(metrics=True, tracing=True)
    runner = (
        Runner(block_s=0.02, rounds=2, warmup=3)
        if args.quick
        else Runner(block_s=0.5, rounds=9, warmup=50)
    )
    counter = Counter()
    wire: list[ScenarioResult] = []
    memory: list[ScenarioResult] = []
    try:
        with Server(make_app(counter)) as server:
            scenario, clients = sync_scenario(server.url, counter)
            wire.append(runner.run(scenario))
            for client in clients:
                client.close()
            ascenario, aclients = async_scenario(server.url, counter)
            wire.append(runner.run(ascenario))
            for aclient in aclients:
                runner.loop.run_until_complete(aclient.aclose())
        memory = [runner.run(s) for s in memory_scenarios(counter)]
    finally:
        runner.close()
    print(render_table(wire + memory))
    print()
    print(summary(wire, memory))
    if args.output:
        write_json(
            args.output,
            {
                "environment": environment(("httpx", "httpcore", "uvicorn")),
                "results": [result_to_json(r) for r in wire + memory],
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
