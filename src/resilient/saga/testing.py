"""Test hooks for sagas: named crash points, a simulated crash, and an effect ledger.

* :class:`CrashPoint` names the moments between log writes and side effects (SAGA.md 4.8).
  ``RESILIENT_SAGA_CRASH_AT="AFTER_STEP_RECORDED:charge_payment"`` (read when
  ``resilient.saga`` is imported) makes the engine call ``os._exit(137)`` there (use it in a
  child process); :func:`crash_at` raises
  :class:`SimulatedCrash` instead, for fast in-process tests.
* :class:`Ledger` is a participant's view of effects: a separate SQLite file with one row per
  idempotency key (unique), so a test counts *effects*, not calls, and can prove exactly-once.

The crash points themselves live with the engine (``_crash.py``); this module only arms them.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from ._crash import ENV_CRASH_AT, CrashPoint, SimulatedCrash, arm, disarm

__all__ = ["ENV_CRASH_AT", "CrashPoint", "Ledger", "SimulatedCrash", "crash_at"]


@contextmanager
def crash_at(point: CrashPoint | str, step: str | None = None, *, times: int = 1) -> Iterator[None]:
    """Raise :class:`SimulatedCrash` the next ``times`` the engine reaches ``point`` (for
    ``step``, or any step when ``None``) inside this block, in any thread of this process."""
    cp = CrashPoint(point)
    if not isinstance(times, int) or times < 1:
        raise ValueError(f"times must be an int >= 1, got {times!r}")
    entry = arm(cp, step, times)
    try:
        yield
    finally:
        disarm(entry)


class Ledger:
    """Effects recorded by test participants in their own SQLite file.

    ``apply(key, op)`` inserts ``(key, op)`` unless ``key`` is already there and returns
    whether this call had the effect, which is exactly how an idempotent participant dedups on
    ``ctx.idempotency_key``. Safe across threads and processes (WAL, busy timeout).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        with self._connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS effects ("
                "key TEXT PRIMARY KEY, op TEXT NOT NULL, "
                "n INTEGER NOT NULL DEFAULT 1, seq INTEGER NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def apply(self, key: str, op: str) -> bool:
        """Record the effect ``op`` for ``key`` once; True if it was new."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                "INSERT OR IGNORE INTO effects (key, op, seq) "
                "VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM effects))",
                (key, op),
            )
            if cur.rowcount == 0:
                conn.execute("UPDATE effects SET n = n + 1 WHERE key = ?", (key,))
            conn.execute("COMMIT")
            return cur.rowcount == 1
        finally:
            conn.close()

    def has(self, key: str) -> bool:
        """True when an effect is recorded under ``key``."""
        conn = self._connect()
        try:
            return (
                conn.execute("SELECT 1 FROM effects WHERE key = ?", (key,)).fetchone() is not None
            )
        finally:
            conn.close()

    def effects(self) -> list[tuple[str, str]]:
        """Every ``(key, op)`` in the order the effects happened."""
        conn = self._connect()
        try:
            return [(k, o) for k, o in conn.execute("SELECT key, op FROM effects ORDER BY seq")]
        finally:
            conn.close()

    def deliveries(self, key: str) -> int:
        """How many times ``key`` was delivered (effect plus deduplicated repeats)."""
        conn = self._connect()
        try:
            row = conn.execute("SELECT n FROM effects WHERE key = ?", (key,)).fetchone()
            return 0 if row is None else int(row[0])
        finally:
            conn.close()

    def count(self, op: str | None = None) -> int:
        """Number of effects (of ``op`` when given)."""
        conn = self._connect()
        try:
            if op is None:
                return int(conn.execute("SELECT COUNT(*) FROM effects").fetchone()[0])
            row = conn.execute("SELECT COUNT(*) FROM effects WHERE op = ?", (op,)).fetchone()
            return int(row[0])
        finally:
            conn.close()
