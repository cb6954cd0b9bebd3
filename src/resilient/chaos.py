"""``rs.chaos``: inject faults, latency and fake results on purpose, to rehearse failure.

A resilience pipeline that has never seen its dependency fail is untested. Chaos policies,
placed innermost in a pipeline (``rs.policy("payments", "retry", "breaker",
"chaos_fault")``), make a share of calls fail, slow down or answer with a canned value, in
staging or in a controlled slice of production, and can be switched on and off while the
service runs:

* :class:`Fault` raises ``error`` instead of calling the function;
* :class:`Latency` waits ``seconds`` before calling it;
* :class:`Result` answers ``value`` instead of calling it.

Each takes ``rate`` (the share of calls hit, 0..1), ``seed`` and ``enabled``. **Repeatable**:
the ``n``-th call through a policy is hit or not as a pure function of the seed and ``n``
(:mod:`resilient._core.chaos`), so the same seed gives the same positions for the same
sequence of calls, from any mix of threads and tasks. **Switchable at run time**: set
``policy.enabled`` (or ``policy.rate``), call :func:`set_enabled` for every chaos policy of a
name, or start the service with ``RESILIENT__<NAME>__CHAOS_FAULT__ENABLED=true`` (and
``..._RATE``, ``..._SEED``, ``..._ERROR``). A switched-off policy only checks one attribute
and calls straight through: it records no metric, no span, no event. **Told apart**: an
injected error is marked (:func:`is_injected`) and every policy that records it — the chaos
policy, the retry and the breaker around it — labels the outcome ``injected`` instead of
``failure``, so a dashboard shows a rehearsal, not an incident.
"""

from __future__ import annotations

import random
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

from . import _hot_paths, _sleeping
from . import _validate as v
from ._core.chaos import ChaosDice
from ._policy import Policy
from ._types import Args, AsyncFn, Fn, Kwargs
from .errors import INJECTED
from .telemetry._events import ChaosInjected
from .telemetry._hub import Listener

__all__ = ["ChaosPolicy", "Fault", "Latency", "Result", "is_injected", "policies", "set_enabled"]

_RATE = v.fraction("rate", zero=True)
_SEED = v.seed()
_ENABLED = v.flag("enabled")
_ERROR = v.error_factory("error")
_SECONDS = v.duration("seconds")
_VALUE = v.json_value("value")
_SLEEP = v.callback("sleep")

_live: weakref.WeakSet[ChaosPolicy] = weakref.WeakSet()
_live_lock = threading.Lock()

_policy_execute = _hot_paths.policy_execute
_policy_aexecute = _hot_paths.policy_aexecute


def is_injected(error: BaseException) -> bool:
    """True when ``error`` was raised on purpose by a chaos :class:`Fault`."""
    return getattr(error, INJECTED, False) is True


def policies(name: str | None = None) -> list[ChaosPolicy]:
    """Every live chaos policy (of ``name``, when given), oldest first. Live means still
    referenced (by a decorated function, a pipeline, the registry): the list holds policies
    weakly, so it never keeps a discarded one alive."""
    with _live_lock:
        found = sorted(_live, key=lambda p: p._serial)
    return [p for p in found if name is None or p.name == name]


def set_enabled(enabled: bool, *, name: str | None = None) -> list[ChaosPolicy]:
    """Switch every live chaos policy named ``name`` (every one, without a name) on or off
    at once, e.g. from an admin endpoint; returns the policies switched. What ``enabled``
    on each of them does, see :class:`ChaosPolicy`."""
    enabled = _ENABLED(enabled)
    found = policies(name)
    for policy in found:
        policy.enabled = enabled
    return found


_serials = iter(range(1 << 62))


