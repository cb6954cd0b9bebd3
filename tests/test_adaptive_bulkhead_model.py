"""Property tests of the adaptive bulkhead's core: the limit against a reference written
straight from Netflix's formulas, and the slots whose limit it moves.

The reference keeps every sample of a window in a list and applies AIMDLimit / Gradient2Limit
as concurrency-limits writes them (docs/policies/adaptive_bulkhead.md); the core keeps running
sums. The slot machine checks what the bulkhead promises while the limit moves under it: a
call is admitted while fewer than ``limit`` run and nobody waits, waiters are admitted in
arrival order, nothing is interrupted when the limit drops, and a call that yields no sample
(cancelled, rejected further in) leaves the limit exactly where it was.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from resilient._core.adaptive import (
    AIMD_TOLERANCE,
    BACKOFF,
    LONG_WINDOW,
    QUEUE_SIZE,
    SMOOTHING,
    WARMUP,
    WINDOW_SAMPLES,
    AdaptiveBulkheadCore,
    AdaptiveLimit,
)
from resilient._core.bulkhead import ADMITTED, FULL


class ReferenceLimit:
    """The two algorithms, window by window, from a list of samples."""

    def __init__(self, algorithm: str, initial: int, lo: int, hi: int) -> None:
        self.algorithm = algorithm
        self.lo, self.hi = lo, hi
        self.estimate = float(initial)
        self.samples: list[tuple[float, int, bool]] = []
        self.window_start: float | None = None
        self.long_values: list[float] = []
        self.long = 0.0

    @property
    def limit(self) -> int:
        return int(self.estimate)

    def _long_add(self, rtt: float) -> float:
        self.long_values.append(rtt)
        if len(self.long_values) <= WARMUP:
            self.long = sum(self.long_values) / len(self.long_values)
        else:
            factor = 2.0 / (LONG_WINDOW + 1)
            self.long = self.long * (1 - factor) + rtt * factor
        return self.long

    def sample(self, now: float, rtt: float, inflight: int, dropped: bool) -> None:
        if self.window_start is None:
            self.window_start = now - rtt
        self.samples.append((rtt, inflight, dropped))
        shortest = min(s[0] for s in self.samples)
        if len(self.samples) < WINDOW_SAMPLES or now - self.window_start < shortest:
            return
        rtt_avg = sum(s[0] for s in self.samples) / len(self.samples)
        most = max(s[1] for s in self.samples)
        drop = any(s[2] for s in self.samples)
        self.samples = []
        self.window_start = now
        long = self._long_add(rtt_avg)
        if rtt_avg > 0 and long / rtt_avg > 2:
            self.long = long = long * 0.9
        if self.algorithm == "gradient2":
            if most < self.estimate / 2:
                return
            gradient = max(0.5, min(1.0, long / rtt_avg)) if rtt_avg > 0 else 1.0
            new = self.estimate * gradient + QUEUE_SIZE
            new = self.estimate * (1 - SMOOTHING) + new * SMOOTHING
        else:
            limit = self.limit
            if drop or rtt_avg > AIMD_TOLERANCE * long:
                new = float(math.floor(limit * BACKOFF))
            elif most * 2 >= limit:
                new = float(limit + 1)
            else:
                return
        self.estimate = max(float(self.lo), min(float(self.hi), new))


class LimitMachine(RuleBasedStateMachine):
    """Random samples into the core and the reference: the limits must be the same."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    @initialize(
        algorithm=st.sampled_from(["gradient2", "aimd"]),
        bounds=st.sampled_from([(1, 20, 200), (5, 10, 12), (1, 1, 3), (30, 40, 60)]),
    )
    def setup(self, algorithm: str, bounds: tuple[int, int, int]) -> None:
        lo, initial, hi = bounds
        self.core = AdaptiveLimit(algorithm, initial, lo, hi)
        self.ref = ReferenceLimit(algorithm, initial, lo, hi)

    @rule(
        gap=st.sampled_from([0.0, 0.001, 0.01, 0.05]),
        rtt=st.sampled_from([0.001, 0.01, 0.012, 0.02, 0.05, 0.2]),
        inflight=st.integers(1, 250),
        dropped=st.booleans(),
    )
    def sample(self, gap: float, rtt: float, inflight: int, dropped: bool) -> None:
        self.now += gap
        changed = self.core.sample(self.now, rtt, inflight, dropped)
        before = self.ref.limit
        self.ref.sample(self.now, rtt, inflight, dropped)
        assert changed == (self.ref.limit != before)

    @invariant()
    def same_limit_within_bounds(self) -> None:
        assert self.core.limit == self.ref.limit
        assert self.core.estimate == pytest.approx(self.ref.estimate)
        assert self.core.min_limit <= self.core.limit <= self.core.max_limit


