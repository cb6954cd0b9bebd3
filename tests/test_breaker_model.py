"""The circuit breaker against a deliberately naive reference model (hypothesis state machine).

The model keeps every recorded outcome in a plain list and recomputes the window and the rates
from scratch on every question, with no ring buffer, no buckets and no shortcuts; the breaker
must give the same state, the same admit/reject answer (with the same reason and
``retry_after``) and the same window counts after any sequence of calls (fast, slow, failing,
ignored, cancelled, overlapping, finishing late), clock advances and manual operations, for
both window types.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import resilient as rs
from resilient.testing import FakeClock

RNG_VALUES = (0.0, 0.25, 0.5, 0.75)  # dyadic: exact in binary floating point


@dataclass(frozen=True)
class Config:
    window_type: str
    window_size: int
    minimum_calls: int
    failure_rate_threshold: float
    slow_call_duration: float | None
    slow_call_rate_threshold: float
    backoff: bool
    open_seconds: float
    open_jitter: float
    half_open_max_calls: int
    half_open_max_wait: float | None

    def open_duration(self, times_opened: int) -> float:
        return self.open_seconds * times_opened if self.backoff else self.open_seconds


configs = st.builds(
    Config,
    window_type=st.sampled_from(["count", "time"]),
    window_size=st.integers(1, 5),
    minimum_calls=st.integers(1, 5),
    failure_rate_threshold=st.sampled_from([0.25, 0.5, 1.0]),
    slow_call_duration=st.sampled_from([None, 1.0]),
    slow_call_rate_threshold=st.sampled_from([0.5, 1.0]),
    backoff=st.booleans(),
    open_seconds=st.sampled_from([0.0, 2.0, 5.0]),
    open_jitter=st.sampled_from([0.0, 0.5]),
    half_open_max_calls=st.integers(1, 3),
    half_open_max_wait=st.sampled_from([None, 3.0]),
)


@dataclass
class Record:
    at: float
    failed: bool
    slow: bool


@dataclass
class Model:
    """The rules of the breaker, written as plainly as possible."""

    cfg: Config
    rand: Callable[[], float]
    state: str = "closed"
    epoch: int = 0
    records: list[Record] = field(default_factory=list)
    times_opened: int = 0
    open_until: float = 0.0
    trials: dict[int, float] = field(default_factory=dict)  # call id -> admitted at
    trial_ok: int = 0

    def window(self, now: float) -> list[Record]:
        size = self.cfg.window_size
        if self.cfg.window_type == "count":
            return self.records[-size:]
        return [r for r in self.records if math.floor(r.at) > math.floor(now) - size]

    def counts(self, now: float) -> tuple[int, int, int]:
        win = self.window(now)
        return len(win), sum(r.failed for r in win), sum(r.slow for r in win)

    def move(self, to: str, at: float) -> None:
        self.state = to
        self.epoch += 1
        self.records = []
        self.trials = {}
        self.trial_ok = 0
        if to == "open":
            self.times_opened += 1
            duration = self.cfg.open_duration(self.times_opened)
            if self.cfg.open_jitter:
                duration *= 1.0 + self.cfg.open_jitter * self.rand()
            self.open_until = at + duration
        elif to == "closed":
            self.times_opened = 0

    def tick(self, now: float) -> None:
        while True:
            if self.state == "open" and now >= self.open_until:
                self.move("half_open", now)
            elif (
                self.state == "half_open"
                and self.cfg.half_open_max_wait is not None
                and self.trials
                and min(self.trials.values()) + self.cfg.half_open_max_wait <= now
            ):
                self.move("open", min(self.trials.values()) + self.cfg.half_open_max_wait)
            else:
                return

    def poll(self, now: float) -> str:
        self.tick(now)
        return self.state

    def acquire(self, call_id: int, now: float) -> tuple[str, float | None]:
        """("admit", None) or (reason, retry_after)."""
        self.tick(now)
        if self.state in ("closed", "metrics_only", "disabled"):
            return ("admit", None)
        if self.state == "half_open":
            if len(self.trials) + self.trial_ok < self.cfg.half_open_max_calls:
                self.trials[call_id] = now
                return ("admit", None)
            return ("half_open_full", None)
        if self.state == "open":
            return ("open", self.open_until - now)
        return ("forced_open", None)

    def complete(self, call_id: int, epoch: int, started: float, outcome: str, now: float) -> None:
        self.tick(now)
        if epoch != self.epoch or self.state in ("disabled", "open", "forced_open"):
            return
        limit = self.cfg.slow_call_duration
        slow = limit is not None and now - started > limit
        if self.state == "half_open":
            if outcome in ("ignored", "cancelled"):
                del self.trials[call_id]
            elif outcome == "failure" or slow:
                self.move("open", now)
            else:
                del self.trials[call_id]
                self.trial_ok += 1
                if self.trial_ok == self.cfg.half_open_max_calls:
                    self.move("closed", now)
            return
        if outcome in ("ignored", "cancelled"):
            return
        self.records.append(Record(now, outcome == "failure", slow))
        if self.state != "closed":
            return
        calls, failures, slows = self.counts(now)
        needed = self.cfg.minimum_calls
        if self.cfg.window_type == "count":
            needed = min(needed, self.cfg.window_size)
        if calls < needed:
            return
        if failures / calls >= self.cfg.failure_rate_threshold or (
            limit is not None and slows / calls >= self.cfg.slow_call_rate_threshold
        ):
            self.move("open", now)

    def manual(self, op: str, now: float) -> None:
        targets = {"force_open": "forced_open", "disable": "disabled"}
        targets["metrics_only"] = "metrics_only"
        if op == "reset":
            if self.state == "closed":
                self.epoch += 1
                self.records = []
                self.times_opened = 0
            else:
                self.move("closed", now)
        elif self.state != targets[op]:
            self.move(targets[op], now)


class Ignored(Exception):
    """Configured as ``ignore``."""


class Unrecorded(Exception):
    """Not in ``record``: counts as a success (the dependency answered)."""


# How a call ends: what the protected function does, and what the model calls that.
ENDINGS: dict[str, tuple[str, Any]] = {
    "return": ("success", None),
    "raise_recorded": ("failure", ValueError("boom")),
    "raise_unrecorded": ("success", Unrecorded("not ours")),
    "raise_ignored": ("ignored", Ignored("skip")),
    "bad_result": ("failure", None),
    "cancel": ("cancelled", KeyboardInterrupt()),
}


@dataclass
class Pending:
    call_id: int
    permit: Any
    epoch: int
    started: float


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(1000.0)
        self.pending: list[Pending] = []
        self.ids = itertools.count()

    @initialize(cfg=configs)
    def build(self, cfg: Config) -> None:
        seq_breaker = itertools.cycle(RNG_VALUES)
        seq_model = itertools.cycle(RNG_VALUES)
        self.breaker = rs.CircuitBreaker(
            "model",
            failure_rate_threshold=cfg.failure_rate_threshold,
            slow_call_duration=cfg.slow_call_duration,
            slow_call_rate_threshold=cfg.slow_call_rate_threshold,
            window_type=cfg.window_type,
            window_size=cfg.window_size,
            minimum_calls=cfg.minimum_calls,
            open_duration=cfg.open_duration if cfg.backoff else cfg.open_seconds,
            open_jitter=cfg.open_jitter,
            half_open_max_calls=cfg.half_open_max_calls,
            half_open_max_wait=cfg.half_open_max_wait,
            record=(ValueError,),
            ignore=(Ignored,),
            record_result=lambda result: result == "bad",
            clock=self.clock,
            rng=lambda: next(seq_breaker),
        )
        self.model = Model(cfg, rand=lambda: next(seq_model))

    # -- the two halves of a call, so calls can overlap and finish late ---------------------
    def _admit(self) -> tuple[int, Any]:
        call_id = next(self.ids)
        expected = self.model.acquire(call_id, self.clock())
        try:
            permit = self.breaker._enter()
        except rs.CircuitOpenError as err:
            assert expected[0] != "admit", "breaker rejected a call the model admits"
            assert err.reason == expected[0]
            if expected[1] is None:
                assert err.retry_after is None
            else:
                assert err.retry_after is not None
                assert math.isclose(err.retry_after, expected[1])
            return call_id, None
        assert expected[0] == "admit", f"breaker admitted a call the model rejects: {expected}"
        return call_id, permit

    def _finish(self, pending: Pending, ending: str) -> None:
        outcome, error = ENDINGS[ending]
        result = "bad" if ending == "bad_result" else "ok"
        self.breaker._exit(pending.permit, error, None if error is not None else result)
        self.model.complete(pending.call_id, pending.epoch, pending.started, outcome, self.clock())

    @precondition(lambda self: len(self.pending) < 5)
    @rule()
    def start_call(self) -> None:
        started = self.clock()
        call_id, permit = self._admit()
        if permit is not None:
            # read after admission: a transition that was due happened before it
            self.pending.append(Pending(call_id, permit, self.model.epoch, started))

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data(), ending=st.sampled_from(sorted(ENDINGS)))
    def finish_call(self, data: st.DataObject, ending: str) -> None:
        index = data.draw(st.integers(0, len(self.pending) - 1), label="which")
        self._finish(self.pending.pop(index), ending)

    @rule(ending=st.sampled_from(sorted(ENDINGS)), duration=st.sampled_from([0.0, 0.5, 1.5]))
    def whole_call(self, ending: str, duration: float) -> None:
        started = self.clock()
        call_id, permit = self._admit()
        if permit is None:
            return
        pending = Pending(call_id, permit, self.model.epoch, started)
        self.clock.advance(duration)
        self._finish(pending, ending)

    @rule(failing=st.sampled_from(["raise_recorded", "bad_result"]), slow=st.booleans())
    def failing_call(self, failing: str, slow: bool) -> None:
        """Failures are what move a breaker; give them their own rule so runs get there."""
        self.whole_call(failing, 1.5 if slow else 0.0)

    @rule()
    def quick_success(self) -> None:
        """...and successes too, so half-open rounds also close."""
        self.whole_call("return", 0.0)

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 7.5]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(
        op=st.sampled_from(["reset", "force_open", "disable", "metrics_only"]),
        now=st.integers(0, 3),
    )
    def manual(self, op: str, now: int) -> None:
        if now:
            return  # manual states are sticky: keep them rare so automatic ones get explored
        getattr(self.breaker, op)()
        self.model.manual(op, self.clock())

    @rule()
    def read_retry_after(self) -> None:
        now = self.clock()
        expected = self.model.open_until - now if self.model.poll(now) == "open" else None
        got = self.breaker.retry_after
        if expected is None:
            assert got is None
        else:
            assert got is not None and math.isclose(got, expected)

    # -- what must always agree -----------------------------------------------------------------
    @invariant()
    def same_state_and_window(self) -> None:
        now = self.clock()
        expected_state = self.model.poll(now)
        metrics = self.breaker.metrics
        assert metrics.state.value == expected_state
        assert self.breaker.state.value == expected_state
        assert (metrics.calls, metrics.failures, metrics.slow_calls) == self.model.counts(now)


TestBreakerModel = BreakerMachine.TestCase
TestBreakerModel.settings = settings(
    TestBreakerModel.settings, stateful_step_count=80, max_examples=400
)


@pytest.mark.parametrize("window_type", ["count", "time"])
def test_model_itself_opens_and_recovers(window_type: str) -> None:
    """Guard the reference model: a model that never opens would make the machine vacuous."""
    cfg = Config(window_type, 3, 3, 1.0, None, 1.0, False, 5.0, 0.0, 1, None)
    model = Model(cfg, rand=lambda: 0.0)
    for i in range(3):
        assert model.acquire(i, 0.0) == ("admit", None)
        model.complete(i, 0, 0.0, "failure", 0.0)
    assert model.poll(0.0) == "open"
    assert model.acquire(9, 1.0) == ("open", 4.0)
    assert model.acquire(10, 5.0) == ("admit", None)
    model.complete(10, model.epoch, 5.0, "success", 5.0)
    assert model.poll(5.0) == "closed"
