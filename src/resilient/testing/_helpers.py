"""The implementation of :mod:`resilient.testing` (see its docstring); the pytest plugin
(:mod:`resilient.testing.pytest_plugin`) imports it directly."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .. import _clock, _sleeping

if TYPE_CHECKING:
    from .._registry import Registry
    from ..breaker import CircuitBreaker

__all__ = [
    "BreakerControl",
    "FakeClock",
    "FakeTimer",
    "breaker_control",
    "fake_clock",
    "force_open",
    "instant_retries",
    "isolated_registry",
    "reset_breaker",
]


class FakeTimer:
    """A callback scheduled with :meth:`FakeClock.call_at`; :meth:`cancel` stops it."""

    __slots__ = ("callback", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        """Make sure the callback never runs (no effect once it ran)."""
        self.callback = None

    @property
    def cancelled(self) -> bool:
        """True once cancelled or fired."""
        return self.callback is None


class FakeClock:
    """A monotonic clock that only moves when told to. Thread-safe.

    Call it to read the time (it is a ``Callable[[], float]`` like ``time.monotonic``);
    :meth:`sleep` advances it, so it doubles as an injected ``sleep`` for ``Retry``.

    It also keeps timers (:meth:`call_at`): a policy given this clock, such as ``Hedge``,
    waits for its deadlines on it, so a test moves time with :meth:`advance` and the policy
    acts exactly then — no real waiting, no race with the machine's speed.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._sequence = itertools.count()

    def __call__(self) -> float:
        return self._now

    def now(self) -> float:
        """The current fake time in seconds."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (must be >= 0) and return the new time."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        with self._lock:
            self._now += seconds
            now = self._now
        self._fire_due()
        return now

    def sleep(self, seconds: float) -> None:
        """Record a sleep of ``seconds`` and advance the clock by it, without waiting."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)
        self._fire_due()

    def call_at(self, when: float, callback: Callable[[], object]) -> FakeTimer:
        """Run ``callback()`` once the clock reads ``when`` or later: in the thread that
        advances it there, or at once (in this thread) if that time has already come.
        Callbacks run in time order, outside the clock's lock."""
        timer = FakeTimer(float(when), callback)
        with self._lock:
            heapq.heappush(self._timers, (timer.when, next(self._sequence), timer))
        self._fire_due()
        return timer

    @property
    def pending(self) -> int:
        """How many timers are waiting for a later time (cancelled ones excluded)."""
        with self._lock:
            return sum(1 for _, _, t in self._timers if not t.cancelled)

    def _fire_due(self) -> None:
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > self._now:
                    return
                timer = heapq.heappop(self._timers)[2]
                callback, timer.callback = timer.callback, None
            if callback is not None:
                callback()

    async def asleep(self, seconds: float) -> None:
        """Async twin of :meth:`sleep` (no real waiting)."""
        self.sleep(seconds)


@contextmanager
def instant_retries() -> Iterator[None]:
    """Inside this block every retry wait of every policy returns at once (process-wide)."""
    _sleeping.set_instant(True)
    try:
        yield
    finally:
        _sleeping.set_instant(False)


@contextmanager
def fake_clock(clock: FakeClock | None = None) -> Iterator[FakeClock]:
    """Inside this block, every policy built without an explicit ``clock=`` uses ``clock`` (a
    new :class:`FakeClock` at 0.0 when not given), and every wait the library starts on its
    own (retry backoff) advances it instead of sleeping: ``clock.sleeps`` lists the waits.

    The clock is chosen when a policy is built, so policies that already exist (created at
    import time, say) keep the real one; build the policy inside the block or pass
    ``clock=``. Named policies first registered inside the block hold the fake clock, so the
    default registry forgets them on exit (the next test gets a fresh one with the real clock).
    Process-wide like :func:`instant_retries`; with both active, waits are zero-length and the
    clock does not move.
    """
    from .._registry import registry

    clock = FakeClock() if clock is None else clock
    snapshot = registry._snapshot()
    previous = _clock.install(clock)
    try:
        yield clock
    finally:
        _clock.install(previous)
        registry._restore(snapshot)


def _reset_stateful(registry: Registry) -> None:
    """Every named policy that keeps state between calls (a ``reset()`` method, like a
    breaker's) back to its initial state."""
    for policy in registry:
        reset = getattr(policy, "reset", None)
        if callable(reset):
            reset()


