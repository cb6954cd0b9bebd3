"""The seam between a policy and a shared state backend (``state=rs.RedisState(...)``).

A policy that can share its state with a fleet of replicas takes ``state=``: an object that
binds the policy and hands back a *link*, through which the policy's slow paths reach the
fleet. The policy module only knows these protocols; the backend (``resilient.fleet``, which
imports redis) is imported by whoever builds one, so ``import resilient`` never imports a
client library.

What crosses the seam, for a rate limiter: the limiter binds itself by name and settings
(:class:`BucketBackend`) and asks its :class:`BucketLink` for a token per call; the link answers
from a local lease of fleet tokens, so a call pays no round trip.

What crosses the seam, for a circuit breaker: the breaker exposes its
:class:`~resilient._core.shared_breaker.SharedBreakerCore`, the lock guarding it and the
publisher of its transitions (:class:`BreakerHost`); the backend keeps the core in step with
the fleet from its own thread (batches out, snapshots in) and answers the few requests a
caller must wait for (:class:`BreakerLink`): a trial call in HALF_OPEN, a finished trial, a
manual state change. Every link method degrades to "offline" (local state) instead of
raising: a call never fails because the backend is unreachable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ._core.breaker import BreakerCore, Permit, Rejection, Transition
from ._core.shared_breaker import SharedBreakerCore, TrialReport

if TYPE_CHECKING:
    from .telemetry._hub import PolicyTelemetry

__all__ = ["BreakerHost", "BreakerLink", "BucketBackend", "BucketLink", "StateBackend"]


class BreakerHost(Protocol):
    """What a state backend uses of a circuit breaker it shares."""

    @property
    def name(self) -> str: ...
    @property
    def _core(self) -> BreakerCore: ...
    @property
    def _shared_core(self) -> SharedBreakerCore: ...
    @property
    def _lock(self) -> threading.Lock: ...
    @property
    def _clock(self) -> Callable[[], float]: ...
    @property
    def _tel(self) -> PolicyTelemetry: ...
    def _publish(self, changes: list[Transition], gen: int) -> None: ...


class BreakerLink(Protocol):
    """A breaker's line to the fleet (one per bound breaker)."""

    def admit_trial(self, now: float) -> Permit | Rejection:
        """Ask the fleet for a trial call (the core answered ``ASK_FLEET``): a permit, or the
        rejection the mirrored state gives. Offline: the local core decides."""

    def report(self, reports: list[TrialReport]) -> None:
        """Tell the fleet how trial calls ended (and mirror its answer)."""

    def command(self, target: str) -> bool:
        """Manual control for the whole fleet: ``"reset"`` or a state value. ``False`` when
        the fleet could not be reached (the caller then changes the local state only)."""

    def wake(self) -> None:
        """Ask for an early sync: the batch holds a failure that may open the breaker."""

    def renamed(self) -> None:
        """The breaker took a new name: share the state stored under that name from now on."""


@runtime_checkable
class StateBackend(Protocol):
    """What ``state=`` accepts: something that binds a policy to shared state."""

    def _bind_breaker(self, breaker: BreakerHost) -> BreakerLink: ...


class BucketLink(Protocol):
    """A rate limiter's share of a fleet-wide token bucket (one per bound limiter)."""

    def take(self) -> tuple[bool, float] | None:
        """One token for a call: ``(True, 0.0)``, or ``(False, retry_after)`` when the fleet
        has none, or ``None`` when the backend is unreachable (the limiter then decides with
        its local bucket)."""


class BucketBackend(Protocol):
    """What a rate limiter's ``state=`` accepts: something that binds it to a fleet bucket."""

    def _bind_bucket(self, name: str, rate: float, per: float, burst: int) -> BucketLink: ...
