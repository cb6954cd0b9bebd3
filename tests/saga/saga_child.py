"""A process the crash tests start and kill: ``python saga_child.py MODE DB LEDGER ARGS...``.

``DB`` is a SQLite file, or a store URL (``postgresql://...?schema=...``).
``run SAGA_ID [long] [on_recovery]`` runs the order saga (sync steps) and is
usually killed by ``RESILIENT_SAGA_CRASH_AT``; ``recover`` recovers every orphaned saga with a
clock one hour ahead (so every lease has expired) and prints the ids it finished as JSON.
"""

from __future__ import annotations

import json
import sys
import time

from saga_fixtures import Shop, order_saga

import resilient as rs
from resilient.saga import store_from_url
from resilient.saga.testing import Ledger


def main(argv: list[str]) -> int:
    mode, db, ledger_path = argv[:3]
    shop = Shop(Ledger(ledger_path))
    long = "long" in argv[3:]
    on_recovery = "compensate" if "compensate" in argv[3:] else "resume"
    saga = order_saga(
        shop,
        long=long,
        is_async=False,
        store=store_from_url(db) if "://" in db else rs.SQLiteSagaStore(db),
        on_recovery=on_recovery,
        clock=(lambda: time.time() + 3600) if mode == "recover" else None,
    )
    if "reject" in argv[3:]:
        shop.script("D", rs.Rejected("declined"))
    if mode == "run":
        try:
            saga.run_sync({"order": argv[3]}, saga_id=argv[3])
        except rs.SagaFailed:
            return 1
        return 0
    report = saga.recover_sync()
    print(json.dumps({k: (v.value if v else None) for k, v in report.outcomes.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
