"""The pure cores of hedging and chaos against reference models (hypothesis, no clock but ours).

* ``HedgeRace``: a state machine driven by random starts, answers, failures and time, checked
  against a tiny model of "attempt 1 at once, the next ``delay`` after the previous start or
  at once after a failure, at most ``max_attempts``; the first answer wins".
* ``LatencyWindow``: percentiles against the sorted window — exact rank, at most 10 % high,
  never low; O(1) memory per sample.
* ``ChaosDice``: a pure function of seed and position, monotone in the rate.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resilient._core.chaos import ChaosDice, mix64
from resilient._core.hedge import (
    GROWTH,
    HIGHEST,
    LOWEST,
    HedgeRace,
    LatencyWindow,
    bucket_of,
    parse_percentile,
    upper_edge,
)


# -- HedgeRace --------------------------------------------------------------------------------
class RaceMachine(RuleBasedStateMachine):
    """Random events against the model; invariants after each."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.max_attempts = 3
        self.delay = 0.1
        self.race = HedgeRace(self.max_attempts, self.delay, self.now)
        # the model
        self.running: set[int] = {1}
        self.started = 1
        self.last_start = 0.0
        self.failed_since_start = False
        self.winner = 0

    @rule(seconds=st.floats(min_value=0.0, max_value=0.3))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    def _model_due(self) -> float | None:
        if self.winner or self.started >= self.max_attempts:
            return None
        if self.failed_since_start:
            return -math.inf
        return self.last_start + self.delay

    @rule()
    def start_if_due(self) -> None:
        due = self.race.next_due()
        assert due == self._model_due()
        if due is not None and due <= self.now and self.race.may_start(self.now, None, None):
            number = self.race.start(self.now)
            self.started += 1
            assert number == self.started
            self.running.add(number)
            self.last_start = self.now
            self.failed_since_start = False

    @precondition(lambda self: bool(self.running))
    @rule(data=st.data())
    def one_answers(self, data: st.DataObject) -> None:
        number = data.draw(st.sampled_from(sorted(self.running)))
        self.running.discard(number)
        won = self.race.answered(number)
        assert won == (self.winner == 0)
        if not self.winner:
            self.winner = number

    @precondition(lambda self: bool(self.running))
    @rule(data=st.data())
    def one_fails(self, data: st.DataObject) -> None:
        number = data.draw(st.sampled_from(sorted(self.running)))
        self.running.discard(number)
        self.race.failed_one()
        self.failed_since_start = True

    @precondition(lambda self: bool(self.running))
    @rule(data=st.data())
    def one_is_cancelled(self, data: st.DataObject) -> None:
        number = data.draw(st.sampled_from(sorted(self.running)))
        self.running.discard(number)
        self.race.cancelled_one()

    @invariant()
    def matches_the_model(self) -> None:
        race = self.race
        assert race.started == self.started <= self.max_attempts
        assert race.running == len(self.running) >= 0
        assert race.winner == self.winner
        assert race.over == bool(
            self.winner or (not self.running and self.started == self.max_attempts)
        )
        if self.winner:
            assert race.next_due() is None
            assert not race.may_start(self.now, None, None)


TestRaceMachine = RaceMachine.TestCase


def test_a_race_refuses_a_start_once_decided_or_full() -> None:
    race = HedgeRace(2, 0.1, 0.0)
    race.start(0.1)
    with pytest.raises(RuntimeError):
        race.start(0.2)
    race = HedgeRace(3, 0.1, 0.0)
    assert race.answered(1)
    assert race.next_due() is None
    with pytest.raises(RuntimeError):
        race.start(0.2)


@given(
    remaining=st.none() | st.floats(min_value=-1.0, max_value=10.0),
    expected=st.none() | st.floats(min_value=0.0, max_value=10.0),
)
def test_a_hedge_starts_only_when_the_deadline_leaves_room(
    remaining: float | None, expected: float | None
) -> None:
    race = HedgeRace(2, 0.1, 0.0)
    allowed = race.may_start(1.0, remaining, expected)
    if remaining is None:
        assert allowed
    elif remaining <= 0:
        assert not allowed
    else:
        assert allowed == (expected is None or expected <= remaining)


def test_without_a_delay_only_failures_make_the_next_attempt_due() -> None:
    race = HedgeRace(3, None, 0.0)
    assert race.next_due() is None
    race.failed_one()
    assert race.next_due() == -math.inf
    race.start(5.0)
    assert race.next_due() is None


