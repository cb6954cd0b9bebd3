"""Chaos's pure decision: does call number ``n`` get a fault injected?

A chaos rehearsal must be repeatable: the run that broke something is the run you want to
replay. So the decision for the ``n``-th call through a chaos policy is a pure function of the
seed and ``n`` (the SplitMix64 finaliser of ``seed + n * golden ratio``, a 64-bit mix whose
outputs are evenly spread and independent enough for sampling), compared with ``rate * 2**64``.
The front end numbers calls with an atomic counter, so threads and tasks racing through one
policy still see exactly the decisions ``0, 1, 2, ...`` of that seed, in arrival order, and no
lock or shared random generator is needed: the same seed gives the same fault positions for
the same sequence of calls, and changing ``rate`` at run time keeps the positions' order (a
call hit at rate 0.1 is also hit at 0.2).
"""

from __future__ import annotations

__all__ = ["ChaosDice", "mix64"]

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_SPAN = float(1 << 64)


def mix64(value: int) -> int:
    """SplitMix64's finaliser: a bijection on 64-bit integers that spreads every input bit
    over the whole output (Steele, Lea and Flood, "Fast splittable pseudorandom number
    generators", 2014)."""
    z = value & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class ChaosDice:
    """Decides call ``n``'s fate from ``seed`` and ``rate``: no state but the two numbers."""

    __slots__ = ("_threshold", "rate", "seed")

    def __init__(self, seed: int, rate: float) -> None:
        self.seed = seed & _MASK
        self.rate = rate
        self._threshold = 0
        self.set_rate(rate)

    def set_rate(self, rate: float) -> None:
        """Change the share of calls hit (``0 <= rate <= 1``), from the next decision on."""
        self.rate = rate
        self._threshold = int(rate * _SPAN) if rate < 1.0 else 1 << 64

    def hits(self, n: int) -> bool:
        """True when call number ``n`` (from 0) gets the injection."""
        return mix64(self.seed + n * _GOLDEN) < self._threshold
