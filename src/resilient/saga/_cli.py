"""``python -m resilient saga ...``: look into a saga store and unstick sagas from a shell.

``list`` and ``timeline`` read the store. ``retry`` and ``mark-compensated`` do not run any
saga code (the CLI does not have it): they record the operator's decision in the log, fence
out any other writer (epoch + 1) and make the saga due, so the application's next
``saga.recover()`` finishes it. (``abort`` needs the definition to check the pivot: use
``saga.admin.abort`` from the application.)

``resilient.__main__`` imports :func:`add_parser` lazily and calls :func:`run` with the parsed
arguments.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys
import time
from typing import Any, TextIO

from ..errors import SagaStoreUnavailable
from ._admin import admin_events
from ._model import SagaFilter, SagaStatus
from ._store import BlockingSagaStore
from ._url import store_from_url

__all__ = ["add_parser", "main", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``saga`` command to an ``argparse`` sub-parser collection."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "saga",
        help="inspect and repair sagas in a saga store",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument(
        "--store",
        default=os.environ.get("RESILIENT_SAGA_STORE"),
        help="store URL, e.g. sqlite:///sagas.db (default: $RESILIENT_SAGA_STORE)",
    )
    # ``--store`` is accepted before or after the command (``saga list --store URL``); on the
    # command it is SUPPRESSed by default so it never overwrites the group-level value.
    store_option = argparse.ArgumentParser(add_help=False)
    store_option.add_argument("--store", default=argparse.SUPPRESS, help="store URL")
    commands = parser.add_subparsers(dest="saga_command", metavar="COMMAND")
    commands.required = True

    ls = commands.add_parser("list", help="list sagas, newest first", parents=[store_option])
    ls.add_argument("--status", choices=[s.value for s in SagaStatus])
    ls.add_argument("--name", help="only sagas of this definition name")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")

    tl = commands.add_parser("timeline", help="print one saga's log", parents=[store_option])
    tl.add_argument("saga_id")
    tl.add_argument("--json", action="store_true", help="one JSON object per line")

    rt = commands.add_parser(
        "retry", help="make a STUCK saga due again for recover()", parents=[store_option]
    )
    rt.add_argument("saga_id")
    rt.add_argument("--note")

    mc = commands.add_parser(
        "mark-compensated",
        help="record that a stuck undo was done by hand; rollback continues",
        parents=[store_option],
    )
    mc.add_argument("saga_id")
    mc.add_argument("step")
    mc.add_argument("--note")

    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Execute a parsed ``saga`` command; returns the process exit code."""
    out = out or sys.stdout
    if not args.store:
        print("error: no store given (--store or RESILIENT_SAGA_STORE)", file=sys.stderr)
        return 2
    try:
        store = store_from_url(args.store)
    except (ValueError, SagaStoreUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _COMMANDS[args.saga_command](store, args, out)
    except SagaStoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).isoformat(
        timespec="seconds"
    )


def _list(store: BlockingSagaStore, args: argparse.Namespace, out: TextIO) -> int:
    statuses = (SagaStatus(args.status),) if args.status else ()
    rows = store.query_sync(SagaFilter(name=args.name, statuses=statuses, limit=args.limit))
    if args.json:
        for r in rows:
            print(
                json.dumps(
                    {
                        "id": r.id,
                        "definition": r.definition,
                        "status": r.status.value,
                        "epoch": r.epoch,
                        "owner": r.owner,
                        "recoveries": r.recoveries,
                        "updated_at": r.updated_at,
                    }
                ),
                file=out,
            )
        return 0
    print(f"{'ID':<36} {'DEFINITION':<20} {'STATUS':<12} {'EPOCH':>5} {'UPDATED':<25}", file=out)
    for r in rows:
        print(
            f"{r.id:<36} {r.definition:<20} {r.status.value:<12} {r.epoch:>5} "
            f"{_when(r.updated_at):<25}",
            file=out,
        )
    return 0


def _timeline(store: BlockingSagaStore, args: argparse.Namespace, out: TextIO) -> int:
    rec = store.load_sync(args.saga_id)
    if rec is None:
        raise KeyError(f"no saga {args.saga_id!r} in this store")
    if not args.json:
        print(f"saga {rec.id} ({rec.definition}): {rec.status.value}, epoch {rec.epoch}", file=out)
    for ev in rec.events:
        if args.json:
            row = {"seq": ev.seq, "at": ev.at, "kind": ev.kind, "step": ev.step}
            row.update({"attempt": ev.attempt, "data": ev.data})
            print(json.dumps(row), file=out)
        else:
            where = f"{ev.step}#{ev.attempt}" if ev.attempt else (ev.step or "")
            print(f"{ev.seq:>4} {_when(ev.at)} {ev.kind:<22} {where:<28} {ev.payload}", file=out)
    return 0


def _schedule(store: BlockingSagaStore, args: argparse.Namespace, out: TextIO) -> int:
    action = "retry" if args.saga_command == "retry" else "mark_compensated"
    step = getattr(args, "step", None)
    rec = store.load_sync(args.saga_id)
    if rec is None:
        raise KeyError(f"no saga {args.saga_id!r} in this store")
    admin_events(rec, action, step=step, note=args.note)  # refuse before fencing anyone out
    owner = f"cli:{socket.gethostname()}:{os.getpid()}"
    now = time.time()
    taken = store.take_sync(args.saga_id, owner, now, 0.0)
    if taken is None:  # pragma: no cover - deleted in between
        raise KeyError(f"no saga {args.saga_id!r} in this store")
    events, status = admin_events(taken, action, step=step, note=args.note)
    store.append_sync(taken.id, taken.epoch, events, status, 0.0)  # due at once
    store.release_sync(taken.id, owner, taken.epoch)
    print(
        f"saga {taken.id}: {action} recorded; the next recover() of {taken.definition} "
        "will drive it",
        file=out,
    )
    return 0


_COMMANDS = {
    "list": _list,
    "timeline": _timeline,
    "retry": _schedule,
    "mark-compensated": _schedule,
}


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m resilient.saga._cli saga list ...``."""
    parser = argparse.ArgumentParser(prog="resilient")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
