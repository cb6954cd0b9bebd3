"""Real HTTP servers on loopback for the HTTP tests: uvicorn in a thread, on a free port.

``UvicornThread`` runs any ASGI app; ``ScriptedApp`` is a plain ASGI app whose answers the
test scripts per key (``/s/<key>``: a list of (status, headers) answers, the last one repeated)
and that counts what reached it, so a test can prove how many requests were on the wire.
``/stall/<key>`` answers only after 5 s, or never if the client goes away first (then the key
is marked disconnected: proof that the client really gave up and closed its connection).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import uvicorn

Answer = tuple[int, dict[str, str]]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Wait (bounded) for a condition another thread makes true; fail the test otherwise."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.005)


class UvicornThread:
    """``with UvicornThread(app) as server: httpx.get(server.url + "/")``."""

    def __init__(self, app: Any, *, lifespan: str = "off") -> None:
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
        # without it every response waits ~40 ms for a delayed ACK (Nagle).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan=lifespan, access_log=False, ws="none"
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> UvicornThread:
        self._thread.start()
        wait_until(lambda: self.server.started, what="uvicorn to start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()


class ScriptedApp:
    """A plain ASGI app answering ``/s/<key>`` from a script, counting requests per key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Answer]] = {}
        self.requests: dict[str, list[str]] = defaultdict(list)  # key -> methods seen
        self.disconnected: set[str] = set()

    def script(self, key: str, answers: Sequence[Answer]) -> str:
        """Script ``key``'s answers; returns its path."""
        with self._lock:
            self._scripts[key] = list(answers)
        return f"/s/{key}"

    def count(self, key: str) -> int:
        with self._lock:
            return len(self.requests[key])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        _, kind, key = scope["path"].split("/", 2)
        while True:  # read the whole request body first
            message = await receive()
            if not message.get("more_body"):
                break
        with self._lock:
            self.requests[key].append(scope["method"])
            seen = len(self.requests[key])
            script = self._scripts.get(key, [(200, {})])
        if kind == "stall":
            try:
                message = await asyncio.wait_for(receive(), timeout=5.0)
            except asyncio.TimeoutError:
                message = {}
            if message.get("type") == "http.disconnect":
                with self._lock:
                    self.disconnected.add(key)
                return
            status, headers = 200, {}
        else:
            status, headers = script[min(seen, len(script)) - 1]
        body = f"{status} #{seen}".encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    *((k.encode(), v.encode()) for k, v in headers.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
