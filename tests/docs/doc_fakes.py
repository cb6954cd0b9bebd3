"""The services the documentation's examples talk to, faked in process.

The examples call dependencies the way a reader's code would, with httpx and a host name
(``http://inventory/...``). While a block runs, every httpx transport answers requests for the
hosts below from :func:`handle` instead of the network (an httpx ``MockTransport`` spliced into
``HTTPTransport``/``AsyncHTTPTransport``), so an example stays exactly what a reader copies.
Any other host fails with ``httpx.ConnectError``, as it would for the reader: an example cannot
reach the network by accident.

The fakes are deliberately dull: they answer what the examples need, and their write
endpoints insist on an ``Idempotency-Key`` header, as a participant of a saga should.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

HOSTS = frozenset({"inventory", "prices", "rates", "payments", "mail"})

# POST endpoints that do something once per Idempotency-Key, and what they answer they did
_ACTIONS = {
    ("inventory", "/reserve"): "reserved",
    ("inventory", "/release"): "released",
    ("payments", "/charge"): "charged",
    ("mail", "/send"): "sent",
}


def handle(request: httpx.Request) -> httpx.Response:
    """Answer one request for a fake host; 404 for a path no example uses."""
    host, path, method = request.url.host, request.url.path, request.method
    parts = path.strip("/").split("/")
    if method == "GET":
        if host == "inventory" and parts[:1] == ["stock"] and len(parts) == 2:
            return httpx.Response(200, json={"sku": parts[1], "level": 7})
        if host == "prices" and parts[:1] == ["price"] and len(parts) == 2:
            return httpx.Response(200, json={"sku": parts[1], "cents": 1250})
        if host == "rates" and parts == ["today"]:
            return httpx.Response(200, json={"EUR": 1.0, "USD": 1.08})
    if method == "POST" and (host, path) in _ACTIONS:
        key = request.headers.get("Idempotency-Key")
        if not key:
            return httpx.Response(400, json={"error": "Idempotency-Key header required"})
        body: dict[str, Any] = json.loads(request.content or b"{}")
        return httpx.Response(200, json={"key": key, "done": _ACTIONS[host, path], **body})
    return httpx.Response(404, json={"error": f"the docs fakes have no {method} {path}"})


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route httpx requests for :data:`HOSTS` to :func:`handle` until the test ends."""
    mock = httpx.MockTransport(handle)

    def sync(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        if request.url.host in HOSTS:
            return mock.handle_request(request)
        raise httpx.ConnectError(f"{request.url.host}: no such host in the docs tests")

    async def asynchronous(
        self: httpx.AsyncHTTPTransport, request: httpx.Request
    ) -> httpx.Response:
        if request.url.host in HOSTS:
            return await mock.handle_async_request(request)
        raise httpx.ConnectError(f"{request.url.host}: no such host in the docs tests")

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", sync)
    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", asynchronous)
