"""A saga store in PostgreSQL, for several service instances (on several hosts) sharing one log.

Same schema and behaviour as the SQLite store (``sagas`` + ``saga_events``, an index on
``(status, next_attempt_at)``), adapted to a server database:

* every write is ONE statement, so ONE transaction and one round trip in autocommit mode:
  ``append`` is ``WITH s AS (UPDATE ... WHERE epoch = %s RETURNING last_seq) INSERT INTO
  saga_events SELECT ... FROM s, unnest(...)`` (nothing inserted: :class:`StaleEpoch`); the
  row lock of the UPDATE also serialises the log's ``seq`` numbers. ``create`` is the same
  shape around ``INSERT ... ON CONFLICT DO NOTHING``;
* ``claim`` picks due sagas with ``FOR UPDATE SKIP LOCKED``, so concurrent recovery workers
  never wait for each other nor claim the same saga, and bumps ``epoch`` in the same statement;
* ``load`` reads the row and its log in one ``REPEATABLE READ`` snapshot;
* the schema is created idempotently (``CREATE ... IF NOT EXISTS``) under an advisory lock, so
  instances starting together do not race on the catalog; nothing is created when it exists;
  a layout-1 database is upgraded in place (``_sql_rows.SCHEMA_VERSION``);
* connections come from a ``psycopg_pool.ConnectionPool`` (``pool_size`` at most), and every
  statement is prepared on its connection the first time it runs there;
* a server restart or failover is ridden out (``_outage.OutageGuard``: Retry and a circuit
  breaker for up to ``outage_timeout`` seconds per operation, each connection attempt bounded
  by what is left), then reported as ``SagaStoreUnavailable``: no psycopg exception leaves the
  store. A write retried after its connection broke checks whether it committed first;
* ``synchronous_commit`` and ``fsync`` are read when the store connects (and again after a
  connection broke), reported as ``store.durability`` and warned about once when off.

The driver is psycopg 3, imported only when a store is built, so ``import resilient`` never
needs it (``pip install resilient-patterns[postgres]``, which brings psycopg_pool). Calls are
blocking (psycopg's sync API); from async code they run in anyio worker threads, like the
SQLite store. Each operation borrows a connection from the pool for its one statement (or
transaction), so a connection is never shared mid-flight.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .._deadline import remaining
from .._types import Args
from ..errors import StaleEpoch, _mask_secrets
from ._durability import Durability, postgres_durability
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
from ._outage import DEFAULT_OUTAGE_TIMEOUT, OutageGuard, OutOfTime, check_outage_timeout
from ._sql_rows import (
    RECORD_COLUMNS,
    SCHEMA_VERSION,
    SUMMARY_COLUMNS,
    UNFINISHED_SQL,
    AppendShape,
    append_update,
    inserted_by,
    newer_schema,
    record_from_row,
    summary_from_row,
)
from ._store import _GuardedStore, track

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresSagaStore"]

_log = logging.getLogger("resilient.saga.store")

_INSTALL_HINT = (
    "PostgresSagaStore needs the psycopg 3 driver and psycopg_pool: "
    "pip install 'resilient-patterns[postgres]'"
)
# pg_advisory_xact_lock key serialising schema creation across instances ("resilien" in ASCII)
_SCHEMA_LOCK_KEY = 0x7265_7369_6C69_656E

# a pooled connection idle longer than this is pinged before use (servers and proxies drop
# idle connections; a failover breaks them all)
_PING_AFTER_IDLE = 2.0
_APPLICATION_NAME = "resilient-saga"  # shown in pg_stat_activity, for operators
_DEFAULT_CONNECT_TIMEOUT = 10
_MIN_CONNECT_TIMEOUT = 2  # libpq (and psycopg) never wait less for a connection
_TCP_DEFAULTS = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms of unacknowledged data before the connection is dropped
}
_SETTINGS_SQL = "SELECT current_setting('synchronous_commit'), current_setting('fsync')"

_COLUMNS = RECORD_COLUMNS
_S_COLUMNS = ", ".join(f"s.{c.strip()}" for c in _COLUMNS.split(","))
_EVENT_COLUMNS = "kind, step, attempt, payload, at, seq"
_UNFINISHED = [s.value for s in UNFINISHED]


def _schema_sql(t: str) -> list[str]:
    """The DDL of the current layout, table names prefixed by ``t`` (``""`` or
    ``'"schema".'``); every statement is idempotent, so it also finishes an upgrade."""
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
        ) WITH (fillfactor = 80)""",
        # room on each page for the row's next versions: the updates of a saga row (every
        # append, renew and claim) touch no indexed column, so they stay on the page (HOT)
        f"ALTER TABLE {t}sagas SET (fillfactor = 80)",
        f"""CREATE INDEX IF NOT EXISTS sagas_unfinished ON {t}sagas (next_attempt_at)
            WHERE status IN {UNFINISHED_SQL}""",
        f"DROP INDEX IF EXISTS {t}sagas_due",
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
        f"CREATE TABLE IF NOT EXISTS {t}saga_schema (version INTEGER NOT NULL)",
        f"DELETE FROM {t}saga_schema",
        f"INSERT INTO {t}saga_schema (version) VALUES ({SCHEMA_VERSION})",
    ]


