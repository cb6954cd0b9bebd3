"""A durable saga store in one SQLite file (stdlib ``sqlite3``; no extra dependency).

WAL journal, ``busy_timeout`` so several processes can share the file, one transaction per
append, ``BEGIN IMMEDIATE`` for every write so two writers never deadlock upgrading a read
lock. Each thread gets its own connection (calls from async code run in anyio's worker
threads), so one operation is one transaction on one connection, never shared mid-flight.

Durability: ``"normal"`` (``synchronous=NORMAL``) survives the process being killed (kill -9,
``os._exit``) but can lose the last commits if the machine loses power; ``"power"``
(``synchronous=FULL``) also survives power loss, at the cost of an fsync per commit
(``store.durability`` says which).

Outages (the file locked by another writer past ``busy_timeout``, I/O errors, a volume gone
for a moment) are ridden out by ``_outage.OutageGuard`` for up to ``outage_timeout`` seconds
per operation, then reported as ``SagaStoreUnavailable``; no ``sqlite3`` error leaves the
store. An append whose COMMIT failed is retried without being applied twice (see
:meth:`SQLiteSagaStore.append_sync`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .._deadline import remaining
from ..errors import StaleEpoch
from ._durability import Durability, sqlite_durability
from ._model import (
    UNFINISHED,
    CreateResult,
    NewSaga,
    SagaFilter,
    SagaLogEvent,
    SagaRecord,
    SagaStatus,
    SagaSummary,
)
from ._outage import DEFAULT_OUTAGE_TIMEOUT, OutageGuard, check_outage_timeout
from ._sql_rows import (
    RECORD_COLUMNS,
    SCHEMA_VERSION,
    SUMMARY_COLUMNS,
    UNFINISHED_SQL,
    AppendShape,
    append_sets,
    append_update,
    insert_params,
    inserted_by,
    newer_schema,
    record_from_row,
    summary_from_row,
)
from ._sqlite_writer import GroupWriter
from ._store import _GuardedStore, track

__all__ = ["SQLiteSagaStore"]

# The current layout (``_sql_rows.SCHEMA_VERSION``); every statement is idempotent, so running
# them all in one transaction also upgrades a layout-1 file in place.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sagas (
    id TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    steps_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    owner TEXT,
    lease_until REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    deadline REAL,
    recoveries INTEGER NOT NULL,
    input TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    trace_context TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_seq INTEGER NOT NULL
)""",
    f"""CREATE INDEX IF NOT EXISTS sagas_unfinished ON sagas (next_attempt_at)
    WHERE status IN {UNFINISHED_SQL}""",
    "DROP INDEX IF EXISTS sagas_due",
    """CREATE TABLE IF NOT EXISTS saga_events (
    saga_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    step TEXT,
    attempt INTEGER,
    payload TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (saga_id, seq)
) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS saga_schema (version INTEGER NOT NULL)",
    "DELETE FROM saga_schema",
    f"INSERT INTO saga_schema (version) VALUES ({SCHEMA_VERSION})",
)

_COLUMNS = RECORD_COLUMNS
_UNFINISHED = tuple(s.value for s in UNFINISHED)
_INSERT_SAGA = (
    f"INSERT OR IGNORE INTO sagas ({_COLUMNS}, last_seq) "
    "VALUES (?, ?, ?, ?, 1, ?, ?, 0, ?, 0, ?, ?, ?, ?, ?, ?)"
)
_SELECT_SAGA = f"SELECT {_COLUMNS} FROM sagas WHERE id = ?"
_SELECT_EPOCH = "SELECT epoch, last_seq, updated_at FROM sagas WHERE id = ?"
_INSERT_EVENT = (
    "INSERT INTO saga_events (saga_id, seq, kind, step, attempt, payload, at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


@functools.cache
def _update_sql(shape: AppendShape) -> str:
    """The row update of one append (cached: 16 variants at most)."""
    sets = ["last_seq = ?", "updated_at = ?", *append_sets(shape, "?")]
    return f"UPDATE sagas SET {', '.join(sets)} WHERE id = ?"


_DURABILITY = {"normal": "NORMAL", "power": "FULL"}

# SQLite result codes (low byte) worth waiting out: busy, locked, I/O error, disk full, cannot
# open (a volume gone for a moment), locking protocol
_TRANSIENT_CODES = frozenset({5, 6, 10, 13, 14, 15})
_TRANSIENT_TEXT = ("locked", "busy", "disk i/o", "unable to open", "disk is full")


def _transient(exc: BaseException) -> bool:
    """True for an ``sqlite3`` error that may go away by itself (lock, I/O, full, open)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in _TRANSIENT_CODES
    text = str(exc).lower()
    return any(t in text for t in _TRANSIENT_TEXT)


