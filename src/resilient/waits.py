"""Ready-made wait strategies for :class:`resilient.Retry` (and for tenacity itself).

Every strategy is a :class:`WaitBase`: a callable taking a ``tenacity.RetryCallState`` and
returning the seconds to wait before the next attempt, which is all tenacity asks of a wait. So
they plug into ``Retry(wait=...)``, into a plain ``tenacity.Retrying(wait=...)``, and combine
with each other and with tenacity's own strategies using ``+`` (and ``sum``). This module does
not import tenacity: ``import resilient`` and building policies stay cheap.

``n`` below is ``retry_state.attempt_number``: the number of the attempt that just failed
(1 before the first retry).

- :func:`wait_fixed` — the same delay every time.
- :func:`wait_linear` — ``min(max, start + step * (n - 1))``.
- :func:`wait_exponential` — ``d = min(max, initial * multiplier ** (n - 1))`` shaped by
  ``jitter``:

  - ``"full"`` (default): ``uniform(0, d)``. Spreads a fleet of clients best; AWS's advice.
  - ``"equal"``: ``d / 2 + uniform(0, d / 2)``. Never retries almost at once.
  - ``"decorrelated"``: ``min(max, uniform(initial, previous * 3))`` where ``previous`` is the
    delay actually slept before this attempt (``initial`` for the first retry). The growth
    factor is AWS's fixed 3; ``multiplier`` does not apply.
  - ``None``: ``d`` exactly (deterministic, the thundering herd comes back in lockstep).

Jittered strategies take ``rng``, a ``random.Random``: pass a seeded one for reproducible
tests. Without one they use a private ``random.Random`` (thread-safe in CPython). Strategies
keep no per-call state (decorrelated jitter reads the previous delay from the retry state), so
one strategy object can serve any number of concurrent calls.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from . import _validate as v

if TYPE_CHECKING:
    from tenacity import RetryCallState

__all__ = ["Jitter", "WaitBase", "wait_exponential", "wait_fixed", "wait_linear"]

Jitter = Literal["full", "equal", "decorrelated"]


_SECONDS = v.duration("seconds")
_START = v.duration("start")
_STEP = v.duration("step")
_MAX = v.duration("max")
_INITIAL_POSITIVE = v.duration("initial", zero=False)
_MAX_POSITIVE = v.duration("max", zero=False)
_MULTIPLIER = v.number("multiplier", minimum=1.0)
_JITTER = v.choice("jitter", ("full", "equal", "decorrelated"))
_RNG = v.random_generator()


class WaitBase:
    """Base of the strategies here: ``strategy(retry_state) -> seconds``, combinable with
    ``+`` (the delays add up), like tenacity's ``wait_base``."""

    def __call__(self, retry_state: RetryCallState) -> float:
        raise NotImplementedError  # pragma: no cover - every strategy overrides it

    def __add__(self, other: Callable[[RetryCallState], float]) -> WaitBase:
        return _SumWait((self, other))

    def __radd__(self, other: object) -> Any:
        if other == 0:  # sum() starts from 0
            return self
        if callable(other):
            return _SumWait((other, self))
        return NotImplemented


class _SumWait(WaitBase):
    """The sum of several strategies' delays."""

    def __init__(self, parts: tuple[Callable[[RetryCallState], float], ...]) -> None:
        self.parts = parts

    def __call__(self, retry_state: RetryCallState) -> float:
        return float(sum(part(retry_state) for part in self.parts))

    def __repr__(self) -> str:
        return " + ".join(repr(part) for part in self.parts)


class _FixedWait(WaitBase):
    """Always ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.seconds

    def __repr__(self) -> str:
        return f"wait_fixed({self.seconds:g})"


class _LinearWait(WaitBase):
    """``min(max, start + step * (n - 1))``."""

    def __init__(self, start: float, step: float, maximum: float) -> None:
        self.start = start
        self.step = step
        self.max = maximum

    def __call__(self, retry_state: RetryCallState) -> float:
        n = max(1, retry_state.attempt_number)
        return min(self.max, self.start + self.step * (n - 1))

    def __repr__(self) -> str:
        return f"wait_linear(start={self.start:g}, step={self.step:g}, max={self.max:g})"


class _ExponentialWait(WaitBase):
    """Capped exponential backoff with an optional jitter shape (see the module docstring)."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        multiplier: float,
        jitter: Jitter | None,
        rng: random.Random,
    ) -> None:
        self.initial = initial
        self.max = maximum
        self.multiplier = multiplier
        self.jitter = jitter
        self._rng = rng

    def ceiling(self, attempt_number: int) -> float:
        """The un-jittered delay after attempt ``attempt_number``: the cap of the jitter."""
        try:
            delay = self.initial * self.multiplier ** (max(1, attempt_number) - 1)
        except OverflowError:
            return self.max
        return min(self.max, delay)

    def __call__(self, retry_state: RetryCallState) -> float:
        jitter = self.jitter
        if jitter == "decorrelated":
            previous = float(getattr(retry_state, "upcoming_sleep", 0.0) or 0.0)
            if retry_state.attempt_number <= 1 or previous < self.initial:
                previous = self.initial
            high = min(self.max, previous * 3)
            return min(self.max, self._rng.uniform(self.initial, max(self.initial, high)))
        delay = self.ceiling(retry_state.attempt_number)
        if jitter == "full":
            return self._rng.uniform(0.0, delay)
        if jitter == "equal":
            half = delay / 2
            return half + self._rng.uniform(0.0, half)
        return delay

    def __repr__(self) -> str:
        return (
            f"wait_exponential(initial={self.initial:g}, max={self.max:g}, "
            f"multiplier={self.multiplier:g}, jitter={self.jitter!r})"
        )


def wait_fixed(seconds: float) -> WaitBase:
    """Wait ``seconds`` before every retry.

    For a dependency with a known recovery time (a lock held for a fixed lease, a rate limit
    window) where spreading retries out buys nothing.
    """
    return _FixedWait(_SECONDS(seconds))


def wait_linear(start: float = 0.1, step: float = 0.1, max: float = 10.0) -> WaitBase:
    """Wait ``start``, then ``start + step``, ``start + 2 * step``, ... never more than ``max``.

    Gentler than exponential backoff when failures are short blips, still backing off a little
    so a struggling dependency is not hit at a constant rate.
    """
    s = _START(start)
    st = _STEP(step)
    m = _MAX(max)
    if m < s:
        raise ValueError(f"max must be >= start ({s:g}), got {max!r}")
    return _LinearWait(s, st, m)


def wait_exponential(
    initial: float = 0.1,
    max: float = 10.0,
    multiplier: float = 2.0,
    *,
    jitter: Jitter | None = "full",
    rng: random.Random | None = None,
) -> WaitBase:
    """Exponential backoff from ``initial`` seconds, times ``multiplier`` per retry, capped at
    ``max``, with ``jitter`` ("full", "equal", "decorrelated" or ``None``).

    Backoff gives an overloaded dependency room to recover; jitter keeps many clients that
    failed together from retrying together. The default (full jitter, 0.1 s .. 10 s) is
    ``Retry``'s default wait.
    """
    i = _INITIAL_POSITIVE(initial)
    m = _MAX_POSITIVE(max)
    if m < i:
        raise ValueError(f"max must be >= initial ({i:g}), got {max!r}")
    mult = _MULTIPLIER(multiplier)
    if jitter is not None:
        _JITTER(jitter)
    return _ExponentialWait(i, m, mult, jitter, _RNG(rng))