# the events of one write, as columns for unnest(): one statement inserts any number of them
_UNNEST = (
    "unnest(%(kinds)s::text[], %(steps)s::text[], %(attempts)s::int[], %(payloads)s::text[], "
    "%(ats)s::float8[]) WITH ORDINALITY AS e(kind, step, attempt, payload, at, n)"
)


def _event_params(events: Sequence[SagaLogEvent], now: float) -> dict[str, Any]:
    return {
        "kinds": [ev.kind for ev in events],
        "steps": [ev.step for ev in events],
        "attempts": [ev.attempt for ev in events],
        "payloads": [ev.payload for ev in events],
        "ats": [float(ev.at or now) for ev in events],
    }


@functools.cache
def _append_sql(t: str, shape: AppendShape) -> str:
    """The fenced append of one write shape as ONE statement (cached: 16 per schema)."""
    sets = ["last_seq = last_seq + %(count)s", "updated_at = %(now)s"]
    status, finished, next_attempt, progress = shape
    if status:
        sets.append("status = %(status)s")
    if finished:
        sets.append("owner = NULL, lease_until = 0")
    if next_attempt:
        sets.append("next_attempt_at = %(next)s")
    if progress:
        sets.append("recoveries = 0")
    # ``updated_at <> stamp``: a retry of an append that did commit changes nothing (and then
    # finds its own stamp on the row, see _append)
    return (
        f"WITH s AS (UPDATE {t}sagas SET {', '.join(sets)} "
        "WHERE id = %(id)s AND epoch = %(epoch)s AND updated_at <> %(now)s RETURNING last_seq) "
        f"INSERT INTO {t}saga_events (saga_id, {_EVENT_COLUMNS}) "
        "SELECT %(id)s, e.kind, e.step, e.attempt, e.payload, e.at, "
        f"s.last_seq - %(count)s + e.n FROM s, {_UNNEST}"
    )


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return psycopg


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _transient_for(pg: Any) -> Any:
    """The psycopg errors worth waiting out: the connection failed or broke, the server is
    starting or shutting down, a serialization failure, or a read-only server (a failover
    still in progress)."""
    kinds = (pg.OperationalError, pg.InterfaceError, pg.errors.ReadOnlySqlTransaction)

    def transient(exc: BaseException) -> bool:
        return isinstance(exc, kinds)

    return transient