TestLimitMachine = LimitMachine.TestCase


class SlotsMachine(RuleBasedStateMachine):
    """Callers arrive, finish (with or without a sample), give up; the limit moves."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.next_id = 0
        self.running: list[int] = []
        self.granted: list[int] = []
        self.queue: list[int] = []
        self.admitted: list[int] = []

    @initialize(algorithm=st.sampled_from(["gradient2", "aimd"]), max_queued=st.integers(0, 6))
    def setup(self, algorithm: str, max_queued: int) -> None:
        self.limit = AdaptiveLimit(algorithm, 3, 1, 8)
        self.core: AdaptiveBulkheadCore[int] = AdaptiveBulkheadCore(self.limit, max_queued)

    def _holders(self) -> int:
        return len(self.running) + len(self.granted)

    def _handed(self, got: int | None, more: list[int]) -> None:
        for waiter in ([got] if got is not None else []) + more:
            head = self.queue.pop(0)
            assert waiter == head, f"slot went to {waiter}, the longest waiter is {head}"
            self.granted.append(waiter)
            self.admitted.append(waiter)

    @rule()
    def arrive(self) -> None:
        caller = self.next_id
        self.next_id += 1
        result = self.core.arrive(caller)
        if self._holders() < self.core.max_concurrent and not self.queue:
            assert result == ADMITTED
            self.running.append(caller)
            self.admitted.append(caller)
        elif len(self.queue) >= self.core.max_queued:
            assert result == FULL
        else:
            self.queue.append(caller)
            assert result == len(self.queue)

    @precondition(lambda self: self.running)
    @rule(
        data=st.data(),
        rtt=st.sampled_from([0.01, 0.011, 0.05, 0.2]),
        outcome=st.sampled_from(["sample", "dropped", "no sample"]),
    )
    def finish(self, data: st.DataObject, rtt: float, outcome: str) -> None:
        caller = data.draw(st.sampled_from(self.running))
        self.running.remove(caller)
        self.now += 0.01
        before = (self.limit.limit, self.limit.estimate, self.limit._w_count)
        if outcome == "no sample":
            got = self.core.release()
            assert (self.limit.limit, self.limit.estimate, self.limit._w_count) == before
        else:
            got = self.core.finish(self.now, rtt, self._holders() + 1, outcome == "dropped")
        grown = self.core.admit_waiting() if self.core.max_concurrent > before[0] else []
        self._handed(got, grown)

    @precondition(lambda self: self.granted)
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        caller = data.draw(st.sampled_from(self.granted))
        self.granted.remove(caller)
        self.running.append(caller)

    @precondition(lambda self: self.queue)
    @rule(data=st.data())
    def give_up_while_queued(self, data: st.DataObject) -> None:
        caller = data.draw(st.sampled_from(self.queue))
        assert self.core.cancel(caller) is True
        self.queue.remove(caller)

    @invariant()
    def counts_match(self) -> None:
        assert self.core.running == self._holders()
        assert self.core.queued == len(self.queue) <= self.core.max_queued
        assert self.core.max_concurrent == self.limit.limit

    @invariant()
    def nobody_waits_while_a_slot_is_free(self) -> None:
        if self.queue:
            assert self.core.running >= self.core.max_concurrent

    @invariant()
    def first_come_first_served(self) -> None:
        for waiting in self.queue:
            assert all(a < waiting for a in self.admitted)


TestSlotsMachine = SlotsMachine.TestCase


def test_core_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="algorithm"):
        AdaptiveLimit("vegas", 10, 1, 20)
    with pytest.raises(ValueError, match="min_limit"):
        AdaptiveLimit("aimd", 10, 30, 20)


def test_a_window_needs_its_samples_and_one_round_trip() -> None:
    limit = AdaptiveLimit("aimd", 10, 1, 100)
    for _ in range(WINDOW_SAMPLES - 1):
        assert not limit.sample(1.0, 0.125, 10, False)
    assert limit.windows == 0
    assert limit.sample(1.0, 0.125, 10, False)  # ten samples: +1 (AIMD, half the limit in use)
    assert (limit.windows, limit.limit) == (1, 11)
    # the next window starts now: ten more samples within less than one latency do not close it
    for _ in range(WINDOW_SAMPLES):
        assert not limit.sample(1.0625, 0.125, 11, False)
    assert limit.windows == 1
    assert limit.sample(1.125, 0.125, 11, False)
    assert (limit.windows, limit.limit) == (2, 12)