# -- LatencyWindow ------------------------------------------------------------------------------
latencies = st.lists(
    st.floats(min_value=LOWEST, max_value=HIGHEST / 2, allow_nan=False), min_size=1, max_size=300
)
percentiles = st.floats(min_value=0.1, max_value=99.9)


@given(values=latencies, q=percentiles)
def test_percentile_is_exact_in_rank_and_at_most_ten_percent_high(
    values: list[float], q: float
) -> None:
    window = LatencyWindow(size=1000, refresh=1)
    for x in values:
        window.add(x)
    estimate = window.percentile(q, warmup=1)
    truth = sorted(values)[max(1, math.ceil(q / 100 * len(values))) - 1]
    assert estimate is not None
    assert truth <= estimate < truth * GROWTH * (1 + 1e-12)


@given(values=latencies, size=st.integers(min_value=1, max_value=50), q=percentiles)
def test_the_window_keeps_only_the_last_size_latencies(
    values: list[float], size: int, q: float
) -> None:
    window = LatencyWindow(size=size, refresh=1)
    for x in values:
        window.add(x)
    kept = values[-size:]
    assert len(window) == len(kept)
    truth = sorted(kept)[max(1, math.ceil(q / 100 * len(kept))) - 1]
    estimate = window.exact_bucket_percentile(q)
    assert estimate is not None and truth <= estimate < truth * GROWTH * (1 + 1e-12)


def test_the_cached_percentile_lags_by_fewer_than_refresh_samples() -> None:
    window = LatencyWindow(size=100, refresh=16)
    for _ in range(20):
        window.add(0.01)
    assert window.percentile(50) == pytest.approx(upper_edge(bucket_of(0.01)))
    for _ in range(15):
        window.add(1.0)
    assert window.percentile(50) == pytest.approx(upper_edge(bucket_of(0.01)))  # still cached
    window.add(1.0)  # the 16th new sample refreshes it
    assert window.percentile(50) == pytest.approx(upper_edge(bucket_of(0.01)))  # 20 vs 16
    for _ in range(16):
        window.add(1.0)
    assert window.percentile(50) == pytest.approx(upper_edge(bucket_of(1.0)))


def test_no_percentile_before_warm_up_and_extremes_are_clamped() -> None:
    window = LatencyWindow()
    for _ in range(19):
        window.add(0.001)
    assert window.percentile(95) is None
    window.add(0.0)
    assert window.percentile(95) is not None
    assert bucket_of(0.0) == 0 and upper_edge(bucket_of(1e9)) == HIGHEST
    with pytest.raises(ValueError):
        LatencyWindow(size=0)


@given(x=st.floats(min_value=LOWEST, max_value=HIGHEST))
def test_a_latency_lies_in_its_bucket(x: float) -> None:
    index = bucket_of(x)
    assert x <= upper_edge(index)
    if index > 0:
        assert upper_edge(index - 1) < x


@pytest.mark.parametrize(
    ("text", "value"),
    [("p95", 95.0), ("P99.9", 99.9), ("p50", 50.0), ("p0.5", 0.5), ("p100", None),
     ("p0", None), ("95", None), ("p", None), ("p9x", None), ("p-5", None)],
)  # fmt: skip
def test_parse_percentile(text: str, value: float | None) -> None:
    assert parse_percentile(text) == value


# -- ChaosDice --------------------------------------------------------------------------------
@given(seed=st.integers(min_value=0, max_value=2**64 - 1), n=st.integers(0, 10**9))
def test_dice_are_a_pure_function_of_seed_and_position(seed: int, n: int) -> None:
    assert ChaosDice(seed, 0.5).hits(n) == ChaosDice(seed, 0.5).hits(n)
    assert not ChaosDice(seed, 0.0).hits(n)
    assert ChaosDice(seed, 1.0).hits(n)


@given(
    seed=st.integers(min_value=0, max_value=2**64 - 1),
    low=st.floats(0.0, 1.0),
    high=st.floats(0.0, 1.0),
)
def test_a_call_hit_at_a_lower_rate_is_hit_at_a_higher_one(
    seed: int, low: float, high: float
) -> None:
    assume(low <= high)
    lo, hi = ChaosDice(seed, low), ChaosDice(seed, high)
    for n in range(50):
        assert not lo.hits(n) or hi.hits(n)


def test_mix64_spreads_consecutive_inputs() -> None:
    outputs = {mix64(i) for i in range(10_000)}
    assert len(outputs) == 10_000  # a bijection: no collisions
    high_bits = sum(1 for o in outputs if o >> 63)
    assert 4_700 < high_bits < 5_300