@contextmanager
def isolated_registry(registry: Registry | None = None) -> Iterator[Registry]:
    """A test's own named policies and telemetry, inside this block.

    The registry (``rs.registry`` unless ``registry`` is given) stays the same object, so code
    that reads ``rs.registry``, calls ``rs.policy(...)`` or kept a reference to the registry
    at import time all see the isolated contents. Policies registered before the block stay
    registered (a function decorated at import time holds those very instances, and a test
    that opens ``payments`` must open the breaker that function uses) but are reset to a clean
    state (breakers CLOSED with an empty window) when the block starts and again when it ends;
    policies registered inside the block are forgotten on exit, as is anything
    ``registry.clear()`` did inside it.

    Telemetry starts fresh: no listeners, metrics into a new ``prometheus_client``
    ``CollectorRegistry`` (so counts do not pile up in the global one); the metrics/tracing
    switches and the tracer provider stay as configured. On exit the previous listeners,
    registry and settings come back, whatever the test configured meanwhile.
    """
    from prometheus_client import CollectorRegistry

    from .._registry import registry as default_registry
    from ..telemetry import _hub, _prometheus

    reg = default_registry if registry is None else registry
    snapshot = reg._snapshot()
    _reset_stateful(reg)  # before the switch: the session's own telemetry sees the reset
    metrics = CollectorRegistry()
    saved = _hub.isolate(metrics)
    try:
        yield reg
    finally:
        reg._restore(snapshot)
        _hub.restore_state(saved)
        _prometheus.forget_families(metrics)
        _reset_stateful(reg)


class BreakerControl:
    """Force circuit breakers open or closed for a test, and put back every breaker it
    touched when the test ends (:meth:`restore`).

    Breakers are named (looked up in the registry, ``rs.registry`` by default, at the moment
    of the call, so an :func:`isolated_registry` is honoured) or given as instances. A name
    nobody registered raises ``LookupError`` listing the registered breakers: forcing open a
    breaker the code under test never uses would make a test pass for the wrong reason.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self._registry = registry
        self._touched: dict[int, CircuitBreaker] = {}

    def __repr__(self) -> str:
        names = sorted(b.name for b in self._touched.values())
        return f"<BreakerControl touched={names!r}>"

    def breaker(self, target: str | CircuitBreaker) -> CircuitBreaker:
        """The breaker ``target`` names (or ``target`` itself), without changing it."""
        if isinstance(target, str):
            return _named_breaker(target, self._registry)
        from ..breaker import CircuitBreaker

        if not isinstance(target, CircuitBreaker):
            raise TypeError(f"target must be a breaker name or a CircuitBreaker, got {target!r}")
        return target

    def _touch(self, target: str | CircuitBreaker) -> CircuitBreaker:
        found = self.breaker(target)
        self._touched.setdefault(id(found), found)
        return found

    def force_open(self, target: str | CircuitBreaker) -> CircuitBreaker:
        """Reject every call through the breaker (``CircuitOpenError``, state FORCED_OPEN):
        how the code behaves when that dependency is cut off. Returns the breaker."""
        found = self._touch(target)
        found.force_open()
        return found

    def force_closed(self, target: str | CircuitBreaker) -> CircuitBreaker:
        """Admit every call and record nothing (state DISABLED): the breaker stays out of the
        way however many calls fail, so a test can drive failures through it. Returns the
        breaker."""
        found = self._touch(target)
        found.disable()
        return found

    def reset(self, target: str | CircuitBreaker) -> CircuitBreaker:
        """Back to CLOSED with an empty window, e.g. after a test opened it by failing calls.
        Returns the breaker."""
        found = self._touch(target)
        found.reset()
        return found

    def restore(self) -> None:
        """Reset every breaker this control forced or reset (CLOSED, empty window)."""
        touched, self._touched = self._touched, {}
        for found in touched.values():
            found.reset()


@contextmanager
def breaker_control(registry: Registry | None = None) -> Iterator[BreakerControl]:
    """A :class:`BreakerControl` whose breakers are reset when the block ends."""
    control = BreakerControl(registry)
    try:
        yield control
    finally:
        control.restore()


def _named_breaker(name: str, registry: Registry | None) -> CircuitBreaker:
    from .._registry import registry as default_registry
    from ..breaker import CircuitBreaker

    reg = default_registry if registry is None else registry
    found = reg.get(name, CircuitBreaker.kind)
    if not isinstance(found, CircuitBreaker):
        known = sorted(p.name for p in reg if isinstance(p, CircuitBreaker))
        raise LookupError(
            f"no breaker named {name!r} in the registry (registered breakers: {known or 'none'}); "
            "create it first, e.g. by importing the code that uses rs.policy/rs.registry.breaker"
        )
    return found


def force_open(name: str, *, registry: Registry | None = None) -> CircuitBreaker:
    """Force the registry's breaker named ``name`` open, so a test can check how the code
    behaves when that dependency is cut off (every call fails fast with CircuitOpenError).
    Undo with :func:`reset_breaker`. Returns the breaker."""
    breaker = _named_breaker(name, registry)
    breaker.force_open()
    return breaker


def reset_breaker(name: str, *, registry: Registry | None = None) -> CircuitBreaker:
    """Reset the registry's breaker named ``name`` to CLOSED with an empty window, so one
    test's failures do not leak into the next. Returns the breaker."""
    breaker = _named_breaker(name, registry)
    breaker.reset()
    return breaker
