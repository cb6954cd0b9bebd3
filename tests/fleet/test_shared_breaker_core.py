"""The shared breaker's pure core: batching, mirroring fleet snapshots, fleet trials, and the
switch between online (the fleet decides) and offline (the local breaker decides).

No Redis here: snapshots are built by hand, as the backend would hand them over.
"""

from __future__ import annotations

import pytest

from resilient._core.breaker import (
    CANCELLED,
    FAILURE,
    IGNORED,
    SUCCESS,
    BreakerState,
    Rejection,
)
from resilient._core.shared_breaker import (
    ASK_FLEET,
    TRIAL_FAILED,
    TRIAL_RELEASED,
    TRIAL_SUCCEEDED,
    FleetSnapshot,
    SharedBreakerCore,
    TrialReport,
)
from resilient._core.sliding_windows import CountWindow

CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN


def core(*, slow: float | None = None, max_calls: int = 2, size: int = 4) -> SharedBreakerCore:
    return SharedBreakerCore(
        window=CountWindow(size),
        failure_rate_threshold=0.5,
        slow_call_duration=slow,
        slow_call_rate_threshold=1.0,
        minimum_calls=size,
        open_duration=lambda times: 10.0 * times,
        open_jitter=0.0,
        rand=lambda: 0.0,
        half_open_max_calls=max_calls,
        half_open_max_wait=None,
    )


def snap(
    state: BreakerState = CLOSED,
    epoch: int = 1,
    *,
    inc: str = "a",
    left: float = 0.0,
    opened: int = 0,
    calls: float = 0.0,
    failures: float = 0.0,
) -> FleetSnapshot:
    return FleetSnapshot(inc, epoch, state, left, opened, calls, failures, 0.0)


def test_offline_it_is_the_local_breaker() -> None:
    c = core()
    assert not c.online
    for _ in range(4):
        c.complete(c.acquire(0.0), FAILURE, 0.0)  # type: ignore[arg-type]
    assert c.state is OPEN  # decided locally
    assert c.take_batch() is None  # nothing is batched offline


def test_online_outcomes_go_to_the_batch_not_to_decisions() -> None:
    c = core()
    assert c.apply(snap(), 0.0)
    assert c.online
    for outcome in (FAILURE, FAILURE, FAILURE, FAILURE, SUCCESS, IGNORED, CANCELLED):
        permit = c.acquire(0.0)
        assert isinstance(permit, tuple)
        c.complete(permit, outcome, 0.0)
    assert c.state is CLOSED  # the fleet decides, not this replica
    assert c.urgent  # failures ask for an early sync
    batch = c.take_batch()
    assert batch is not None
    assert (batch.incarnation, batch.epoch) == ("a", 1)
    assert (batch.calls, batch.failures, batch.slow_calls) == (5, 4, 0)
    assert not c.urgent
    empty = c.take_batch()
    assert empty is not None and empty.calls == 0


def test_fast_successes_are_counted_without_the_clock() -> None:
    c = core()
    c.apply(snap(), 0.0)
    permit = c.acquire(0.0)
    assert isinstance(permit, tuple)
    assert c.succeed_fast(permit[0])
    batch = c.take_batch()
    assert batch is not None and (batch.calls, batch.failures) == (1, 0)
    assert not c.urgent


def test_slow_detection_needs_the_duration() -> None:
    c = core(slow=1.0)
    c.apply(snap(), 0.0)
    permit = c.acquire(0.0)
    assert isinstance(permit, tuple)
    assert not c.succeed_fast(permit[0])  # the caller must go through complete()
    c.complete(permit, SUCCESS, 2.0)
    assert c.urgent  # slow calls can open it too
    batch = c.take_batch()
    assert batch is not None and (batch.calls, batch.failures, batch.slow_calls) == (1, 0, 1)


def test_a_new_epoch_starts_a_new_generation() -> None:
    c = core()
    c.apply(snap(epoch=1), 0.0)
    early = c.acquire(0.0)
    assert isinstance(early, tuple)
    c.complete(c.acquire(0.0), FAILURE, 0.0)  # type: ignore[arg-type]
    assert c.apply(snap(OPEN, 2, left=5.0, opened=1), 0.0)
    assert c.take_changes() == [(CLOSED, OPEN)]
    batch = c.take_batch()
    assert batch is not None and (batch.epoch, batch.calls) == (2, 0)  # the old batch is gone
    c.complete(early, FAILURE, 0.0)  # admitted before the opening: not counted
    batch = c.take_batch()
    assert batch is not None and batch.calls == 0
    assert c.times_opened == 1


def test_open_is_mirrored_with_the_fleets_remaining_time() -> None:
    c = core()
    c.apply(snap(OPEN, 3, left=4.0, opened=2), 100.0)
    decision = c.acquire(101.0)
    assert isinstance(decision, Rejection)
    assert (decision.reason, decision.retry_after) == ("open", 3.0)
    # past the fleet's open time the local core does not tick on its own: it asks the fleet
    assert c.acquire(104.0) is ASK_FLEET
    assert c.poll(104.0) is OPEN
    assert c.retry_after(104.0) == 0.0


def test_older_snapshots_are_ignored_newer_incarnations_are_not() -> None:
    c = core()
    c.apply(snap(OPEN, 5, left=5.0), 0.0)
    assert not c.apply(snap(CLOSED, 4), 0.0)  # an answer overtaken by a newer one
    assert c.state is OPEN
    assert c.apply(snap(CLOSED, 1, inc="b"), 0.0)  # the record was lost and made anew
    assert c.state is CLOSED
    assert c.fleet == ("b", 1)


