"""Store URLs (``sqlite:///sagas.db``, ``postgresql://...``, ``memory://``) for the CLI and
``RESILIENT_SAGA_STORE``."""

from __future__ import annotations

import os
from urllib.parse import unquote

from .._config_parse import config_error, parse_duration
from ..errors import ConfigError, _mask_secrets
from ._memory import InMemorySagaStore
from ._outage import DEFAULT_OUTAGE_TIMEOUT
from ._postgres import PostgresSagaStore, _import_psycopg
from ._sqlite import SQLiteSagaStore
from ._store import BlockingSagaStore

__all__ = ["store_from_env", "store_from_url"]

_ENV_DURABILITY = "RESILIENT_SAGA_DURABILITY"


def store_from_url(url: str) -> BlockingSagaStore:
    """Open the store named by ``url``: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``
    (optionally ``?durability=power``), ``postgresql://user@host/db`` (or ``postgres://``;
    optionally ``?schema=name``, other query options go to libpq) or ``memory://``. Both SQL
    stores take ``outage_timeout=`` (a duration: ``30``, ``5s``, ``1m``).

    A PostgreSQL server that does not answer within ``outage_timeout`` raises
    :class:`rs.SagaStoreUnavailable` (the password masked); a bad URL or a missing driver
    raises :class:`rs.ConfigError` / ``ValueError``."""
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
        outage = DEFAULT_OUTAGE_TIMEOUT
        for part in filter(None, query.split("&")):
            key, _, value = part.partition("=")
            if key == "outage_timeout":
                outage = _outage_timeout(value, url)
            elif key == "durability":
                durability = value
            else:
                raise ValueError(f"unknown option {key!r} in store URL {url!r}")
        if not path:
            raise ValueError(f"store URL {url!r} names no file")
        return SQLiteSagaStore(path, durability=durability, outage_timeout=outage)
    if url.startswith(("postgresql://", "postgres://")):
        return _postgres_from_url(url)
    raise ValueError(
        f"unsupported saga store URL {url!r}: expected sqlite:///path.db, "
        "postgresql://host/db or memory://"
    )


def _outage_timeout(text: str, url: str) -> float:
    try:
        seconds = parse_duration(unquote(text), "outage_timeout")
    except ConfigError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(
            f"outage_timeout in store URL {_masked(url)} must be a duration > 0 such as 30, "
            f"5s or 1m, got {text!r}"
        )
    return seconds


def _postgres_from_url(url: str) -> PostgresSagaStore:
    """A PostgreSQL store; ``schema=`` and ``outage_timeout=`` are ours, every other query
    option is libpq's.

    A missing driver raises :class:`ConfigError` (a ``ValueError``, so the CLI reports it as a
    bad ``--store``); a server that does not answer within ``outage_timeout``,
    :class:`SagaStoreUnavailable`; the password masked in both."""
    base, _, query = url.partition("?")
    schema: str | None = None
    outage = DEFAULT_OUTAGE_TIMEOUT
    kept = []
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        if key == "schema":
            schema = unquote(value)
        elif key == "outage_timeout":
            outage = _outage_timeout(value, url)
        else:
            kept.append(part)
    dsn = base + ("?" + "&".join(kept) if kept else "")
    try:
        _import_psycopg()
    except ImportError as err:
        raise ConfigError(f"saga store {_masked(url)}: {err}") from err
    try:
        return PostgresSagaStore(dsn, schema=schema, outage_timeout=outage)
    except ValueError as err:  # a DSN libpq cannot parse: may quote the password
        raise ConfigError(f"bad saga store URL {_masked(url)}: {_masked(str(err))}") from None


def _masked(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for error messages."""
    return _mask_secrets(url)


def store_from_env() -> BlockingSagaStore | None:
    """The store named by ``RESILIENT_SAGA_STORE``, or ``None`` when it is not set."""
    url = os.environ.get("RESILIENT_SAGA_STORE")
    return store_from_url(url) if url else None
