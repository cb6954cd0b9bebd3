"""Start, watch and stop the shop's services as subprocesses on loopback.

Used by the demo and by the end-to-end tests. Each service is a real process
(``python -m examples.shop.<service> --port 0 --exit-with-parent``); it picks a free port on
127.0.0.1 and announces it on its first stdout line. :class:`ShopCluster` starts payments and
the notifications replicas side by side, then orders pointed at them, and stops every process
it started — SIGTERM, then SIGKILL after a grace period — whatever happened in between.
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
        self,
        service: str,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        start_timeout: float,
        label: str | None = None,
    ) -> None:
        self.service = service
        self.label = label or service
        self.log_path = log_dir / f"{self.label}.log"
        self._start_timeout = start_timeout
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
        self.url = ""

    def wait_ready(self) -> ServiceProcess:
        """Read the announced URL, then wait until ``/health`` answers (the process is
        stopped when it does not within the start timeout)."""
        try:
            self.url = self._read_announcement(self._start_timeout)
            assert self.process.stdout is not None
            threading.Thread(target=self._drain, args=(self.process.stdout,), daemon=True).start()
            deadline = time.monotonic() + self._start_timeout
            while True:
                try:
                    if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or not self.alive():
                    raise RuntimeError(
                        f"{self.label} never became healthy:\n{self.read_log()[-2000:]}"
                    )
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

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
                f"{self.label} did not start (exit code {self.process.poll()}); "
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
    """payments and the notifications replicas (side by side), then orders; stopped in reverse.

    ``policy_env`` is passed to every service: ``RESILIENT__...`` variables that tune the named
    policies (small breaker windows in tests, the payments load-shedding limit, ...); each
    variable names its policy, so a service ignores the others' variables.
    ``notification_replicas`` notifications processes share one ledger (the work dir);
    ``orders_env`` goes to the orders service only (``SHOP_HEDGE=off``, for instance). Use as
    a context manager; :meth:`stop` is idempotent and also safe after a failed start.
    """

    def __init__(
        self,
        policy_env: Mapping[str, str] | None = None,
        *,
        notification_replicas: int = 1,
        orders_env: Mapping[str, str] | None = None,
        start_timeout: float = _START_TIMEOUT,
        keep_logs: bool = False,
    ) -> None:
        if notification_replicas < 1:
            raise ValueError(f"notification_replicas must be >= 1, got {notification_replicas}")
        self.policy_env = dict(policy_env or {})
        self.orders_env = dict(orders_env or {})
        self.notification_replicas = notification_replicas
        self.start_timeout = start_timeout
        self.keep_logs = keep_logs
        self.workdir = Path(tempfile.mkdtemp(prefix="resilient-shop-"))
        self.processes: list[ServiceProcess] = []
        self.payments: ServiceProcess | None = None
        self.replicas: list[ServiceProcess] = []
        self.orders: ServiceProcess | None = None

    @property
    def notifications(self) -> ServiceProcess | None:
        """The first notifications replica."""
        return self.replicas[0] if self.replicas else None

    @property
    def pids(self) -> list[int]:
        """Process ids of every service started so far."""
        return [p.pid for p in self.processes]

    def start(self) -> ShopCluster:
        """Start every service and wait until each answers ``/health``."""
        try:
            # Processes start in parallel (each spends a second or so importing), then each
            # is waited for; orders needs the others' URLs, so it comes last.
            self.payments = self._spawn("payments", {})
            for n in range(1, self.notification_replicas + 1):
                label = "notifications" if n == 1 else f"notifications-{n}"
                self.replicas.append(self._spawn("notifications", {"SHOP_REPLICA": str(n)}, label))
            for proc in self.processes:
                proc.wait_ready()
            orders_env = {
                "SHOP_PAYMENTS_URL": self.payments.url,
                "SHOP_NOTIFICATIONS_URL": ",".join(r.url for r in self.replicas),
                **self.orders_env,
            }
            self.orders = self._spawn("orders", orders_env).wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(
        self, service: str, env: Mapping[str, str], label: str | None = None
    ) -> ServiceProcess:
        full_env = {"SHOP_DATA_DIR": str(self.workdir), **self.policy_env, **env}
        proc = ServiceProcess(
            service, full_env, self.workdir, start_timeout=self.start_timeout, label=label
        )
        self.processes.append(proc)
        return proc

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
        return "\n".join(f"--- {p.label} ---\n{p.read_log()[-3000:]}" for p in self.processes)

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
    Prometheus text exposition, as ``(labels, value)``.

    Only the lines of that sample are handed to prometheus-client's parser: parsing a whole
    exposition of a busy service takes a tenth of a second, which a load generator scraping
    several times a second cannot spend on its event loop."""
    lines = [line for line in text.splitlines() if line.startswith((f"{metric}{{", f"{metric} "))]
    out: list[tuple[dict[str, str], float]] = []
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            if sample.name == metric:
                out.append((dict(sample.labels), float(sample.value)))
    return out


def breaker_states(text: str) -> dict[str, str]:
    """``{breaker name: current state}`` read from ``resilient_breaker_state`` gauges: the
    breakers in front of the shop's dependencies (the saga store's own outage breaker,
    ``saga-store ...``, is left out)."""
    states: dict[str, str] = {}
    for labels, value in metric_samples(text, "resilient_breaker_state"):
        if value == 1.0 and not labels["name"].startswith("saga-store"):
            states[labels["name"]] = labels["state"]
    return states
