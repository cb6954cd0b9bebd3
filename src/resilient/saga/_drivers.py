"""The two drivers that execute a run's operations (``_protocol.py``): :class:`_AsyncDriver`
with ``await`` (asyncio and trio through anyio: store calls off the event loop, cancellation
that rolls back, a lease heartbeat task, shutdown) and :class:`_SyncDriver` with plain blocking
calls (``run_sync``: no event loop, usable from any thread; its lease is renewed by the
process-wide keeper thread). Each runs a step's attempts under the step's policy and turns how
they ended into a :class:`_StepOutcome` for the script.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Sequence
from typing import Any, cast

import anyio
import anyio.to_thread

from .. import _sleeping
from ..errors import SagaStoreUnavailable, StaleEpoch
from ._errors import SagaInterrupted
from ._lease import KEEPER, heartbeat
from ._model import SagaContext, SagaLogEvent, SagaStatus
from ._protocol import (
    _Append,
    _DeadlineSignal,
    _HaltSignal,
    _Invoke,
    _Op,
    _Outcome,
    _RejectedSignal,
    _Run,
    _StepOutcome,
)

_log = logging.getLogger("resilient.saga")


def _released_badly(run: _Run, error: SagaStoreUnavailable) -> None:
    """A lease that could not be given back just runs out (``lease`` seconds): the run's
    outcome stands, so this is a log line, not the caller's error."""
    _log.warning("saga %r: could not release its lease (it expires by itself): %s", run.id, error)


def _held_lost(run: _Run, error: SagaStoreUnavailable) -> None:
    """A shutdown could not commit a held step outcome: recovery invokes that step again
    with its key (at least once), so the shutdown goes on; a log line, not an error."""
    _log.warning("saga %r: a step outcome was not recorded before shutdown: %s", run.id, error)


class _Driver:
    """What both drivers do around a store append: a deferred record (``op.defer``) is held,
    the script going on from the state it gives, and written with the next record, its events
    first; it is reported once that write is durable."""

    run: _Run
    _held: list[_Append]  # deferred records, committed with the next write

    def _batch(self, op: _Append) -> tuple[list[_Append], Sequence[SagaLogEvent]] | None:
        """The held records and the events to write for ``op``; None when ``op`` is held."""
        if op.defer:
            self.run.held(op)
            self._held.append(op)
            return None
        held = self._held
        if not held:
            return held, op.events
        self._held = []
        return held, (*(ev for h in held for ev in h.events), *op.events)

    def _written(self, held: list[_Append], op: _Append) -> None:
        """The store accepted ``op`` with the ``held`` records before it."""
        run = self.run
        for h in held:
            run.released(h)
        run.applied(op)


