"""S17 and S18 (SAGA.md 4.9) on PostgreSQL with real processes: recovery workers and a zombie
owner are separate interpreters sharing one schema, as replicas of a service would.

Needs a PostgreSQL server (skipped with the reason naming it otherwise). The bounds are
generous and nothing is timed: the machine may be loaded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from saga_fixtures import A, B, C, D, Shop, order_saga
from test_postgres_store import DSN, _drop, needs_pg

import resilient as rs
from resilient.saga import SagaStatus, store_from_url
from resilient.saga.testing import CrashPoint, Ledger, SimulatedCrash, crash_at

HERE = Path(__file__).parent
pytestmark = needs_pg


@pytest.fixture
def url() -> Iterator[str]:
    schema = f"rs_test_{uuid.uuid4().hex[:12]}"
    yield f"{DSN}?schema={schema}"
    _drop(schema)


def _child(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=HERE,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_s17_two_recovering_processes_share_fifty_orphans(url: str, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    store = store_from_url(url)
    saga = order_saga(Shop(ledger), is_async=False, store=store, long=True)
    ids = [f"o{i:02d}" for i in range(50)]
    for sid in ids:  # each dies right after A is recorded, keeping its lease: an orphan
        with crash_at(CrashPoint.AFTER_STEP_RECORDED, A), pytest.raises(SimulatedCrash):
            saga.run_sync({"order": sid}, saga_id=sid)
    store.close()
    cmd = [str(HERE / "saga_child.py"), "recover", url, str(tmp_path / "ledger.db"), "long"]
    procs = [_child(*cmd) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    done = [json.loads(out) for out, _ in outs]
    assert set(done[0]) | set(done[1]) == set(ids)
    assert not set(done[0]) & set(done[1])  # each saga driven by exactly one process
    assert {v for d in done for v in d.values()} == {"completed"}
    for sid in ids:
        assert ledger.deliveries(f"{sid}:{A}") == 1  # recorded: never invoked again
        for step in (B, D, C):
            assert ledger.deliveries(f"{sid}:{step}") == 1  # invoked by one process, once
    check = store_from_url(url)
    assert {r.status for r in check.query_sync(rs.saga.SagaFilter(limit=100))} == {
        SagaStatus.COMPLETED
    }
    check.close()


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    for _ in range(6000):  # a guard against hanging (up to ~2 min), not a timing assertion
        if path.exists():
            return
        if proc.poll() is not None:
            pytest.fail(f"worker A exited early: {proc.communicate()}")
        time.sleep(0.02)
    pytest.fail(f"{path.name} never appeared")


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP/SIGCONT")
def test_s18_a_stopped_owner_resumes_into_stale_epoch(url: str, tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.db"
    ledger = Ledger(ledger_path)
    store_from_url(url).close()  # the tables, before two processes race to create them
    # worker A: a long lease, so only the takeover (not its own heartbeat) can fence it out
    worker_a = _child(
        str(HERE / "zombie_child.py"),
        url,
        str(ledger_path),
        str(tmp_path),
        env={"RESILIENT_SAGA_LEASE_SECONDS": "600"},
    )
    try:
        _wait_for(tmp_path / "in_b", worker_a)
        os.kill(worker_a.pid, signal.SIGSTOP)  # paused inside B, past its lease from now on
        # worker B (this process): its clock is past A's lease, so it claims (epoch + 1)
        shop = Shop(ledger)
        store = store_from_url(url)
        worker_b = order_saga(
            shop, long=True, is_async=False, store=store, clock=lambda: time.time() + 3600
        )
        assert worker_b.recover_sync().outcomes == {"z": SagaStatus.COMPLETED}
        (tmp_path / "go").touch()
    finally:
        os.kill(worker_a.pid, signal.SIGCONT)
    out, err = worker_a.communicate(timeout=300)
    assert worker_a.returncode == 0, err
    a = json.loads(out)
    assert a["error"] == "StaleEpoch" and a["stale_total"] == 1.0
    assert a["calls"] == [f"do:{A}", f"do:{B}"]  # A made no invocation after resuming
    # B was in doubt for worker B: invoked again with its key, one effect; D and C once
    assert shop.order() == [f"do:{B}", f"do:{D}", f"do:{C}"]
    assert ledger.count(B) == 1 and ledger.deliveries(f"z:{B}") == 2
    for step in (A, D, C):
        assert ledger.deliveries(f"z:{step}") == 1
    rec = store.load_sync("z")
    assert rec is not None and rec.status is SagaStatus.COMPLETED and rec.epoch == 2
    store.close()