def _schema_version(conn: sqlite3.Connection) -> int:
    """The layout version of the file: 0 without tables, 1 for the first layout (no
    ``saga_schema`` table)."""
    names = {
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name IN ('sagas', 'saga_schema')"
        )
    }
    if "sagas" not in names:
        return 0
    if "saga_schema" not in names:
        return 1
    row = conn.execute("SELECT max(version) FROM saga_schema").fetchone()
    return 1 if row is None or row[0] is None else int(row[0])


class SQLiteSagaStore(_GuardedStore):
    """Sagas in the SQLite file ``path``: survives crashes; shareable by processes on one
    host (for several hosts use a server database store)."""

    _kind = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "normal",
        busy_timeout: float = 5.0,
        outage_timeout: float = DEFAULT_OUTAGE_TIMEOUT,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ValueError(f"path must be a non-empty file path, got {path!r}")
        if durability not in _DURABILITY:
            raise ValueError(f"durability must be 'normal' or 'power', got {durability!r}")
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)):
            raise TypeError(f"busy_timeout must be a number of seconds, got {busy_timeout!r}")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0, got {busy_timeout!r}")
        self.outage_timeout = check_outage_timeout(outage_timeout)
        self.path = os.fspath(path)
        self.durability: Durability = sqlite_durability(durability, _DURABILITY[durability])
        """What an acknowledged write survives (``durability.mode`` is ``durability=``)."""
        # a wait for the lock never outlasts the outage bound of the operation
        self._busy_ms = int(min(busy_timeout, self.outage_timeout) * 1000)
        self._local = threading.local()
        self._all: dict[threading.Thread, sqlite3.Connection] = {}
        self._all_lock = threading.Lock()
        self._closed = False
        self._guard = OutageGuard(
            repr(self),
            f"sqlite {os.path.abspath(self.path)}",
            self.outage_timeout,
            _transient,
            (sqlite3.Error,),
        )
        self._writer = GroupWriter(repr(self), self._conn, self._write)
        self._guard.call("open", None, self._open)
        track(self)

    def _open(self, retried: bool) -> None:
        self._ensure_schema()

    def __repr__(self) -> str:
        return f"<SQLiteSagaStore {self.path!r} durability={self.durability.mode!r}>"

    # -- connections ----------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.durability.settings['synchronous']}")
            self._local.conn = conn
            # worker threads come and go (idle ones exit): close what finished threads left
            with self._all_lock:
                dead = [t for t in self._all if not t.is_alive()]
                orphans = [self._all.pop(t) for t in dead]
                self._all[threading.current_thread()] = conn
            for orphan in orphans:
                orphan.close()
        return conn

    def _ensure_schema(self) -> None:
        """Create the tables, or upgrade a file of an older layout in place (in one
        ``BEGIN IMMEDIATE`` transaction: processes opening the file together do it once)."""
        conn = self._conn()
        if _schema_version(conn) == SCHEMA_VERSION:
            return
        with self._write() as conn:
            found = _schema_version(conn)
            if found > SCHEMA_VERSION:
                raise newer_schema(repr(self.path), found)
            if found < SCHEMA_VERSION:
                for ddl in _SCHEMA:
                    conn.execute(ddl)

    @contextmanager
    def _bounded(self, conn: sqlite3.Connection) -> Iterator[None]:
        """While an operation rides out an outage, its waits for the lock end with what is
        left of ``outage_timeout`` (the deadline the guard set), not a full busy_timeout."""
        left = remaining()
        if left is None or left * 1000 >= self._busy_ms:
            yield
            return
        conn.execute(f"PRAGMA busy_timeout={int(left * 1000)}")
        try:
            yield
        finally:
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._bounded(conn):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # also after a failed COMMIT: the connection must not stay inside a transaction
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # the original error says more
                        conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._bounded(conn):
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this store opened (after the writer thread's queued
        writes)."""
        self._writer.close()
        self._closed = True
        with self._all_lock:
            conns, self._all = self._all, {}
        for conn in conns.values():
            conn.close()
        self._local = threading.local()

    # -- rows -------------------------------------------------------------------------------------
    @staticmethod
    def _events(conn: sqlite3.Connection, saga_id: str) -> tuple[SagaLogEvent, ...]:
        rows = conn.execute(
            "SELECT kind, step, attempt, payload, at, seq FROM saga_events "
            "WHERE saga_id = ? ORDER BY seq",
            (saga_id,),
        ).fetchall()
        return tuple(SagaLogEvent(*row) for row in rows)

    def _record(self, conn: sqlite3.Connection, row: Sequence[Any]) -> SagaRecord:
        return record_from_row(row, self._events(conn, row[0]))

    @staticmethod
    def _insert_events(
        conn: sqlite3.Connection,
        saga_id: str,
        base: int,
        events: Sequence[SagaLogEvent],
        now: float,
    ) -> int:
        if len(events) == 1:
            ev = events[0]
            conn.execute(
                _INSERT_EVENT,
                (saga_id, base + 1, ev.kind, ev.step, ev.attempt, ev.payload, ev.at or now),
            )
            return base + 1
        conn.executemany(
            _INSERT_EVENT,
            [
                (saga_id, base + i + 1, ev.kind, ev.step, ev.attempt, ev.payload, ev.at or now)
                for i, ev in enumerate(events)
            ],
        )
        return base + len(events)

    # -- protocol: one attempt of each operation (_GuardedStore runs it through the guard) ----
    def _create(self, retried: bool, rec: NewSaga) -> CreateResult:
        with self._write() as conn:
            return self._create_in(conn, retried, rec)

    def _create_in(self, conn: sqlite3.Connection, retried: bool, rec: NewSaga) -> CreateResult:
        cur = conn.execute(_INSERT_SAGA, insert_params(rec))
        if cur.rowcount != 1:
            row = conn.execute(_SELECT_SAGA, (rec.id,)).fetchone()
            existing = self._record(conn, row)
            if retried and inserted_by(rec, existing):
                return CreateResult(True, existing)
            return CreateResult(False, existing)
        self._insert_events(conn, rec.id, 0, rec.events, rec.now)
        return CreateResult(True, rec.created_record())  # what was inserted, not re-read

    def _load(self, retried: bool, saga_id: str) -> SagaRecord | None:
        with self._read() as conn:
            row = conn.execute(_SELECT_SAGA, (saga_id,)).fetchone()
            return None if row is None else self._record(conn, row)

    def _append(
        self,
        retried: bool,
        saga_id: str,
        epoch: int,
        events: Sequence[SagaLogEvent],
        status: SagaStatus | None,
        next_attempt_at: float | None,
        now: float,
    ) -> None:
        """Append in one ``BEGIN IMMEDIATE`` transaction, fenced by ``epoch``."""
        with self._write() as conn:
            self._append_in(conn, retried, saga_id, epoch, events, status, next_attempt_at, now)

    def _append_in(
        self,
        conn: sqlite3.Connection,
        retried: bool,
        saga_id: str,
        epoch: int,
        events: Sequence[SagaLogEvent],
        status: SagaStatus | None,
        next_attempt_at: float | None,
        now: float,
    ) -> None:
        row = conn.execute(_SELECT_EPOCH, (saga_id,)).fetchone()
        if row is None:
            raise KeyError(f"no saga {saga_id!r} in this store")
        if row[0] != epoch:
            raise StaleEpoch(saga_id, epoch, row[0])
        if retried and row[2] == now:
            return  # the earlier attempt committed
        last = self._insert_events(conn, saga_id, row[1], events, now)
        shape, params = append_update(events, status, next_attempt_at)
        conn.execute(_update_sql(shape), [last, now, *params, saga_id])

    def _claim(
        self,
        retried: bool,
        owner: str,
        now: float,
        lease_s: float,
        limit: int,
        definitions: Sequence[str] | None,
        saga_id: str | None,
    ) -> list[SagaRecord]:
        """Claim due sagas under ``BEGIN IMMEDIATE`` (one writer at a time across processes)."""
        where = [f"status IN {UNFINISHED_SQL}", "lease_until < ?", "next_attempt_at <= ?"]
        args: list[Any] = [now, now]
        if definitions is not None:
            if not definitions:
                return []
            where.append(f"definition IN ({', '.join('?' * len(definitions))})")
            args.extend(definitions)
        if saga_id is not None:
            where.append("id = ?")
            args.append(saga_id)
        with self._write() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT id FROM sagas WHERE {' AND '.join(where)} "
                    "ORDER BY next_attempt_at, created_at LIMIT ?",
                    (*args, max(0, limit)),
                )
            ]
            out = []
            for sid in ids:
                conn.execute(
                    "UPDATE sagas SET owner = ?, lease_until = ?, epoch = epoch + 1, "
                    "recoveries = recoveries + 1 WHERE id = ?",
                    (owner, now + lease_s, sid),
                )
                row = conn.execute(_SELECT_SAGA, (sid,)).fetchone()
                out.append(self._record(conn, row))
            return out

    def _take(
        self, retried: bool, saga_id: str, owner: str, now: float, lease_s: float
    ) -> SagaRecord | None:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE sagas SET owner = ?, lease_until = ?, epoch = epoch + 1 WHERE id = ?",
                (owner, now + lease_s, saga_id),
            )
            if cur.rowcount == 0:
                return None
            row = conn.execute(_SELECT_SAGA, (saga_id,)).fetchone()
            return self._record(conn, row)

    def _renew(
        self, retried: bool, saga_id: str, owner: str, epoch: int, lease_until: float
    ) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE sagas SET lease_until = ? WHERE id = ? AND owner = ? AND epoch = ? "
                f"AND status IN ({', '.join('?' * len(_UNFINISHED))})",
                (lease_until, saga_id, owner, epoch, *_UNFINISHED),
            )
            return cur.rowcount == 1

    def _release(self, retried: bool, saga_id: str, owner: str, epoch: int) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE sagas SET owner = NULL, lease_until = 0 "
                "WHERE id = ? AND owner = ? AND epoch = ?",
                (saga_id, owner, epoch),
            )

    def _query(self, retried: bool, filt: SagaFilter) -> list[SagaSummary]:
        where: list[str] = []
        args: list[Any] = []
        if filt.name is not None:
            # exact, case-sensitive prefix (LIKE ignores ASCII case in SQLite)
            prefix = f"{filt.name}@"
            where.append("substr(definition, 1, ?) = ?")
            args += [len(prefix), prefix]
        if filt.statuses:
            where.append(f"status IN ({', '.join('?' * len(filt.statuses))})")
            args.extend(SagaStatus(s).value for s in filt.statuses)
        if filt.saga_id is not None:
            where.append("id = ?")
            args.append(filt.saga_id)
        sql = f"SELECT {SUMMARY_COLUMNS} FROM sagas"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY updated_at DESC, created_at DESC, id DESC LIMIT ?"
        with self._read() as conn:
            rows = conn.execute(sql, (*args, max(0, filt.limit))).fetchall()
        return [summary_from_row(r) for r in rows]

    # -- async writes: through the writer thread, several per transaction ---------------------
    async def create(self, rec: NewSaga) -> CreateResult:
        """See :meth:`SagaStore.create` (committed by the writer thread, ``_sqlite_writer``)."""
        result: CreateResult = await self._writer.submit(
            lambda conn: self._create_in(conn, False, rec),
            # on its own after a failed group transaction: as a retry (it did not commit,
            # but a retry's check costs nothing and never inserts twice)
            lambda: self._guard.call("create", rec.id, lambda _, r: self._create(True, r), rec),
        )
        return result

    async def append(
        self,
        saga_id: str,
        epoch: int,
        events: Sequence[SagaLogEvent],
        status: SagaStatus | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        """See :meth:`SagaStore.append` (committed by the writer thread, ``_sqlite_writer``)."""
        if status is not None:
            status = SagaStatus(status)
        stamp = self._stamp()
        args = (saga_id, epoch, events, status, next_attempt_at, stamp)
        await self._writer.submit(
            lambda conn: self._append_in(conn, False, *args),
            lambda: self._guard.call(
                "append", saga_id, lambda _, *a: self._append(True, *a), *args
            ),
        )
