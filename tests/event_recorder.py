"""An ``on_event`` listener for tests that wait for events from other threads and tasks
(shared by the bulkhead and rate limiter tests; import it as ``from event_recorder import
Recorder``: pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

import threading
from typing import Any

import anyio

from resilient.telemetry._events import Event

WAIT = 10.0  # real seconds; only reached when something is broken


class Recorder:
    """An ``on_event`` listener that keeps the events and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def of(self, kind: type[Event]) -> list[Any]:
        with self._cond:
            return [e for e in self.events if isinstance(e, kind)]

    def wait_for(self, kind: type[Event], count: int = 1) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.of(kind)) >= count, WAIT)
        assert ok, f"never saw {count} x {kind.__name__}"

    async def until(self, kind: type[Event], count: int = 1) -> None:
        """``wait_for`` from async code: the blocking wait runs in a worker thread, so the
        event loop keeps running the tasks we are waiting for."""
        await anyio.to_thread.run_sync(self.wait_for, kind, count)