class ChaosPolicy(Policy):
    """What every chaos policy shares: ``rate``, ``seed``, ``enabled`` and the numbering of
    calls. Not built directly: use :class:`Fault`, :class:`Latency` or :class:`Result`."""

    kind: ClassVar[str] = "chaos"
    _own_wrappers = True
    injection: ClassVar[str] = ""

    def __init__(
        self,
        name: str | None,
        *,
        rate: float,
        seed: int | None,
        enabled: bool,
        on_event: Listener | None,
    ) -> None:
        rate = _RATE(rate)
        seed = _SEED(seed)
        enabled = _ENABLED(enabled)
        super().__init__(name, on_event=on_event)
        if seed is None:
            seed = random.SystemRandom().getrandbits(64)
        self._dice = ChaosDice(seed, rate)
        self._calls = 0
        self._lock = threading.Lock()
        self._on = enabled
        with _live_lock:
            self._serial = next(_serials)
            _live.add(self)

    def __repr__(self) -> str:
        state = "on" if self._on else "off"
        return f"<{type(self).__name__} {self.name!r} rate={self.rate:g} seed={self.seed} {state}>"

    # -- run-time switches ------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """Whether the policy injects anything. Off, it calls straight through and records
        nothing. Settable at any time, from any thread."""
        return self._on

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._on = _ENABLED(value)

    @property
    def settings(self) -> types.MappingProxyType[str, Any]:
        """The effective configuration, read-only, as of now: ``rate`` and ``enabled`` are
        read live (they change at run time), the rest as built."""
        return types.MappingProxyType(
            {**self._settings, "rate": self.rate, "enabled": self._on, "seed": self.seed}
        )

    @property
    def rate(self) -> float:
        """The share of calls hit (0..1); settable at run time."""
        return self._dice.rate

    @rate.setter
    def rate(self, value: float) -> None:
        self._dice.set_rate(_RATE(value))

    @property
    def seed(self) -> int:
        """The seed of the hit sequence (a random one when none was given: log it to replay
        a run)."""
        return self._dice.seed

    @property
    def calls(self) -> int:
        """Calls numbered so far (calls made while enabled)."""
        return self._calls

    def _hit(self) -> bool:
        """Number this call and say whether it is hit."""
        lock = self._lock
        lock.acquire()
        n = self._calls
        self._calls = n + 1
        lock.release()
        return self._dice.hits(n)

    def _injected(self, error: BaseException | None = None, seconds: float | None = None) -> None:
        tel = self._tel
        if tel.detail and tel.wants_events():
            tel.emit(
                ChaosInjected(
                    policy=self.kind,
                    name=self.name,
                    injection=self.injection,
                    error=error,
                    seconds=seconds,
                )
            )

    # -- the switched-off path: one attribute read, then the call --------------------------------
    def _sync_wrapper(self, fn: Fn) -> Callable[..., Any]:
        policy = self

        def chaos_wrapper(*args: Any, **kwargs: Any) -> Any:
            if policy._on:
                return _policy_execute(policy, fn, args, kwargs)
            return fn(*args, **kwargs)

        return chaos_wrapper

    def _async_wrapper(self, fn: AsyncFn) -> Callable[..., Any]:
        policy = self

        async def chaos_async_wrapper(*args: Any, **kwargs: Any) -> Any:
            if policy._on:
                return await _policy_aexecute(policy, fn, args, kwargs)
            return await fn(*args, **kwargs)

        return chaos_async_wrapper

    def _execute(self, fn: Fn, args: Args, kwargs: Kwargs) -> Any:
        if self._on:
            return _policy_execute(self, fn, args, kwargs)
        return fn(*args, **kwargs)

    async def _aexecute(self, fn: AsyncFn, args: Args, kwargs: Kwargs) -> Any:
        if self._on:
            return await _policy_aexecute(self, fn, args, kwargs)
        return await fn(*args, **kwargs)


class Fault(ChaosPolicy):
    """Raise ``error`` instead of calling the function, for a ``rate`` share of calls.

    ``error``: an exception instance (copied for each raise), an exception class (called
    with a message naming the policy) or a callable returning an exception. The raised error
    is marked: :func:`is_injected` is true for it and its outcome is ``injected``.
    """

    kind = "chaos_fault"
    options = v.Options(_RATE, _ERROR, _SEED, _ENABLED, v.ON_EVENT)
    injection = "fault"

    def __init__(
        self,
        name: str | None = None,
        *,
        rate: float,
        error: BaseException | type[BaseException] | Callable[[], BaseException],
        seed: int | None = None,
        enabled: bool = True,
        on_event: Listener | None = None,
    ) -> None:
        self._make_error = _ERROR(error)
        super().__init__(name, rate=rate, seed=seed, enabled=enabled, on_event=on_event)
        self.error: Any = error
        """The ``error`` as given."""
        self._settle(error=error, on_event=on_event)

    def _fault(self) -> Exception:
        error = self._make_error(f"chaos: fault injected by {self.name!r}")
        setattr(error, INJECTED, True)
        self._injected(error=error)
        return error

    def _call(self, fn: Fn, args: Args, kwargs: Kwargs) -> Any:
        if self._on and self._hit():
            raise self._fault()
        return fn(*args, **kwargs)

    async def _acall(self, fn: AsyncFn, args: Args, kwargs: Kwargs) -> Any:
        if self._on and self._hit():
            raise self._fault()
        return await fn(*args, **kwargs)


class Latency(ChaosPolicy):
    """Wait ``seconds`` before calling the function, for a ``rate`` share of calls.

    The wait is real (``time.sleep`` / ``anyio.sleep``, cancellable in async code) unless
    ``sleep`` is given (a sync callable, or an async one for async calls, such as a fake
    clock's ``sleep``/``asleep``); ``resilient.testing.instant_retries()`` makes it instant.
    A delayed call that then succeeds is recorded with outcome ``injected``.
    """

    kind = "chaos_latency"
    options = v.Options(_RATE, _SECONDS, _SEED, _ENABLED, _SLEEP, v.ON_EVENT)
    injection = "latency"
    _notes_outcome = True

    def __init__(
        self,
        name: str | None = None,
        *,
        rate: float,
        seconds: float,
        seed: int | None = None,
        enabled: bool = True,
        sleep: Callable[[float], Any] | None = None,
        on_event: Listener | None = None,
    ) -> None:
        self._seconds: float = _SECONDS(seconds)
        self._sleep: Callable[[float], Any] | None = _SLEEP(sleep)
        super().__init__(name, rate=rate, seed=seed, enabled=enabled, on_event=on_event)
        if sleep is not None and v.is_async_callable(sleep):
            self._sync_refusal = (
                f"Latency {self.name!r} has an async sleep= ({sleep!r}) and cannot delay a "
                "sync call: a sync caller cannot await it; pass a sync sleep or call it from "
                "async code"
            )
        self._settle(seconds=self._seconds, sleep=sleep, on_event=on_event)

    @property
    def seconds(self) -> float:
        """The injected wait, in seconds; settable at run time (checked like the option)."""
        return self._seconds

    @seconds.setter
    def seconds(self, value: float) -> None:
        self._seconds = _SECONDS(value)

    @property
    def settings(self) -> types.MappingProxyType[str, Any]:
        """As :attr:`ChaosPolicy.settings`, with ``seconds`` read live too."""
        return types.MappingProxyType({**super().settings, "seconds": self._seconds})

    def _call(self, fn: Fn, args: Args, kwargs: Kwargs) -> Any:
        if not (self._on and self._hit()):
            return fn(*args, **kwargs)
        seconds = self._seconds
        self._injected(seconds=seconds)
        sleep = self._sleep
        if sleep is None:
            _sleeping.sync_sleep(seconds)
        else:
            v.refuse_awaitable(sleep(seconds), f"Latency {self.name!r} sleep=")
        result = fn(*args, **kwargs)
        self._note_outcome("injected")
        return result

    async def _acall(self, fn: AsyncFn, args: Args, kwargs: Kwargs) -> Any:
        if not (self._on and self._hit()):
            return await fn(*args, **kwargs)
        seconds = self._seconds
        self._injected(seconds=seconds)
        sleep = self._sleep
        if sleep is None:
            await _sleeping.async_sleep(seconds)
        else:
            outcome = sleep(seconds)
            if v.isawaitable(outcome):
                await outcome
        result = await fn(*args, **kwargs)
        self._note_outcome("injected")
        return result


class Result(ChaosPolicy):
    """Answer ``value`` instead of calling the function, for a ``rate`` share of calls
    (a canned error response, an empty list, a stale record); recorded as ``injected``."""

    kind = "chaos_result"
    options = v.Options(_RATE, _VALUE, _SEED, _ENABLED, v.ON_EVENT)
    injection = "result"
    _notes_outcome = True

    def __init__(
        self,
        name: str | None = None,
        *,
        rate: float,
        value: Any,
        seed: int | None = None,
        enabled: bool = True,
        on_event: Listener | None = None,
    ) -> None:
        self.value: Any = _VALUE(value)
        """The injected answer (the same object every time: don't mutate it)."""
        super().__init__(name, rate=rate, seed=seed, enabled=enabled, on_event=on_event)
        self._settle(value=value, on_event=on_event)

    def _answer(self) -> Any:
        self._injected()
        self._note_outcome("injected")
        return self.value

    def _call(self, fn: Fn, args: Args, kwargs: Kwargs) -> Any:
        if self._on and self._hit():
            return self._answer()
        return fn(*args, **kwargs)

    async def _acall(self, fn: AsyncFn, args: Args, kwargs: Kwargs) -> Any:
        if self._on and self._hit():
            return self._answer()
        return await fn(*args, **kwargs)
