"""The owning process of the late-step test: ``python late_step_child.py STORE PAYMENTS BANK
POINTS SAGA_ID``. It starts the saga, prints ``ready`` once inside ``charge`` and waits for a
line on stdin before calling the participants (the test freezes it there with SIGSTOP and lets
another process take the saga over), then prints what happened as one JSON line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from late_step_parts import late_saga

import resilient as rs


def main(argv: list[str]) -> int:
    store_db, payments, bank, points, saga_id = argv

    def wait_for_go() -> None:
        print("ready", flush=True)
        sys.stdin.readline()

    report: dict[str, Any] = {}
    dirs = {"payments": payments, "bank": bank, "points": points}
    saga = late_saga(rs.SQLiteSagaStore(store_db), dirs, before_calls=wait_for_go, report=report)
    try:
        saga.run_sync({"order": saga_id}, saga_id=saga_id)
        report["run"] = "finished"
    except rs.StaleEpoch as exc:
        report["run"] = "stale"
        report["stale"] = {"message": str(exc), "epoch": exc.epoch, "current": exc.current}
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
