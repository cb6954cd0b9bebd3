"""Crash points: the named moments between log writes and side effects (SAGA.md 4.8) where a
test can make the engine die, to prove that recovery finishes what the dead process left.

The engine calls :func:`maybe_crash` at every point, behind a guard that costs one global read
(``if ARMED or ENV_ARMED``), so production runs pay nothing. Two ways arm a point:

* :func:`arm` / :func:`disarm`, used by ``resilient.saga.testing.crash_at`` for fast in-process
  tests: the engine raises :class:`SimulatedCrash` there.
* ``RESILIENT_SAGA_CRASH_AT="AFTER_STEP_RECORDED:charge_payment"``, read once when
  ``resilient.saga`` is imported: the engine calls ``os._exit(137)`` there (a child process).

This module is the production side of the hook; the testing module only uses it.
"""

from __future__ import annotations

import enum
import os
import threading

__all__ = [
    "ARMED",
    "ENV_ARMED",
    "ENV_CRASH_AT",
    "CrashPoint",
    "SimulatedCrash",
    "arm",
    "armed",
    "disarm",
    "maybe_crash",
]

ENV_CRASH_AT = "RESILIENT_SAGA_CRASH_AT"


class CrashPoint(str, enum.Enum):
    """The places the engine can be made to die, in the order they happen for one step."""

    BEFORE_STEP_STARTED = "BEFORE_STEP_STARTED"
    AFTER_STEP_STARTED = "AFTER_STEP_STARTED"
    AFTER_STEP_EFFECT = "AFTER_STEP_EFFECT"
    AFTER_STEP_RECORDED = "AFTER_STEP_RECORDED"
    AFTER_COMPENSATING_FLIP = "AFTER_COMPENSATING_FLIP"
    AFTER_COMP_STARTED = "AFTER_COMP_STARTED"
    AFTER_COMP_EFFECT = "AFTER_COMP_EFFECT"
    AFTER_COMP_RECORDED = "AFTER_COMP_RECORDED"


class SimulatedCrash(BaseException):
    """Raised at an armed crash point in-process: the engine stops dead (no further writes,
    no compensation, lease kept), exactly as if the process had been killed there.

    A ``BaseException`` so neither retry policies nor the saga treat it as a step failure.
    """

    def __init__(self, point: CrashPoint, step: str | None) -> None:
        super().__init__(f"simulated crash at {point.value}:{step}")
        self.point = point
        self.step = step


# The armed points, each ``[point, step or None, remaining times]``. The engine reads this list
# on its hot path without a call (it is mutated in place, never rebound), so empty means off.
ARMED: list[list[object]] = []
_armed_lock = threading.Lock()


def arm(point: CrashPoint, step: str | None, times: int) -> list[object]:
    """Make the next ``times`` arrivals at ``point`` (for ``step``, or any step when ``None``)
    raise :class:`SimulatedCrash`, in any thread of this process; returns the entry to pass to
    :func:`disarm`."""
    entry: list[object] = [point, step, times]
    with _armed_lock:
        ARMED.append(entry)
    return entry


def disarm(entry: list[object]) -> None:
    """Remove ``entry`` (a no-op when it already fired its last time)."""
    with _armed_lock:
        if entry in ARMED:
            ARMED.remove(entry)


def _env_target() -> tuple[str, str | None] | None:
    spec = os.environ.get(ENV_CRASH_AT)
    if not spec:
        return None
    point, _, step = spec.partition(":")
    CrashPoint(point)  # an unknown point is a test bug: fail loudly
    return point, (step or None)


# Read once, when the engine is imported: crash tests set the variable before starting the
# child process, and the hot path then costs one global read per crash point.
_ENV_TARGET = _env_target()
ENV_ARMED = _ENV_TARGET is not None


def armed(point: CrashPoint, step: str | None) -> bool:
    """True when arriving at ``point`` for ``step`` would crash. The engine asks before
    writing a step's outcome together with the next record: a test that arms
    ``AFTER_STEP_RECORDED`` gets the moment it names (the outcome durable, nothing after it)."""
    if ARMED:
        with _armed_lock:
            if any(e[0] is point and e[1] in (None, step) for e in ARMED):
                return True
    target = _ENV_TARGET
    return target is not None and target[0] == point.value and target[1] in (None, step)


def maybe_crash(point: CrashPoint, step: str | None) -> None:
    """Called by the engine at every crash point; a no-op unless one is armed."""
    if ARMED:
        with _armed_lock:
            for entry in ARMED:
                if entry[0] is point and entry[1] in (None, step):
                    remaining = int(entry[2]) - 1  # type: ignore[call-overload]
                    if remaining <= 0:
                        ARMED.remove(entry)
                    else:
                        entry[2] = remaining
                    raise SimulatedCrash(point, step)
    target = _ENV_TARGET
    if target is not None and target[0] == point.value and target[1] in (None, step):
        os._exit(137)
