"""The first saga table layout (schema version 1) exactly as the stores created it before the
version was recorded, kept as a fixture so the upgrade can be tested on a database written
the old way: :func:`write_v1_saga` writes a log as the layout-1 code did, one transaction per
record, through the same SQL.
"""

from __future__ import annotations

from typing import Any

# -- the layout-1 DDL, as _sqlite.py and _postgres.py had it before the version was recorded ---
SQLITE_DDL = """
CREATE TABLE IF NOT EXISTS sagas (
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
);
CREATE INDEX IF NOT EXISTS sagas_due ON sagas (status, next_attempt_at);
CREATE TABLE IF NOT EXISTS saga_events (
    saga_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    step TEXT,
    attempt INTEGER,
    payload TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (saga_id, seq)
) WITHOUT ROWID;
"""


def pg_ddl(t: str) -> list[str]:
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


# (kind, step, attempt, payload) of the records the layout-1 code wrote, one transaction each
Record = tuple[str, "str | None", "int | None", str]


def write_v1_saga(
    conn: Any,
    param: str,
    t: str,
    saga_id: str,
    records: list[Record],
    *,
    status: str = "running",
    lease_until: float = 0.0,
    definition: str = "order@1",
    steps_hash: str = "",
) -> None:
    """Write ``records`` as the layout-1 store did: the saga row with SAGA_CREATED in one
    transaction, then one transaction per record. ``conn`` is an autocommit sqlite3 or
    psycopg connection, ``param`` its placeholder, ``t`` the table prefix."""
    p = param
    now = 1_000.0
    conn.execute("BEGIN")
    conn.execute(
        f"INSERT INTO {t}sagas (id, definition, steps_hash, status, epoch, owner, lease_until, "
        "next_attempt_at, deadline, recoveries, input, input_hash, trace_context, created_at, "
        f"updated_at, last_seq) VALUES ({p}, {p}, {p}, 'running', 1, 'old-node', {p}, 0, NULL, "
        f"0, '{{\"order\": 1}}', {p}, NULL, {p}, {p}, 1)",
        (saga_id, definition, steps_hash, lease_until, "ih", now, now),
    )
    conn.execute(
        f"INSERT INTO {t}saga_events (saga_id, seq, kind, step, attempt, payload, at) "
        f"VALUES ({p}, 1, 'SAGA_CREATED', NULL, NULL, '', {p})",
        (saga_id, now),
    )
    conn.execute("COMMIT")
    for seq, (kind, step, attempt, body) in enumerate(records, start=2):
        conn.execute("BEGIN")
        conn.execute(
            f"UPDATE {t}sagas SET last_seq = {p}, updated_at = {p} WHERE id = {p}",
            (seq, now, saga_id),
        )
        conn.execute(
            f"INSERT INTO {t}saga_events (saga_id, seq, kind, step, attempt, payload, at) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
            (saga_id, seq, kind, step, attempt, body, now),
        )
        conn.execute("COMMIT")
    if status != "running":
        conn.execute(
            f"UPDATE {t}sagas SET status = {p}, owner = NULL WHERE id = {p}", (status, saga_id)
        )
