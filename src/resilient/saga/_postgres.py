"""A saga store in PostgreSQL, for several service instances (on several hosts) sharing one log.

Same schema and behaviour as the SQLite store (``sagas`` + ``saga_events``, an index on
``(status, next_attempt_at)``), adapted to a server database:

* every write is ONE transaction; ``append`` is fenced by ``UPDATE ... WHERE epoch = %s``
  (0 rows: :class:`StaleEpoch`), whose row lock also serialises the log's ``seq`` numbers;
* ``claim`` picks due sagas with ``FOR UPDATE SKIP LOCKED``, so concurrent recovery workers
  never wait for each other nor claim the same saga, and bumps ``epoch`` in the same statement;
* ``load`` reads the row and its log in one ``REPEATABLE READ`` snapshot;
* the schema is created idempotently (``CREATE ... IF NOT EXISTS``) under an advisory lock, so
  instances starting together do not race on the catalog; nothing is created when it exists.

The driver is psycopg 3, imported only when a store is built, so ``import resilient`` never
needs it (``pip install resilient-patterns[postgres]``). Calls are blocking (psycopg's sync
API); from async code they run in anyio worker threads, like the SQLite store. Each operation
borrows a connection from a small free list (``pool_size`` idle connections kept open), so one
operation is one transaction on one connection, never shared mid-flight.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .._types import Args
from ..errors import StaleEpoch
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
from ._sql_rows import (
    RECORD_COLUMNS,
    SUMMARY_COLUMNS,
    AppendShape,
    append_sets,
    append_update,
    insert_params,
    record_from_row,
    summary_from_row,
)
from ._store import BlockingSagaStore

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresSagaStore"]

_INSTALL_HINT = (
    "PostgresSagaStore needs the psycopg 3 driver: pip install 'resilient-patterns[postgres]'"
)
# pg_advisory_xact_lock key serialising schema creation across instances ("resilien" in ASCII)
_SCHEMA_LOCK_KEY = 0x7265_7369_6C69_656E

# a pooled connection idle longer than this is pinged before use (servers and proxies drop
# idle connections; a failover breaks them all)
_PING_AFTER_IDLE = 2.0
_APPLICATION_NAME = "resilient-saga"  # shown in pg_stat_activity, for operators
_DEFAULT_CONNECT_TIMEOUT = 10

_COLUMNS = RECORD_COLUMNS
_S_COLUMNS = ", ".join(f"s.{c.strip()}" for c in _COLUMNS.split(","))
_EVENT_COLUMNS = "kind, step, attempt, payload, at, seq"
_UNFINISHED = [s.value for s in UNFINISHED]


def _schema_sql(t: str) -> list[str]:
    """The DDL, table names prefixed by ``t`` (``""`` or ``'"schema".'``)."""
    return [
        f"""CREATE TABLE IF NOT EXISTS {t}sagas (
            id TEXT PRIMARY KEY,
            definition TEXT NOT NULL,
            steps_hash TEXT NOT NULL,
            status TEXT NOT NULL,
            epoch BIGINT NOT NULL,
            owner TEXT,
            lease_until DOUBLE PRECISION NOT NULL,
            next_attempt_at DOUBLE PRECISION NOT NULL,
            deadline DOUBLE PRECISION,
            recoveries INTEGER NOT NULL,
            input TEXT NOT NULL,
            input_hash TEXT NOT NULL,
            trace_context TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            last_seq BIGINT NOT NULL
        )""",
        f"CREATE INDEX IF NOT EXISTS sagas_due ON {t}sagas (status, next_attempt_at)",
        f"""CREATE TABLE IF NOT EXISTS {t}saga_events (
            saga_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            kind TEXT NOT NULL,
            step TEXT,
            attempt INTEGER,
            payload TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (saga_id, seq)
        )""",
    ]


@functools.cache
def _update_sql(t: str, shape: AppendShape) -> str:
    """The fenced row update of one append (cached: 16 variants per schema at most)."""
    sets = ["last_seq = last_seq + %s", "updated_at = %s", *append_sets(shape, "%s")]
    fence = "WHERE id = %s AND epoch = %s RETURNING last_seq"
    return f"UPDATE {t}sagas SET {', '.join(sets)} {fence}"


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return psycopg


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresSagaStore(BlockingSagaStore):
    """Sagas in PostgreSQL at ``dsn`` (a ``postgresql://`` URL or a libpq ``key=value``
    string): survives crashes and is shared by every process and host that can reach the
    database, which is what several service instances recovering each other's sagas need.

    ``schema`` puts the tables in that schema (created if missing) instead of the first one on
    the ``search_path``, to isolate tenants or test runs. ``pool_size`` idle connections are
    kept open between operations (0: a connection per operation, e.g. behind PgBouncer).
    ``connect_timeout`` bounds each new connection in seconds (default: the DSN's own
    ``connect_timeout``, else 10; libpq alone would wait forever). Connections are tagged
    ``application_name=resilient-saga`` unless the DSN names one.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        pool_size: int = 4,
        connect_timeout: float | None = None,
    ) -> None:
        if not isinstance(dsn, str) or not dsn.strip():
            raise ValueError(f"dsn must be a non-empty connection string, got {dsn!r}")
        if schema is not None and (
            not isinstance(schema, str)
            or not schema
            or "\x00" in schema
            or len(schema.encode()) > 63
        ):
            raise ValueError(
                f"schema must be a non-empty identifier of at most 63 bytes, got {schema!r}"
            )
        if isinstance(pool_size, bool) or not isinstance(pool_size, int):
            raise TypeError(f"pool_size must be an int, got {pool_size!r}")
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size!r}")
        if connect_timeout is not None:
            if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)):
                raise TypeError(
                    f"connect_timeout must be a number of seconds, got {connect_timeout!r}"
                )
            if not connect_timeout > 0 or math.isinf(connect_timeout):
                raise ValueError(f"connect_timeout must be > 0 and finite, got {connect_timeout!r}")
        self._pg = _import_psycopg()
        try:
            params = self._pg.conninfo.conninfo_to_dict(dsn)
        except self._pg.ProgrammingError as err:
            raise ValueError(f"dsn is not a valid PostgreSQL connection string: {err}") from None
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        # explicit argument > the DSN's own connect_timeout > 10 s (libpq would wait forever)
        self._connect_kw: dict[str, Any] = {"autocommit": True}
        if connect_timeout is not None:
            self._connect_kw["connect_timeout"] = max(1, math.ceil(connect_timeout))
        elif "connect_timeout" not in params:
            self._connect_kw["connect_timeout"] = _DEFAULT_CONNECT_TIMEOUT
        if "application_name" not in params:
            self._connect_kw["application_name"] = _APPLICATION_NAME
        self._where = " ".join(
            f"{k}={params[k]}" for k in ("host", "port", "dbname") if params.get(k) is not None
        )
        self._t = "" if schema is None else _quote_ident(schema) + "."
        self._idle: list[tuple[psycopg.Connection[tuple[Any, ...]], float]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._q_saga = f"SELECT {_COLUMNS} FROM {self._t}sagas WHERE id = %s"
        self._q_events = (
            f"SELECT {_EVENT_COLUMNS} FROM {self._t}saga_events WHERE saga_id = %s ORDER BY seq"
        )
        self._q_insert_event = (
            f"INSERT INTO {self._t}saga_events (saga_id, {_EVENT_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)"
        )
        try:
            self._ensure_schema()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        schema = "" if self.schema is None else f" schema={self.schema!r}"
        return f"<PostgresSagaStore {self._where or 'default'}{schema}>"

    # -- connections ----------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn: psycopg.Connection[tuple[Any, ...]] = self._pg.connect(self.dsn, **self._connect_kw)
        return conn

    def _borrow(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The most recently used idle connection, or a new one. A connection idle for more
        than ``_PING_AFTER_IDLE`` seconds is checked first (one empty query), so a server
        restart or failover costs no failed operation, only a reconnect."""
        while True:
            with self._lock:
                if self._closed:
                    raise RuntimeError(f"{self!r} is closed")
                if not self._idle:
                    break
                conn, idle_since = self._idle.pop()
            if time.monotonic() - idle_since <= _PING_AFTER_IDLE:
                return conn
            try:
                conn.execute("")
            except self._pg.Error:
                conn.close()
                continue
            return conn
        return self._connect()

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """Borrow a connection for one operation and give it back after."""
        conn = self._borrow()
        try:
            yield conn
        finally:
            self._give_back(conn)

    def _give_back(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        # Only a healthy connection outside any transaction is reused: one broken by a lost
        # server, or left mid-query by an interrupt, is dropped and replaced on next use.
        healthy = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == self._pg.pq.TransactionStatus.IDLE
        )
        if healthy:
            with self._lock:
                if not self._closed and len(self._idle) < self.pool_size:
                    self._idle.append((conn, time.monotonic()))
                    return
        conn.close()

    def close(self) -> None:
        """Close the idle connections; those in use close when their operation ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    def _ensure_schema(self) -> None:
        """Create the schema and tables unless they all exist (then no DDL and no lock, so a
        role without CREATE rights can use tables an administrator made)."""
        names = [f"{self._t}sagas", f"{self._t}saga_events", f"{self._t}sagas_due"]
        probe = "SELECT " + ", ".join("to_regclass(%s) IS NOT NULL" for _ in names)
        with self._conn() as conn:
            row = conn.execute(probe, names).fetchone()
            if row is not None and all(row):
                return
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                if self.schema is not None:
                    found = conn.execute(
                        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
                    ).fetchone()
                    if found is None:
                        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(self.schema)}")
                for ddl in _schema_sql(self._t):
                    conn.execute(ddl)

    # -- rows -------------------------------------------------------------------------------------
    @staticmethod
    def _record(row: Sequence[Any], events: tuple[SagaLogEvent, ...]) -> SagaRecord:
        return record_from_row(row, events)

    def _events(self, conn: psycopg.Connection[Args], saga_id: str) -> tuple[SagaLogEvent, ...]:
        rows = conn.execute(self._q_events, (saga_id,)).fetchall()
        return tuple(SagaLogEvent(*row) for row in rows)

    def _records(
        self, conn: psycopg.Connection[tuple[Any, ...]], rows: Sequence[Sequence[Any]]
    ) -> list[SagaRecord]:
        """Records for saga ``rows`` (already locked or snapshotted by the caller), each with its
        log, read in one query; ordered like a claim (``next_attempt_at``, ``created_at``, id)."""
        if not rows:
            return []
        logs: dict[str, list[SagaLogEvent]] = {row[0]: [] for row in rows}
        for ev in conn.execute(
            f"SELECT saga_id, {_EVENT_COLUMNS} FROM {self._t}saga_events "
            "WHERE saga_id = ANY(%s) ORDER BY saga_id, seq",
            ([row[0] for row in rows],),
        ):
            logs[ev[0]].append(SagaLogEvent(*ev[1:]))
        ordered = sorted(rows, key=lambda r: (r[7], r[13], r[0]))
        return [self._record(row, tuple(logs[row[0]])) for row in ordered]

    def _insert_events(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        saga_id: str,
        base: int,
        events: Sequence[SagaLogEvent],
        now: float,
    ) -> None:
        rows = [
            (saga_id, ev.kind, ev.step, ev.attempt, ev.payload, ev.at or now, base + i + 1)
            for i, ev in enumerate(events)
        ]
        if len(rows) == 1:
            conn.execute(self._q_insert_event, rows[0])
        elif rows:
            with conn.cursor() as cur:
                cur.executemany(self._q_insert_event, rows)  # pipelined: one round trip

    # -- protocol ---------------------------------------------------------------------------------
    def create_sync(self, rec: NewSaga) -> CreateResult:
        """Insert-if-absent on ``rec.id`` (``ON CONFLICT DO NOTHING``) in one transaction."""
        with self._conn() as conn, conn.transaction():
            cur = conn.execute(
                f"INSERT INTO {self._t}sagas ({_COLUMNS}, last_seq) "
                "VALUES (%s, %s, %s, %s, 1, %s, %s, 0, %s, 0, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO NOTHING",
                insert_params(rec),
            )
            if cur.rowcount != 1:
                # the conflicting insert has committed (ON CONFLICT waited for it): read it
                row = conn.execute(self._q_saga, (rec.id,)).fetchone()
                if row is None:  # pragma: no cover - sagas are never deleted
                    raise RuntimeError(f"saga {rec.id!r} vanished during create")
                return CreateResult(False, self._record(row, self._events(conn, rec.id)))
            self._insert_events(conn, rec.id, 0, rec.events, rec.now)
        return CreateResult(True, rec.created_record())  # what was inserted, not re-read

    def load_sync(self, saga_id: str) -> SagaRecord | None:
        """The saga and its log, read in one snapshot."""
        with self._conn() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = conn.execute(self._q_saga, (saga_id,)).fetchone()
            return None if row is None else self._record(row, self._events(conn, saga_id))

    def append_sync(
        self,
        saga_id: str,
        epoch: int,
        events: Sequence[SagaLogEvent],
        status: SagaStatus | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        """Append in one transaction, fenced by ``UPDATE ... WHERE epoch = %s``."""
        now = time.time()
        if status is not None:
            status = SagaStatus(status)
        shape, params = append_update(events, status, next_attempt_at)
        sql = _update_sql(self._t, shape)
        args = [len(events), now, *params, saga_id, epoch]
        with self._conn() as conn, conn.transaction():
            row = conn.execute(sql, args).fetchone()
            if row is None:
                found = conn.execute(
                    f"SELECT epoch FROM {self._t}sagas WHERE id = %s", (saga_id,)
                ).fetchone()
                if found is None:
                    raise KeyError(f"no saga {saga_id!r} in this store")
                raise StaleEpoch(saga_id, epoch, found[0])
            # the UPDATE holds the row lock until commit: nobody else numbers these events
            self._insert_events(conn, saga_id, row[0] - len(events), events, now)

    def claim_sync(
        self,
        owner: str,
        now: float,
        lease_s: float,
        limit: int,
        *,
        definitions: Sequence[str] | None = None,
        saga_id: str | None = None,
    ) -> list[SagaRecord]:
        """Claim due sagas with ``FOR UPDATE SKIP LOCKED``: concurrent claimers (and writers
        holding a row) are skipped, not waited for, and never get the same saga."""
        where = ["status = ANY(%s)", "lease_until < %s", "next_attempt_at <= %s"]
        args: list[Any] = [_UNFINISHED, now, now]
        if definitions is not None:
            if not definitions:
                return []
            where.append("definition = ANY(%s)")
            args.append(list(definitions))
        if saga_id is not None:
            where.append("id = %s")
            args.append(saga_id)
        args += [max(0, limit), owner, now + lease_s]
        sql = (
            f"WITH due AS (SELECT id FROM {self._t}sagas WHERE {' AND '.join(where)} "
            "ORDER BY next_attempt_at, created_at, id LIMIT %s FOR UPDATE SKIP LOCKED) "
            f"UPDATE {self._t}sagas AS s SET owner = %s, lease_until = %s, "
            "epoch = s.epoch + 1, recoveries = s.recoveries + 1 "
            f"FROM due WHERE s.id = due.id RETURNING {_S_COLUMNS}"
        )
        with self._conn() as conn, conn.transaction():
            rows = conn.execute(sql, args).fetchall()
            return self._records(conn, rows)

    def take_sync(self, saga_id: str, owner: str, now: float, lease_s: float) -> SagaRecord | None:
        """Operator takeover of ``saga_id`` (any status, any lease; waits for a writer)."""
        with self._conn() as conn, conn.transaction():
            row = conn.execute(
                f"UPDATE {self._t}sagas SET owner = %s, lease_until = %s, epoch = epoch + 1 "
                f"WHERE id = %s RETURNING {_COLUMNS}",
                (owner, now + lease_s, saga_id),
            ).fetchone()
            return None if row is None else self._record(row, self._events(conn, saga_id))

    def renew_sync(self, saga_id: str, owner: str, epoch: int, lease_until: float) -> bool:
        """Extend the lease while ``owner`` holds ``saga_id`` at ``epoch`` (one statement)."""
        with self._conn() as conn:
            cur = conn.execute(
                f"UPDATE {self._t}sagas SET lease_until = %s "
                "WHERE id = %s AND owner = %s AND epoch = %s AND status = ANY(%s)",
                (lease_until, saga_id, owner, epoch, _UNFINISHED),
            )
            return cur.rowcount == 1

    def release_sync(self, saga_id: str, owner: str, epoch: int) -> None:
        """Drop the lease (no-op unless ``owner`` holds it at ``epoch``)."""
        with self._conn() as conn:
            conn.execute(
                f"UPDATE {self._t}sagas SET owner = NULL, lease_until = 0 "
                "WHERE id = %s AND owner = %s AND epoch = %s",
                (saga_id, owner, epoch),
            )

    def query_sync(self, filt: SagaFilter) -> list[SagaSummary]:
        """Matching sagas, most recently updated first."""
        where: list[str] = []
        args: list[Any] = []
        if filt.name is not None:
            where.append("starts_with(definition, %s)")
            args.append(f"{filt.name}@")
        if filt.statuses:
            where.append("status = ANY(%s)")
            args.append([SagaStatus(s).value for s in filt.statuses])
        if filt.saga_id is not None:
            where.append("id = %s")
            args.append(filt.saga_id)
        sql = f"SELECT {SUMMARY_COLUMNS} FROM {self._t}sagas"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY updated_at DESC, created_at DESC, id DESC LIMIT %s"
        with self._conn() as conn:
            rows = conn.execute(sql, (*args, max(0, filt.limit))).fetchall()
        return [summary_from_row(r) for r in rows]
