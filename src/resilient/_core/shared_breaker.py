"""The circuit breaker's state machine when a fleet of replicas shares one breaker.

:class:`SharedBreakerCore` is a :class:`~resilient._core.breaker.BreakerCore` that works in one
of two modes, still pure (no locks, no I/O, no clock of its own):

* **online** (the state backend answered its last request): the fleet decides. The local core
  is a cache of the fleet's state: CLOSED calls are admitted exactly as before (no round trip)
  and their outcomes are *counted into a batch* (:meth:`take_batch`) that the backend's sync
  thread adds to the fleet-wide window, where the transitions are decided atomically. Every
  answer of the backend is a :class:`FleetSnapshot` that :meth:`apply` mirrors into the local
  state. The local core never ticks on its own: OPEN -> HALF_OPEN, the re-opening of a
  half-open round whose trial overran ``half_open_max_wait`` and the closing after the trials
  happen in the fleet, so every replica sees the same state. Trial calls are admitted by the
  fleet: :meth:`acquire` answers :data:`ASK_FLEET` where a trial would be taken, the front end
  asks the backend and hands the answer to :meth:`trial_answer`; a finished trial leaves a
  report in :attr:`reports` for the front end to send.
* **offline** (no backend answer yet, or it stopped answering): exactly the local breaker of
  :class:`BreakerCore`, starting from the last state the fleet had, with an empty window.

The price of batching, in consistency: the fleet window lags each replica's own calls by at
most one sync (a failure asks for an early one through :attr:`urgent`), and a replica
learns of a transition made elsewhere at its next sync. A call admitted in the meantime is
counted against the state it was admitted in (generations, as in the local core): a batch
from an earlier fleet epoch is dropped by the backend, never added to a newer window.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

from .breaker import (
    CLOSED,
    FAILURE,
    HALF_OPEN,
    IGNORED,
    METRICS_ONLY,
    OPEN,
    BreakerCore,
    BreakerState,
    Permit,
    Rejection,
)

__all__ = [
    "ASK_FLEET",
    "TRIAL_FAILED",
    "TRIAL_RELEASED",
    "TRIAL_SUCCEEDED",
    "Batch",
    "FleetSnapshot",
    "SharedBreakerCore",
    "TrialReport",
]

ASK_FLEET = Rejection("ask_fleet", None, "")
"""Returned by :meth:`SharedBreakerCore.acquire` online where a trial call would be taken: the
front end must ask the fleet (:meth:`SharedBreakerCore.trial_answer`)."""

# What became of a fleet trial (sent to the backend).
TRIAL_SUCCEEDED = "ok"
TRIAL_FAILED = "fail"  # failed, or slow with slow-call detection on
TRIAL_RELEASED = "release"  # ignored or cancelled: the slot goes back


class FleetSnapshot(NamedTuple):
    """The fleet's breaker as one backend answer saw it.

    ``incarnation`` names the backend's record (a new one after the record was lost, e.g. a
    Redis restart without persistence); ``epoch`` grows with every fleet transition and
    reset, so two snapshots of one incarnation are ordered. ``open_remaining`` is the seconds
    of OPEN time left (server clock), ``calls``/``failures``/``slow_calls`` the fleet window.
    """

    incarnation: str
    epoch: int
    state: BreakerState
    open_remaining: float
    times_opened: int
    calls: float
    failures: float
    slow_calls: float


class Batch(NamedTuple):
    """Outcomes counted locally since the last sync, for the fleet epoch they belong to."""

    incarnation: str
    epoch: int
    calls: int
    failures: int
    slow_calls: int


class TrialReport(NamedTuple):
    """A finished fleet trial: its id (as granted), what became of it, and the fleet epoch it
    was admitted in (a report for an epoch that is over changes nothing)."""

    trial_id: str
    outcome: str
    incarnation: str
    epoch: int


class SharedBreakerCore(BreakerCore):
    """A breaker core whose decisions are the fleet's while :attr:`online`; see the module
    docstring. Starts offline (local) until the first snapshot arrives."""

    __slots__ = (
        "_fast",
        "_fast_drained",
        "_local_ring",
        "batch_calls",
        "batch_failures",
        "batch_slow",
        "fleet",
        "fleet_calls",
        "fleet_failures",
        "fleet_slow",
        "fleet_trials",
        "online",
        "reports",
        "trials_full",
        "urgent",
    )

    def __init__(self, **options: Any) -> None:
        """The options of :meth:`BreakerCore.__init__` (its one call site is typed against
        it); the fleet's own state starts offline and empty."""
        super().__init__(**options)
        # the per-call code updates ``fast_ring`` in place without asking; online, a success
        # must be counted for the fleet instead, so the ring is only reached through
        # ``succeed_fast`` here, which uses it while offline
        self._local_ring, self.fast_ring = self.fast_ring, None
        self.online = False
        self.fleet: tuple[str, int] | None = None  # (incarnation, epoch) mirrored by ``gen``
        self.batch_calls = 0
        # fast successes, counted without the lock (``next`` on a count is atomic) and moved
        # into ``batch_calls`` by :meth:`_drain_fast` under it
        self._fast = itertools.count()
        self._fast_drained = 0
        self.batch_failures = 0
        self.batch_slow = 0
        self.urgent = False  # a failure or slow call is waiting in the batch
        self.fleet_calls = 0.0
        self.fleet_failures = 0.0
        self.fleet_slow = 0.0
        self.fleet_trials: list[tuple[float, str]] = []  # (admitted_at, trial id) of this round
        self.reports: list[TrialReport] = []
        # The fleet said every trial slot is taken: refuse locally until the next snapshot
        # (a freed slot is then taken at most one sync later; a busy replica does not ask
        # Redis on every call of a half-open round).
        self.trials_full = False

    # -- the hot operations -------------------------------------------------------------------
    def acquire(self, now: float) -> Permit | Rejection:
        if not self.online:
            return super().acquire(now)
        state = self.state
        if state is OPEN:
            if now < self.open_until:
                return Rejection("open", self.open_until - now, OPEN.value)
            return ASK_FLEET
        if state is HALF_OPEN:
            if self.trials_full:
                return Rejection("half_open_full", None, HALF_OPEN.value)
            return ASK_FLEET
        return super().acquire(now)  # CLOSED, FORCED_OPEN, DISABLED, METRICS_ONLY: as local

    def complete(self, permit: Permit, outcome: int, now: float) -> None:
        if not self.online:
            super().complete(permit, outcome, now)
            return
        gen, started = permit
        if gen != self.gen:
            return  # admitted under an earlier fleet epoch
        state = self.state
        limit = self.slow_call_duration
        slow = limit is not None and now - started > limit
        if state is CLOSED or state is METRICS_ONLY:
            if outcome >= IGNORED:
                return
            self.batch_calls += 1
            if outcome == FAILURE:
                self.batch_failures += 1
            if slow:
                self.batch_slow += 1
            if (outcome == FAILURE or slow) and state is CLOSED:
                self.urgent = True  # this could open the fleet's breaker: sync soon
        elif state is HALF_OPEN:
            trial_id = self._pop_trial(started)
            fleet = self.fleet
            if trial_id is None or fleet is None:
                return
            if outcome >= IGNORED:
                result = TRIAL_RELEASED
            elif outcome == FAILURE or slow:
                result = TRIAL_FAILED
            else:
                result = TRIAL_SUCCEEDED
            self.reports.append(TrialReport(trial_id, result, fleet[0], fleet[1]))

    def succeed_fast(self, gen: int) -> bool:
        if not self.online:
            return self._succeed_in(self._local_ring, gen)
        if gen != self.gen or self.state is not CLOSED or self.slow_call_duration is not None:
            return False
        next(self._fast)  # lock-free, like the local breaker's
        return True

    def _drain_fast(self) -> int:
        """Fast successes counted since the last drain (call under the front end's lock)."""
        ticket = next(self._fast)  # this read takes a number too: skip it next time
        counted = ticket - self._fast_drained
        self._fast_drained = ticket + 1
        return counted

    def _tick(self, now: float) -> None:
        if not self.online:  # online, time-driven transitions are the fleet's
            super()._tick(now)

    def totals(self, now: float) -> tuple[float, float, float]:
        if not self.online:
            return super().totals(now)
        self.batch_calls += self._drain_fast()
        return (
            self.fleet_calls + self.batch_calls,
            self.fleet_failures + self.batch_failures,
            self.fleet_slow + self.batch_slow,
        )

    # -- exchanges with the fleet ---------------------------------------------------------------
    def take_batch(self) -> Batch | None:
        """The outcomes counted since the last call (zeroed), ``None`` while not mirroring a
        fleet epoch (offline: nothing is batched then)."""
        fleet = self.fleet
        self.urgent = False
        if fleet is None or not self.online:
            return None
        calls = self.batch_calls + self._drain_fast()
        batch = Batch(fleet[0], fleet[1], calls, self.batch_failures, self.batch_slow)
        self.batch_calls = self.batch_failures = self.batch_slow = 0
        return batch

    def take_reports(self) -> list[TrialReport]:
        reports = self.reports
        self.reports = []
        return reports

    def apply(self, snapshot: FleetSnapshot, now: float) -> bool:
        """Mirror the fleet's state (and go online). ``False`` when the snapshot is older than
        the one already applied (an answer overtaken by a newer one): nothing changes.

        A new fleet epoch (or incarnation) starts a new local generation: calls admitted
        before it are not counted, the batch and the trials of the old epoch are dropped.
        A state change is left in :attr:`changes` for the front end to publish."""
        fleet = self.fleet
        key = (snapshot.incarnation, snapshot.epoch)
        if fleet is not None and fleet[0] == key[0] and key[1] < fleet[1]:
            return False
        self.online = True
        self.trials_full = False
        state = snapshot.state
        if key != fleet or state is not self.state:
            if state is not self.state:
                self.changes.append((self.state, state))
                self.state = state
            self.gen += 1
            self.fleet = key
            self.window.clear()
            self.trials.clear()
            self.trial_ok = 0
            self.fleet_trials.clear()
            self.reports.clear()
            self.batch_calls = self.batch_failures = self.batch_slow = 0
            self._drain_fast()  # successes of the old epoch
            self.urgent = False
        self.times_opened = snapshot.times_opened
        if state is OPEN:
            self.open_until = now + max(0.0, snapshot.open_remaining)
        self.fleet_calls = snapshot.calls
        self.fleet_failures = snapshot.failures
        self.fleet_slow = snapshot.slow_calls
        return True

    def trial_answer(
        self, snapshot: FleetSnapshot, granted: bool, trial_id: str, now: float
    ) -> Permit | Rejection:
        """The fleet's answer to a trial request made after :data:`ASK_FLEET`: the permit of a
        granted trial, or what the (now mirrored) state says to a caller. ``granted`` is
        ignored when the answer was overtaken by a newer snapshot (its trial belongs to an
        epoch that is over, where the fleet no longer counts it)."""
        if self.apply(snapshot, now) and granted and self.state is HALF_OPEN:
            self.trials.append(now)
            self.fleet_trials.append((now, trial_id))
            return (self.gen, now)
        state = self.state
        if state is HALF_OPEN:
            self.trials_full = True
            return Rejection("half_open_full", None, HALF_OPEN.value)
        if state is OPEN:
            return Rejection("open", max(0.0, self.open_until - now), OPEN.value)
        return super().acquire(now)

    def go_offline(self) -> None:
        """The backend stopped answering: decide locally from here on, starting from the last
        fleet state with an empty window. Trials the fleet granted to this replica become
        local trials (their outcome decides the local half-open round)."""
        self.online = False
        self.fleet = None
        self.trials_full = False
        self.window.clear()
        self.batch_calls = self.batch_failures = self.batch_slow = 0
        self._drain_fast()
        self.urgent = False
        self.fleet_trials.clear()
        self.reports.clear()
        self.fleet_calls = self.fleet_failures = self.fleet_slow = 0.0

    def fleet_open_seconds(self) -> float:
        """The open time the fleet should use if this replica's report opens the breaker: the
        backoff for the next opening (the fleet's count, as last seen), with jitter."""
        duration = self.open_duration(self.times_opened + 1)
        if self.open_jitter:
            duration *= 1.0 + self.open_jitter * self.rand()
        return duration

    def _pop_trial(self, started: float) -> str | None:
        """Forget the fleet trial admitted at ``started`` (any of this round's trials if none
        matches exactly: they are interchangeable); its id, or ``None`` when it is not one."""
        trials = self.fleet_trials
        if not trials:
            return None
        index = 0
        for i, (admitted, _) in enumerate(trials):
            if admitted == started:
                index = i
                break
        admitted, trial_id = trials.pop(index)
        if admitted in self.trials:
            self.trials.remove(admitted)
        return trial_id
