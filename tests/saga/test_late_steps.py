"""A paused owner's step landing after another process compensated it (issue 18, item 1), with
real processes: an HTTP participant (uvicorn), the owning process (frozen with SIGSTOP inside
``charge``, before it calls anyone) and the recovering process (this one).

The recovering process takes the saga over (epoch 2), re-runs ``charge`` (which fails), and
compensates it with ``done=None``. Then the owner wakes up and makes its calls: after the
rollback. What docs/saga.md ("Guarantees") promises is checked against each participant:

* through ``ParticipantLedger`` endpoints and through ``barrier()`` the late call has no effect
  (the compensation left a tombstone under the step's key);
* a participant deduplicating on the idempotency key only DOES get the late effect, with
  nothing left to undo it: the docs must not claim otherwise.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from late_step_parts import STEP, bank_moves, late_saga, payments_rows

import resilient as rs
from resilient.saga import SagaStatus
from resilient.saga.testing import Ledger

HERE = Path(__file__).resolve().parent
SAGA_ID = "order-late-1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP (POSIX)"),
]


def _lines(stream: IO[str]) -> queue.Queue[str]:
    """The lines of ``stream``, read by a thread (so waiting for one can time out)."""
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            out.put(line.rstrip("\n"))
        out.put("")  # EOF

    threading.Thread(target=pump, daemon=True).start()
    return out


def _serve_payments(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the payments service on a socket this process bound (no port race)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with open(tmp / "payments.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "late_step_parts.py"),
                "serve",
                str(tmp / "payments.db"),
                str(sock.fileno()),
            ],
            pass_fds=[sock.fileno()],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    sock.close()
    deadline = time.monotonic() + 60  # a guard against hanging, not a timing assertion
    while True:
        assert proc.poll() is None, (tmp / "payments.log").read_text()
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the payments service never answered"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def late(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("late")
    server, payments = _serve_payments(tmp)
    dirs = {"payments": payments, "bank": str(tmp / "bank.db"), "points": str(tmp / "points.db")}
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESILIENT_SAGA")}
        with open(tmp / "owner.log", "w") as errors:
            owner = subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "late_step_child.py"),
                    str(tmp / "sagas.db"),
                    dirs["payments"],
                    dirs["bank"],
                    dirs["points"],
                    SAGA_ID,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                env=env,
            )
        assert owner.stdin is not None and owner.stdout is not None
        lines = _lines(owner.stdout)
        try:
            assert lines.get(timeout=60) == "ready", (tmp / "owner.log").read_text()
            os.kill(owner.pid, signal.SIGSTOP)  # paused inside charge, past its lease
            try:
                taker: dict[str, Any] = {}
                saga = late_saga(
                    rs.SQLiteSagaStore(tmp / "sagas.db"),
                    dirs,
                    clock=lambda: time.time() + 3600,  # the owner's lease has expired
                    report=taker,
                )
                recovered = saga.recover_sync()
            finally:
                os.kill(owner.pid, signal.SIGCONT)
            owner.stdin.write("go\n")  # the owner's charge now calls the participants
            owner.stdin.flush()
            line = lines.get(timeout=60)
            owner.wait(timeout=60)
        finally:
            if owner.poll() is None:
                owner.kill()
                owner.wait()
        record = rs.SQLiteSagaStore(tmp / "sagas.db").load_sync(SAGA_ID)
        yield {
            "recovered": recovered,
            "taker": taker,
            "owner": json.loads(line),
            "record": record,
            "payments": payments_rows(tmp / "payments.db"),
            "bank": bank_moves(dirs["bank"]),
            "points": Ledger(dirs["points"]).effects(),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_takeover_compensated_before_the_paused_owner_called(late: dict[str, Any]) -> None:
    assert late["recovered"].outcomes == {SAGA_ID: SagaStatus.COMPENSATED}
    assert late["record"].status is SagaStatus.COMPENSATED and late["record"].epoch == 2
    assert late["taker"]["undo_done"] is None  # charge's outcome was unknown: done=None
    assert late["taker"]["refund"] == [200, "null_undo"]  # nothing to refund yet: tombstone
    owner = late["owner"]
    assert owner["epoch"] == 1  # the owner's calls carried its (old) epoch
    # ...and it was fenced out of the log, told which epoch it lost to
    assert owner["run"] == "stale" and owner["stale"]["current"] == 2
    assert "epoch 2" in owner["stale"]["message"] and "None" not in owner["stale"]["message"]


def test_a_late_step_has_no_effect_through_the_ledger_and_the_barrier(
    late: dict[str, Any],
) -> None:
    owner = late["owner"]
    # ParticipantLedger endpoints: the late charge is refused as late, nothing is charged
    assert owner["payments"] == [409, "late"]
    rows = late["payments"]
    assert rows["charges"] == [] and rows["refunds"] == []
    assert rows["ledger"] == [(f"{SAGA_ID}:{STEP}", "tombstone", 2)]
    # barrier(): the compensation took the step's row, the late write is skipped
    assert owner["bank"] is False
    assert late["bank"] == []


def test_a_key_only_participant_gets_the_late_effect(late: dict[str, Any]) -> None:
    # Deduplicating on ctx.idempotency_key alone is NOT enough (docs/saga.md "Guarantees"):
    # the undo found nothing under the step's key, so the late charge is a first-time effect
    # that nothing will ever undo, although the saga says COMPENSATED.
    assert late["owner"]["points"] is True
    assert late["points"] == [(f"{SAGA_ID}:{STEP}", "charge")]
    assert late["record"].status is SagaStatus.COMPENSATED