def test_the_fleet_admits_trials_and_hears_how_they_ended() -> None:
    c = core(max_calls=2)
    c.apply(snap(OPEN, 2, left=0.0, opened=1), 0.0)
    assert c.take_changes() == [(CLOSED, OPEN)]
    assert c.acquire(0.0) is ASK_FLEET
    first = c.trial_answer(snap(HALF_OPEN, 3, opened=1), True, "r/1", 0.5)
    second = c.trial_answer(snap(HALF_OPEN, 3, opened=1), True, "r/2", 0.75)
    assert isinstance(first, tuple) and isinstance(second, tuple)
    assert c.take_changes() == [(OPEN, HALF_OPEN)]
    full = c.trial_answer(snap(HALF_OPEN, 3, opened=1), False, "r/3", 1.0)
    assert isinstance(full, Rejection) and full.reason == "half_open_full"
    # until the next snapshot, further callers are turned away without asking the fleet
    again = c.acquire(1.0)
    assert isinstance(again, Rejection) and again.reason == "half_open_full"
    c.complete(second, FAILURE, 1.0)
    c.complete(first, SUCCESS, 1.0)
    assert c.take_reports() == [
        TrialReport("r/2", TRIAL_FAILED, "a", 3),
        TrialReport("r/1", TRIAL_SUCCEEDED, "a", 3),
    ]
    assert c.state is HALF_OPEN  # the fleet decides what these reports mean
    c.apply(snap(HALF_OPEN, 3, opened=1), 1.0)  # the next sync: ask the fleet again
    assert c.acquire(1.0) is ASK_FLEET


def test_ignored_and_slow_trials() -> None:
    c = core(slow=1.0)
    c.apply(snap(HALF_OPEN, 3), 0.0)
    ignored = c.trial_answer(snap(HALF_OPEN, 3), True, "r/1", 0.0)
    slow = c.trial_answer(snap(HALF_OPEN, 3), True, "r/2", 0.0)
    assert isinstance(ignored, tuple) and isinstance(slow, tuple)
    c.complete(ignored, IGNORED, 0.1)
    c.complete(slow, SUCCESS, 5.0)
    outcomes = [report.outcome for report in c.take_reports()]
    assert outcomes == [TRIAL_RELEASED, TRIAL_FAILED]


def test_a_trial_answer_for_an_epoch_that_is_over_grants_nothing() -> None:
    c = core()
    c.apply(snap(CLOSED, 7), 0.0)  # another replica already closed it again
    decision = c.trial_answer(snap(HALF_OPEN, 6), True, "r/1", 0.0)
    assert isinstance(decision, tuple)  # an ordinary call of the CLOSED breaker
    assert not c.fleet_trials


def test_answers_that_are_not_grants() -> None:
    c = core()
    opened = c.trial_answer(snap(OPEN, 2, left=3.0), False, "r/1", 0.0)
    assert isinstance(opened, Rejection) and opened.reason == "open"
    assert opened.retry_after == 3.0
    forced = c.trial_answer(snap(BreakerState.FORCED_OPEN, 3), False, "r/2", 0.0)
    assert isinstance(forced, Rejection) and forced.reason == "forced_open"
    disabled = c.trial_answer(snap(BreakerState.DISABLED, 4), False, "r/3", 0.0)
    assert disabled == (-1, 0.0)


def test_going_offline_keeps_the_state_and_the_trials() -> None:
    c = core(max_calls=1)
    c.apply(snap(HALF_OPEN, 3), 0.0)
    trial = c.trial_answer(snap(HALF_OPEN, 3), True, "r/1", 0.0)
    assert isinstance(trial, tuple)
    c.go_offline()
    assert not c.online and c.fleet is None
    assert c.state is HALF_OPEN
    c.complete(trial, SUCCESS, 1.0)  # now a local trial: it closes the local breaker
    assert c.state is CLOSED
    assert c.take_reports() == []


def test_going_online_again_adopts_the_fleet_and_forgets_local_calls() -> None:
    c = core()
    offline_call = c.acquire(0.0)
    assert isinstance(offline_call, tuple)
    c.apply(snap(CLOSED, 9, calls=3.0, failures=1.0), 0.0)
    c.complete(offline_call, FAILURE, 0.0)  # admitted before the replica was in step
    batch = c.take_batch()
    assert batch is not None and batch.calls == 0
    assert c.totals(0.0) == (3.0, 1.0, 0.0)


def test_totals_add_the_batch_to_the_fleet_window() -> None:
    c = core()
    c.apply(snap(CLOSED, 1, calls=10.0, failures=2.0), 0.0)
    c.complete(c.acquire(0.0), FAILURE, 0.0)  # type: ignore[arg-type]
    assert c.totals(0.0) == (11.0, 3.0, 0.0)


def test_the_next_opening_time_follows_the_fleets_backoff() -> None:
    c = core()
    c.apply(snap(HALF_OPEN, 4, opened=2), 0.0)
    assert c.fleet_open_seconds() == 30.0  # open_duration(times_opened + 1)


@pytest.mark.parametrize("state", [BreakerState.FORCED_OPEN, BreakerState.METRICS_ONLY])
def test_manual_states_answer_locally(state: BreakerState) -> None:
    c = core()
    c.apply(snap(state, 2), 0.0)
    decision = c.acquire(0.0)
    if state is BreakerState.FORCED_OPEN:
        assert isinstance(decision, Rejection) and decision.reason == "forced_open"
    else:
        assert isinstance(decision, tuple)
        c.complete(decision, FAILURE, 0.0)
        batch = c.take_batch()
        assert batch is not None and batch.failures == 1  # recorded, but not urgent
        assert not c.urgent
