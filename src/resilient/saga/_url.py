"""Store URLs (``sqlite:///sagas.db``, ``memory://``) for the CLI and ``RESILIENT_SAGA_STORE``."""

from __future__ import annotations

import os

from .._config_parse import config_error
from ._memory import InMemorySagaStore
from ._sqlite import SQLiteSagaStore
from ._store import BlockingSagaStore

__all__ = ["store_from_env", "store_from_url"]

_ENV_DURABILITY = "RESILIENT_SAGA_DURABILITY"


def store_from_url(url: str) -> BlockingSagaStore:
    """Open the store named by ``url``: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``
    (optionally ``?durability=power``) or ``memory://``."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"store URL must be a non-empty string, got {url!r}")
    if url in ("memory://", "memory:"):
        return InMemorySagaStore()
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///") :]
        path, _, query = rest.partition("?")
        durability = os.environ.get(_ENV_DURABILITY, "normal")
        if durability not in ("normal", "power"):
            raise config_error(_ENV_DURABILITY, durability, "normal|power")
        for part in filter(None, query.split("&")):
            key, _, value = part.partition("=")
            if key != "durability":
                raise ValueError(f"unknown option {key!r} in store URL {url!r}")
            durability = value
        if not path:
            raise ValueError(f"store URL {url!r} names no file")
        return SQLiteSagaStore(path, durability=durability)
    raise ValueError(f"unsupported saga store URL {url!r}: expected sqlite:///path.db or memory://")


def store_from_env() -> BlockingSagaStore | None:
    """The store named by ``RESILIENT_SAGA_STORE``, or ``None`` when it is not set."""
    url = os.environ.get("RESILIENT_SAGA_STORE")
    return store_from_url(url) if url else None
