"""The saga CLI as operators type it, and what saga errors tell the caller."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import resilient as rs


def _stuck_saga(path: Path) -> None:
    saga = rs.Saga("refund", store=rs.SQLiteSagaStore(path))

    @saga.step()
    def charge(ctx: rs.SagaContext) -> int:
        return 10

    @charge.compensate(policy=rs.Retry(attempts=1))
    def refund(ctx: rs.SagaContext, done: int | None) -> None:
        raise ConnectionError("bank is down")

    @saga.step()
    def ship(ctx: rs.SagaContext) -> None:
        raise rs.Rejected("out of stock")

    with pytest.raises(rs.SagaStuck):
        saga.run_sync({}, saga_id="order-7")


@pytest.mark.parametrize("store_first", [False, True], ids=["store-after", "store-before"])
def test_saga_list_accepts_store_before_or_after_the_command(
    tmp_path: Path, store_first: bool
) -> None:
    path = tmp_path / "sagas.db"
    _stuck_saga(path)
    url = f"sqlite:///{path}"
    tail = ["list", "--store", url, "--status", "stuck"]
    if store_first:
        tail = ["--store", url, "list", "--status", "stuck"]
    proc = subprocess.run(
        [sys.executable, "-m", "resilient", "saga", *tail],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split()[:3] for line in proc.stdout.splitlines()[1:]]
    assert rows == [["order-7", "refund@1", "stuck"]]


def test_saga_errors_carry_the_final_status(tmp_path: Path) -> None:
    saga = rs.Saga("status", store=rs.InMemorySagaStore())

    @saga.step()
    def reserve(ctx: rs.SagaContext) -> int:
        return 1

    @reserve.compensate(policy=rs.Retry(attempts=1))
    def release(ctx: rs.SagaContext, done: int | None) -> None:
        if ctx.saga_id == "stuck":
            raise ConnectionError("warehouse is down")

    @saga.step()
    def charge(ctx: rs.SagaContext) -> None:
        raise rs.Rejected("card declined")

    with pytest.raises(rs.SagaFailed) as failed:
        saga.run_sync({}, saga_id="rolled-back")
    assert failed.value.status is rs.SagaStatus.COMPENSATED
    assert isinstance(failed.value.__cause__, rs.Rejected)
    with pytest.raises(rs.SagaStuck) as stuck:
        saga.run_sync({}, saga_id="stuck")
    assert stuck.value.status is rs.SagaStatus.STUCK
    assert rs.SagaFailed("x", None, "m").status is rs.SagaStatus.COMPENSATED
