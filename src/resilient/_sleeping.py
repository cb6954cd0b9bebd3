"""Sleeping that tests can switch off: ``resilient.testing.instant_retries()`` and
``resilient.testing.fake_clock()``.

Users' own test suites are slow because of retry backoff; a process-wide switch (not a context
variable, so worker threads see it too) turns every library-initiated wait into a zero-length
one while still yielding to the event loop. While a fake clock is installed (``_clock``), a
wait advances that clock by its length instead, so the test's fake time stays consistent with
the waits the library took; with both active, waits are zero-length and the clock stays put.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Generator

from . import _clock
from ._lazy import module

__all__ = ["async_sleep", "checkpoint", "instant", "set_instant", "sleep0", "sync_sleep"]

_instant_depth = 0
_lock = threading.Lock()


def instant() -> bool:
    """True while at least one ``instant_retries()`` block is active."""
    return _instant_depth > 0


def set_instant(on: bool) -> None:
    """Enter (``True``) or leave (``False``) one level of instant waiting."""
    global _instant_depth
    with _lock:
        _instant_depth += 1 if on else -1
        if _instant_depth < 0:
            _instant_depth = 0


def sync_sleep(seconds: float) -> None:
    """``time.sleep`` unless waits are instant (then nothing) or the clock is fake (then the
    fake clock advances by ``seconds``)."""
    if seconds > 0 and not _instant_depth:
        fake = _clock.fake
        if fake is None:
            time.sleep(seconds)
        else:
            fake.sleep(seconds)


async def async_sleep(seconds: float) -> None:
    """``anyio.sleep`` (asyncio and trio) unless waits are instant or the clock is fake (then a
    checkpoint, after advancing the fake clock by ``seconds``)."""
    if seconds > 0 and not _instant_depth:
        fake = _clock.fake
        if fake is not None:
            fake.sleep(seconds)
            seconds = 0.0
    else:
        seconds = 0.0
    await module("anyio").sleep(seconds)  # anyio: loaded with the first async wait


@types.coroutine
def sleep0() -> Generator[None, None, None]:
    """asyncio's own zero-length sleep (what ``asyncio.sleep(0)`` awaits): a bare ``yield``
    makes the running task go round the event loop once."""
    yield


async def checkpoint() -> None:
    """A cancellation point that also yields to the event loop (asyncio and trio)."""
    await module("anyio.lowlevel").checkpoint()
