"""The live demo: three services, a few hundred orders, payments breaks and heals.

Run: ``make demo`` (or ``python examples/demo.py``; ``--quick`` for a 10-second version).

1. Starts orders, payments and notifications as subprocesses on free 127.0.0.1 ports, with
   small breaker windows configured through ``RESILIENT__...`` environment variables.
2. Places orders at a steady rate while it switches faults on payments through its
   ``/chaos`` endpoint: failing (some charges fail *after* charging: in-doubt), then slow
   (longer than the orders' timeout), then the recommendations read goes down, then all heal.
3. Shows it live: progress, each breaker's state, successes, retries, fallbacks, rejections,
   sagas completed and compensated (scraped from the orders service's ``/metrics``).
4. Prints a summary table and writes a self-contained HTML report with an SVG timeline.
5. Stops every process it started, also on Ctrl-C or SIGTERM.

Needs nothing but the packages of ``resilient[examples]``; runs without a terminal (CI).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `examples.shop` importable
    sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import httpx  # noqa: E402
from rich.console import Console, Group  # noqa: E402
from rich.live import Live  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from examples.shop.cluster import ShopCluster, breaker_states, metric_samples  # noqa: E402
from examples.shop.report import OrderSample, Phase, StateSample, render  # noqa: E402

# Each phase: (name, fraction of the run where it starts, payments chaos, notifications chaos)
_PHASES: list[tuple[str, float, dict[str, Any], dict[str, Any]]] = [
    ("healthy", 0.0, {}, {}),
    ("payments failing", 0.2, {"error_rate": 0.7, "after_commit": 0.5}, {}),
    ("payments slow", 0.4, {"latency": 0.4}, {}),
    ("recommendations down", 0.55, {}, {"error_rate": 1.0, "endpoints": ["recommendations"]}),
    ("healed", 0.7, {}, {}),
]
_STATE_STYLE = {"closed": "green", "open": "bold red", "half_open": "yellow"}


@dataclass
class Tally:
    """What the demo has seen so far: client-side outcomes and server-side metrics."""

    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    recommendations: Counter[str] = field(default_factory=Counter)
    orders: list[OrderSample] = field(default_factory=list)
    states: list[StateSample] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    breakers: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    phase: str = "starting"
    ever_open: set[str] = field(default_factory=set)
    by_order: dict[str, str] = field(default_factory=dict)
    money_mismatches: list[str] = field(default_factory=list)
    money_checked: int = 0


def _policy_env(quick: bool) -> dict[str, str]:
    open_for = "500ms" if quick else "1s"
    env = {
        "RESILIENT__PAYMENTS__TIMEOUT__SECONDS": "250ms",
        "RESILIENT__RECOMMENDATIONS__TIMEOUT__SECONDS": "200ms",
    }
    for name in ("PAYMENTS", "NOTIFICATIONS", "RECOMMENDATIONS"):
        env[f"RESILIENT__{name}__BREAKER__WINDOW_SIZE"] = "20"
        env[f"RESILIENT__{name}__BREAKER__MINIMUM_CALLS"] = "8"
        env[f"RESILIENT__{name}__BREAKER__OPEN_DURATION"] = open_for
    return env


def _classify(response: httpx.Response) -> str:
    if response.status_code == 201:
        return "completed"
    try:
        body = response.json()
    except ValueError:
        return "error"
    if body.get("reason") == "CircuitOpenError":
        return "fail_fast"
    if response.status_code == 422:
        return "declined"
    if body.get("status") == "compensated":
        return "compensated"
    return "error"


def _read_metrics(text: str) -> dict[str, float]:
    def total(metric: str, **match: str) -> float:
        return sum(
            v
            for labels, v in metric_samples(text, metric)
            if all(labels.get(k) == want for k, want in match.items())
        )

    return {
        "retries": total("resilient_retry_attempts_total"),
        "fallbacks": total("resilient_calls_total", policy="fallback", outcome="fallback"),
        "rejections": total("resilient_rejections_total"),
        "sagas completed": total("resilient_saga_total", outcome="completed"),
        "sagas compensated": total("resilient_saga_total", outcome="compensated"),
        "sagas stuck": total("resilient_saga_total", outcome="stuck"),
    }


class Demo:
    """One run: the load, the fault schedule, the metric sampler and the live view."""

    def __init__(self, cluster: ShopCluster, orders: int, duration: float, console: Console):
        assert cluster.orders and cluster.payments and cluster.notifications
        self.orders_url = cluster.orders.url
        self.payments_url = cluster.payments.url
        self.notifications_url = cluster.notifications.url
        self.n = orders
        self.duration = duration
        self.console = console
        self.tally = Tally()
        self.start = time.monotonic()
        self.progress = Progress(
            TextColumn("[bold]orders"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
        )
        self.task = self.progress.add_task("", total=orders)

    def now(self) -> float:
        """Seconds since the demo started (the report's time axis)."""
        return time.monotonic() - self.start

    # -- the live view -----------------------------------------------------------------------
    def view(self) -> Group:
        """Progress bar, breaker states and counters as one rich renderable."""
        t = self.tally
        self.progress.update(self.task, description=f"phase: [cyan]{t.phase}[/]")
        breakers = Table(title="breakers", title_justify="left")
        breakers.add_column("name")
        breakers.add_column("state")
        for name, state in sorted(t.breakers.items()):
            breakers.add_row(name, f"[{_STATE_STYLE.get(state, 'white')}]{state}[/]")
        counts = Table(title="counts", title_justify="left")
        counts.add_column("what")
        counts.add_column("n", justify="right")
        for what in ("completed", "compensated", "fail_fast", "declined", "error"):
            counts.add_row(f"orders {what.replace('_', ' ')}", str(t.outcomes[what]))
        counts.add_row("recommendations from cache", str(t.recommendations["cache"]))
        for what, value in t.metrics.items():
            counts.add_row(what, f"{value:g}")
        grid = Table.grid(padding=(0, 4))
        grid.add_row(breakers, counts)
        return Group(self.progress, grid)

    # -- the moving parts ----------------------------------------------------------------------
    async def set_phase(self, client: httpx.AsyncClient, index: int) -> None:
        """Switch both fault switches to phase ``index`` and note when it began."""
        name, at, pay, notes = _PHASES[index]
        await client.post(f"{self.payments_url}/chaos", json=pay)
        await client.post(f"{self.notifications_url}/chaos", json=notes)
        now = at * self.duration  # as scheduled (the switch itself takes a millisecond)
        if self.tally.phases:
            last = self.tally.phases[-1]
            self.tally.phases[-1] = Phase(last.name, last.start, now)
        self.tally.phases.append(Phase(name, now, now))
        self.tally.phase = name
        self.console.log(
            f"phase [cyan]{name}[/]: payments chaos {pay or 'off'}, "
            f"notifications chaos {notes or 'off'}"
        )

    async def faults(self, client: httpx.AsyncClient) -> None:
        """The fault schedule: each phase starts at its fraction of the load's duration."""
        for index, (_, at, _, _) in enumerate(_PHASES):
            await anyio.sleep(max(0.0, at * self.duration - self.now()))
            await self.set_phase(client, index)

    async def sample(self, client: httpx.AsyncClient) -> None:
        """Scrape /metrics every 200 ms for the breaker strip and the counters."""
        while True:
            with contextlib.suppress(httpx.HTTPError):
                text = (await client.get(f"{self.orders_url}/metrics")).text
                states = breaker_states(text)
                self.tally.breakers = states
                self.tally.metrics = _read_metrics(text)
                self.tally.states.append(StateSample(self.now(), dict(states)))
                self.tally.ever_open.update(n for n, s in states.items() if s == "open")
            await anyio.sleep(0.2)

    async def one_order(self, client: httpx.AsyncClient, i: int, limit: anyio.Semaphore) -> None:
        """Place order ``i``, then read recommendations, and record what happened."""
        try:
            customer = f"customer-{i % 17}"
            # every 40th order is too expensive: payments declines it (a business "no")
            amount = 250_000 if i % 40 == 39 else 1000 + (i % 7) * 150
            t0 = self.now()
            outcome = "error"
            with contextlib.suppress(httpx.HTTPError):
                response = await client.post(
                    f"{self.orders_url}/orders",
                    json={
                        "order_id": f"order-{i:05d}",
                        "customer": customer,
                        "sku": "mug",
                        "qty": 1,
                        "amount_cents": amount,
                    },
                )
                outcome = _classify(response)
            self.tally.by_order[f"order-{i:05d}"] = outcome
            latency = (self.now() - t0) * 1000
            source = "error"
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                rec = await client.get(f"{self.orders_url}/recommendations/{customer}")
                source = str(rec.json()["source"])
            self.tally.outcomes[outcome] += 1
            self.tally.recommendations[source] += 1
            self.tally.orders.append(OrderSample(t0, latency, outcome, source))
            self.progress.advance(self.task)
        finally:
            limit.release()

    async def load(self, client: httpx.AsyncClient) -> None:
        """Place ``n`` orders at a steady rate, at most 16 in flight."""
        limit = anyio.Semaphore(16)
        async with anyio.create_task_group() as tg:
            for i in range(self.n):
                await anyio.sleep(max(0.0, i * self.duration / self.n - self.now()))
                await limit.acquire()
                self.tally.sent += 1
                tg.start_soon(self.one_order, client, i, limit)

    async def settle(self, client: httpx.AsyncClient, deadline: float) -> None:
        """After the load: keep a trickle of orders going until every breaker closed again
        (a breaker only probes on a call), for at most ``deadline`` seconds."""
        limit = anyio.Semaphore(1)
        i = self.n
        end = self.now() + deadline
        while self.now() < end:
            text = (await client.get(f"{self.orders_url}/metrics")).text
            states = breaker_states(text)
            self.tally.breakers = states
            if all(s == "closed" for s in states.values()):
                return
            await limit.acquire()
            self.progress.update(self.task, total=i + 1)
            await self.one_order(client, i, limit)
            i += 1
            await anyio.sleep(0.1)

    async def check_money(self, client: httpx.AsyncClient) -> None:
        """Compare the payments ledger with what the orders service answered: a completed
        order is charged and not refunded; any other order is refunded exactly what it was
        charged (in-doubt charges included)."""
        ledger = (await client.get(f"{self.payments_url}/ledger")).json()
        charged: Counter[str] = Counter()
        refunded: Counter[str] = Counter()
        for charge in ledger["charges"]:
            charged[charge["order_id"]] += charge["amount_cents"]
        for refund in ledger["refunds"]:
            refunded[refund["order_id"]] += refund["amount_cents"]
        for order_id, outcome in self.tally.by_order.items():
            if outcome == "error":
                continue  # no answer: the order's fate is unknown to the client
            ok = (
                charged[order_id] > 0 and refunded[order_id] == 0
                if outcome == "completed"
                else charged[order_id] == refunded[order_id]
            )
            self.tally.money_checked += 1
            if not ok:
                self.tally.money_mismatches.append(
                    f"{order_id} ({outcome}: charged {charged[order_id]}, "
                    f"refunded {refunded[order_id]})"
                )

    async def run(self) -> None:
        """Load, faults, sampling and the live view, until every breaker closed again."""
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx.AsyncClient(timeout=15.0, limits=limits) as client:
            with Live(self.view(), console=self.console, refresh_per_second=4) as live:

                async def refresh() -> None:
                    while True:
                        live.update(self.view())
                        await anyio.sleep(0.25)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(self.sample, client)
                    tg.start_soon(refresh)
                    async with anyio.create_task_group() as work:
                        work.start_soon(self.faults, client)
                        work.start_soon(self.load, client)
                    self.tally.phase = "settling"
                    await self.settle(client, deadline=8.0)
                    text = (await client.get(f"{self.orders_url}/metrics")).text
                    self.tally.breakers = breaker_states(text)
                    self.tally.metrics = _read_metrics(text)
                    self.tally.states.append(StateSample(self.now(), self.tally.breakers))
                    await self.check_money(client)
                    self.tally.phase = "done"
                    tg.cancel_scope.cancel()
                live.update(self.view())
        if self.tally.phases:
            last = self.tally.phases[-1]
            self.tally.phases[-1] = Phase(last.name, last.start, self.now())


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _phase_rows(tally: Tally) -> list[list[Any]]:
    rows = []
    for phase in tally.phases:
        inside = [o for o in tally.orders if phase.start <= o.t < phase.end]
        lat = [o.latency_ms for o in inside]
        c = Counter(o.outcome for o in inside)
        rows.append(
            [
                phase.name,
                len(inside),
                c["completed"],
                c["compensated"],
                c["fail_fast"],
                f"{_percentile(lat, 0.5):.1f}",
                f"{_percentile(lat, 0.95):.1f}",
            ]
        )
    return rows


def _summary(tally: Tally, elapsed: float) -> list[tuple[str, Any]]:
    lat = [o.latency_ms for o in tally.orders]
    fail_fast = [o.latency_ms for o in tally.orders if o.outcome == "fail_fast"]
    rows: list[tuple[str, Any]] = [
        ("orders placed", len(tally.orders)),
        ("completed", tally.outcomes["completed"]),
        ("compensated (rolled back)", tally.outcomes["compensated"]),
        ("failed fast (breaker open)", tally.outcomes["fail_fast"]),
        ("declined by payments", tally.outcomes["declined"]),
        ("errors", tally.outcomes["error"]),
        ("recommendations from cache (fallback)", tally.recommendations["cache"]),
        ("latency p50 / p95 (ms)", f"{_percentile(lat, 0.5):.1f} / {_percentile(lat, 0.95):.1f}"),
        ("fail-fast latency p50 (ms)", f"{_percentile(fail_fast, 0.5):.1f}"),
    ]
    rows += [(k, f"{v:g}") for k, v in tally.metrics.items()]
    rows += [
        (
            "money check: refunded exactly what was charged",
            f"ok ({tally.money_checked} orders)"
            if not tally.money_mismatches
            else "MISMATCH: " + "; ".join(tally.money_mismatches[:5]),
        ),
        ("breakers that opened", ", ".join(sorted(tally.ever_open)) or "none"),
        (
            "breaker states at the end",
            ", ".join(f"{k}={v}" for k, v in sorted(tally.breakers.items())),
        ),
        ("wall time (s)", f"{elapsed:.1f}"),
    ]
    return rows


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (e.g. from CI or `kill`) takes the same clean-up path as Ctrl-C."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code (130 when interrupted)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=None, help="orders to place (default 300)")
    parser.add_argument("--seconds", type=float, default=None, help="length of the load phase")
    parser.add_argument("--quick", action="store_true", help="a short run (60 orders, ~6 s)")
    parser.add_argument(
        "--report",
        type=Path,
        default=Path("demo-report.html"),
        help="where to write the HTML report (default ./demo-report.html)",
    )
    args = parser.parse_args(argv)
    orders = args.orders if args.orders is not None else (60 if args.quick else 300)
    seconds = args.seconds if args.seconds is not None else (6.0 if args.quick else 20.0)
    if orders < 1:
        parser.error(f"--orders must be >= 1, got {orders}")
    if seconds <= 0:
        parser.error(f"--seconds must be > 0, got {seconds}")

    console = Console(log_path=False)
    started = time.monotonic()
    cluster = ShopCluster(_policy_env(args.quick))
    with _sigterm_as_interrupt():
        try:
            console.print("[bold]starting services[/] on 127.0.0.1 ...")
            cluster.start()
            for proc in cluster.processes:
                console.print(f"  {proc.service:<13} pid={proc.pid} {proc.url}")
            demo = Demo(cluster, orders, seconds, console)
            anyio.run(demo.run)
        except KeyboardInterrupt:
            console.print("\n[yellow]interrupted: stopping the services[/]")
            return 130
        finally:
            console.print()
            cluster.stop()
            console.print(f"stopped {len(cluster.pids)} service processes: {cluster.pids}")

    tally = demo.tally
    elapsed = time.monotonic() - started
    summary = _summary(tally, elapsed)
    table = Table(title="demo summary", title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    for what, value in summary:
        table.add_row(what, str(value))
    console.print(table)

    data = {
        "orders": len(tally.orders),
        "outcomes": dict(tally.outcomes),
        "recommendations": dict(tally.recommendations),
        "metrics": tally.metrics,
        "breakers_opened": sorted(tally.ever_open),
        "money_checked": tally.money_checked,
        "money_mismatches": tally.money_mismatches,
        "breakers_at_end": tally.breakers,
        "pids": cluster.pids,
        "median_latency_ms": statistics.median([o.latency_ms for o in tally.orders] or [0.0]),
    }
    args.report.write_text(
        render(
            title="resilient shop demo",
            summary=summary,
            phase_rows=_phase_rows(tally),
            orders=tally.orders,
            states=tally.states,
            phases=tally.phases,
            data=data,
        ),
        encoding="utf-8",
    )
    console.print(f"report written to [bold]{args.report}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
