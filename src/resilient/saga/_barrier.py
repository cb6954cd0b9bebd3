"""``barrier``: exactly-once effects for a participant that writes to its own SQL database.

The DTM "sub-transaction barrier": in the *same local transaction* as the business write, the
participant records ``(saga_id, step, op)`` in a barrier table with insert-if-absent. The
outcome of that insert tells what to do:

* a step whose row is new runs; a repeat (same key again: retry, recovery) is skipped;
* a compensation whose step row is missing inserts it and is skipped: the step never ran
  (a *null compensation*), and because its row is now taken, a late step (a *hanging* call from
  a fenced-out process) is skipped too.

Since the barrier row and the business write commit or roll back together, the effect happens
exactly once however often the saga engine invokes the participant (at least once).
"""

from __future__ import annotations

from typing import Any

from ._model import SagaContext

__all__ = ["barrier"]

_PLACEHOLDERS = {"qmark": "?", "format": "%s"}


def barrier(
    conn: Any, ctx: SagaContext, *, table: str = "resilient_saga_barrier", paramstyle: str = "qmark"
) -> bool:
    """Call inside the participant's open transaction on ``conn`` (a DB-API connection),
    before the business write; write only when it returns True.

    ``paramstyle`` is the driver's: "qmark" (sqlite3) or "format" (psycopg). The SQL is
    ``INSERT ... ON CONFLICT DO NOTHING`` (SQLite >= 3.24, PostgreSQL).
    """
    mark = _PLACEHOLDERS.get(paramstyle)
    if mark is None:
        raise ValueError(f"paramstyle must be 'qmark' or 'format', got {paramstyle!r}")
    if not table.replace("_", "").isalnum():
        raise ValueError(f"table must be a plain SQL identifier, got {table!r}")
    cur = conn.cursor()
    try:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (saga_id TEXT NOT NULL, step TEXT NOT NULL, "
            "op TEXT NOT NULL, PRIMARY KEY (saga_id, step, op))"
        )
        insert = (
            f"INSERT INTO {table} (saga_id, step, op) VALUES ({mark}, {mark}, {mark}) "
            "ON CONFLICT DO NOTHING"
        )

        def take(op: str) -> bool:
            cur.execute(insert, (ctx.saga_id, ctx.step, op))
            return bool(cur.rowcount == 1)

        if ctx.phase == "forward":
            return take("action")  # False: a repeat, or hanging after the compensation
        if not take("compensate"):
            return False  # a repeat of the compensation
        return not take("action")  # the action row was free: it never ran (null compensation)
    finally:
        cur.close()
