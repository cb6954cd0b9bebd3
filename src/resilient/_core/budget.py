"""The retry budget's pure state machine: deposits and withdrawals over a sliding window.

No locks, no clock of its own, no I/O: the front end (:class:`resilient.RetryBudget`) calls it
under a short lock with the time ``now``. A hypothesis state machine
(``tests/test_retry_budget_model.py``) checks it against a reference that keeps every event.

The rule (Finagle's ``RetryBudget``, also gRPC's and Envoy's idea): within the last ``window``
seconds, retries may not exceed ``ratio`` times the first attempts plus a reserve of
``min_per_second * window`` retries, so traffic too light to earn retries can still retry::

    balance = ratio * deposits_in_window + min_per_second * window - withdrawals_in_window

A retry is allowed when the balance is at least 1, and then withdraws 1. Deposits and
withdrawals both leave the window after ``window`` seconds. Over any stretch of time the
retries taken are at most ``ratio`` times the first attempts plus the reserve per window: a
withdrawal's window reaches back at most ``window`` seconds, so windows anchored at
withdrawals can be laid end to end without overlap, and each holds no more withdrawals than
its deposits allow.

The window is kept as ``SLOTS`` buckets of ``window / SLOTS`` seconds (memory does not grow
with traffic); an event belongs to the bucket of its time, and the window at ``now`` is the
bucket of ``now`` plus the ``SLOTS - 1`` before it.

Deposits may be reported late and in bulk (:meth:`BudgetCore.deposit` with the span of time
they happened in): the front end counts first attempts with an atomic counter, without a
lock, and hands the count over when it next decides. The count is exact; the deposits are
spread evenly over the span they happened in (those older than the window are dropped).
"""

from __future__ import annotations

import math

__all__ = ["SLOTS", "BudgetCore"]

SLOTS = 10
"""Buckets per window."""

_EPSILON = 1e-9  # ``ratio * deposits`` is a float: 0.2 * 5 must read as one whole retry


class BudgetCore:
    """Deposits (first attempts) and withdrawals (retries) of the last ``window`` seconds."""

    __slots__ = (
        "_deposits",
        "_newest",
        "_withdrawals",
        "deposited",
        "min_per_second",
        "ratio",
        "reserve",
        "slot_width",
        "window",
        "withdrawn",
    )

    def __init__(self, ratio: float, min_per_second: float, window: float) -> None:
        if ratio < 0 or min_per_second < 0 or not window > 0:
            raise ValueError(
                f"need ratio >= 0, min_per_second >= 0, window > 0; got {ratio!r}, "
                f"{min_per_second!r}, {window!r}"
            )
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self.reserve = min_per_second * window
        self.slot_width = window / SLOTS
        self._deposits = [0.0] * SLOTS
        self._withdrawals = [0] * SLOTS
        self._newest: int | None = None  # index (time // slot_width) of the newest bucket
        self.deposited = 0.0
        """Deposits in the window."""
        self.withdrawn = 0
        """Withdrawals in the window."""

    def _slot(self, t: float) -> int:
        return math.floor(t / self.slot_width)

    def advance(self, now: float) -> None:
        """Drop the buckets that left the window by ``now``."""
        index = self._slot(now)
        newest = self._newest
        if newest is None:
            self._newest = index
            return
        if index <= newest:
            return
        for i in range(newest + 1, min(index, newest + SLOTS) + 1):
            at = i % SLOTS
            self.deposited -= self._deposits[at]
            self.withdrawn -= self._withdrawals[at]
            self._deposits[at] = 0.0
            self._withdrawals[at] = 0
        self._newest = index
        if self.deposited < 1e-9:  # float dust after subtracting what was added
            self.deposited = 0.0

    def balance(self, now: float) -> float:
        """Retries the budget would allow at ``now`` (fractional: 0.6 allows none yet)."""
        self.advance(now)
        return self.ratio * self.deposited + self.reserve - self.withdrawn

    def deposit(self, count: int, since: float, now: float) -> None:
        """Record ``count`` first attempts made between ``since`` and ``now``, spread evenly
        over that span (all at ``now`` when it is empty); what fell before the window is
        dropped."""
        if count <= 0:
            return
        self.advance(now)
        assert self._newest is not None
        if not since < now:
            self._add(self._newest, float(count))
            return
        oldest_kept = self._newest - SLOTS + 1
        span = now - since
        first = max(self._slot(since), oldest_kept)
        for index in range(first, self._newest + 1):
            start = max(since, index * self.slot_width)
            end = min(now, (index + 1) * self.slot_width)
            if end > start:
                self._add(index, count * (end - start) / span)

    def _add(self, index: int, amount: float) -> None:
        self._deposits[index % SLOTS] += amount
        self.deposited += amount

    def try_withdraw(self, now: float) -> bool:
        """Take one retry if the balance allows it (``True``), else leave everything as is."""
        if self.balance(now) < 1.0 - _EPSILON:
            return False
        assert self._newest is not None
        self._withdrawals[self._newest % SLOTS] += 1
        self.withdrawn += 1
        return True