class PostgresSagaStore(_GuardedStore):
    """Sagas in PostgreSQL at ``dsn`` (a ``postgresql://`` URL or a libpq ``key=value``
    string): survives crashes and is shared by every process and host that can reach the
    database, which is what several service instances recovering each other's sagas need.

    ``schema`` puts the tables in that schema (created if missing) instead of the first one on
    the ``search_path``, to isolate tenants or test runs. ``pool_size`` idle connections are
    kept open between operations (0: a connection per operation, e.g. behind PgBouncer).
    ``connect_timeout`` bounds each new connection in seconds (default: the DSN's own
    ``connect_timeout``, else 10; libpq alone would wait forever). Connections are tagged
    ``application_name=resilient-saga`` unless the DSN names one.

    ``outage_timeout`` (seconds, default 30) is how long one operation rides out a server
    that does not answer (restart, failover) before raising :class:`rs.SagaStoreUnavailable`;
    building the store connects, so an unreachable server raises it from the constructor.
    ``durability`` tells what the server's ``synchronous_commit`` and ``fsync`` promise.
    """

    _kind = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        pool_size: int = 10,
        connect_timeout: float | None = None,
        outage_timeout: float = DEFAULT_OUTAGE_TIMEOUT,
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
        self.outage_timeout = check_outage_timeout(outage_timeout)
        self._pg = _import_psycopg()
        try:
            params = self._pg.conninfo.conninfo_to_dict(dsn)
        except self._pg.ProgrammingError as err:
            raise ValueError(
                f"dsn is not a valid PostgreSQL connection string: {_mask_secrets(str(err))}"
            ) from None
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        # explicit argument > the DSN's own connect_timeout > 10 s (libpq would wait forever)
        self._connect_kw: dict[str, Any] = {"autocommit": True}
        if connect_timeout is not None:
            self._connect_timeout = float(max(1, math.ceil(connect_timeout)))
        else:
            try:
                given = float(params.get("connect_timeout") or 0)
            except ValueError:
                given = 0.0
            self._connect_timeout = given if given > 0 else float(_DEFAULT_CONNECT_TIMEOUT)
        if "application_name" not in params:
            self._connect_kw["application_name"] = _APPLICATION_NAME
        # a server that vanishes without closing its connections (a partition, a dead host)
        # must not hold an operation forever: TCP keepalives and a user timeout notice it
        for key, value in _TCP_DEFAULTS.items():
            if key not in params:
                self._connect_kw[key] = value
        self._where = " ".join(
            f"{k}={params[k]}" for k in ("host", "port", "dbname") if params.get(k) is not None
        )
        self._t = "" if schema is None else _quote_ident(schema) + "."
        self._pool: Any = None
        # when each pooled connection was last given back (a long-idle one is pinged)
        self._returned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._closed = False
        self._check_settings = True  # read the durability settings on the next connection
        self._warned: str | None = None
        self.durability: Durability = postgres_durability("unknown", "unknown")
        """What the server's settings promise (read when connecting; see docs/saga.md)."""
        self._q_saga = f"SELECT {_COLUMNS} FROM {self._t}sagas WHERE id = %s"
        self._q_events = (
            f"SELECT {_EVENT_COLUMNS} FROM {self._t}saga_events WHERE saga_id = %s ORDER BY seq"
        )
        self._q_create = (
            f"WITH s AS (INSERT INTO {self._t}sagas ({_COLUMNS}, last_seq) VALUES (%(id)s, "
            "%(definition)s, %(steps_hash)s, %(status)s, 1, %(owner)s, %(lease_until)s, 0, "
            "%(deadline)s, 0, %(input)s, %(input_hash)s, %(trace_context)s, %(now)s, %(now)s, "
            "%(count)s) ON CONFLICT (id) DO NOTHING RETURNING id) "
            f"INSERT INTO {self._t}saga_events (saga_id, {_EVENT_COLUMNS}) "
            f"SELECT s.id, e.kind, e.step, e.attempt, e.payload, e.at, e.n FROM s, {_UNNEST}"
        )
        self._guard = OutageGuard(
            repr(self),
            f"postgres {self._where or 'default'}",
            self.outage_timeout,
            _transient_for(self._pg),
            (self._pg.Error,),
        )
        try:
            self._guard.call("connect", None, self._ensure_schema)
            if pool_size:
                self._pool = self._open_pool()
        except BaseException:
            self.close()
            raise
        track(self)

    def __repr__(self) -> str:
        schema = "" if self.schema is None else f" schema={self.schema!r}"
        return f"<PostgresSagaStore {self._where or 'default'}{schema}>"

    # -- connections ----------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        """A new connection, its wait bounded by ``connect_timeout`` and by what is left of
        the operation's ``outage_timeout`` (none is started that could not finish in it)."""
        timeout = min(self._connect_timeout, self.outage_timeout)
        left = remaining()
        if left is not None:
            if left < _MIN_CONNECT_TIMEOUT:
                raise OutOfTime(f"{left:.1f}s left, a connection attempt needs 2s")
            timeout = min(timeout, left)
        conn: psycopg.Connection[tuple[Any, ...]] = self._pg.connect(
            self.dsn,
            connect_timeout=max(_MIN_CONNECT_TIMEOUT, math.floor(timeout)),
            **self._connect_kw,
        )
        if self._check_settings:
            try:
                self._read_settings(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def _read_settings(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Read ``synchronous_commit`` and ``fsync`` as this store's sessions see them (the
        DSN's options and role settings included) and warn once when they weaken
        durability."""
        row = conn.execute(_SETTINGS_SQL).fetchone()
        sync_commit, fsync = (str(v) for v in row) if row is not None else ("unknown",) * 2
        self.durability = postgres_durability(sync_commit, fsync)
        self._check_settings = False
        warning = self.durability.warning
        if warning is not None and warning != self._warned:
            self._warned = warning
            _log.warning("%r: %s", self, warning)

    def _open_pool(self) -> Any:
        try:
            import psycopg_pool
        except ImportError as err:
            raise ImportError(_INSTALL_HINT) from err
        # every statement is prepared on a connection the first time it runs there: the
        # store runs the same few statements all the time
        kwargs = {
            **self._connect_kw,
            "connect_timeout": max(
                _MIN_CONNECT_TIMEOUT, math.floor(min(self._connect_timeout, self.outage_timeout))
            ),
            "prepare_threshold": 0,
        }
        return psycopg_pool.ConnectionPool(
            self.dsn,
            kwargs=kwargs,
            min_size=1,
            max_size=self.pool_size,
            timeout=self.outage_timeout,
            check=self._check,
            configure=self._configure,
            name=f"resilient-saga {self._where}",
            open=True,
        )

    def _configure(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """A new pooled connection: read the durability settings when they may have changed."""
        if self._check_settings:
            self._read_settings(conn)

    def _check(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """The pool's check when it hands out ``conn``: one idle for more than
        ``_PING_AFTER_IDLE`` seconds is pinged first (one empty query; the pool replaces it
        if that fails), so a server restart or failover costs a reconnect, not a failed
        operation, while a busy store pays nothing."""
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned > _PING_AFTER_IDLE:
            try:
                conn.execute("")
            except BaseException:
                self._check_settings = True  # the server may have restarted with others
                raise

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A connection for one operation: borrowed from the pool (waiting no longer than
        the operation has left) and given back after; a broken one, or one left inside a
        transaction, is replaced by the pool."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        pool = self._pool
        if pool is None:
            conn = self._connect()
            try:
                yield conn
            finally:
                if conn.broken:
                    self._check_settings = True
                conn.close()
            return
        left = remaining()
        if left is not None and left <= 0:
            raise OutOfTime("no time left to wait for a connection")
        with pool.connection(timeout=left) as conn:
            try:
                yield conn
            finally:
                if conn.broken:
                    self._check_settings = True  # the server may have restarted
            self._returned[conn] = time.monotonic()

    def close(self) -> None:
        """Close the pool; operations in flight finish first."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _ensure_schema(self, retried: bool) -> None:
        """Create the schema and tables, or upgrade an older layout; nothing (no DDL, no lock)
        when the current layout is there, so a role without CREATE rights can use tables an
        administrator made."""
        with self._conn() as conn:
            if self._schema_version(conn) == SCHEMA_VERSION:
                return
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                found = self._schema_version(conn)  # another instance may have done it
                if found == SCHEMA_VERSION:
                    return
                if found > SCHEMA_VERSION:
                    raise newer_schema(self._where or "this database", found)
                if self.schema is not None:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
                    ).fetchone()
                    if exists is None:
                        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(self.schema)}")
                for ddl in _schema_sql(self._t):
                    conn.execute(ddl)

    def _schema_version(self, conn: psycopg.Connection[tuple[Any, ...]]) -> int:
        """The layout version of the tables: 0 when there are none, 1 for the first layout
        (no ``saga_schema`` table)."""
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            (f"{self._t}sagas", f"{self._t}saga_schema"),
        ).fetchone()
        if row is None or not row[0]:
            return 0
        if not row[1]:
            return 1
        found = conn.execute(f"SELECT max(version) FROM {self._t}saga_schema").fetchone()
        return int(found[0]) if found is not None and found[0] is not None else 1

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

    # -- protocol: one attempt of each operation (_GuardedStore runs it through the guard) ----
    def _create(self, retried: bool, rec: NewSaga) -> CreateResult:
        """Insert-if-absent on ``rec.id`` with its first events: one statement."""
        params = _event_params(rec.events, rec.now)
        params.update(
            id=rec.id,
            definition=rec.definition,
            steps_hash=rec.steps_hash,
            status=SagaStatus.RUNNING.value,
            owner=rec.owner,
            lease_until=rec.lease_until,
            deadline=rec.deadline,
            input=rec.input,
            input_hash=rec.input_hash,
            trace_context=rec.trace_context,
            now=rec.now,
            count=len(rec.events),
        )
        with self._conn() as conn:
            if conn.execute(self._q_create, params).rowcount > 0:
                return CreateResult(True, rec.created_record())  # what was inserted
            # the conflicting insert has committed (ON CONFLICT waited for it): read it
            row = conn.execute(self._q_saga, (rec.id,)).fetchone()
            if row is None:  # pragma: no cover - it rolled back: the guard's retry inserts
                raise self._pg.OperationalError(f"saga {rec.id!r} vanished during create")
            existing = self._record(row, self._events(conn, rec.id))
        if retried and inserted_by(rec, existing):
            return CreateResult(True, existing)  # our earlier attempt committed
        return CreateResult(False, existing)

    def _load(self, retried: bool, saga_id: str) -> SagaRecord | None:
        with self._conn() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = conn.execute(self._q_saga, (saga_id,)).fetchone()
            return None if row is None else self._record(row, self._events(conn, saga_id))

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
        """Append in ONE statement, fenced by ``UPDATE ... WHERE epoch = %s``: a retry after
        a broken connection whose COMMIT did go through finds its own stamp and appends
        nothing a second time."""
        shape, _ = append_update(events, status, next_attempt_at)
        params = _event_params(events, now)
        params.update(
            id=saga_id,
            epoch=epoch,
            count=len(events),
            now=now,
            status=None if status is None else status.value,
            next=next_attempt_at,
        )
        with self._conn() as conn:
            if events:
                if conn.execute(_append_sql(self._t, shape), params).rowcount == len(events):
                    return
            else:  # nothing to insert: the fence is the row update alone
                cur = conn.execute(
                    f"UPDATE {self._t}sagas SET updated_at = %s "
                    "WHERE id = %s AND epoch = %s AND updated_at <> %s",
                    (now, saga_id, epoch, now),
                )
                if cur.rowcount == 1:
                    return
            found = conn.execute(
                f"SELECT epoch, updated_at FROM {self._t}sagas WHERE id = %s", (saga_id,)
            ).fetchone()
        if found is None:
            raise KeyError(f"no saga {saga_id!r} in this store")
        if found[0] == epoch and found[1] == now:
            return  # an earlier attempt of this append committed
        raise StaleEpoch(saga_id, epoch, found[0])

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
        """Claim due sagas with ``FOR UPDATE SKIP LOCKED``: concurrent claimers (and writers
        holding a row) are skipped, not waited for, and never get the same saga."""
        where = [f"status IN {UNFINISHED_SQL}", "lease_until < %s", "next_attempt_at <= %s"]
        args: list[Any] = [now, now]
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

    def _take(
        self, retried: bool, saga_id: str, owner: str, now: float, lease_s: float
    ) -> SagaRecord | None:
        """Operator takeover (any status, any lease): the UPDATE waits for a writer holding
        the row."""
        with self._conn() as conn, conn.transaction():
            row = conn.execute(
                f"UPDATE {self._t}sagas SET owner = %s, lease_until = %s, epoch = epoch + 1 "
                f"WHERE id = %s RETURNING {_COLUMNS}",
                (owner, now + lease_s, saga_id),
            ).fetchone()
            return None if row is None else self._record(row, self._events(conn, saga_id))

    def _renew(
        self, retried: bool, saga_id: str, owner: str, epoch: int, lease_until: float
    ) -> bool:
        """Extend the lease in one statement."""
        with self._conn() as conn:
            cur = conn.execute(
                f"UPDATE {self._t}sagas SET lease_until = %s "
                "WHERE id = %s AND owner = %s AND epoch = %s AND status = ANY(%s)",
                (lease_until, saga_id, owner, epoch, _UNFINISHED),
            )
            return cur.rowcount == 1

    def _release(self, retried: bool, saga_id: str, owner: str, epoch: int) -> None:
        with self._conn() as conn:
            conn.execute(
                f"UPDATE {self._t}sagas SET owner = NULL, lease_until = 0 "
                "WHERE id = %s AND owner = %s AND epoch = %s",
                (saga_id, owner, epoch),
            )

    def _query(self, retried: bool, filt: SagaFilter) -> list[SagaSummary]:
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
