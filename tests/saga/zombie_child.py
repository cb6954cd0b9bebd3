"""Worker A of S18 on PostgreSQL: ``python zombie_child.py STORE_URL LEDGER DIR``.

Runs the long order saga (A, B, D pivot, C; sync steps) as saga ``z``. Step B has its effect,
writes ``DIR/in_b`` and waits for ``DIR/go``: the test SIGSTOPs this process there, lets
another worker take the saga over and finish it, then resumes it. Prints JSON: the error the
run ended with, this process's ``resilient_saga_stale_epoch_total`` and its invocations.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from saga_fixtures import B, Shop, order_saga

import resilient as rs
from resilient.saga import SagaContext, store_from_url
from resilient.saga.testing import Ledger
from resilient.telemetry import configure_telemetry


def main(url: str, ledger_path: str, directory: str) -> int:
    registry = CollectorRegistry()
    configure_telemetry(registry=registry)
    shop = Shop(Ledger(ledger_path))
    saga = order_saga(shop, long=True, is_async=False, store=store_from_url(url))
    plain_b = shop.step(B)

    def paused_b(ctx: SagaContext) -> object:
        result = plain_b(ctx)  # the effect happens (the ledger dedups on the key)
        Path(directory, "in_b").touch()
        while not Path(directory, "go").exists():  # SIGSTOPped here by the test
            time.sleep(0.02)
        return result

    for sdef in saga._steps.defs:
        if sdef.name == B:
            sdef.fn = paused_b
    error = None
    try:
        saga.run_sync({"order": "z"}, saga_id="z")
    except rs.StaleEpoch as exc:
        error = type(exc).__name__
    stale = registry.get_sample_value("resilient_saga_stale_epoch_total") or 0.0
    print(json.dumps({"error": error, "stale_total": stale, "calls": shop.order()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
