"""resilient side by side with the other Python resilience libraries, per call.

For every pattern that both sides have (retry, circuit breaker, timeout, bulkhead, fallback,
rate limiter),
sync and asyncio, on the happy path and on the failure paths, every contender is configured to
do the same work: zero waits, the same thresholds (a breaker opens after 5 consecutive
failures and stays open for an hour), the same limits. A bare hand-written call is the floor;
standard-library building blocks are shown as references where they exist.

resilient runs twice: with its defaults (Prometheus metrics on, OpenTelemetry tracing on but
no SDK installed, so spans are skipped) and with ``configure_telemetry(metrics=False,
tracing=False)``; no peer records metrics, so the second row is the like-for-like one.

Usage::

    python benchmarks/compare.py            # full run (a few minutes), writes results.json
    python benchmarks/compare.py --quick    # tiny blocks, one round: proves it works
    python benchmarks/compare.py --only retry --only breaker
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # the harness sits next to this script
    Contender,
    Counter,
    Runner,
    Scenario,
    ScenarioResult,
    environment,
    installed,
    render_table,
    result_to_json,
    write_json,
)

import resilient as rs

PEERS = (
    "tenacity",
    "stamina",
    "backoff",
    "pybreaker",
    "circuitbreaker",
    "aiobreaker",
    "purgatory",
    "pyresilience",
    "limits",
    "aiolimiter",
    "pyrate-limiter",
)
PATTERNS = ("retry", "breaker", "timeout", "bulkhead", "fallback", "ratelimit")
THRESHOLD = 5  # consecutive failures that open every breaker
OPEN_FOR = 3600.0  # seconds a breaker stays open: it never half-opens during a run
BIG_TIMEOUT = 10.0  # seconds: never reached, so the timeout happy path is measured
TASKS = 1000
LIMIT = 10

SyncFn = Callable[[], Any]
AsyncFn = Callable[[], Awaitable[Any]]


class Boom(Exception):
    """The failure every protected function raises (one type, so every ``on=`` matches)."""


# -- protected functions -------------------------------------------------------------------
def _ok(c: Counter) -> SyncFn:
    def ok() -> int:
        c.n += 1
        return 1

    return ok


def _aok(c: Counter) -> AsyncFn:
    async def ok() -> int:
        c.n += 1
        return 1

    return ok


def _flaky(c: Counter) -> SyncFn:
    """Fails on its first call, succeeds on the second, fails on the third..."""
    state = [False]

    def flaky() -> int:
        c.n += 1
        state[0] = not state[0]
        if state[0]:
            raise Boom("first attempt fails")
        return 1

    return flaky


def _aflaky(c: Counter) -> AsyncFn:
    state = [False]

    async def flaky() -> int:
        c.n += 1
        state[0] = not state[0]
        if state[0]:
            raise Boom("first attempt fails")
        return 1

    return flaky


def _fail(c: Counter) -> SyncFn:
    def fail() -> int:
        c.n += 1
        raise Boom("always fails")

    return fail


def _afail(c: Counter) -> AsyncFn:
    async def fail() -> int:
        c.n += 1
        raise Boom("always fails")

    return fail


def _rejecting(guarded: SyncFn, errors: tuple[type[BaseException], ...]) -> SyncFn:
    def call() -> str:
        try:
            guarded()
        except errors:
            return "rejected"
        return "admitted"

    return call


def _arejecting(guarded: AsyncFn, errors: tuple[type[BaseException], ...]) -> AsyncFn:
    async def call() -> str:
        try:
            await guarded()
        except errors:
            return "rejected"
        return "admitted"

    return call


# -- telemetry modes for resilient's two rows ----------------------------------------------------
def _tel_defaults() -> None:
    rs.configure_telemetry(metrics=True, tracing=True)


def _tel_off() -> None:
    rs.configure_telemetry(metrics=False, tracing=False)


RS_DEFAULTS = "resilient (defaults: metrics on)"
RS_OFF = "resilient (telemetry off)"


def _stamina_defaults() -> None:
    """stamina's default retry hooks: a Prometheus counter and a WARNING log record per retry
    (silenced into a NullHandler so the benchmark's output stays readable)."""
    import logging

    from stamina.instrumentation import set_on_retry_hooks

    log = logging.getLogger("stamina")
    if not log.handlers:
        log.addHandler(logging.NullHandler())
        log.propagate = False
    set_on_retry_hooks(None)


def _stamina_off() -> None:
    from stamina.instrumentation import set_on_retry_hooks

    set_on_retry_hooks([])


def _has(name: str) -> bool:
    return hasattr(rs, name)


@dataclass
class _Build:
    """A scenario under construction: rows are added only for what is installed."""

    scenario: Scenario
    skipped: list[str]
    teardown: list[Callable[[], None]]
    loop: asyncio.AbstractEventLoop | None = None

    def add(
        self,
        label: str,
        library: str,
        role: str,
        make: Callable[[], Any],
        *,
        ops: int = 1,
        prepare: Callable[[], None] | None = None,
        note: str = "",
    ) -> None:
        """Add a row if its library is importable (``make`` builds the callable)."""
        if role == "peer" and installed(library) is None:
            self.skipped.append(f"{library} not installed")
            return
        call = make()
        self.scenario.contenders.append(
            Contender(
                label=label,
                library=library,
                role=role,
                call=call,
                is_async=self.scenario.mode == "async",
                ops=ops,
                prepare=prepare,
                note=note,
            )
        )

    def add_resilient(self, policy: str, make: Callable[[], Any], *, ops: int = 1) -> None:
        """Add resilient's two rows (defaults, telemetry off), each with its own policy."""
        if not _has(policy):
            self.skipped.append(f"resilient.{policy} not available yet")
            return
        self.add(RS_DEFAULTS, "resilient", "resilient", make, ops=ops, prepare=_tel_defaults)
        self.add(RS_OFF, "resilient", "resilient", make, ops=ops, prepare=_tel_off)


_LOOP: asyncio.AbstractEventLoop | None = None  # the runner's loop (set by ``build``)


def _new(
    pattern: str, case: str, mode: str, expect_calls: int, expect: Any, note: str = ""
) -> tuple[_Build, Counter]:
    c = Counter()
    s = Scenario(pattern, case, mode, c, expect_calls, expect, [], note)
    return _Build(s, [], [], _LOOP), c


# == retry =========================================================================================
def _retry_scenarios(mode: str) -> list[_Build]:
    return [_retry_case(mode, "happy path", 1), _retry_case(mode, "one failure, then success", 2)]


def _retry_case(mode: str, case: str, expect_calls: int) -> _Build:
    b, c = _new("retry", case, mode, expect_calls, 1, "3 attempts, zero wait, retry on one type")
    sync = mode == "sync"
    if case == "happy path":
        fn: Any = _ok if sync else _aok
    else:
        fn = _flaky if sync else _aflaky

    if sync:

        def bare() -> Any:
            f = fn(c)

            def call() -> Any:
                for _ in range(3):
                    try:
                        return f()
                    except Boom:
                        continue
                return None

            return call
    else:

        def bare() -> Any:
            f = fn(c)

            async def call() -> Any:
                for _ in range(3):
                    try:
                        return await f()
                    except Boom:
                        continue
                return None

            return call

    b.add("bare call (hand-written loop)", "bare", "bare", bare)
    b.add_resilient("Retry", lambda: rs.Retry(attempts=3, wait=0, on=Boom)(fn(c)))
    if _has("RetryBudget") and case == "happy path":
        # the same retry with a budget, timed in the same rounds: what a budget adds to a call
        # that succeeds (a deposit). Not with failures: a budget refuses a retry for every call
        # by design, which would end those calls with the error.
        for label, prepare in (
            ("resilient Retry + RetryBudget (defaults)", _tel_defaults),
            ("resilient Retry + RetryBudget (telemetry off)", _tel_off),
        ):
            b.add(
                label,
                "resilient (for scale)",
                "reference",
                lambda: rs.Retry(attempts=3, wait=0, on=Boom, budget=rs.RetryBudget())(fn(c)),
                prepare=prepare,
            )

    def tenacity_() -> Any:
        import tenacity

        return tenacity.retry(
            stop=tenacity.stop_after_attempt(3),
            wait=tenacity.wait_none(),
            retry=tenacity.retry_if_exception_type(Boom),
            reraise=True,
        )(fn(c))

    def stamina_() -> Any:
        import stamina

        return stamina.retry(
            on=Boom, attempts=3, timeout=None, wait_initial=0, wait_max=0, wait_jitter=0
        )(fn(c))

    def backoff_() -> Any:
        import backoff

        return backoff.on_exception(backoff.constant, Boom, max_tries=3, interval=0, jitter=None)(
            fn(c)
        )

    def pyres() -> Any:
        import pyresilience as pr

        cfg = pr.RetryConfig(max_attempts=3, delay=0, jitter=False, retry_on=(Boom,))
        return pr.resilient(retry=cfg)(fn(c))

    b.add("tenacity", "tenacity", "peer", tenacity_)
    b.add(
        "stamina (defaults: prometheus + logging)",
        "stamina",
        "peer",
        stamina_,
        prepare=_stamina_defaults,
        note="its retry log records go to a NullHandler",
    )
    b.add("stamina (instrumentation off)", "stamina", "peer", stamina_, prepare=_stamina_off)
    b.add("backoff", "backoff", "peer", backoff_)
    b.add("pyresilience", "pyresilience", "peer", pyres)
    return b


# == circuit breaker ===============================================================================
def _open(guarded: Callable[[], Any], is_async: bool, loop: asyncio.AbstractEventLoop) -> None:
    """Drive ``guarded`` (a breaker around an always-failing function) until it is open."""
    for _ in range(THRESHOLD + 2):
        try:
            if is_async:
                loop.run_until_complete(guarded())
            else:
                guarded()
        except Exception:  # the failures (and the trip error) are the point
            continue


def _breaker_factories(mode: str) -> dict[str, tuple[str, Callable[[Any], Any], tuple[Any, ...]]]:
    """label -> (dist, wrap(fn) -> guarded fn, rejection exception types), lazily imported."""
    sync = mode == "sync"
    out: dict[str, tuple[str, Callable[[Any], Any], tuple[Any, ...]]] = {}

    def _errors(module: str, *names: str) -> tuple[Any, ...]:
        mod = importlib.import_module(module)
        return tuple(getattr(mod, n) for n in names)

    if sync and installed("pybreaker"):
        import pybreaker

        out["pybreaker"] = (
            "pybreaker",
            lambda fn: pybreaker.CircuitBreaker(fail_max=THRESHOLD, reset_timeout=OPEN_FOR)(fn),
            _errors("pybreaker", "CircuitBreakerError"),
        )
    if installed("circuitbreaker"):
        import circuitbreaker  # type: ignore[import-untyped]

        out["circuitbreaker"] = (
            "circuitbreaker",
            lambda fn: circuitbreaker.CircuitBreaker(
                failure_threshold=THRESHOLD, recovery_timeout=OPEN_FOR
            )(fn),
            _errors("circuitbreaker", "CircuitBreakerError"),
        )
    if installed("aiobreaker"):
        import aiobreaker  # type: ignore[import-untyped]

        out["aiobreaker"] = (
            "aiobreaker",
            lambda fn: aiobreaker.CircuitBreaker(
                fail_max=THRESHOLD, timeout_duration=timedelta(seconds=OPEN_FOR)
            )(fn),
            _errors("aiobreaker", "CircuitBreakerError"),
        )
    if installed("purgatory"):
        import purgatory

        def _purg(fn: Any) -> Any:
            name = f"bench-{id(fn)}"
            if sync:
                f = purgatory.SyncCircuitBreakerFactory(
                    default_threshold=THRESHOLD, default_ttl=OPEN_FOR
                )
            else:
                f = purgatory.AsyncCircuitBreakerFactory(  # type: ignore[assignment]
                    default_threshold=THRESHOLD, default_ttl=OPEN_FOR
                )
            return f(name)(fn)

        out["purgatory"] = ("purgatory", _purg, _errors("purgatory.domain.model", "OpenedState"))
    if installed("pyresilience"):
        import pyresilience as pr

        out["pyresilience"] = (
            "pyresilience",
            lambda fn: pr.resilient(
                circuit_breaker=pr.CircuitBreakerConfig(
                    failure_threshold=THRESHOLD, recovery_timeout=OPEN_FOR
                )
            )(fn),
            (pr.CircuitOpenError,),
        )
    return out


def _rs_breaker() -> Any:
    # "N consecutive failures" in resilient's terms (DESIGN.md section 2).
    return rs.CircuitBreaker(
        window_size=THRESHOLD,
        minimum_calls=THRESHOLD,
        failure_rate_threshold=1.0,
        open_duration=OPEN_FOR,
    )


def _breaker_scenarios(mode: str, loop: asyncio.AbstractEventLoop) -> list[_Build]:
    sync = mode == "sync"
    note = f"opens after {THRESHOLD} consecutive failures, stays open {OPEN_FOR:.0f} s"
    peers = _breaker_factories(mode)
    missing = [
        p
        for p in ("pybreaker", "circuitbreaker", "aiobreaker", "purgatory", "pyresilience")
        if p not in peers and not (p == "pybreaker" and not sync)
    ]

    # closed: the happy path
    b, c = _new("breaker", "closed, success", mode, 1, 1, note)
    b.skipped.extend(f"{p} not installed" for p in missing)
    ok = _ok if sync else _aok
    b.add("bare call", "bare", "bare", lambda: ok(c))
    b.add_resilient("CircuitBreaker", lambda: _rs_breaker()(ok(c)))
    for label, (dist, wrap, _) in peers.items():
        b.add(label, dist, "peer", functools.partial(_wrapped, wrap, ok, c))
    closed = b

    # open: every call rejected without running the function
    b, c = _new("breaker", "open, rejecting", mode, 0, "rejected", note)
    b.skipped.extend(f"{p} not installed" for p in missing)
    fail = _fail if sync else _afail
    rej = _rejecting if sync else _arejecting

    def _opened(wrap: Callable[[Any], Any], errors: tuple[Any, ...]) -> Any:
        guarded = wrap(fail(c))
        _open(guarded, not sync, loop)
        return rej(guarded, errors)

    class _Rejected(Exception):
        pass

    if sync:

        def bare_raise() -> Any:
            def f() -> Any:
                raise _Rejected

            return f
    else:

        def bare_raise() -> Any:
            async def f() -> Any:
                raise _Rejected

            return f

    b.add(
        "bare call (raise + catch)",
        "bare",
        "bare",
        lambda: rej(bare_raise(), (_Rejected,)),
        note="the floor of any rejection: raising and catching one exception",
    )
    b.add_resilient("CircuitBreaker", lambda: _opened(lambda f: _rs_breaker()(f), _rs_errors()))
    for label, (dist, wrap, errors) in peers.items():
        b.add(label, dist, "peer", functools.partial(_opened, wrap, errors))
    return [closed, b]


def _wrapped(wrap: Callable[[Any], Any], fn: Callable[[Counter], Any], c: Counter) -> Any:
    return wrap(fn(c))


def _rs_errors() -> tuple[type[BaseException], ...]:
    return (rs.CircuitOpenError,)


# == timeout =======================================================================================
def _timeout_scenarios(mode: str) -> list[_Build]:
    b, c = _new("timeout", "happy path", mode, 1, 1, f"{BIG_TIMEOUT:.0f} s, never reached")
    sync = mode == "sync"
    ok = _ok if sync else _aok
    b.add("bare call", "bare", "bare", lambda: ok(c))
    b.add_resilient("Timeout", lambda: rs.Timeout(BIG_TIMEOUT)(ok(c)))

    def pyres() -> Any:
        import pyresilience as pr

        return pr.resilient(timeout=pr.TimeoutConfig(seconds=BIG_TIMEOUT))(ok(c))

    b.add(
        "pyresilience",
        "pyresilience",
        "peer",
        pyres,
        note="sync: runs the call on a worker thread" if sync else "asyncio.wait_for",
    )
    if not sync:
        f = _aok(c)

        def wait_for() -> AsyncFn:
            async def call() -> Any:
                return await asyncio.wait_for(f(), BIG_TIMEOUT)

            return call

        b.add("asyncio.wait_for", "stdlib", "reference", wait_for)
        if sys.version_info >= (3, 11):

            def timeout_cm() -> AsyncFn:
                async def call() -> Any:
                    async with asyncio.timeout(BIG_TIMEOUT):
                        return await f()

                return call

            b.add("asyncio.timeout", "stdlib", "reference", timeout_cm)

        def anyio_fail_after() -> AsyncFn:
            import anyio

            async def call() -> Any:
                with anyio.fail_after(BIG_TIMEOUT):
                    return await f()

            return call

        b.add("anyio.fail_after", "anyio", "reference", anyio_fail_after)
    return [b]


# == bulkhead ======================================================================================
class _Holder:
    """Keeps one bulkhead slot busy (a thread or a task parked inside the guarded call)."""

    def __init__(self) -> None:
        self.thread_id: int | None = None
        self.task: asyncio.Task[Any] | None = None
        self.event = threading.Event()
        self.aevent: asyncio.Event | None = None

    def is_me(self) -> bool:
        if self.thread_id is not None and threading.get_ident() == self.thread_id:
            return True
        if self.task is None:
            return False
        try:
            return asyncio.current_task() is self.task
        except RuntimeError:
            return False


def _bulkhead_scenarios(mode: str, loop: asyncio.AbstractEventLoop) -> list[_Build]:
    sync = mode == "sync"
    out = []

    # uncontended
    b, c = _new("bulkhead", "uncontended", mode, 1, 1, f"limit {LIMIT}, one caller")
    ok = _ok if sync else _aok
    b.add("bare call", "bare", "bare", lambda: ok(c))
    b.add_resilient("Bulkhead", lambda: rs.Bulkhead(max_concurrent=LIMIT)(ok(c)))

    def pyres(**kw: Any) -> Callable[[Any], Any]:
        import pyresilience as pr

        return pr.resilient(bulkhead=pr.BulkheadConfig(**kw))

    b.add("pyresilience", "pyresilience", "peer", lambda: pyres(max_concurrent=LIMIT)(ok(c)))
    if sync:

        def sem() -> SyncFn:
            s = threading.BoundedSemaphore(LIMIT)
            f = _ok(c)

            def call() -> Any:
                with s:
                    return f()

            return call

        b.add("threading.BoundedSemaphore", "stdlib", "reference", sem)
    else:

        def asem() -> AsyncFn:
            s = asyncio.Semaphore(LIMIT)
            f = _aok(c)

            async def call() -> Any:
                async with s:
                    return await f()

            return call

        b.add("asyncio.Semaphore", "stdlib", "reference", asem)
    out.append(b)

    # full: one slot, held by someone else; every call is rejected
    b, c = _new("bulkhead", "full, rejecting", mode, 0, "rejected", "limit 1 held, no queue")
    holders: list[_Holder] = []

    def held(wrap: Callable[[Any], Any], errors: tuple[Any, ...]) -> Any:
        h = _Holder()
        holders.append(h)
        if sync:

            def fn() -> int:
                if h.is_me():
                    h.event.wait()
                    return 0
                c.n += 1
                return 1

            guarded = wrap(fn)
            started = threading.Event()

            def park() -> None:
                h.thread_id = threading.get_ident()
                started.set()
                guarded()

            t = threading.Thread(target=park, daemon=True)
            t.start()
            started.wait()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # wait until the holder is inside the call
                try:
                    guarded()
                except errors:
                    break
                c.n -= 1
                time.sleep(0.001)

            def release() -> None:
                h.event.set()
                t.join(5)

            b.teardown.append(release)
            return _rejecting(guarded, errors)

        h.aevent = asyncio.Event()
        aevent = h.aevent

        async def afn() -> int:
            if h.is_me():
                await aevent.wait()
                return 0
            c.n += 1
            return 1

        aguarded = wrap(afn)
        h.task = loop.create_task(aguarded())
        for _ in range(10):
            loop.run_until_complete(asyncio.sleep(0))

        def stop() -> None:
            aevent.set()
            assert h.task is not None
            loop.run_until_complete(h.task)

        b.teardown.append(stop)
        return _arejecting(aguarded, errors)

    if sync:

        def bare_raise() -> Any:
            def f() -> Any:
                raise _Full

            return _rejecting(f, (_Full,))
    else:

        def bare_raise() -> Any:
            async def f() -> Any:
                raise _Full

            return _arejecting(f, (_Full,))

    b.add("bare call (raise + catch)", "bare", "bare", bare_raise)
    if _has("Bulkhead"):
        b.add_resilient(
            "Bulkhead",
            lambda: held(
                lambda f: rs.Bulkhead(max_concurrent=1, max_queued=0)(f), (rs.BulkheadFullError,)
            ),
        )
    else:
        b.skipped.append("resilient.Bulkhead not available yet")

    def pyres_full() -> Any:
        import pyresilience as pr

        return held(lambda f: pyres(max_concurrent=1, max_wait=0)(f), (pr.BulkheadFullError,))

    b.add("pyresilience", "pyresilience", "peer", pyres_full)
    out.append(b)

    if sync:
        return out

    # 1,000 tasks through a limit of 10
    b, c = _new(
        "bulkhead",
        f"{TASKS:,} tasks, limit {LIMIT}",
        mode,
        1,
        TASKS,
        "every task yields once inside the limit, so up to 990 wait",
    )

    async def work() -> int:
        c.n += 1
        await asyncio.sleep(0)
        return 1

    def batch(guarded: AsyncFn) -> AsyncFn:
        async def call() -> int:
            return sum(await asyncio.gather(*[guarded() for _ in range(TASKS)]))

        return call

    b.add("bare (no limit)", "bare", "bare", lambda: batch(work), ops=TASKS)
    b.add_resilient(
        "Bulkhead",
        lambda: batch(rs.Bulkhead(max_concurrent=LIMIT, max_queued=TASKS)(work)),
        ops=TASKS,
    )
    b.add(
        "pyresilience",
        "pyresilience",
        "peer",
        lambda: batch(pyres(max_concurrent=LIMIT, max_wait=60.0)(work)),
        ops=TASKS,
    )

    def limited() -> AsyncFn:
        s = asyncio.Semaphore(LIMIT)

        async def call() -> int:
            async with s:
                return await work()

        return batch(call)

    b.add("asyncio.Semaphore", "stdlib", "reference", limited, ops=TASKS)
    out.append(b)
    return out


class _Full(Exception):
    pass


# == rate limiter ==================================================================================
HUGE_RATE = 10**9  # calls per second: never reached, so the happy path is measured
HOUR = 3600


class _Limited(Exception):
    """What a peer wrapper raises when its limiter says no (peers answer with a bool)."""


def _ratelimit_scenarios(mode: str) -> list[_Build]:
    return [_ratelimit_case(mode, "happy path"), _ratelimit_case(mode, "exhausted, rejecting")]


def _ratelimit_case(mode: str, case: str) -> _Build:
    """Every limiter admits ``HUGE_RATE`` calls per second (happy path), or one per hour
    with that one spent before timing (rejecting: no waiting, every call refused)."""
    sync = mode == "sync"
    happy = case == "happy path"
    note = (
        f"{HUGE_RATE:,} calls/s, never reached"
        if happy
        else "1 call per hour, already spent: refuse without waiting"
    )
    b, c = _new("ratelimit", case, mode, 1 if happy else 0, 1 if happy else "rejected", note)
    ok = _ok if sync else _aok

    def guard(admit: Callable[[], bool], spend: bool) -> Any:
        """The protected call behind a peer's yes/no admission check."""
        if spend:
            assert admit(), "the limiter refused its first call"
        f = ok(c)
        if sync:

            def call() -> Any:
                if not admit():
                    raise _Limited
                return f()

            return call if happy else _rejecting(call, (_Limited,))

        async def acall() -> Any:
            if not admit():
                raise _Limited
            return await f()

        return acall if happy else _arejecting(acall, (_Limited,))

    def aguard(admit: Callable[[], Awaitable[bool]], spend: Callable[[], Any] | None) -> Any:
        """The same for a peer whose admission check is a coroutine."""
        if spend is not None:
            assert b.loop is not None
            assert b.loop.run_until_complete(spend()), "the limiter refused its first call"
        f = _aok(c)

        async def acall() -> Any:
            if not await admit():
                raise _Limited
            return await f()

        return acall if happy else _arejecting(acall, (_Limited,))

    if happy:
        b.add("bare call", "bare", "bare", lambda: ok(c))
    else:

        def bare_raise() -> Any:
            if sync:

                def f() -> Any:
                    raise _Limited

                return _rejecting(f, (_Limited,))

            async def af() -> Any:
                raise _Limited

            return _arejecting(af, (_Limited,))

        b.add("bare call (raise + catch)", "bare", "bare", bare_raise)

    def resilient_() -> Any:
        if happy:
            return rs.RateLimiter(rate=HUGE_RATE, burst=HUGE_RATE)(ok(c))
        limiter = rs.RateLimiter(rate=1, per=HOUR, burst=1)
        assert limiter.try_acquire()
        wrap = _rejecting if sync else _arejecting
        return wrap(limiter(ok(c)), (rs.RateLimitedError,))

    b.add_resilient("RateLimiter", resilient_)
    if happy and _has("Bulkhead"):
        # resilient's own bulkhead, timed in the same rounds: the limiter's target is to cost
        # at most 1.2x the bulkhead's happy path (two rows: defaults and telemetry off)
        for label, prepare in (
            ("resilient Bulkhead, for scale (defaults)", _tel_defaults),
            ("resilient Bulkhead, for scale (telemetry off)", _tel_off),
        ):
            b.add(
                label,
                "resilient (for scale)",
                "reference",
                lambda: rs.Bulkhead(max_concurrent=LIMIT)(ok(c)),
                prepare=prepare,
            )

    def pyres() -> Any:
        import pyresilience as pr

        if happy:
            cfg = pr.RateLimiterConfig(max_calls=HUGE_RATE, period=1.0)
            return pr.resilient(rate_limiter=cfg)(ok(c))
        cfg = pr.RateLimiterConfig(max_calls=1, period=HOUR, max_wait=0.0)
        guarded = pr.resilient(rate_limiter=cfg)(ok(c))
        if sync:  # spend the one call the hour allows
            guarded()
        else:
            assert b.loop is not None
            b.loop.run_until_complete(guarded())
        c.n -= 1
        wrap = _rejecting if sync else _arejecting
        return wrap(guarded, (pr.RateLimitExceededError,))

    b.add("pyresilience", "pyresilience", "peer", pyres, note="token bucket")

    def limits_(strategy: str) -> Callable[[], Any]:
        def make() -> Any:
            from limits import RateLimitItemPerSecond, RateLimitItemPerYear

            # one a year: a window aligned to the hour would reset (and admit) if the run
            # crossed the hour
            item = RateLimitItemPerSecond(HUGE_RATE) if happy else RateLimitItemPerYear(1)
            if sync:
                from limits import storage, strategies

                limiter = getattr(strategies, strategy)(storage.MemoryStorage())
                return guard(lambda: bool(limiter.hit(item, "bench")), spend=not happy)
            from limits.aio import storage as astorage
            from limits.aio import strategies as astrategies

            alimiter = getattr(astrategies, strategy)(astorage.MemoryStorage())

            async def hit() -> bool:
                return bool(await alimiter.hit(item, "bench"))

            return aguard(hit, None if happy else hit)

        return make

    b.add("limits (fixed window)", "limits", "peer", limits_("FixedWindowRateLimiter"))
    b.add(
        "limits (sliding window counter)",
        "limits",
        "peer",
        limits_("SlidingWindowCounterRateLimiter"),
    )

    def pyrate() -> Any:
        from pyrate_limiter import Duration
        from pyrate_limiter.limiter_factory import create_token_bucket_limiter

        if happy:
            limiter = create_token_bucket_limiter(HUGE_RATE, Duration.SECOND, burst=HUGE_RATE)
        else:
            limiter = create_token_bucket_limiter(1, Duration.HOUR, burst=1)
        return guard(lambda: bool(limiter.try_acquire("bench", blocking=False)), spend=not happy)

    b.add("pyrate-limiter (token bucket)", "pyrate-limiter", "peer", pyrate)

    if not sync:

        def aiolimiter_() -> Any:
            from aiolimiter import AsyncLimiter

            if happy:
                limiter = AsyncLimiter(HUGE_RATE, 1)
                f = _aok(c)

                async def call() -> Any:
                    async with limiter:
                        return await f()

                return call
            limiter = AsyncLimiter(1, HOUR)
            assert b.loop is not None
            b.loop.run_until_complete(limiter.acquire())  # the one call, spent

            async def has_capacity() -> bool:
                if limiter.has_capacity():  # aiolimiter only waits: ask first, never wait
                    await limiter.acquire()
                    return True
                return False

            return aguard(has_capacity, None)

        b.add("aiolimiter", "aiolimiter", "peer", aiolimiter_, note="leaky bucket")
    return b


# == fallback ======================================================================================
def _fallback_scenarios(mode: str) -> list[_Build]:
    sync = mode == "sync"
    return [
        _fallback_case(mode, "happy path", _ok if sync else _aok, 1),
        _fallback_case(mode, "failure -> fallback value", _fail if sync else _afail, 0),
    ]


def _fallback_case(mode: str, case: str, fn: Any, expect: int) -> _Build:
    b, c = _new("fallback", case, mode, 1, expect, "static fallback value 0 on Boom")
    if mode == "sync":

        def bare() -> Any:
            f = fn(c)

            def call() -> Any:
                try:
                    return f()
                except Boom:
                    return 0

            return call
    else:

        def bare() -> Any:
            f = fn(c)

            async def call() -> Any:
                try:
                    return await f()
                except Boom:
                    return 0

            return call

    b.add("bare call (try/except)", "bare", "bare", bare)
    b.add_resilient("Fallback", lambda: rs.Fallback(0, on=(Boom,))(fn(c)))

    def pyres() -> Any:
        import pyresilience as pr

        return pr.resilient(fallback=pr.FallbackConfig(handler=0, fallback_on=(Boom,)))(fn(c))

    b.add("pyresilience", "pyresilience", "peer", pyres)
    return b


# == driver ========================================================================================
def build(patterns: list[str], modes: list[str], loop: asyncio.AbstractEventLoop) -> list[_Build]:
    """Every scenario of the selected patterns and modes, peers included where installed."""
    global _LOOP
    _LOOP = loop
    builds: list[_Build] = []
    for pattern in patterns:
        for mode in modes:
            if pattern == "retry":
                builds += _retry_scenarios(mode)
            elif pattern == "breaker":
                builds += _breaker_scenarios(mode, loop)
            elif pattern == "timeout":
                builds += _timeout_scenarios(mode)
            elif pattern == "bulkhead":
                builds += _bulkhead_scenarios(mode, loop)
            elif pattern == "fallback":
                builds += _fallback_scenarios(mode)
            elif pattern == "ratelimit":
                builds += _ratelimit_scenarios(mode)
    return builds


def summary(scenarios: list[dict[str, Any]]) -> str:
    """One line per scenario: resilient's two rows against the fastest peer (from the JSON
    form, so ``--report`` can re-render a saved ``results.json``)."""

    def fmt(ns: float) -> str:
        return f"{ns / 1000:.2f} us" if ns >= 1000 else f"{ns:.0f} ns"

    lines = [
        "| pattern | case | mode | resilient (defaults) | resilient (telemetry off) "
        "| fastest peer | fastest peer / resilient (off) |",
        "|---|---|---|---:|---:|---|---:|",
    ]
    for s in scenarios:
        rows = s["rows"]
        ours = {r["label"]: r["ns_per_call"] for r in rows if r["role"] == "resilient"}
        peers = [r for r in rows if r["role"] == "peer"]
        if RS_OFF not in ours or not peers:
            continue
        best = min(peers, key=lambda r: r["ns_per_call"])
        lines.append(
            f"| {s['pattern']} | {s['case']} | {s['mode']} | {fmt(ours.get(RS_DEFAULTS, 0))} | "
            f"{fmt(ours[RS_OFF])} | {best['label']} {fmt(best['ns_per_call'])} | "
            f"{best['ns_per_call'] / ours[RS_OFF]:.2f}x |"
        )
    return "\n".join(lines)


def verdict(results: list[ScenarioResult]) -> list[str]:
    """Where a peer beats resilient (per-call cost), per resilient row."""
    lines = []
    for res in results:
        for ours_label in (RS_DEFAULTS, RS_OFF):
            ours = res.row(ours_label)
            if ours is None:
                continue
            for r in res.rows:
                if r.role == "peer" and r.ns < ours.ns:
                    lines.append(
                        f"{res.scenario.key}: {r.label} {r.ns:.0f} ns < {ours_label} "
                        f"{ours.ns:.0f} ns"
                    )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the comparison, print the table and write the JSON results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny blocks and one round (smoke test)")
    ap.add_argument("--rounds", type=int, default=None, help="timed blocks per contender")
    ap.add_argument("--block", type=float, default=None, help="seconds per timed block")
    ap.add_argument("--only", action="append", choices=PATTERNS, help="patterns to run")
    ap.add_argument("--mode", action="append", choices=("sync", "async"), help="modes to run")
    ap.add_argument(
        "--output",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json"),
        help="where to write the JSON results ('-' for nowhere)",
    )
    ap.add_argument(
        "--report", metavar="JSON", help="re-print the summary of a saved results file and exit"
    )
    args = ap.parse_args(argv)
    if args.report:
        with open(args.report, encoding="utf-8") as fh:
            saved = json.load(fh)
        print(summary(saved["scenarios"]))
        return 0
    rounds = args.rounds or (1 if args.quick else 7)
    block = args.block or (0.002 if args.quick else 0.03)
    runner = Runner(block_s=block, rounds=rounds, warmup=3 if args.quick else 200)
    env = environment(PEERS)
    started = time.perf_counter()
    results: list[ScenarioResult] = []
    try:
        for b in build(args.only or list(PATTERNS), args.mode or ["sync", "async"], runner.loop):
            try:
                res = runner.run(b.scenario)
            finally:
                for stop in b.teardown:
                    stop()
            res.skipped = sorted(set(b.skipped))
            results.append(res)
            print(f"  measured {b.scenario.key}", file=sys.stderr, flush=True)
    finally:
        _tel_defaults()
        runner.close()
    env["seconds"] = round(time.perf_counter() - started, 1)
    with contextlib.suppress(OSError):
        env["loadavg_at_end"] = list(os.getloadavg())
    env["rounds"] = rounds
    env["block_seconds"] = block
    print(render_table(results))
    print()
    print(summary([result_to_json(r) for r in results]))
    losses = verdict(results)
    print()
    if losses:
        print("Where a peer is faster than resilient:")
        for line in losses:
            print(f"  - {line}")
    else:
        print("resilient is the fastest library on every measured row.")
    if args.output != "-":
        write_json(
            args.output,
            {
                "meta": env,
                "scenarios": [result_to_json(r) for r in results],
                "peer_faster": losses,
            },
        )
        print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
