"""What the per-policy links (``_breaker.py``, ``_bucket.py``) and ``RedisState`` see of each
other: the backend's services a link uses, and the link's side of the sync thread. Protocols
only, so the links never import ``_redis.py`` (which imports them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["Backend", "Command", "Synced", "text"]

Command = tuple[str, list[str], list[Any]]
"""One script call: ``(script source, keys, args)``."""


class Backend(Protocol):
    """The services of ``RedisState`` a link uses (private to the package: users see only
    ``prefix``, ``sync_interval``, ``connected`` and ``close``)."""

    @property
    def prefix(self) -> str: ...
    @property
    def sync_interval(self) -> float: ...
    @property
    def connected(self) -> bool: ...
    @property
    def _replica_id(self) -> str: ...
    @property
    def _lease_seconds(self) -> float: ...
    @property
    def _key_ttl_ms(self) -> int: ...
    def _up_value(self) -> float: ...
    def _wake(self) -> None: ...
    def _call(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any: ...
    def _lost(self, error: BaseException) -> None: ...


class Synced(Protocol):
    """A bound policy, as the sync thread sees it."""

    def sync_command(self) -> Command | None:
        """This policy's periodic exchange, or ``None`` when it has nothing to exchange."""

    def synced(self, reply: Any) -> None:
        """The reply to :meth:`sync_command` (called in the sync thread)."""

    def offline(self) -> None:
        """The backend is unreachable: continue on local state."""


def text(value: Any) -> str:
    """A reply element as ``str`` (a client may or may not decode responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)
