"""Three replicas sharing one Redis breaker behave as ONE breaker (hypothesis state machine).

The reference is the local breaker's own core (``BreakerCore``, itself checked against a naive
model in ``tests/test_breaker_model.py``), fed every call of every replica in the order the
fleet sees them. Each rule is one call (or the start or end of a held call, or a manual
control) on one replica, and every replica syncs after it (twice, so a transition made by one
replica's sync is seen by the others): then the fleet must give each call the same answer
(admitted, or rejected with the same reason) and every replica must show the model's state
and the model's window counts. That exercises the Lua script, the links and the shared core
together, for count windows, half-open rounds with several trials in flight (held across
replicas), ignored calls, calls finishing after a transition, and forced/disabled/
metrics-only/reset from any replica. Time is kept out: the open time is 0 (OPEN becomes
HALF_OPEN at the next look, in the model and in Redis alike) or an hour (it stays OPEN).

Needs the machine's Redis (skipped, naming it, otherwise).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from fleet_helpers import REDIS_URL, DirectState, drop_prefix, new_prefix, redis_problem
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import resilient as rs
from resilient._core.breaker import (
    FAILURE,
    IGNORED,
    SUCCESS,
    BreakerCore,
    BreakerState,
    Permit,
    Rejection,
)
from resilient._core.sliding_windows import CountWindow

pytestmark = pytest.mark.skipif(redis_problem() is not None, reason=redis_problem() or "")

NOW = 0.0  # the model's clock never moves: no rule depends on time
REPLICAS = 3
OUTCOMES = {"ok": SUCCESS, "fail": FAILURE, "ignored": IGNORED}


@dataclass(frozen=True)
class Config:
    window_size: int
    minimum_calls: int
    failure_rate_threshold: float
    open_seconds: float
    half_open_max_calls: int


configs = st.builds(
    Config,
    window_size=st.integers(1, 5),
    minimum_calls=st.integers(1, 5),
    failure_rate_threshold=st.sampled_from([0.25, 0.5, 1.0]),
    open_seconds=st.sampled_from([0.0, 3600.0]),
    half_open_max_calls=st.integers(1, 3),
)


def _error(outcome: str) -> Exception | None:
    if outcome == "fail":
        return ConnectionError("dependency down")
    if outcome == "ignored":
        return KeyError("not the dependency's fault")
    return None


class FleetOfThree(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.client = redis.Redis.from_url(REDIS_URL)
        self.prefix = new_prefix()
        self.replicas: list[rs.CircuitBreaker] = []
        self.states: list[DirectState] = []
        self.held: list[tuple[int, Permit, Permit]] = []

    @initialize(config=configs)
    def build(self, config: Config) -> None:
        self.model = BreakerCore(
            window=CountWindow(config.window_size),
            failure_rate_threshold=config.failure_rate_threshold,
            slow_call_duration=None,
            slow_call_rate_threshold=1.0,
            minimum_calls=min(config.minimum_calls, config.window_size),
            open_duration=lambda _times: config.open_seconds,
            open_jitter=0.0,
            rand=lambda: 0.0,
            half_open_max_calls=config.half_open_max_calls,
            half_open_max_wait=None,
        )
        for _ in range(REPLICAS):
            state = DirectState(self.client, self.prefix)
            self.states.append(state)
            self.replicas.append(
                rs.CircuitBreaker(
                    "shared",
                    window_size=config.window_size,
                    minimum_calls=config.minimum_calls,
                    failure_rate_threshold=config.failure_rate_threshold,
                    open_duration=config.open_seconds,
                    half_open_max_calls=config.half_open_max_calls,
                    ignore=(KeyError,),
                    state=state,  # type: ignore[arg-type]
                )
            )
        self._sync()

    def teardown(self) -> None:
        drop_prefix(REDIS_URL, self.prefix)
        self.client.close()

    def _sync(self) -> None:
        for _ in range(2):
            for state in self.states:
                state.sync()

    def _expect_rejection(self, expected: Rejection, attempt: Any) -> None:
        with pytest.raises(rs.CircuitOpenError) as info:
            attempt()
        assert info.value.reason == expected.reason
        event(f"rejected: {expected.reason}")

    # -- rules ------------------------------------------------------------------------------------
    @rule(i=st.integers(0, REPLICAS - 1), outcome=st.sampled_from(sorted(OUTCOMES)))
    def call(self, i: int, outcome: str) -> None:
        expected = self.model.acquire(NOW)
        error = _error(outcome)

        def protected() -> int:
            if error is not None:
                raise error
            return 1

        if isinstance(expected, Rejection):
            self._expect_rejection(expected, lambda: self.replicas[i].call(protected))
        else:
            with contextlib.suppress(ConnectionError, KeyError):
                self.replicas[i].call(protected)
            self.model.complete(expected, OUTCOMES[outcome], NOW)
        self._sync()

    @rule(i=st.integers(0, REPLICAS - 1))
    def enter(self, i: int) -> None:
        expected = self.model.acquire(NOW)
        breaker = self.replicas[i]
        if isinstance(expected, Rejection):
            self._expect_rejection(expected, breaker._enter)
        else:
            self.held.append((i, breaker._enter(), expected))
        self._sync()

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), outcome=st.sampled_from(sorted(OUTCOMES)))
    def leave(self, data: st.DataObject, outcome: str) -> None:
        index = data.draw(st.integers(0, len(self.held) - 1), label="held call")
        i, permit, expected = self.held.pop(index)
        self.replicas[i]._exit(permit, _error(outcome), None)
        self.model.complete(expected, OUTCOMES[outcome], NOW)
        self._sync()

    @rule(
        i=st.integers(0, REPLICAS - 1),
        op=st.sampled_from(["force_open", "disable", "metrics_only", "reset"]),
    )
    def manual(self, i: int, op: str) -> None:
        getattr(self.replicas[i], op)()
        if op == "reset":
            self.model.reset(NOW)
        else:
            target = {
                "force_open": BreakerState.FORCED_OPEN,
                "disable": BreakerState.DISABLED,
                "metrics_only": BreakerState.METRICS_ONLY,
            }[op]
            self.model.set_state(target, NOW)
        self._sync()

    # -- what must hold after every rule ---------------------------------------------------------
    @invariant()
    def every_replica_shows_the_fleet_as_the_model(self) -> None:
        if not self.replicas:
            return
        expected = self.model.poll(NOW)
        event(f"state: {expected.value}")
        window = self.model.window
        for breaker in self.replicas:
            assert breaker._core.state is expected
            if expected in (BreakerState.CLOSED, BreakerState.METRICS_ONLY):
                metrics = breaker.metrics
                assert (metrics.calls, metrics.failures) == (window.calls, window.failures)


TestFleetOfThree = FleetOfThree.TestCase
TestFleetOfThree.settings = settings(
    TestFleetOfThree.settings, max_examples=60, stateful_step_count=25
)