class _AsyncDriver(_Driver):
    """Executes a run's operations with ``await`` (asyncio or trio)."""

    def __init__(self, run: _Run, detached: bool = False) -> None:
        self.run = run
        self.saga = run.saga
        self.store = run.saga.store
        self.detached = detached  # a cancellation is the host shutting down, not an abort
        self._cancel: BaseException | None = None
        self._lost = False
        self._lost_to: int | None = None  # the epoch the heartbeat found, when it could read it
        self._step_scope: anyio.CancelScope | None = None
        self._shutdown = False
        self._own: anyio.CancelScope | None = None
        self._held = []

    def stop(self) -> None:
        """Runner shutdown: stop at once, without compensating (called in the loop's thread)."""
        self._shutdown = True
        if self._own is not None:
            self._own.cancel()

    async def drive(self, script: Generator[_Op, Any, _Outcome]) -> _Outcome:
        run = self.run
        in_flight = run.in_flight()
        if in_flight is not None:
            in_flight.inc()
        try:
            with run.root_span():
                error: BaseException | None = None
                outcome: _Outcome | None = None
                self.saga._drivers.add(self)
                try:
                    with anyio.CancelScope() as own:
                        self._own = own
                        if self.saga._stopping:
                            own.cancel()
                        async with anyio.create_task_group() as tg:
                            # The heartbeat gets a scope of its own: cancelling the group's
                            # scope would cancel the *caller's* task too, and on asyncio the
                            # CancelledError thrown into it stays referenced by the event
                            # loop until the caller next yields; on 3.12+ its traceback's
                            # frames keep their ``f_back`` (this frame, the caller's frames,
                            # the Saga) alive that long.
                            beat = anyio.CancelScope()
                            tg.start_soon(heartbeat, run, beat, self._lease_lost)
                            try:
                                outcome = await self._loop(script)
                            except anyio.get_cancelled_exc_class():
                                raise
                            except BaseException as exc:  # re-raised below, not as a group
                                error = exc
                            finally:
                                beat.cancel()
                finally:
                    self.saga._drivers.discard(self)
                if error is not None:
                    try:
                        raise error
                    finally:  # break the frame <-> traceback cycle (no wait for the gc)
                        error = None
                if outcome is None:  # our own scope was cancelled: shutdown
                    outcome = _Outcome(None, dict(run.state.results))
                if outcome.status is None or outcome.status is SagaStatus.SUSPENDED:
                    with anyio.CancelScope(shield=True):
                        try:
                            await self.store.release(run.id, self.saga.node_id, run.epoch)
                        except SagaStoreUnavailable as exc:
                            _released_badly(run, exc)
        finally:
            if in_flight is not None:
                in_flight.dec()
        if self._cancel is not None:
            raise self._cancel
        if (self._shutdown or self.detached) and outcome.status is None:
            raise SagaInterrupted(run.id)
        return outcome

    async def _loop(self, gen: Generator[_Op, Any, _Outcome]) -> _Outcome:
        value: Any = None
        cancelled = anyio.get_cancelled_exc_class()
        while True:
            try:
                op = gen.send(value)
            except StopIteration as stop:
                await self._flush()
                return cast(_Outcome, stop.value)
            shield = self._cancel is not None or self.run.state.phase == "compensating"
            try:
                with anyio.CancelScope(shield=shield):
                    value = await self._exec(op)
            except cancelled as exc:
                if shield:  # pragma: no cover - a shielded scope is never cancelled from outside
                    raise
                if self._shutdown or self.detached:  # not an abort: leave it for the next runner
                    gen.close()
                    try:
                        await self._flush()
                    except SagaStoreUnavailable as error:  # the held outcome is redone
                        _held_lost(self.run, error)
                    return _Outcome(None, dict(self.run.state.results))
                self._cancel = exc
                gen.close()
                gen = self.run.abort_script(exc)
                value = None

    async def _exec(self, op: _Op) -> Any:
        if isinstance(op, _Append):
            await self._append(op)
            return None
        if isinstance(op, _Invoke):
            return await self._invoke(op)
        await self._flush()
        await self._sleep_until(op.until)
        return None

    async def _append(self, op: _Append) -> None:
        batch = self._batch(op)
        if batch is None:
            return
        held, events = batch
        run = self.run
        try:
            await self.store.append(run.id, run.epoch, events, op.status, op.next_attempt_at)
        except StaleEpoch:
            self.saga._count_stale()
            raise
        self._written(held, op)

    async def _flush(self) -> None:
        """Commit the held records on their own (before a wait, or at the end of a drive)."""
        if self._held:
            with anyio.CancelScope(shield=True):
                await self._append(_Append(()))

    async def _append_in_attempt(self, op: _Append) -> None:
        """``_append`` from inside a step's policy: a fence or a store outage becomes a signal
        no policy handles."""
        try:
            await self._append(op)
        except (StaleEpoch, SagaStoreUnavailable) as exc:
            raise _HaltSignal(exc) from exc

    async def _sleep_until(self, until: float) -> None:
        clock = self.saga._clock
        asleep = getattr(clock, "asleep", None)
        left = until - clock()
        if left <= 0:
            return
        if asleep is not None:
            await asleep(left)
        else:
            await _sleeping.async_sleep(left)

    def _lease_lost(self, current: int | None) -> None:
        """The heartbeat found the lease taken (the saga now at epoch ``current``, when it
        could read it): stop the step in flight (a fenced-out run must not go on; the drive
        then raises StaleEpoch)."""
        self._lost = True
        self._lost_to = current
        if self._step_scope is not None:
            self._step_scope.cancel()

    async def _invoke(self, op: _Invoke) -> _StepOutcome:
        run = self.run
        step, phase = op.step, op.phase
        fn = run.function(step, phase)
        is_async = (step.name, phase) in run.defn.is_async
        ctx = run.context(step, phase)

        async def attempt(c: SagaContext) -> Any:
            started = run.begin_attempt(op, c)
            if started is not None:
                await self._append_in_attempt(started)
            run.attempt_started(op)
            args = run.call_args(step, phase, c)
            t0 = time.perf_counter()
            with run.span(op, c):
                try:
                    if is_async:
                        result = await fn(*args)
                    else:
                        result = await anyio.to_thread.run_sync(fn, *args)
                except Exception as exc:
                    await self._append_in_attempt(run.attempt_failed(op, c, exc, t0))
                    run.reraise(op, exc)
            run.observe(op, "success", t0)
            return result

        policy = run.policy(step, phase)
        left = run.deadline_guard(op)
        with anyio.CancelScope() as scope:
            if left is not None and self.saga._real_clock:
                scope.deadline = anyio.current_time() + max(0.0, left)
            self._step_scope = scope
            try:
                if policy is None:
                    value = await attempt(ctx)
                else:
                    value = await policy.acall(attempt, ctx)
            except _HaltSignal as halt:
                raise halt.error from None
            except (_RejectedSignal, _DeadlineSignal, Exception) as exc:
                return _outcome_of(exc)
            finally:
                self._step_scope = None
        if scope.cancelled_caught:
            if self._lost:
                raise StaleEpoch(run.id, run.epoch, self._lost_to, heartbeat=True)
            return _StepOutcome("deadline")
        return _StepOutcome("ok", value)


