"""What a store's settings promise: :class:`Durability`, as ``store.durability`` reports it.

A saga is only as durable as the writes its store acknowledges. The engine tells a caller
"COMPLETED" (or "rolled back") once the store acknowledged the final record, and recovery
trusts the log: a store that acknowledges writes it may later lose can make recovery redo
work the caller was told about, or even finish differently (a lost ``SAGA_COMPENSATING`` is a
saga recovery drives *forward* again). Each store therefore states what its acknowledged
writes survive, from its actual settings (PostgreSQL's ``synchronous_commit`` and ``fsync``
as the server reports them for the store's sessions, SQLite's ``synchronous`` pragma), and
logs a warning once when a setting weakens that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["Durability", "memory_durability", "postgres_durability", "sqlite_durability"]


@dataclasses.dataclass(frozen=True)
class Durability:
    """What a write the store has acknowledged survives (``store.durability``).

    * ``mode``: a short name: ``"none"`` (memory), ``"normal"`` / ``"power"`` (SQLite's
      ``durability=``), ``"full"`` or ``"weakened"`` (PostgreSQL, from its settings);
    * ``process_crash``: the process that wrote it being killed (``kill -9``, OOM);
    * ``server_crash``: the database server being killed or restarted (PostgreSQL; for
      SQLite, whose engine lives in the writing process, the same as ``process_crash``);
    * ``power_loss``: the machine losing power or its kernel crashing;
    * ``settings``: the settings this was derived from, as the database reported them;
    * ``warning``: why the guarantees are weaker than the store's default (``None`` when they
      are not), the text logged once when the store connected.
    """

    mode: str
    process_crash: bool
    server_crash: bool
    power_loss: bool
    settings: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    warning: str | None = None

    @property
    def weakened(self) -> bool:
        """True when a setting makes acknowledged writes less durable than the default."""
        return self.warning is not None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy, for health endpoints."""
        return {
            "mode": self.mode,
            "process_crash": self.process_crash,
            "server_crash": self.server_crash,
            "power_loss": self.power_loss,
            "settings": dict(self.settings),
            "warning": self.warning,
        }


def memory_durability() -> Durability:
    """The in-memory store: nothing survives the process."""
    return Durability("none", False, False, False)


def sqlite_durability(mode: str, synchronous: str) -> Durability:
    """SQLite in WAL mode: ``"normal"`` (``synchronous=NORMAL``) survives the process being
    killed but may lose the last commits on power loss; ``"power"`` (``FULL``) survives both."""
    settings = MappingProxyType({"journal_mode": "wal", "synchronous": synchronous})
    power = mode == "power"
    return Durability(mode, True, True, power, settings)


# synchronous_commit values that flush the local WAL before a commit is acknowledged
_SYNC_COMMIT_FLUSHES = frozenset({"on", "local", "remote_write", "remote_apply"})


def postgres_durability(synchronous_commit: str, fsync: str) -> Durability:
    """PostgreSQL, from the settings its sessions run with.

    ``synchronous_commit=off`` acknowledges a commit before its WAL is flushed: a server crash
    loses the last ~0.6 s (3 x ``wal_writer_delay``) of acknowledged commits. ``fsync=off``
    never forces data to disk: a server crash loses nothing, but power loss or an OS crash can
    corrupt the whole database.
    """
    settings = MappingProxyType({"synchronous_commit": synchronous_commit, "fsync": fsync})
    sync_ok = synchronous_commit.lower() in _SYNC_COMMIT_FLUSHES
    fsync_ok = fsync.lower() == "on"
    problems = []
    if not sync_ok:
        problems.append(
            f"synchronous_commit={synchronous_commit}: a commit is acknowledged before it is "
            "on disk, so a PostgreSQL crash or restart can lose saga records the engine (and "
            "the callers of run()) were already told about; recovery then redoes that work, "
            "and a saga whose rollback record was lost can be driven forward again"
        )
    if not fsync_ok:
        problems.append(
            f"fsync={fsync}: nothing is forced to disk, so power loss or an OS crash can lose "
            "acknowledged saga records or corrupt the database"
        )
    if not problems:
        return Durability("full", True, True, True, settings)
    warning = "; ".join(problems) + " (set it to 'on' for the sagas' database or role)"
    return Durability("weakened", True, sync_ok, sync_ok and fsync_ok, settings, warning)
