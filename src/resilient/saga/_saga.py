"""The :class:`Saga` class: what users define and call, on top of the engine's parts.

A saga is built from steps (``_definition.py``); ``run``/``run_sync`` create its log in the
store and drive the sans-IO script (``_protocol.py``) with the async or the blocking driver
(``_drivers.py``, leases in ``_lease.py``); ``recover`` finishes sagas whose process died
(``_recovery.py``); ``saga.admin`` acts for an operator (``_admin.py``). This module holds the
options (with their environment overrides), idempotent starts on ``saga_id``, shutdown, the
recovery loop that also hosts detached runs, and the default compensation policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar, cast, overload

import anyio
import anyio.abc
import anyio.lowlevel

from .._config_parse import config_error, parse_duration
from .._policy import Policy
from ..errors import IdempotencyConflict, SagaStoreUnavailable, UnknownSagaVersion
from ..telemetry import Listener
from ._admin import SagaAdmin
from ._compensation import _CompensationRetry
from ._crash import ARMED, ENV_ARMED, CrashPoint, maybe_crash
from ._definition import Step, _Definition, _StepDecorator, _Steps
from ._drivers import _AsyncDriver, _SyncDriver
from ._errors import SagaInterrupted
from ._host import Stoppable
from ._memory import InMemorySagaStore
from ._model import (
    LogKind,
    NewSaga,
    SagaContext,
    SagaLogEvent,
    SagaRecord,
    SagaResult,
    digest,
    encode,
)
from ._protocol import _SCALARS, _Run, _unwrap
from ._recovery import RecoveryReport, join, perform_async, perform_sync, recovery_pass
from ._replay import _NOVALUE
from ._store import BlockingSagaStore, SagaStore, as_blocking
from ._telemetry import SagaTelemetry, traceparent_of
from ._url import store_from_env

__all__ = ["Saga"]

_log = logging.getLogger("resilient.saga")

T = TypeVar("T")  # the result a step records (awaited)
_ON_RECOVERY = ("resume", "compensate")


# -- options ------------------------------------------------------------------------------------
_REGISTRY: weakref.WeakSet[Saga] = weakref.WeakSet()
_REGISTRY_LOCK = threading.Lock()


def _default_node_id() -> str:
    env = os.environ.get("RESILIENT_SAGA_NODE_ID")
    base = env or f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}:{uuid.uuid4().hex[:8]}"


ENV_LEASE_SECONDS = "RESILIENT_SAGA_LEASE_SECONDS"
ENV_RECOVERY_INTERVAL = "RESILIENT_SAGA_RECOVERY_INTERVAL"


def _env_seconds(variable: str, code_value: float) -> float:
    """``variable`` (a duration: ``45``, ``45s``, ``500ms``, ``2m``) when set, else the value
    given in code: an operator can retune every saga of a deployment without a code change.
    A bad value raises ConfigError naming the variable and the value, at Saga creation."""
    text = os.environ.get(variable)
    if text is None or not text.strip():
        return code_value
    seconds = parse_duration(text, variable)
    if seconds <= 0:
        raise config_error(variable, text, "a duration > 0 such as 250ms, 2s, 1.5m or 30")
    return seconds


def _check_positive(name: str, value: object, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


class Saga:
    """A saga definition: ordered steps with compensations, run durably through a store.

    Steps run in definition order; a failed step rolls back every started step in reverse
    start order. The log in ``store`` is written before and after every step, so ``recover()``
    (in this or another process) can finish a saga whose process died. See ``docs/saga.md``.
    """

    def __init__(
        self,
        name: str,
        *,
        store: SagaStore | None = None,
        version: int = 1,
        deadline: float | None = None,
        on_recovery: str = "resume",
        lease: float = 30.0,
        max_recoveries: int = 5,
        clock: Callable[[], float] | None = None,
        node_id: str | None = None,
        on_event: Listener | None = None,
        compensation_policy: Policy | None = None,
        forward_retry_delay: float = 1.0,
        forward_retry_max_delay: float = 60.0,
        suspend_after: float = 30.0,
        continue_on_compensation_error: bool = False,
        recovery_interval: float = 10.0,
    ) -> None:
        if not isinstance(name, str) or not name.strip() or "@" in name:
            raise ValueError(f"name must be a non-empty string without '@', got {name!r}")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"version must be an int >= 1, got {version!r}")
        if on_recovery not in _ON_RECOVERY:
            raise ValueError(f"on_recovery must be 'resume' or 'compensate', got {on_recovery!r}")
        if isinstance(max_recoveries, bool) or not isinstance(max_recoveries, int):
            raise TypeError(f"max_recoveries must be an int, got {max_recoveries!r}")
        if max_recoveries < 1:
            raise ValueError(f"max_recoveries must be >= 1, got {max_recoveries!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        if compensation_policy is not None and not isinstance(compensation_policy, Policy):
            raise TypeError(f"compensation_policy must be a Policy, got {compensation_policy!r}")
        if not isinstance(continue_on_compensation_error, bool):
            raise TypeError(
                "continue_on_compensation_error must be a bool, "
                f"got {continue_on_compensation_error!r}"
            )
        lease = _env_seconds(ENV_LEASE_SECONDS, lease)
        recovery_interval = _env_seconds(ENV_RECOVERY_INTERVAL, recovery_interval)
        if store is None:
            store = store_from_env() or InMemorySagaStore()
        elif not isinstance(store, (BlockingSagaStore, SagaStore)):
            raise TypeError(f"store must be a SagaStore, got {store!r}")
        self.name = name
        self.version = version
        self.store: SagaStore = store
        self._blocking_store: Any = as_blocking(store)
        self.deadline = _check_positive("deadline", deadline, allow_none=True)
        self.on_recovery = on_recovery
        self.lease = cast(float, _check_positive("lease", lease))
        self.suspend_after = cast(float, _check_positive("suspend_after", suspend_after))
        self.recovery_interval = cast(
            float, _check_positive("recovery_interval", recovery_interval)
        )
        self.continue_on_compensation_error = continue_on_compensation_error
        self.max_recoveries = max_recoveries
        self._forward_base = cast(
            float, _check_positive("forward_retry_delay", forward_retry_delay)
        )
        self._forward_cap = cast(
            float, _check_positive("forward_retry_max_delay", forward_retry_max_delay)
        )
        self._clock: Callable[[], float] = clock or time.time
        self._real_clock = clock is None
        self.node_id = node_id or _default_node_id()
        self._tel = SagaTelemetry(name, on_event)
        self._steps = _Steps(name)
        self._compensation_policy: Policy = compensation_policy or _CompensationRetry(self)
        self._drivers: set[Stoppable] = set()
        self._stopping = False
        self._host: _LoopHost | None = None
        self.admin = SagaAdmin(self)
        with _REGISTRY_LOCK:
            _REGISTRY.add(self)

    def __repr__(self) -> str:
        return f"<Saga {self.definition!r} steps={list(self.steps)}>"

    @property
    def definition(self) -> str:
        """``name@version``: what the store records, and what recovery looks up."""
        return f"{self.name}@{self.version}"

    @property
    def steps(self) -> tuple[str, ...]:
        """The step names, in order."""
        return self._steps.names()

    # -- definition -----------------------------------------------------------------------------
    @overload
    def step(
        self,
        fn: Callable[[SagaContext], Coroutine[Any, Any, T]],
        /,
        *,
        name: str | None = None,
        policy: Policy | None = None,
        pivot: bool = False,
        retriable: bool = False,
        in_doubt: str = "retry",
    ) -> Step[Coroutine[Any, Any, T], T]: ...

    @overload
    def step(
        self,
        fn: Callable[[SagaContext], T],
        /,
        *,
        name: str | None = None,
        policy: Policy | None = None,
        pivot: bool = False,
        retriable: bool = False,
        in_doubt: str = "retry",
    ) -> Step[T, T]: ...

    @overload
    def step(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        policy: Policy | None = None,
        pivot: bool = False,
        retriable: bool = False,
        in_doubt: str = "retry",
    ) -> _StepDecorator: ...

    def step(
        self,
        fn: Callable[[SagaContext], Any] | None = None,
        /,
        *,
        name: str | None = None,
        policy: Policy | None = None,
        pivot: bool = False,
        retriable: bool = False,
        in_doubt: str = "retry",
    ) -> Step[Any, Any] | _StepDecorator:
        """Decorator adding the next step ``fn(ctx)`` (``def`` or ``async def``), bare
        (``@saga.step``) or with options (``@saga.step(policy=...)``).

        ``policy`` runs it (e.g. ``rs.Retry``); ``pivot=True`` marks the point of no return;
        ``retriable=True`` marks a step after the pivot (retried until it succeeds, never
        compensated); ``in_doubt`` says what recovery does when the step started but its
        outcome was never recorded: "retry" (same idempotency key), "compensate", "escalate"
        (STUCK: for a side effect that cannot be deduplicated).

        The returned :class:`Step` is typed: ``Step[R, T]`` where ``T`` is the step's (awaited)
        result, so ``@step.compensate`` checks that the compensation accepts ``T | None``.
        """

        def add(f: Callable[[SagaContext], Any]) -> Step[Any, Any]:
            return self._steps.step(f, name, policy, pivot, retriable, in_doubt)

        if fn is not None:
            return add(fn)
        return cast(_StepDecorator, add)

    def add_step(
        self,
        name: str,
        fn: Callable[..., Any],
        compensate: Callable[..., Any] | None = None,
        policy: Policy | None = None,
        pivot: bool = False,
        retriable: bool = False,
        *,
        compensate_policy: Policy | None = None,
        in_doubt: str = "retry",
    ) -> Saga:
        """Builder form of :meth:`step` (returns the saga, so calls chain)."""
        if not callable(fn):
            raise TypeError(f"fn of step {name!r} must be callable, got {fn!r}")
        sdef = self._steps.add(name, fn, policy, pivot, retriable, in_doubt)
        if compensate is not None:
            try:
                self._steps.set_compensation(sdef, compensate, compensate_policy)
            except BaseException:
                self._steps.remove(sdef)
                raise
        elif compensate_policy is not None:
            raise ValueError(f"step {name!r}: compensate_policy given without compensate")
        return self

    def _definition(self) -> _Definition:
        return self._steps.freeze()

    def _forward_delay(self, rounds: int) -> float:
        return float(min(self._forward_cap, self._forward_base * (2**rounds)))

    def _count_stale(self) -> None:
        fams = self._tel.metrics()
        if fams is not None:
            fams.stale_epoch.inc()

    # -- shutdown ---------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop driving sagas in this process *without* rolling them back (a deploy is not an
        abort): in-flight runs stop at once, release their leases and raise
        :class:`SagaInterrupted`; their sagas stay unfinished for ``recover()`` elsewhere.
        Call it from the event loop's thread (async runs) or any thread (sync runs); new runs
        are interrupted as they start until :meth:`resume_after_shutdown`."""
        self._stopping = True
        for driver in list(self._drivers):
            driver.stop()

    async def aclose(self) -> None:
        """Async spelling of :meth:`shutdown` (lets the interrupted runs unwind first)."""
        self.shutdown()
        await anyio.lowlevel.checkpoint()

    def resume_after_shutdown(self) -> None:
        """Accept runs again after :meth:`shutdown` (tests, blue/green switches)."""
        self._stopping = False

    # -- starting ---------------------------------------------------------------------------------
    def _new(self, data: Any, saga_id: str | None) -> NewSaga:
        defn = self._definition()
        if saga_id is None:
            saga_id = uuid.uuid4().hex
        elif not isinstance(saga_id, str) or not saga_id:
            raise ValueError(f"saga_id must be a non-empty string, got {saga_id!r}")
        try:
            text = encode(data)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"saga {self.name!r}: data must be JSON-encodable (it is stored in the log), "
                f"got {type(data).__name__}: {exc}"
            ) from exc
        now = self._clock()
        trace_context = None
        tracer = self._tel.tracer()
        if tracer is not None:
            from opentelemetry import trace

            trace_context = traceparent_of(trace.get_current_span())
        created = SagaLogEvent(LogKind.SAGA_CREATED, None, None, "", now)
        events: tuple[SagaLogEvent, ...] = (created,)
        first = defn.steps[0]
        if first.policy is None and first.in_doubt == "retry":
            # One transaction instead of two: the first step's STARTED goes with the saga's
            # creation, because nothing can come between them (no policy that could refuse
            # or queue the call). A crash before the step runs leaves it "in doubt", which
            # for in_doubt="retry" means recovery invokes it with its key: what it would do
            # for a step never started.
            if ARMED or ENV_ARMED:
                maybe_crash(CrashPoint.BEFORE_STEP_STARTED, first.name)
            events += (SagaLogEvent(LogKind.STEP_STARTED, first.name, 1, "", now),)
        return NewSaga(
            id=saga_id,
            definition=self.definition,
            steps_hash=defn.hash,
            input=text,
            input_hash=digest(text),
            deadline=None if self.deadline is None else now + self.deadline,
            owner=self.node_id,
            lease_until=now + self.lease,
            now=now,
            trace_context=trace_context,
            events=events,
        )

    def _check_existing(self, new: NewSaga, rec: SagaRecord) -> None:
        if rec.input_hash != new.input_hash or rec.name != self.name:
            raise IdempotencyConflict(
                rec.id,
                f"saga id {rec.id!r} was already started ({rec.definition}) with different "
                "input data; use a new saga id or the same input",
            )

    def _check_driveable(self, rec: SagaRecord) -> Saga:
        """The registered definition able to drive ``rec``, or UnknownSagaVersion."""
        for saga in self._versions():
            if saga.definition == rec.definition:
                if saga._definition().hash != rec.steps_hash:
                    raise UnknownSagaVersion(
                        rec.id,
                        rec.definition,
                        f"saga {rec.id!r} was started under {rec.definition!r} with other "
                        f"steps than the registered {saga.steps}; bump the version when "
                        "changing the steps",
                    )
                return saga
        raise UnknownSagaVersion(rec.id, rec.definition)

    def _versions(self) -> list[Saga]:
        with _REGISTRY_LOCK:
            others = [
                s
                for s in _REGISTRY
                if s is not self and s.name == self.name and s.store is self.store
            ]
        return [self, *others]

    def _started(self, rec: SagaRecord, data: Any) -> _Run:
        """The run of a saga this call just created (``data``, the caller's input, is reused
        when JSON would give it back unchanged)."""
        run = _Run(self, rec, recovering=False, data=data if type(data) in _SCALARS else _NOVALUE)
        last = rec.events[-1]
        if last.kind == LogKind.STEP_STARTED:  # written with SAGA_CREATED (``_new``)
            run.announced = last.step
        if run.reporting:
            self._tel.emit("saga_started", run.id)
            fams = self._tel.metrics()
            if fams is not None:
                fams.started.labels(self.name).inc()
            if run.announced is not None:
                self._tel.emit("step_started", run.id, run.announced, 1)
        return run

    async def run(
        self, data: Any = None, saga_id: str | None = None, *, detach: bool = False
    ) -> SagaResult:
        """Run the saga to the end (asyncio or trio) and return its result.

        Idempotent on ``saga_id``: a finished saga returns its stored outcome without running
        a step; one running elsewhere is waited for (and taken over if its lease expires).
        Raises :class:`rs.SagaFailed` when it was rolled back, :class:`rs.SagaStuck` when it
        needs an operator, :class:`rs.IdempotencyConflict` for the same id with other data.
        A saga whose next retry is more than ``suspend_after`` away returns a result with
        status ``SUSPENDED``: the recovery loop finishes it when it is due.

        Cancelling the caller rolls the saga back (before its pivot). With ``detach=True``
        the saga runs in the task group of this saga's :meth:`run_recovery_loop` (which must
        be running in this event loop) and the caller only *waits* for it: cancelling the
        caller stops the waiting, not the saga.
        """
        if detach:
            return await self._run_detached(data, saga_id)
        return await self._run_async(data, saga_id, detached=False)

    async def _run_detached(self, data: Any, saga_id: str | None) -> SagaResult:
        host = self._host
        if host is None or host.thread != threading.get_ident():
            raise RuntimeError(
                f"saga {self.name!r}: run(detach=True) needs saga.run_recovery_loop() running "
                "in this event loop (its task group keeps detached sagas running)"
            )
        sid = uuid.uuid4().hex if saga_id is None else saga_id
        box: list[SagaResult | Exception] = []
        done = anyio.Event()

        async def drive() -> None:
            try:
                box.append(await self._run_async(data, sid, detached=True))
            except Exception as exc:  # the outcome is the waiting caller's (if still there)
                box.append(exc)
            finally:
                done.set()

        host.tg.start_soon(drive)
        await done.wait()
        if not box:  # pragma: no cover - the loop's scope cancelled the drive first
            raise SagaInterrupted(sid)
        outcome = box[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _run_async(self, data: Any, saga_id: str | None, *, detached: bool) -> SagaResult:
        new = self._new(data, saga_id)
        created = await self.store.create(new)
        if created.created:
            run = self._started(created.record, data)
            return _unwrap(await _AsyncDriver(run, detached).drive(run.script()), run.id)
        rec = created.record
        self._check_existing(new, rec)
        return _unwrap(await perform_async(self, join(self, rec, detached=detached)), rec.id)

    def run_sync(self, data: Any = None, saga_id: str | None = None) -> SagaResult:
        """Blocking twin of :meth:`run` for sync steps: needs no event loop (call it from any
        thread). Every step and compensation must be a plain ``def``."""
        frozen = self._steps.frozen
        if frozen is None or frozen.async_step is not None:
            self._require_sync("run_sync", "run")
        store = self._blocking_store
        new = self._new(data, saga_id)
        created = store.create_sync(new)
        if created.created:
            run = self._started(created.record, data)
            return _unwrap(_SyncDriver(run).drive(run.script()), run.id)
        rec = created.record
        self._check_existing(new, rec)
        return _unwrap(perform_sync(self, join(self, rec, sync=True)), rec.id)

    def _require_sync(self, what: str, instead: str, *, all_versions: bool = False) -> None:
        """Blocking drivers cannot await: refuse async steps up front (not mid-saga)."""
        for saga in self._versions() if all_versions else (self,):
            name = saga._definition().async_step
            if name is not None:
                raise TypeError(
                    f"saga {saga.definition!r}: {what} needs sync steps, but {name!r} "
                    f"is async; use `await ...{instead}(...)`"
                )

    # -- recovery ---------------------------------------------------------------------------------
    async def recover(self) -> RecoveryReport:
        """Finish every unfinished saga of this name whose lease expired (crashed process),
        in this or any registered version: "resume" continues forward (an in-doubt step is
        re-invoked with the same idempotency key), "compensate" rolls pre-pivot sagas back.
        Sagas of unregistered versions are skipped and left untouched."""
        return await perform_async(self, recovery_pass(self))

    def recover_sync(self) -> RecoveryReport:
        """Blocking twin of :meth:`recover` (sync steps, no event loop needed)."""
        self._require_sync("recover_sync", "recover", all_versions=True)
        return perform_sync(self, recovery_pass(self))

    # -- the recovery loop -----------------------------------------------------------------------
    def _interval(self, interval: float | None) -> float:
        if interval is None:
            return self.recovery_interval
        return cast(float, _check_positive("interval", interval))

    async def run_recovery_loop(self, *, interval: float | None = None) -> None:
        """Call :meth:`recover` every ``interval`` seconds (default ``recovery_interval``,
        ``RESILIENT_SAGA_RECOVERY_INTERVAL``) until cancelled or :meth:`shutdown`.

        Run it in a task group for the life of the service: it finishes sagas of crashed
        processes, resumes SUSPENDED sagas once due, and hosts ``run(detach=True)``. A pass
        that fails (the store is down) is logged and the loop carries on. Cancelling it does
        not roll back the sagas it drives: they stop, release their leases and stay
        unfinished for the next pass (here or in another process).

        While the store is unavailable (:class:`rs.SagaStoreUnavailable`), the loop logs one
        warning when the outage starts and one line when a pass succeeds again, nothing in
        between."""
        every = self._interval(interval)
        outage = _OutageLog(self.name, every)
        async with anyio.create_task_group() as tg:
            host = _LoopHost(tg, threading.get_ident())
            self._host = host
            try:
                while not self._stopping:
                    with outage.recovery_pass():
                        await self.recover()
                    asleep = getattr(self._clock, "asleep", None)
                    if asleep is not None:  # an injected (fake) clock decides how time passes
                        await asleep(every)
                        await anyio.lowlevel.checkpoint()
                    else:
                        await anyio.sleep(every)
            finally:
                if self._host is host:
                    self._host = None
                tg.cancel_scope.cancel()

    def run_recovery_loop_sync(
        self, *, interval: float | None = None, stop: threading.Event | None = None
    ) -> None:
        """Blocking twin of :meth:`run_recovery_loop` (sync steps; run it in a thread): calls
        :meth:`recover_sync` every ``interval`` seconds until ``stop`` is set or
        :meth:`shutdown` is called."""
        every = self._interval(interval)
        self._require_sync("run_recovery_loop_sync", "run_recovery_loop", all_versions=True)
        stop = stop if stop is not None else threading.Event()
        outage = _OutageLog(self.name, every)
        while not stop.is_set() and not self._stopping:
            with outage.recovery_pass():
                self.recover_sync()
            sleep = getattr(self._clock, "sleep", None)
            if sleep is not None:
                sleep(every)
            else:
                stop.wait(every)


class _OutageLog:
    """What a recovery loop says about a store outage: one warning when its first pass fails
    (no traceback: the store is down, there is no bug to see), one line when a pass succeeds
    again, and nothing for the passes in between."""

    def __init__(self, name: str, every: float) -> None:
        self.name = name
        self.every = every
        self.since: float | None = None  # time.monotonic() of the first failed pass
        self.passes = 0

    @contextlib.contextmanager
    def recovery_pass(self) -> Iterator[None]:
        """One pass of the loop: a failed pass is logged and the loop goes on (an outage
        once, see :meth:`failed`; any other error with its traceback)."""
        try:
            yield
        except SagaStoreUnavailable as exc:
            self.failed(exc)
        except Exception:
            _log.exception("saga %r: a recovery pass failed", self.name)
        else:
            self.passed()

    def failed(self, exc: SagaStoreUnavailable) -> None:
        self.passes += 1
        if self.since is not None:
            return
        self.since = time.monotonic()
        _log.warning(
            "saga %r: the saga store is unavailable, recovery passes continue every %gs "
            "until it is back: %s",
            self.name,
            self.every,
            exc,
        )

    def passed(self) -> None:
        if self.since is None:
            return
        _log.warning(
            "saga %r: the saga store is available again after %.1fs (%d failed recovery "
            "pass(es)); recovery resumed",
            self.name,
            time.monotonic() - self.since,
            self.passes,
        )
        self.since = None
        self.passes = 0


@dataclasses.dataclass(frozen=True)
class _LoopHost:
    """The task group of a running ``run_recovery_loop`` (it also hosts detached runs)."""

    tg: anyio.abc.TaskGroup
    thread: int
