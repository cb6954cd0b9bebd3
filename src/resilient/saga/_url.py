"""Store URLs (``sqlite:///sagas.db``, ``postgresql://...``, ``memory://``) for the CLI and
``RESILIENT_SAGA_STORE``."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

from .._config_parse import config_error
from ..errors import ConfigError
from ._memory import InMemorySagaStore
from ._postgres import PostgresSagaStore, _import_psycopg
from ._sqlite import SQLiteSagaStore
from ._store import BlockingSagaStore

__all__ = ["store_from_env", "store_from_url"]

_ENV_DURABILITY = "RESILIENT_SAGA_DURABILITY"


def store_from_url(url: str) -> BlockingSagaStore:
    """Open the store named by ``url``: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``
    (optionally ``?durability=power``), ``postgresql://user@host/db`` (or ``postgres://``;
    optionally ``?schema=name``, other query options go to libpq) or ``memory://``."""
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
    if url.startswith(("postgresql://", "postgres://")):
        return _postgres_from_url(url)
    raise ValueError(
        f"unsupported saga store URL {url!r}: expected sqlite:///path.db, "
        "postgresql://host/db or memory://"
    )


def _postgres_from_url(url: str) -> PostgresSagaStore:
    """A PostgreSQL store; ``schema=`` is ours, every other query option is libpq's.

    A missing driver or a server that cannot be reached raises :class:`ConfigError` (a
    ``ValueError``, so the CLI reports it as a bad ``--store``), the password masked."""
    base, _, query = url.partition("?")
    schema: str | None = None
    kept = []
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        if key == "schema":
            schema = unquote(value)
        else:
            kept.append(part)
    dsn = base + ("?" + "&".join(kept) if kept else "")
    try:
        pg = _import_psycopg()
    except ImportError as err:
        raise ConfigError(f"saga store {_masked(url)}: {err}") from err
    try:
        return PostgresSagaStore(dsn, schema=schema)
    except pg.OperationalError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot open saga store {_masked(url)}: {reason}") from err


def _masked(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for error messages."""
    return re.sub(r"(://[^:/@?]*):[^@/?]*@", r"\1:***@", url)


def store_from_env() -> BlockingSagaStore | None:
    """The store named by ``RESILIENT_SAGA_STORE``, or ``None`` when it is not set."""
    url = os.environ.get("RESILIENT_SAGA_STORE")
    return store_from_url(url) if url else None
