"""Property tests of the retry budget's core against a reference that keeps every event.

The reference stores each deposit and withdrawal with its bucket, in exact fractions, and
recomputes the window from scratch; the core keeps a ring of buckets and running totals. They
must agree on every decision and balance, and over any run the retries taken may never exceed
``ratio`` times the first attempts plus the reserve of each window the run spans.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from resilient._core.budget import SLOTS, BudgetCore

TICK = Fraction(1, 8)


class Reference:
    """Every event as ``(bucket index, amount)``; the window is recomputed each time."""

    def __init__(self, ratio: Fraction, min_per_second: Fraction, window: Fraction) -> None:
        self.ratio = ratio
        self.reserve = min_per_second * window
        self.width = window / SLOTS
        self.deposits: list[tuple[int, Fraction]] = []
        self.withdrawals: list[int] = []
        self.newest: int | None = None

    def bucket(self, t: Fraction) -> int:
        return math.floor(t / self.width)

    def _advance(self, now: Fraction) -> int:
        index = self.bucket(now)
        if self.newest is None or index > self.newest:
            self.newest = index
        return self.newest

    def _in_window(self, index: int) -> bool:
        assert self.newest is not None
        return self.newest - SLOTS < index <= self.newest

    def balance(self, now: Fraction) -> Fraction:
        self._advance(now)
        deposited = sum((a for i, a in self.deposits if self._in_window(i)), Fraction(0))
        withdrawn = sum(1 for i in self.withdrawals if self._in_window(i))
        return self.ratio * deposited + self.reserve - withdrawn

    def deposit(self, count: int, since: Fraction, now: Fraction) -> None:
        newest = self._advance(now)
        if since >= now:
            self.deposits.append((newest, Fraction(count)))
            return
        for index in range(self.bucket(since), newest + 1):
            overlap = min(now, (index + 1) * self.width) - max(since, index * self.width)
            if overlap > 0:
                self.deposits.append((index, count * overlap / (now - since)))

    def try_withdraw(self, now: Fraction) -> bool:
        if self.balance(now) < 1:
            return False
        assert self.newest is not None
        self.withdrawals.append(self.newest)
        return True


class BudgetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core = BudgetCore(0.2, 1.0, 10.0)
        self.ref = Reference(Fraction(1, 5), Fraction(1), Fraction(10))
        self.now = Fraction(0)
        self.first_attempts = 0
        self.retries = 0

    @initialize(
        ratio=st.sampled_from([Fraction(0), Fraction(1, 5), Fraction(1, 2), Fraction(3, 2)]),
        min_per_second=st.sampled_from([Fraction(0), Fraction(1, 10), Fraction(1)]),
        window=st.sampled_from([Fraction(1), Fraction(5, 2), Fraction(10)]),
    )
    def setup(self, ratio: Fraction, min_per_second: Fraction, window: Fraction) -> None:
        self.core = BudgetCore(float(ratio), float(min_per_second), float(window))
        self.ref = Reference(ratio, min_per_second, window)
        self.window = window

    @rule(ticks=st.integers(0, 30))
    def advance(self, ticks: int) -> None:
        self.now += ticks * TICK

    @rule(count=st.integers(1, 20))
    def deposit_now(self, count: int) -> None:
        self.core.deposit(count, float(self.now), float(self.now))
        self.ref.deposit(count, self.now, self.now)
        self.first_attempts += count

    @rule(count=st.integers(1, 50), back=st.integers(1, 200))
    def deposit_counted_since(self, count: int, back: int) -> None:
        """First attempts counted without a lock and handed over late, spread over the time
        since the last hand-over."""
        since = self.now - back * TICK
        self.core.deposit(count, float(since), float(self.now))
        self.ref.deposit(count, since, self.now)
        self.first_attempts += count

    @rule()
    def try_withdraw(self) -> None:
        ok = self.core.try_withdraw(float(self.now))
        assert ok == self.ref.try_withdraw(self.now)
        self.retries += ok

    @invariant()
    def balances_agree(self) -> None:
        assert self.core.balance(float(self.now)) == pytest.approx(
            float(self.ref.balance(self.now)), abs=1e-6
        )

    @invariant()
    def retries_never_exceed_what_the_first_attempts_and_reserve_allow(self) -> None:
        # every window the run spans brings one reserve; deposits are counted whole
        windows = math.floor(self.now / self.window) + 2
        allowed = self.ref.ratio * self.first_attempts + self.ref.reserve * windows
        assert self.retries <= allowed + Fraction(1, 10**6)


TestBudgetMachine = BudgetMachine.TestCase


def test_core_refuses_bad_settings() -> None:
    for args in [(-0.1, 1.0, 1.0), (0.2, -1.0, 1.0), (0.2, 1.0, 0.0)]:
        with pytest.raises(ValueError):
            BudgetCore(*args)


def test_deposits_older_than_the_window_are_dropped() -> None:
    core = BudgetCore(1.0, 0.0, 10.0)
    # 100 first attempts counted over 100 s: the window at t=100 holds the buckets of
    # [91, 101) s, so the 9 made in [91, 100) s count and the rest are dropped
    core.deposit(100, 0.0, 100.0)
    assert core.balance(100.0) == pytest.approx(9.0)
    assert core.try_withdraw(100.0)
    assert core.balance(100.0) == pytest.approx(8.0)
    assert core.balance(115.0) == pytest.approx(0.0)  # all of it has left the window
