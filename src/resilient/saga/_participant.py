"""The participant's side of a saga: :class:`ParticipantLedger`, for services the saga calls
(over HTTP, or in process) that must turn "invoked at least once" into "happened exactly once,
and never after it was compensated".

The saga engine invokes a step at least once, and a process that was paused or cut off past its
lease can still deliver one call *after* another process took the saga over and compensated
it. Deduplicating on the idempotency key alone does not stop that late call: the compensation
used another key (``...:undo``), found nothing to undo, and the late step then does its effect
for the first time. What stops it is a *tombstone*: the compensation is recorded against the
**step's** key, so that a forward call arriving afterwards finds the key taken and does nothing.
``barrier()`` does this for SQL participants writing in the same local transaction; the ledger
does it for any participant, keyed by the ``Idempotency-Key`` the saga sends:

=====================  ===========================  ==========================================
call                   the key's row says           outcome
=====================  ===========================  ==========================================
forward                nothing yet                  **applied**: the effect runs, its result is
                                                    recorded in the same transaction
forward                applied                      **repeat**: the recorded result, no effect
forward                refused (``rs.Rejected``)    **rejected** again, no effect
forward                compensated / tombstone      **late**: no effect (it came after its undo)
undo                   applied                      **applied**: the undo runs (``call.done`` is
                                                    the forward's result)
undo                   nothing yet, or refused      **null_undo**: nothing to undo; a tombstone
                                                    is written so a late forward does nothing
undo                   undone / tombstone           **repeat**: no effect
any, with ``epoch``    a higher epoch was seen      **stale**: no effect (a fenced-out caller)
=====================  ===========================  ==========================================

Each call is one database transaction holding the key's row (SQLite: the database's write
lock; PostgreSQL: the row lock), so a forward and its undo never interleave, and an effect that
writes through ``call.conn`` commits or rolls back together with its ledger row. The ledger
lives in SQLite (the standard library) or PostgreSQL (psycopg, imported only then).

:meth:`ParticipantLedger.forward_endpoint` / :meth:`~ParticipantLedger.undo_endpoint` wrap an
effect into an ASGI app (usable as a Starlette or FastAPI route) keyed by the request's
``Idempotency-Key`` and ``Saga-Epoch`` headers, which :func:`participant_headers` builds from a
step's context on the calling side.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import anyio.to_thread

from ..errors import Rejected
from ._model import SagaContext, encode

__all__ = [
    "EPOCH_HEADER",
    "IDEMPOTENCY_HEADER",
    "OUTCOME_HEADER",
    "LedgerCall",
    "LedgerEndpoint",
    "LedgerEntry",
    "LedgerOutcome",
    "ParticipantLedger",
    "participant_headers",
]

IDEMPOTENCY_HEADER = "Idempotency-Key"
"""The request header carrying ``ctx.idempotency_key``."""
EPOCH_HEADER = "Saga-Epoch"
"""The request header carrying ``ctx.epoch`` (the caller's fencing token)."""
OUTCOME_HEADER = "Saga-Ledger-Outcome"
"""The response header saying what the ledger did (``applied``, ``repeat``, ...)."""

_UNDO = ":undo"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_POOL = 4  # idle connections kept
_COMPENSATED = ("undone", "tombstone")

Effect = Callable[["LedgerCall"], Any]
_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def participant_headers(ctx: SagaContext) -> dict[str, str]:
    """The headers a step (or compensation) sends to an HTTP participant:
    ``Idempotency-Key`` (``ctx.idempotency_key``) and ``Saga-Epoch`` (``ctx.epoch``)."""
    return {IDEMPOTENCY_HEADER: ctx.idempotency_key, EPOCH_HEADER: str(ctx.epoch)}


@dataclasses.dataclass(frozen=True)
class LedgerCall:
    """What an effect receives: ``conn`` is the ledger's DB-API connection *inside its open
    transaction* (write the business rows through it, and do not commit or roll back: the
    ledger does), ``key`` the step's key (``saga_id:step``, also for an undo), ``phase``
    ``"forward"`` or ``"undo"``, ``epoch`` the caller's epoch (``None`` when not sent),
    ``body`` the request's decoded JSON (endpoints) or what the caller passed, ``done`` the
    forward's recorded result (undo only)."""

    conn: Any
    key: str
    phase: str
    epoch: int | None = None
    body: Any = None
    done: Any = None


@dataclasses.dataclass(frozen=True)
class LedgerOutcome:
    """What a forward or undo call did. ``kind``: ``"applied"`` (the effect ran in this call),
    ``"repeat"`` (it ran before: ``result`` is what it returned then), ``"rejected"`` (the
    forward said a definitive no: ``result`` is ``{"error": message}``), ``"late"`` (a forward
    after its undo: nothing done), ``"null_undo"`` (an undo with nothing to undo; the key is
    now tombstoned), ``"stale"`` (the caller's epoch is older than one already seen).
    ``epoch`` is the highest epoch recorded for the key."""

    kind: str
    phase: str
    key: str
    result: Any = None
    epoch: int | None = None

    @property
    def applied(self) -> bool:
        """True when this very call ran the effect."""
        return self.kind == "applied"

    def http(self, rejected_status: int = 422) -> tuple[int, Any]:
        """The HTTP status and JSON body the ledger's endpoints answer with, for a handler
        of your own that calls :meth:`ParticipantLedger.aforward` / ``aundo``: 201 and the
        result (applied), 200 and the recorded result (repeat, null undo: ``None``),
        ``rejected_status`` and ``{"error": ...}`` (rejected), 409 (late, stale)."""
        if self.kind == "applied":
            return 201, self.result
        if self.kind in ("repeat", "null_undo"):
            return 200, self.result
        if self.kind == "rejected":
            return rejected_status, self.result
        if self.kind == "late":
            message = f"{self.key!r} was compensated before this call arrived: nothing done"
        else:
            message = (
                f"{self.key!r}: this call carries an older epoch than one already seen "
                f"({self.epoch}): it comes from a process that was fenced out; nothing done"
            )
        return 409, {"error": message, "outcome": self.kind}


@dataclasses.dataclass(frozen=True)
class LedgerEntry:
    """A key's row: ``state`` is ``"done"`` (forward applied), ``"rejected"``, ``"undone"``
    (applied, then undone) or ``"tombstone"`` (undone before any forward: a null undo)."""

    key: str
    state: str
    result: Any
    undo_result: Any
    epoch: int | None
    updated_at: float


# -- storage backends ------------------------------------------------------------------------------
class _Backend:
    """One database dialect: a transaction holding a key's row, savepoints, the row's write."""

    def __init__(self, table: str) -> None:
        self.table = table
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def _new(self) -> Any:
        raise NotImplementedError

    def _usable(self, conn: Any) -> bool:
        return True

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled connection (outside any transaction) for one operation."""
        conn = None
        with self._lock:
            if self._closed:
                raise RuntimeError("the ledger is closed")
            while self._idle and conn is None:
                candidate = self._idle.pop()
                if self._usable(candidate):
                    conn = candidate
                else:
                    candidate.close()
        if conn is None:
            conn = self._new()
        try:
            yield conn
        finally:
            keep = self._usable(conn)
            with self._lock:
                if keep and not self._closed and len(self._idle) < _POOL:
                    self._idle.append(conn)
                    conn = None
            if conn is not None:
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _SQLite(_Backend):
    def __init__(self, path: str, table: str, busy_timeout: float) -> None:
        super().__init__(table)
        self.path = path
        self._busy_ms = int(busy_timeout * 1000)
        t = table
        self._select = f"SELECT state, result, undo_result, epoch FROM {t} WHERE key = ?"
        self._upsert = (
            f"INSERT INTO {t} (key, state, result, undo_result, epoch, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET state = excluded.state, "
            "result = excluded.result, undo_result = excluded.undo_result, "
            "epoch = excluded.epoch, updated_at = excluded.updated_at"
        )
        with self.connection() as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, state TEXT NOT NULL, "
                "result TEXT, undo_result TEXT, epoch INTEGER, updated_at REAL NOT NULL)"
            )

    def _new(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_ms / 1000,
            isolation_level=None,
            check_same_thread=False,  # pooled: used by one thread at a time
        )
        conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def _usable(self, conn: Any) -> bool:
        return not conn.in_transaction

    @contextmanager
    def locked(self, key: str) -> Iterator[tuple[Any, tuple[Any, ...] | None]]:
        with self.read() as conn:
            yield conn, conn.execute(self._select, (key,)).fetchone()

    @contextmanager
    def savepoint(self, conn: Any) -> Iterator[None]:
        conn.execute("SAVEPOINT ledger_effect")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK TO ledger_effect")
                conn.execute("RELEASE ledger_effect")
            raise
        conn.execute("RELEASE ledger_effect")

    def write(self, conn: Any, key: str, row: tuple[Any, ...]) -> None:
        conn.execute(self._upsert, (key, *row))

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A connection in a ``BEGIN IMMEDIATE`` transaction (the write lock: forward and undo
        never interleave), committed at the end, rolled back on an error."""
        with self.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise


class _Postgres(_Backend):
    def __init__(self, dsn: str, table: str) -> None:
        super().__init__(table)
        try:
            import psycopg
        except ImportError as err:
            raise ImportError(
                "ParticipantLedger on PostgreSQL needs the psycopg 3 driver: "
                "pip install 'resilient-patterns[postgres]'"
            ) from err
        self._pg = psycopg
        self.dsn = dsn
        t = table
        self._claim = (
            f"INSERT INTO {t} (key, state, updated_at) VALUES (%s, 'new', %s) "
            "ON CONFLICT (key) DO NOTHING"
        )
        self._select = (
            f"SELECT state, result, undo_result, epoch FROM {t} WHERE key = %s FOR UPDATE"
        )
        self._update = (
            f"UPDATE {t} SET state = %s, result = %s, undo_result = %s, epoch = %s, "
            "updated_at = %s WHERE key = %s"
        )
        with self.connection() as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, state TEXT NOT NULL, "
                "result TEXT, undo_result TEXT, epoch BIGINT, "
                "updated_at DOUBLE PRECISION NOT NULL)"
            )

    def _new(self) -> Any:
        return self._pg.connect(self.dsn, autocommit=True, connect_timeout=10)

    def _usable(self, conn: Any) -> bool:
        return bool(
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == self._pg.pq.TransactionStatus.IDLE
        )

    @contextmanager
    def locked(self, key: str) -> Iterator[tuple[Any, tuple[Any, ...] | None]]:
        with self.connection() as conn, conn.transaction():
            # the insert takes the key's row lock even when the key is new (a concurrent call
            # for the same key waits for this transaction); 'new' reads as "no row"
            conn.execute(self._claim, (key, time.time()))
            row = conn.execute(self._select, (key,)).fetchone()
            yield conn, (None if row is None or row[0] == "new" else tuple(row))

    @contextmanager
    def savepoint(self, conn: Any) -> Iterator[None]:
        with conn.transaction():
            yield

    def write(self, conn: Any, key: str, row: tuple[Any, ...]) -> None:
        conn.execute(self._update, (*row, key))

    @contextmanager
    def read(self) -> Iterator[Any]:
        with self.connection() as conn, conn.transaction():
            yield conn


