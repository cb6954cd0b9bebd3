"""Start, watch and stop the three shop services as subprocesses on loopback.

Used by the demo and by the end-to-end tests. Each service is a real process
(``python -m examples.shop.<service> --port 0 --exit-with-parent``); it picks a free port on
127.0.0.1 and announces it on its first stdout line. :class:`ShopCluster` starts payments and
notifications first, then orders pointed at them, and stops every process it started —
SIGTERM, then SIGKILL after a grace period — whatever happened in between.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "ROOT",
    "ServiceProcess",
    "ShopCluster",
    "breaker_states",
    "metric_samples",
]

ROOT = Path(__file__).resolve().parents[2]
_START_TIMEOUT = 20.0


class ServiceProcess:
    """One running shop service: its process, its URL and its log file."""

    def __init__(
        self, service: str, env: Mapping[str, str], log_dir: Path, *, start_timeout: float
    ) -> None:
        self.service = service
        self.log_path = log_dir / f"{service}.log"
        self._log = self.log_path.open("wb")
        child_env = dict(os.environ)
        child_env.update(env)
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        child_env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"examples.shop.{service}", "--port", "0", "--exit-with-parent"],
            cwd=ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self.pid = self.process.pid
        try:
            self.url = self._read_announcement(start_timeout)
        except BaseException:
            self.stop()
            raise
        assert self.process.stdout is not None
        threading.Thread(target=self._drain, args=(self.process.stdout,), daemon=True).start()

    def _read_announcement(self, timeout: float) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    break
                if selector.select(timeout=min(left, 0.2)):
                    chunk = os.read(self.process.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode(errors="replace").strip()
        if not line.startswith("READY "):
            raise RuntimeError(
                f"{self.service} did not start (exit code {self.process.poll()}); "
                f"its log {self.log_path}:\n{self.read_log()[-2000:]}"
            )
        return line.split(" ", 1)[1]

    def _drain(self, stream: IO[bytes]) -> None:
        # Keep reading stdout so a chatty service never blocks on a full pipe.
        with contextlib.suppress(OSError, ValueError):
            for chunk in iter(lambda: stream.read(4096), b""):
                self._log.write(chunk)

    def read_log(self) -> str:
        """What the service wrote to stderr so far (for error messages)."""
        with contextlib.suppress(OSError, ValueError):
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; always reaps the process."""
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=grace)
        finally:
            if self.process.stdout is not None:
                with contextlib.suppress(OSError):
                    self.process.stdout.close()
            with contextlib.suppress(OSError):
                self._log.close()


class ShopCluster:
    """payments + notifications + orders, started in that order, stopped in reverse.

    ``policy_env`` is passed to the orders service only: ``RESILIENT__...`` variables that
    tune its named policies (small breaker windows in tests, for instance). Use as a context
    manager; :meth:`stop` is idempotent and also safe after a failed start.
    """

    def __init__(
        self,
        policy_env: Mapping[str, str] | None = None,
        *,
        start_timeout: float = _START_TIMEOUT,
        keep_logs: bool = False,
    ) -> None:
        self.policy_env = dict(policy_env or {})
        self.start_timeout = start_timeout
        self.keep_logs = keep_logs
        self.workdir = Path(tempfile.mkdtemp(prefix="resilient-shop-"))
        self.processes: list[ServiceProcess] = []
        self.payments: ServiceProcess | None = None
        self.notifications: ServiceProcess | None = None
        self.orders: ServiceProcess | None = None

    @property
    def pids(self) -> list[int]:
        """Process ids of every service started so far."""
        return [p.pid for p in self.processes]

    def start(self) -> ShopCluster:
        """Start the three services and wait until each answers ``/health``."""
        try:
            self.payments = self._spawn("payments", {})
            self.notifications = self._spawn("notifications", {})
            orders_env = {
                "SHOP_PAYMENTS_URL": self.payments.url,
                "SHOP_NOTIFICATIONS_URL": self.notifications.url,
                "SHOP_DATA_DIR": str(self.workdir),
                **self.policy_env,
            }
            self.orders = self._spawn("orders", orders_env)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, service: str, env: Mapping[str, str]) -> ServiceProcess:
        proc = ServiceProcess(service, env, self.workdir, start_timeout=self.start_timeout)
        self.processes.append(proc)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                if httpx.get(f"{proc.url}/health", timeout=1.0).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not proc.alive():
                raise RuntimeError(f"{service} never became healthy:\n{proc.read_log()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every process started (reverse order); remove the work dir unless kept."""
        errors: list[BaseException] = []
        for proc in reversed(self.processes):
            try:
                proc.stop()
            except BaseException as exc:  # keep stopping the others, then re-raise
                errors.append(exc)
        if not self.keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise errors[0]

    def logs(self) -> str:
        """Every service's log, for a failing test's message."""
        return "\n".join(f"--- {p.service} ---\n{p.read_log()[-3000:]}" for p in self.processes)

    def __enter__(self) -> ShopCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def metric_samples(text: str, metric: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``metric`` (full sample name, e.g. ``resilient_saga_total``) in a
    Prometheus text exposition, as ``(labels, value)``."""
    out: list[tuple[dict[str, str], float]] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric:
                out.append((dict(sample.labels), float(sample.value)))
    return out


def breaker_states(text: str) -> dict[str, str]:
    """``{breaker name: current state}`` read from ``resilient_breaker_state`` gauges."""
    states: dict[str, str] = {}
    for labels, value in metric_samples(text, "resilient_breaker_state"):
        if value == 1.0:
            states[labels["name"]] = labels["state"]
    return states
