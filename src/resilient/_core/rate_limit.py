"""The rate limiter's pure state machine: a token bucket and a FIFO of waiters.

No locks, no waiting, no clock of its own, no I/O: the front end (:mod:`resilient.rate_limiter`)
calls it under one short ``threading.Lock`` with the time ``now`` and does the waiting itself.
A hypothesis state machine (``tests/test_rate_limiter_model.py``) checks it against a reference
bucket kept in exact fractions.

The bucket holds at most ``burst`` tokens and gains one every ``interval`` seconds. It is kept
as one number, the instant ``full_at`` at which it will be full again (the generic cell rate
algorithm, GCRA): the bucket holds ``burst - max(0, full_at - now) / interval`` tokens, taking
one moves ``full_at`` one ``interval`` later, and a full bucket simply stops gaining. One
float instead of "tokens and the time of the last refill" means no refill arithmetic on the
happy path and no rounding drift: a token is available when ``full_at - now`` is at most
``(burst - 1) * interval``.

Waiters (opaque hashable wake-up handles of the front end) queue in arrival order. The rules
that make the limiter fair and leak-free:

* **First come, first served.** While anyone waits, a newcomer never takes a token
  (:meth:`RateLimitCore.try_acquire` says no and the front end queues it behind the others).
* **Tokens go to waiters in virtual time.** :meth:`RateLimitCore.serve` hands every token that
  has come due by ``now`` to the longest waiters, as if each had been handed over the instant
  it arrived: when the queue empties, the bucket refills from that instant, so serving late
  (a thread woken late) never loses a token to the ``burst`` cap.
* **Nothing is lost on giving up.** A waiter that gives up while queued just leaves
  (:meth:`RateLimitCore.cancel` says ``True``); one whose token was handed over in the same
  instant gives it back with :meth:`RateLimitCore.refund`, which passes it to the next waiter
  or returns it to the bucket (capped at ``burst``, exactly as if it had never been taken).

:meth:`RateLimitCore.try_acquire` may run without the front end's lock on a CPython with a
GIL: its body has no call and no backward jump, and the interpreter only switches threads at
those (and at function entries), so it runs as one step against every other method. The
methods that run under the lock keep what it sees consistent at every point where a switch
can happen: :meth:`~RateLimitCore.serve` moves ``full_at`` before it takes the waiter off the
queue (a token is never both handed out and visible), and :meth:`~RateLimitCore.arrive` joins
the queue before it looks for a token (a newcomer never slips between a caller that found
none and its place in the queue).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["ADMITTED", "RateLimitCore"]

W = TypeVar("W", bound=Hashable)

ADMITTED = -1.0
"""Returned by :meth:`RateLimitCore.arrive`: the caller took a token at once."""

# Decisions tolerate this much float rounding (seconds): ``full_at`` is a sum of intervals, so
# a token due "exactly now" may read as due a few ulps from now. Never more than a nanosecond.
_EPSILON = 1e-9


class RateLimitCore(Generic[W]):
    """A bucket of at most ``burst`` tokens gaining one every ``interval`` seconds, and the
    waiters queued for them in arrival order. Starts full."""

    __slots__ = ("_eps", "_limit", "_waiting", "burst", "full_at", "granted", "interval")

    def __init__(self, interval: float, burst: int) -> None:
        if not interval > 0.0:
            raise ValueError(f"interval must be > 0, got {interval!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.interval = interval
        self.burst = burst
        self._eps = min(_EPSILON, interval * 1e-6)
        # ``full_at - now`` may be at most this for a token to be available
        self._limit = (burst - 1) * interval + self._eps
        self.full_at = float("-inf")  # full since forever
        self._waiting: OrderedDict[W, None] = OrderedDict()
        self.granted: list[W] = []
        """Waiters :meth:`serve` handed a token to, in order; the front end wakes them and
        clears the list (:meth:`take_granted`)."""

    # -- reading ------------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """How many waiters are in the queue."""
        return len(self._waiting)

    def tokens(self, now: float) -> float:
        """Tokens in the bucket at ``now``: between 0 and ``burst``."""
        ahead = self.full_at - now
        if ahead <= 0.0:
            return float(self.burst)
        return min(float(self.burst), max(0.0, self.burst - ahead / self.interval))

    def head(self) -> W | None:
        """The longest waiter, or ``None``."""
        for waiter in self._waiting:
            return waiter
        return None

    def is_queued(self, waiter: W) -> bool:
        return waiter in self._waiting

    def next_due(self, now: float) -> float:
        """Seconds from ``now`` until the next token comes due (0 when one is available)."""
        full_at = self.full_at if self.full_at > now else now
        return max(0.0, full_at - now - self._limit + self._eps)

    def head_wake_at(self) -> float:
        """The clock time from which :meth:`serve` hands the head of the queue its token:
        when the longest waiter should wake. (Half a rounding tolerance early, so a wake-up at
        exactly this time always finds the token due.)"""
        return self.full_at - self._limit + self._eps / 2

    def due_in(self, now: float) -> float:
        """Seconds from ``now`` until a caller arriving now would get a token: after every
        queued waiter has had one (0 when one is available to it at once)."""
        # ``next_due`` inlined: a refused caller's hint is on the rejection path of every call
        # a saturated limiter turns away
        full_at = self.full_at if self.full_at > now else now
        wait = full_at - now - self._limit + self._eps
        if wait < 0.0:
            wait = 0.0
        wait += len(self._waiting) * self.interval
        return 0.0 if wait <= self._eps else wait

    # -- the hot operation ------------------------------------------------------------------
    def try_acquire(self, now: float) -> bool:
        """Take a token if one is available and nobody waits for it (the happy path). No call
        and no backward jump in here: see the module docstring."""
        if self._waiting:
            return False
        full_at = self.full_at
        if full_at < now:
            full_at = now
        if full_at - now > self._limit:
            return False
        self.full_at = full_at + self.interval
        return True

    # -- waiting -----------------------------------------------------------------------------
    def arrive(self, waiter: W, now: float, max_wait: float) -> float:
        """A caller that may wait up to ``max_wait`` seconds arrives.

        Returns :data:`ADMITTED` (a token was taken), else the seconds until its token is due:
        when that is at most ``max_wait`` the waiter is queued (it must wait until
        :meth:`serve` grants it), otherwise it is not (the caller is turned away and the value
        is its ``retry_after``). Tokens due to earlier waiters are served first."""
        waiting = self._waiting
        if waiter in waiting:
            raise ValueError(f"waiter {waiter!r} is already queued")
        if self.full_at < now:
            self.full_at = now  # a full bucket, dated now: tokens are handed out from here on
        waiting[waiter] = None  # first: from now on a lock-free newcomer defers to the queue
        self.serve(now)
        if waiter not in waiting:  # a token was due for it at once: it was the last served
            self.granted.pop()
            return ADMITTED
        wait = self.next_due(now) + (len(waiting) - 1) * self.interval
        if wait > max_wait + self._eps:
            del waiting[waiter]  # its token would come too late: it does not wait for it
        return wait

    def take(self, now: float) -> float:
        """A caller that will not wait: :data:`ADMITTED` (it took a token), else the seconds
        until a token would be free for it. Tokens due to waiters are served first."""
        self.serve(now)
        if self.try_acquire(now):
            return ADMITTED
        return self.due_in(now)

    def serve(self, now: float) -> None:
        """Hand every token due by ``now`` to the longest waiters (appended to
        :attr:`granted`), each as of the instant its token came due."""
        # No ``max(full_at, now)`` here, unlike ``try_acquire``: while anyone waits, the
        # bucket never reaches ``burst``, so each token goes out at the instant it came due
        # (``full_at - (burst - 1) * interval``), however late we look.
        waiting = self._waiting
        while waiting:
            if self.full_at - now > self._limit:
                return
            self.full_at += self.interval  # before the pop: see the module docstring
            waiter, _ = waiting.popitem(last=False)
            self.granted.append(waiter)

    def take_granted(self) -> list[W]:
        """The waiters granted since the last call (the front end wakes them)."""
        granted = self.granted
        if granted:
            self.granted = []
        return granted

    def cancel(self, waiter: W) -> bool:
        """A waiter gives up. ``True``: it was still queued and is now gone. ``False``: a token
        was already handed to it; it owns that token and must use it or :meth:`refund` it."""
        try:
            del self._waiting[waiter]
        except KeyError:
            return False
        return True

    def refund(self, now: float) -> None:
        """Give back one token handed to a waiter that could not use it: it goes to the next
        waiter (see :meth:`serve`), or back into the bucket, which never exceeds ``burst``."""
        self.full_at -= self.interval
        self.serve(now)