def _decode(text: Any) -> Any:
    return None if text is None else json.loads(text)


def _forward_key(key: str, phase: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty string (the Idempotency-Key), got {key!r}")
    if phase == "forward":
        return key
    if not key.endswith(_UNDO) or len(key) == len(_UNDO):
        raise ValueError(
            f"an undo key is the compensation's idempotency key, '<saga_id>:<step>:undo', "
            f"got {key!r}"
        )
    return key[: -len(_UNDO)]


def _check_epoch(epoch: object) -> int | None:
    if epoch is None:
        return None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be an int >= 0 or None, got {epoch!r}")
    return epoch


class ParticipantLedger:
    """A participant's record of the saga steps it executed and compensated, keyed by the
    step's idempotency key, with forward / undo / null-undo / late-forward semantics (see the
    module docstring's table).

    ``database`` is a SQLite file path, or a ``postgresql://`` / ``postgres://`` URL (needs
    psycopg). The table (``table``, created if missing; ``schema.table`` is fine on
    PostgreSQL) is best kept in the same database as the participant's own data, so an effect
    writing through ``call.conn`` commits together with its ledger row. ``busy_timeout``
    (SQLite) bounds the wait for the write lock.

    Effects run inside the ledger's transaction, which holds the key (SQLite: the whole
    database) until they return: keep them short. An effect raising :class:`rs.Rejected`
    records a definitive "no" (its writes are rolled back); any other exception rolls
    everything back and propagates (nothing is recorded: a retry runs it again).
    """

    def __init__(
        self,
        database: str | os.PathLike[str],
        *,
        table: str = "resilient_participant_ledger",
        busy_timeout: float = 5.0,
    ) -> None:
        if not isinstance(table, str) or not _IDENT.match(table):
            raise ValueError(
                f"table must be a plain SQL identifier (or schema.table), got {table!r}"
            )
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)):
            raise TypeError(f"busy_timeout must be a number of seconds, got {busy_timeout!r}")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0, got {busy_timeout!r}")
        if isinstance(database, str) and database.startswith(("postgresql://", "postgres://")):
            self._db: _SQLite | _Postgres = _Postgres(database, table)
            self.kind = "postgres"
        elif isinstance(database, (str, os.PathLike)) and os.fspath(database):
            if "." in table:
                raise ValueError(f"table must be a plain SQL identifier on SQLite, got {table!r}")
            self._db = _SQLite(os.fspath(database), table, busy_timeout)
            self.kind = "sqlite"
        else:
            raise ValueError(
                f"database must be a SQLite file path or a postgresql:// URL, got {database!r}"
            )
        self.table = table

    def __repr__(self) -> str:
        where = self._db.path if isinstance(self._db, _SQLite) else "postgresql"
        return f"<ParticipantLedger {self.kind} {where!r} table={self.table!r}>"

    def close(self) -> None:
        """Close the pooled connections; the ledger must not be used afterwards."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A connection in a transaction of the ledger's database, committed at the end: for
        the participant's own setup and reads (creating its tables, listing its rows)."""
        with self._db.read() as conn:
            yield conn

    # -- the two calls -------------------------------------------------------------------------
    def forward(
        self, key: str, effect: Effect, *, epoch: int | None = None, body: Any = None
    ) -> LedgerOutcome:
        """Apply ``effect(call)`` once for the step key ``key`` (``ctx.idempotency_key`` of
        the step, the ``Idempotency-Key`` header), unless it was applied, refused or
        compensated before, or ``epoch`` is older than one already seen. ``effect`` returns
        the result to record (JSON-encodable); it is returned again to every repeat."""
        if not callable(effect):
            raise TypeError(f"effect must be callable, got {effect!r}")
        return self._call("forward", key, effect, _check_epoch(epoch), body)

    def undo(
        self,
        key: str,
        effect: Effect | None = None,
        *,
        epoch: int | None = None,
        body: Any = None,
    ) -> LedgerOutcome:
        """Compensate the step whose compensation key is ``key`` (``...:undo``, the
        compensation's ``ctx.idempotency_key``): run ``effect(call)`` (``call.done`` is the
        forward's result) if the forward was applied, else record a tombstone so that a
        forward arriving later does nothing (null undo). Once per key."""
        if effect is not None and not callable(effect):
            raise TypeError(f"effect must be callable or None, got {effect!r}")
        return self._call("undo", key, effect, _check_epoch(epoch), body)

    async def aforward(
        self, key: str, effect: Effect, *, epoch: int | None = None, body: Any = None
    ) -> LedgerOutcome:
        """:meth:`forward` from async code (asyncio or trio): the transaction and the (sync)
        effect run in a worker thread."""
        call = functools.partial(self.forward, key, effect, epoch=epoch, body=body)
        return await anyio.to_thread.run_sync(call)

    async def aundo(
        self,
        key: str,
        effect: Effect | None = None,
        *,
        epoch: int | None = None,
        body: Any = None,
    ) -> LedgerOutcome:
        """:meth:`undo` from async code (asyncio or trio), in a worker thread."""
        call = functools.partial(self.undo, key, effect, epoch=epoch, body=body)
        return await anyio.to_thread.run_sync(call)

    def entry(self, key: str) -> LedgerEntry | None:
        """The row of the step key ``key`` (an undo key is accepted too), or ``None``."""
        fkey = key[: -len(_UNDO)] if key.endswith(_UNDO) and len(key) > len(_UNDO) else key
        with self._db.read() as conn:
            mark = "?" if isinstance(self._db, _SQLite) else "%s"
            row = conn.execute(
                f"SELECT state, result, undo_result, epoch, updated_at FROM {self.table} "
                f"WHERE key = {mark}",
                (fkey,),
            ).fetchone()
        if row is None or row[0] == "new":
            return None
        return LedgerEntry(fkey, row[0], _decode(row[1]), _decode(row[2]), row[3], row[4])

    def _call(
        self, phase: str, key: str, effect: Effect | None, epoch: int | None, body: Any
    ) -> LedgerOutcome:
        fkey = _forward_key(key, phase)
        db = self._db
        with db.locked(fkey) as (conn, row):
            state, result, undo_result, seen = row if row is not None else (None,) * 4
            if epoch is not None and seen is not None and epoch < seen:
                # a fenced-out caller; "late" says more when its step was compensated already
                kind = "late" if phase == "forward" and state in _COMPENSATED else "stale"
                return LedgerOutcome(kind, phase, fkey, None, seen)
            top = seen if epoch is None else epoch if seen is None else max(seen, epoch)

            wrote: list[str] = []

            def record(new_state: str, res: Any, undo_res: Any) -> None:
                db.write(conn, fkey, (new_state, res, undo_res, top, time.time()))
                wrote.append(new_state)

            def outcome(kind: str, value: Any = None) -> LedgerOutcome:
                if not wrote and top != seen:
                    record(state, result, undo_result)  # remember the newer epoch
                return LedgerOutcome(kind, phase, fkey, value, top)

            if phase == "forward":
                if state == "done":
                    return outcome("repeat", _decode(result))
                if state == "rejected":
                    return outcome("rejected", _decode(result))
                if state in _COMPENSATED:
                    return outcome("late")
                call = LedgerCall(conn, fkey, phase, epoch, body)
                try:
                    with db.savepoint(conn):
                        text = _encoded(effect(call) if effect is not None else None, "effect")
                except Rejected as exc:
                    refusal = encode({"error": str(exc)})
                    record("rejected", refusal, None)
                    return outcome("rejected", _decode(refusal))
                record("done", text, None)
                return outcome("applied", _decode(text))
            # undo
            if state == "undone":
                return outcome("repeat", _decode(undo_result))
            if state == "tombstone":
                return outcome("repeat")
            if state is None or state == "rejected":
                record("tombstone", result, None)
                return outcome("null_undo")
            call = LedgerCall(conn, fkey, phase, epoch, body, _decode(result))
            with db.savepoint(conn):
                text = _encoded(effect(call) if effect is not None else None, "undo effect")
            record("undone", result, text)
            return outcome("applied", _decode(text))

    # -- ASGI ------------------------------------------------------------------------------------
    def forward_endpoint(self, effect: Effect | None = None, *, rejected_status: int = 422) -> Any:
        """An ASGI app running :meth:`forward` for each request (a Starlette/FastAPI route
        endpoint: ``Route("/charges", ledger.forward_endpoint(charge), methods=["POST"])``, or
        ``@ledger.forward_endpoint`` on the effect). The effect gets the request's JSON as
        ``call.body``. Responses: 201 and the result (applied), 200 and the recorded result
        (repeat), ``rejected_status`` (rejected), 409 (late or stale), 400 (no or bad
        ``Idempotency-Key`` / ``Saga-Epoch`` / JSON); each with a ``Saga-Ledger-Outcome``
        header."""
        if effect is None:
            return functools.partial(self.forward_endpoint, rejected_status=rejected_status)
        if not callable(effect):
            raise TypeError(f"effect must be callable, got {effect!r}")
        return LedgerEndpoint(self, "forward", effect, rejected_status)

    def undo_endpoint(self, effect: Effect | None = None) -> LedgerEndpoint:
        """An ASGI app running :meth:`undo` for each request, keyed by the compensation's
        ``Idempotency-Key`` (``...:undo``): 201 and the undo's result (applied), 200 (repeat,
        or a null undo: body ``null``), 409 (stale), 400 (bad headers or JSON). Usable bare
        (``ledger.undo_endpoint()``: nothing to do besides the tombstone) or with an effect."""
        if effect is not None and not callable(effect):
            raise TypeError(f"effect must be callable or None, got {effect!r}")
        return LedgerEndpoint(self, "undo", effect, 422)