class _SyncDriver(_Driver):
    """Executes a run's operations with plain blocking calls (no event loop needed)."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.saga = run.saga
        self.store = run.saga._blocking_store
        self._store_append = self.store.append_sync
        self._held = []

    def drive(self, script: Generator[_Op, Any, _Outcome]) -> _Outcome:
        run = self.run
        saga = self.saga
        in_flight = run.in_flight()
        if in_flight is not None:
            in_flight.inc()
        lease = KEEPER.hold(run)
        try:
            with run.root_span():
                gen = script
                send = gen.send
                value: Any = None
                while True:
                    if lease.lost:
                        raise StaleEpoch(run.id, run.epoch, lease.lost_to, heartbeat=True)
                    if saga._stopping:
                        gen.close()
                        try:
                            self._flush()
                        except SagaStoreUnavailable as error:  # the held outcome is redone
                            _held_lost(run, error)
                        self._release()
                        raise SagaInterrupted(run.id)
                    try:
                        op = send(value)
                    except StopIteration as stop:
                        self._flush()
                        outcome = cast(_Outcome, stop.value)
                        if outcome.status is SagaStatus.SUSPENDED:
                            self._release()
                        return outcome
                    kind = type(op)
                    if kind is _Append:
                        self._append(op)  # type: ignore[arg-type]
                        value = None
                    elif kind is _Invoke:
                        value = self._invoke(op)  # type: ignore[arg-type]
                    else:
                        value = self._exec(op)
        finally:
            KEEPER.drop(lease)
            if in_flight is not None:
                in_flight.dec()

    def _release(self) -> None:
        run = self.run
        try:
            self.store.release_sync(run.id, self.saga.node_id, run.epoch)
        except SagaStoreUnavailable as exc:
            _released_badly(run, exc)

    def _exec(self, op: _Op) -> Any:
        if isinstance(op, _Append):
            self._append(op)
            return None
        if isinstance(op, _Invoke):
            return self._invoke(op)
        self._flush()
        clock = self.saga._clock
        left = op.until - clock()
        if left > 0:
            sleep = getattr(clock, "sleep", None)
            if sleep is not None:
                sleep(left)
            else:
                _sleeping.sync_sleep(left)
        return None

    def _append(self, op: _Append) -> None:
        batch = self._batch(op)
        if batch is None:
            return
        held, events = batch
        run = self.run
        try:
            self._store_append(run.id, run.epoch, events, op.status, op.next_attempt_at)
        except StaleEpoch:
            self.saga._count_stale()
            raise
        self._written(held, op)

    def _flush(self) -> None:
        """Commit the held records on their own (before a wait, or at the end of a drive)."""
        if self._held:
            self._append(_Append(()))

    def _append_in_attempt(self, op: _Append) -> None:
        """``_append`` from inside a step's policy: a fence or a store outage becomes a signal
        no policy handles."""
        try:
            self._append(op)
        except (StaleEpoch, SagaStoreUnavailable) as exc:
            raise _HaltSignal(exc) from exc

    def _invoke(self, op: _Invoke) -> _StepOutcome:
        run = self.run
        step, phase = op.step, op.phase
        fn = run.function(step, phase)
        reporting = run.reporting

        def attempt(c: SagaContext) -> Any:
            started = run.begin_attempt(op, c)
            if started is not None:
                self._append_in_attempt(started)
            run.attempt_started(op)
            args = run.call_args(step, phase, c)
            if not reporting:  # the common case: no span, no timing
                try:
                    return fn(*args)
                except Exception as exc:
                    self._append_in_attempt(run.attempt_failed(op, c, exc, 0.0))
                    run.reraise(op, exc)
            t0 = time.perf_counter()
            with run.span(op, c):
                try:
                    result = fn(*args)
                except Exception as exc:
                    self._append_in_attempt(run.attempt_failed(op, c, exc, t0))
                    run.reraise(op, exc)
            run.observe(op, "success", t0)
            return result

        policy = run.policy(step, phase)
        ctx = run.context(step, phase)
        try:
            value = attempt(ctx) if policy is None else policy.call(attempt, ctx)
        except _HaltSignal as halt:
            raise halt.error from None
        except (_RejectedSignal, _DeadlineSignal, Exception) as exc:
            return _outcome_of(exc)
        return _StepOutcome("ok", value)


def _outcome_of(exc: BaseException) -> _StepOutcome:
    """How an invocation that raised (after its policy) ended, for the core."""
    if isinstance(exc, _RejectedSignal):
        return _StepOutcome("rejected", error=exc.error)
    if isinstance(exc, _DeadlineSignal):
        return _StepOutcome("deadline")
    return _StepOutcome("failed", error=exc)
