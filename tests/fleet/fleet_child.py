"""One replica of the multi-process fleet tests (``test_fleet_processes.py``), run as
``python fleet_child.py '<json settings>'``.

It builds its own ``RedisState`` and policy, prints ``ready`` once it is in step with the
fleet, waits for ``go <start>`` on stdin (``start``: a ``time.monotonic()`` instant, which is
the same clock in every process of the machine), runs its scenario and prints one JSON line
with what it saw. Times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import resilient as rs


def _wait(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("never got in step with the fleet")
        time.sleep(0.005)


def _ready_set_go() -> float:
    """Say we are in step with the fleet, wait for the parent's ``go <start>`` and for that
    instant; return it."""
    print("ready", flush=True)
    start = float(sys.stdin.readline().split()[1])
    left = start - time.monotonic()
    if left > 0:
        time.sleep(left)
    return start


def breaker_scenario(settings: dict[str, Any]) -> dict[str, Any]:
    """Phase 1: call a failing dependency every ``pace`` seconds until the breaker rejects;
    phase 2: from several threads, try calls that hold their trial slot for ``hold`` seconds
    until ``open_duration + 1`` seconds after the first rejection; count what was admitted."""
    state = rs.RedisState(
        settings["url"], prefix=settings["prefix"], sync_interval=settings["sync_interval"]
    )
    breaker = rs.CircuitBreaker(
        "fleet-dependency",
        window_size=settings["window_size"],
        minimum_calls=settings["window_size"],
        failure_rate_threshold=1.0,
        open_duration=settings["open_duration"],
        half_open_max_calls=settings["half_open_max_calls"],
        state=state,
    )
    _wait(lambda: breaker._shared_core.online)
    _ready_set_go()

    calls: list[float] = []

    def failing() -> None:
        calls.append(time.monotonic())
        raise ConnectionError("dependency down")

    first_reject = None
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        attempt = time.monotonic()
        try:
            breaker.call(failing)
        except ConnectionError:
            pass
        except rs.CircuitOpenError:
            first_reject = attempt
            break
        time.sleep(settings["pace"])

    trials: list[float] = []
    reasons: dict[str, int] = {}
    lock = threading.Lock()
    phase_end = (first_reject or time.monotonic()) + settings["open_duration"] + 1.0

    def trial() -> None:
        with lock:
            trials.append(time.monotonic())
        time.sleep(settings["hold"])  # keeps the trial slot past the end of the phase

    def prober() -> None:
        while time.monotonic() < phase_end:
            try:
                breaker.call(trial)
            except rs.CircuitOpenError as error:
                with lock:
                    reasons[error.reason] = reasons.get(error.reason, 0) + 1
            time.sleep(settings["pace"])

    threads = [threading.Thread(target=prober) for _ in range(settings["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state.close()
    return {"calls": calls, "first_reject": first_reject, "trials": trials, "reasons": reasons}


def bucket_scenario(settings: dict[str, Any]) -> dict[str, Any]:
    """Take tokens from the fleet's bucket as fast as it gives them, for ``seconds``."""
    state = rs.RedisState(
        settings["url"], prefix=settings["prefix"], sync_interval=settings["sync_interval"]
    )
    bucket = state._bind_bucket("fleet-api", settings["rate"], 1.0, settings["burst"])
    _wait(lambda: state.connected)
    start = _ready_set_go()
    admitted: list[float] = []
    offline = 0
    end = start + settings["seconds"]
    while (now := time.monotonic()) < end:
        answer = bucket.take()
        if answer is None:
            offline += 1
            time.sleep(0.001)
        elif answer[0]:
            admitted.append(now)
        else:
            time.sleep(min(answer[1], 0.01))
    state.close()
    return {"admitted": admitted, "offline": offline}


def main() -> None:
    settings = json.loads(sys.argv[1])
    scenario = {"breaker": breaker_scenario, "bucket": bucket_scenario}[settings["scenario"]]
    result = scenario(settings)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