def _encoded(value: Any, what: str) -> str:
    try:
        return encode(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the {what} must return something JSON can encode: {exc}") from exc


class LedgerEndpoint:
    """An ASGI application (HTTP only) serving one ledger phase; see
    :meth:`ParticipantLedger.forward_endpoint`."""

    def __init__(
        self, ledger: ParticipantLedger, phase: str, effect: Effect | None, rejected_status: int
    ) -> None:
        self.ledger = ledger
        self.phase = phase
        self.effect = effect
        self.rejected_status = rejected_status

    def __repr__(self) -> str:
        return f"<LedgerEndpoint {self.phase} {self.effect!r} of {self.ledger!r}>"

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope.get("type") != "http":
            raise RuntimeError(f"{self!r} serves HTTP requests, not {scope.get('type')!r}")
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", ())
        }
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the caller is gone before we did anything: it will call again
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        key = headers.get(IDEMPOTENCY_HEADER.lower(), "")
        epoch_text = headers.get(EPOCH_HEADER.lower())
        try:
            _forward_key(key, self.phase)
            epoch = None if epoch_text is None else int(epoch_text)
            if epoch is not None and epoch < 0:
                raise ValueError(f"{EPOCH_HEADER} must be >= 0, got {epoch_text!r}")
            raw = b"".join(chunks)
            body = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            problem = f"missing {IDEMPOTENCY_HEADER} header" if not key else str(exc)
            await _respond(send, 400, {"error": problem}, "invalid")
            return
        done = await anyio.to_thread.run_sync(
            functools.partial(self.ledger._call, self.phase, key, self.effect, epoch, body)
        )
        status, payload = done.http(self.rejected_status)
        await _respond(send, status, payload, done.kind)


async def _respond(send: _Send, status: int, payload: Any, outcome: str) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (OUTCOME_HEADER.lower().encode(), outcome.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
