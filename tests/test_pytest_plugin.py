"""The pytest plugin as a user's suite meets it: installed through the ``pytest11`` entry point,
loaded in every run at no cost, opted out of with ``-p no:resilient``, and its fixtures working
under pytest-asyncio (strict and auto modes) and anyio's plugin (asyncio and trio) — each run
ending with a test that uses no fixture and finds everything put back.

The runs are real pytest subprocesses (``pytester``) in an empty directory, so the inner
suite has no configuration of ours and loads plugins exactly as a user's would.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest

# One inner test module per async style: ``ASYNC_MARKER`` lines mark its async tests (or go),
# ``BACKEND_FIXTURE`` becomes anyio's backend fixture where anyio runs the tests.
INNER = '''
import time

import anyio
import pytest
import resilient as rs
from resilient import _clock, _sleeping
from resilient.telemetry import _hub

# What a service module does at import time, before any fixture runs.
MODULE_BREAKER = rs.registry.breaker("module-level", window_size=2, minimum_calls=2)


@rs.policy("module-level", "breaker")
def module_call() -> str:
    return "ok"


TELEMETRY_BEFORE = _hub.save_state()
REGISTERED_BEFORE = {(p.name, p.kind) for p in rs.registry}
SLOW = 3600.0  # a wait no test may really take


def boom() -> None:
    raise ConnectionError("down")


async def aboom() -> None:
    raise ConnectionError("down")


BACKEND_FIXTURE


def use_breaker_control_and_registry(clock, control, registry, events):
    """Dirty everything the fixtures isolate, checking each works."""
    assert registry is rs.registry
    assert _hub.save_state()[0] == ()  # fresh telemetry: no listeners
    assert _hub.save_state()[3] is not TELEMETRY_BEFORE[3]  # metrics into a fresh registry
    rs.add_listener(events.append)
    breaker = rs.registry.breaker("inner", window_size=2, minimum_calls=2, open_duration=30)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(boom)
    assert breaker.state is rs.BreakerState.OPEN
    clock.advance(30)  # the breaker was built with the fake clock
    assert breaker.state is rs.BreakerState.HALF_OPEN
    assert events  # the listener added during the test hears the breaker
    control.force_open("module-level")  # the very breaker the decorated function holds
    with pytest.raises(rs.CircuitOpenError):
        module_call()
    rs.configure_telemetry(tracing=False)


def test_1_sync(resilient_clock, instant_retries, breaker_control, isolated_registry):
    use_breaker_control_and_registry(resilient_clock, breaker_control, isolated_registry, [])
    retry = rs.Retry(attempts=3, wait=SLOW)
    with pytest.raises(ConnectionError):
        retry.call(boom)
    assert resilient_clock.sleeps == []  # instant: zero-length waits, fake time stays put


ASYNC_MARKER
async def test_2_async_clock(resilient_clock, breaker_control, isolated_registry):
    use_breaker_control_and_registry(resilient_clock, breaker_control, isolated_registry, [])
    start = resilient_clock()
    retry = rs.Retry(attempts=3, wait=SLOW)
    with anyio.fail_after(60):  # a broken hook fails here instead of hanging an hour
        with pytest.raises(ConnectionError):
            await retry.acall(aboom)
    assert resilient_clock.sleeps == [SLOW, SLOW]
    assert resilient_clock() == start + 2 * SLOW


ASYNC_MARKER
async def test_3_async_instant(instant_retries, breaker_control):
    retry = rs.Retry(attempts=3, wait=SLOW)
    with anyio.fail_after(60):
        with pytest.raises(ConnectionError):
            await retry.acall(aboom)
    breaker_control.force_closed(MODULE_BREAKER)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            MODULE_BREAKER.call(boom)
    assert MODULE_BREAKER.state is rs.BreakerState.DISABLED


def test_9_the_next_test_sees_a_clean_state():
    assert _clock.fake is None
    assert rs.CircuitBreaker("fresh")._clock is time.monotonic
    assert not _sleeping.instant()
    assert _hub.save_state() == TELEMETRY_BEFORE
    assert {(p.name, p.kind) for p in rs.registry} == REGISTERED_BEFORE
    assert MODULE_BREAKER.state is rs.BreakerState.CLOSED
    assert module_call() == "ok"
'''

ANYIO_BACKEND = """
@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
"""

# style -> (marker line, backend fixture, pytest options, tests expected to pass). pytest-asyncio
# and anyio load through their own entry points, as in a user's suite.
_ASYNCIO = ["-o", "asyncio_default_fixture_loop_scope=function", "-o"]
STYLES = {
    "pytest-asyncio-strict": ("@pytest.mark.asyncio", "", [*_ASYNCIO, "asyncio_mode=strict"], 4),
    "pytest-asyncio-auto": ("", "", [*_ASYNCIO, "asyncio_mode=auto"], 4),  # auto: no marker
    "anyio": ("@pytest.mark.anyio", ANYIO_BACKEND, ["-p", "no:asyncio"], 6),  # 2 backends
}


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # every pytest warning is an error: an unhandled coroutine, an unknown option, ...
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "error::pytest.PytestWarning", "-v", *args, timeout=300
    )


@pytest.mark.parametrize("style", list(STYLES))
def test_fixtures_work_and_clean_up_in_each_async_style(
    pytester: pytest.Pytester, style: str
) -> None:
    marker, backend_fixture, options, passed = STYLES[style]
    source = INNER.replace("ASYNC_MARKER", marker).replace("BACKEND_FIXTURE", backend_fixture)
    pytester.makepyfile(test_inner=source)
    result = _run(pytester, *options)
    result.assert_outcomes(passed=passed)
    # the clean-state check ran after every test that dirtied the state
    order = [line.split("::")[1].split(" ")[0] for line in result.outlines if "PASSED" in line]
    assert order[-1] == "test_9_the_next_test_sees_a_clean_state", order


def test_the_plugin_is_registered_as_pytest11_resilient() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert found.get("resilient") == "resilient.testing.pytest_plugin"


def test_opting_out_removes_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_inner="""
        def test_uses_clock(resilient_clock):
            assert resilient_clock() == 0.0
        """
    )
    assert _run(pytester, "-p", "no:asyncio").ret == 0
    opted_out = _run(pytester, "-p", "no:asyncio", "-p", "no:resilient")
    opted_out.assert_outcomes(errors=1)
    opted_out.stdout.fnmatch_lines(["*fixture 'resilient_clock' not found*"])


def test_loading_the_plugin_imports_nothing_beyond_the_package() -> None:
    """pytest imports the plugin in every run of every project that installs resilient: it
    may cost no more than ``import resilient`` itself (the fixtures import what they use)."""
    code = textwrap.dedent(
        """
        import sys
        import pytest, resilient
        before = set(sys.modules)
        import resilient.testing.pytest_plugin
        print(sorted(set(sys.modules) - before))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    added = ast.literal_eval(out.stdout.strip())
    assert "resilient.testing.pytest_plugin" in added
    assert all(m.startswith("resilient.") for m in added), added  # nothing beyond the package
