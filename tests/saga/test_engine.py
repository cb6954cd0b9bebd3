"""The saga engine at its public API: definitions and their validation, the step context,
sync/async steps, default compensation retries, admin operations and the CLI."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from saga_fixtures import A, B, D, Shop, order_saga

import resilient as rs
from resilient.saga import LogKind, SagaStatus
from resilient.saga._cli import main as cli_main
from resilient.saga.testing import CrashPoint, SimulatedCrash, crash_at
from resilient.testing import FakeClock


def noop(ctx: rs.SagaContext) -> None:
    return None


def undo(ctx: rs.SagaContext, done: Any) -> None:
    return None


# -- definition-time validation ------------------------------------------------------------------
def test_duplicate_step_names_are_refused() -> None:
    saga = rs.Saga("v")
    saga.add_step("a", noop)
    with pytest.raises(ValueError, match="duplicate step name 'a'"):
        saga.add_step("a", noop)


def test_two_pivots_are_refused() -> None:
    saga = rs.Saga("v").add_step("a", noop, pivot=True)
    with pytest.raises(ValueError, match="already has a pivot step \\('a'\\)"):
        saga.add_step("b", noop, pivot=True)


def test_retriable_before_pivot_is_refused() -> None:
    saga = rs.Saga("v").add_step("a", noop, retriable=True)
    with pytest.raises(ValueError, match="retriable step 'a' would come before the pivot 'b'"):
        saga.add_step("b", noop, pivot=True)
    with pytest.raises(ValueError, match="before a non-retriable step 'c'"):
        saga.add_step("c", noop)


def test_retriable_step_with_compensation_is_refused() -> None:
    saga = rs.Saga("v")
    with pytest.raises(ValueError, match="retriable step 'a' cannot have a compensation"):
        saga.add_step("a", noop, compensate=undo, retriable=True)
    assert saga.steps == ()  # a refused step is not half-added

    @saga.step(retriable=True)
    def b(ctx: rs.SagaContext) -> None: ...

    with pytest.raises(ValueError, match="cannot have a compensation"):
        b.compensate(undo)


def test_step_after_pivot_cannot_have_compensation() -> None:
    saga = rs.Saga("v").add_step("p", noop, pivot=True)
    with pytest.raises(ValueError, match="after the pivot"):
        saga.add_step("x", noop, compensate=undo)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"version": 0}, ValueError, "version must be an int >= 1, got 0"),
        ({"on_recovery": "panic"}, ValueError, "on_recovery must be .*'panic'"),
        ({"lease": 0}, ValueError, "lease must be > 0, got 0"),
        ({"lease": "1s"}, TypeError, "lease must be a number"),
        ({"deadline": -1}, ValueError, "deadline must be > 0, got -1"),
        ({"max_recoveries": 0}, ValueError, "max_recoveries must be >= 1, got 0"),
        ({"store": object()}, TypeError, "store must be a SagaStore"),
        ({"clock": 5}, TypeError, "clock must be callable, got 5"),
    ],
)
def test_bad_saga_arguments_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        rs.Saga("v", **kwargs)


def test_bad_step_arguments_name_the_parameter() -> None:
    saga = rs.Saga("v")
    with pytest.raises(ValueError, match="in_doubt of step 'a' must be one of"):
        saga.add_step("a", noop, in_doubt="maybe")
    with pytest.raises(TypeError, match="policy of step 'a' must be a resilient Policy"):
        saga.add_step("a", noop, policy=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step name must be a non-empty string"):
        saga.add_step("a:b", noop)
    with pytest.raises(ValueError, match="has no steps"):
        saga.run_sync({})
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        rs.Saga("")


def test_steps_cannot_change_after_the_first_run() -> None:
    saga = rs.Saga("v").add_step("a", noop)
    saga.run_sync({})
    with pytest.raises(RuntimeError, match="already ran"):
        saga.add_step("b", noop)


# -- running --------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_decorator_form_context_and_mixed_sync_async_steps(clock: FakeClock) -> None:
    saga = rs.Saga("ctx", clock=clock)
    seen: list[tuple[Any, ...]] = []

    @saga.step
    async def first(ctx: rs.SagaContext) -> list[int]:
        seen.append((ctx.saga_id, ctx.step, ctx.attempt, ctx.idempotency_key, ctx.data))
        return [1, 2]

    @first.compensate
    def undo_first(ctx: rs.SagaContext, done: Any) -> None:
        seen.append(("undo", ctx.idempotency_key, done, ctx.phase))

    @saga.step(name="second")
    def second_step(ctx: rs.SagaContext) -> None:
        seen.append(("second", dict(ctx.results)))
        raise ValueError("boom")

    assert first.name == "first"
    with pytest.raises(ValueError, match="boom"):  # the decorated function is still callable
        second_step(rs.SagaContext("direct", None, {}, "second"))
    seen.clear()
    assert saga.steps == ("first", "second")
    with pytest.raises(rs.SagaFailed) as info:
        await saga.run({"n": (1, 2)}, saga_id="id-1")
    assert seen == [
        ("id-1", "first", 1, "id-1:first", {"n": [1, 2]}),  # data as stored (JSON)
        ("second", {"first": [1, 2]}),
        ("undo", "id-1:first:undo", [1, 2], "compensate"),
    ]
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.step == "second"


def test_run_sync_refuses_async_steps() -> None:
    saga = rs.Saga("v")

    @saga.step
    async def a(ctx: rs.SagaContext) -> None: ...

    with pytest.raises(TypeError, match="run_sync needs sync steps"):
        saga.run_sync({})
    with pytest.raises(TypeError, match="recover_sync needs sync steps"):
        saga.recover_sync()


def test_unencodable_input_is_refused_before_anything_runs() -> None:
    saga = rs.Saga("v").add_step("a", noop)
    with pytest.raises(TypeError, match="data must be JSON-encodable"):
        saga.run_sync({"x": object()})
    assert saga.admin.list() == []


def test_same_id_under_another_saga_is_a_conflict(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    rs.Saga("one", store=store, clock=clock).add_step("a", noop).run_sync({}, saga_id="k")
    other = rs.Saga("two", store=store, clock=clock).add_step("a", noop)
    with pytest.raises(rs.IdempotencyConflict, match="one@1"):
        other.run_sync({}, saga_id="k")


def test_default_compensation_policy_retries_generously(clock: FakeClock) -> None:
    shop = Shop()
    shop.script(D, rs.Rejected("no"))
    shop.script(f"undo:{B}", *(ConnectionError(str(i)) for i in range(4)))
    saga = order_saga(shop, is_async=False, long=True, clock=clock)
    with pytest.raises(rs.SagaFailed):
        saga.run_sync({}, saga_id="g")
    assert len(shop.invoked("undo", B)) == 5
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]  # capped exponential backoff


def test_rejected_after_an_unknown_attempt_is_still_compensated(clock: FakeClock) -> None:
    shop = Shop()
    shop.script(B, ("effect", ConnectionError("lost reply")), rs.Rejected("no"))
    retry = rs.Retry(attempts=2, wait=1.0, sleep=clock.sleep, clock=clock)
    saga = order_saga(shop, is_async=False, long=True, clock=clock, policies={B: retry})
    with pytest.raises(rs.SagaFailed) as info:
        saga.run_sync({}, saga_id="r")
    assert isinstance(info.value.__cause__, rs.Rejected)
    # the first attempt may have charged: B is compensated (done=None), then A
    assert [(c[1], c[4]) for c in shop.invoked("undo")] == [
        (B, None),
        (A, {"step": A, "saga": "r"}),
    ]


def test_in_doubt_compensate_rolls_back_on_recovery(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    shop = Shop()

    def build() -> rs.Saga:
        saga = rs.Saga("doubt", store=store, clock=clock)
        saga.add_step(A, shop.step(A), compensate=shop.undo(A))
        saga.add_step(B, shop.step(B), compensate=shop.undo(B), in_doubt="compensate")
        return saga

    with crash_at(CrashPoint.AFTER_STEP_STARTED, B), pytest.raises(SimulatedCrash):
        build().run_sync({}, saga_id="d")
    clock.advance(31)
    assert build().recover_sync().outcomes == {"d": SagaStatus.COMPENSATED}
    assert [(c[1], c[4]) for c in shop.invoked("undo")] == [
        (B, None),
        (A, {"step": A, "saga": "d"}),
    ]
    assert len(shop.invoked("do", B)) == 0


def test_recovery_does_not_touch_live_sagas(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    shop = Shop()
    saga = order_saga(shop, is_async=False, store=store, clock=clock)
    with crash_at(CrashPoint.AFTER_STEP_RECORDED, A), pytest.raises(SimulatedCrash):
        saga.run_sync({}, saga_id="live")
    other = order_saga(shop, is_async=False, store=store, clock=clock)
    assert other.recover_sync().outcomes == {}  # the lease has not expired yet
    clock.advance(31)
    assert other.recover_sync().outcomes == {"live": SagaStatus.COMPLETED}


# -- admin ----------------------------------------------------------------------------------------
def test_admin_list_timeline_and_abort(clock: FakeClock) -> None:
    store = rs.InMemorySagaStore()
    shop = Shop()
    saga = order_saga(shop, is_async=False, long=True, store=store, clock=clock)
    saga.run_sync({}, saga_id="done")
    with crash_at(CrashPoint.AFTER_STEP_RECORDED, B), pytest.raises(SimulatedCrash):
        saga.run_sync({}, saga_id="half")
    with crash_at(CrashPoint.AFTER_STEP_RECORDED, D), pytest.raises(SimulatedCrash):
        saga.run_sync({}, saga_id="past-pivot")
    assert {s.id for s in saga.admin.list(status="running")} == {"half", "past-pivot"}
    assert [e.kind for e in saga.admin.timeline("done")][-1] == LogKind.SAGA_COMPLETED
    with pytest.raises(KeyError, match="nope"):
        saga.admin.timeline("nope")
    with pytest.raises(ValueError, match="past its pivot"):
        saga.admin.abort("past-pivot")
    with pytest.raises(ValueError, match="already completed"):
        saga.admin.abort("done")
    with pytest.raises(ValueError, match="not stuck"):
        saga.admin.retry("half")
    result = saga.admin.abort("half", note="customer cancelled")
    assert result.status is SagaStatus.COMPENSATED
    assert shop.order()[-2:] == [f"undo:{B}", f"undo:{A}"]
    with pytest.raises(rs.SagaFailed, match="customer cancelled"):
        saga.run_sync({}, saga_id="half")


# -- CLI ------------------------------------------------------------------------------------------
def _stuck_in_sqlite(tmp_path: Path, clock: FakeClock) -> tuple[rs.Saga, Shop]:
    shop = Shop()
    shop.script(D, rs.Rejected("no"))
    shop.script(f"undo:{B}", *(ConnectionError(str(i)) for i in range(3)))
    retry = rs.Retry(attempts=3, wait=1.0, sleep=clock.sleep, clock=clock)
    saga = order_saga(
        shop,
        is_async=False,
        long=True,
        clock=clock,
        store=rs.SQLiteSagaStore(tmp_path / "sagas.db"),
        undo_policy=retry,
    )
    with pytest.raises(rs.SagaStuck):
        saga.run_sync({}, saga_id="stuck-1")
    saga.run_sync({}, saga_id="fine-1")
    return saga, shop


def test_cli_list_and_timeline(tmp_path: Path, clock: FakeClock) -> None:
    _stuck_in_sqlite(tmp_path, clock)
    url = f"sqlite:///{tmp_path}/sagas.db"
    proc = subprocess.run(
        [sys.executable, "-m", "resilient", "saga", "--store", url, "list", "--status", "stuck"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "DEFINITION", "STATUS"]
    assert [line.split()[:3] for line in lines[1:]] == [["stuck-1", "order@1", "stuck"]]
    out = io.StringIO()
    from resilient.saga import _cli

    parser_args = ["saga", "--store", url, "timeline", "stuck-1"]
    import argparse

    parser = argparse.ArgumentParser()
    _cli.add_parser(parser.add_subparsers(dest="command"))
    assert _cli.run(parser.parse_args(parser_args), out) == 0
    text = out.getvalue()
    assert "SAGA_STUCK" in text and "compensation_failed" in text
    assert cli_main(["saga", "--store", url, "timeline", "missing"]) == 1


def test_cli_retry_makes_stuck_saga_due_for_recovery(tmp_path: Path, clock: FakeClock) -> None:
    saga, shop = _stuck_in_sqlite(tmp_path, clock)
    url = f"sqlite:///{tmp_path}/sagas.db"
    assert cli_main(["saga", "--store", url, "retry", "fine-1"]) == 1  # not stuck
    assert cli_main(["saga", "--store", url, "mark-compensated", "stuck-1", A]) == 1
    assert cli_main(["saga", "--store", url, "retry", "stuck-1", "--note", "refunds up"]) == 0
    assert saga.recover_sync().outcomes == {"stuck-1": SagaStatus.COMPENSATED}
    assert shop.order()[-2:] == [f"undo:{B}", f"undo:{A}"]
    assert cli_main(["saga", "--store", "postgres://x?outage_timeout=1", "list"]) == 2
