"""The live demo: four services, a few hundred orders, payments and notifications break and heal.

Run: ``make demo`` (or ``python examples/demo.py``; ``--quick`` for a 10-second version).

1. Starts orders, payments and two notifications replicas as subprocesses on free 127.0.0.1
   ports, with small breaker windows and a small payments load-shedding limit configured
   through ``RESILIENT__...`` environment variables.
2. Places orders at a steady rate while it switches the services' chaos switches (built on
   ``rs.chaos``) through their ``/chaos`` endpoints: payments failing (some charges fail
   *after* charging: in-doubt), slow (longer than the orders' attempt timeout), overloaded (a
   burst of orders: load shedding answers 503 + Retry-After, the chaos throttle 429 +
   Retry-After, and the orders service waits as told before retrying), the recommendations
   read down, then one notifications replica slow — first without, then with ``rs.Hedge`` —
   and finally everything healed.
3. Shows it live: progress, each breaker's state, successes, retries, fallbacks, rejections,
   sagas completed and compensated (scraped from the orders service's ``/metrics``).
4. Prints a summary table (the money check, the Retry-After counts, p95 with and without the
   hedge) and writes a self-contained HTML report with an SVG timeline.
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
from examples.shop.report import (  # noqa: E402
    OrderSample,
    Phase,
    Section,
    StateSample,
    render,
)


@dataclass(frozen=True)
class PhaseSpec:
    """One stretch of the run: when it starts (a fraction of the load's duration) and what
    the chaos switches say: ``payments`` and ``notifications`` (every replica) get these
    ``POST /chaos`` bodies, ``slow_replica`` goes to the last notifications replica on top;
    ``hedge`` switches the orders service's hedging; ``burst`` extra orders start at once."""

    name: str
    at: float
    payments: dict[str, Any] = field(default_factory=dict)
    notifications: dict[str, Any] = field(default_factory=dict)
    slow_replica: dict[str, Any] = field(default_factory=dict)
    hedge: bool = True
    burst: int = 0


SLOW_REPLICA = {"latency": 0.3, "endpoints": ["notifications"]}
_PHASES: list[PhaseSpec] = [
    PhaseSpec("healthy", 0.0),
    # first, while nothing else is wrong: the same slow replica without, then with the hedge
    PhaseSpec("slow replica, no hedge", 0.1, slow_replica=SLOW_REPLICA, hedge=False),
    PhaseSpec("slow replica, hedged", 0.24, slow_replica=SLOW_REPLICA, hedge=True),
    # a burst while payments is slowish: load shedding answers 503 + Retry-After, the chaos
    # throttle some 429s + Retry-After; orders wait as told, then retry
    PhaseSpec("payments overloaded", 0.38, payments={"latency": 0.1, "throttle": 0.15}, burst=10),
    PhaseSpec("payments failing", 0.5, payments={"fault": 0.3, "after_commit": 0.3}),
    PhaseSpec("payments slow", 0.62, payments={"latency": 0.5}),
    PhaseSpec(
        "recommendations down",
        0.76,
        notifications={"fault": 1.0, "endpoints": ["recommendations"]},
    ),
    PhaseSpec("healed", 0.88),
]
UNHEDGED, HEDGED = "slow replica, no hedge", "slow replica, hedged"
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
    payments_metrics: dict[str, float] = field(default_factory=dict)
    hedge_attempts: dict[str, float] = field(default_factory=dict)


def _policy_env(quick: bool) -> dict[str, str]:
    open_for = "500ms" if quick else "1s"
    env = {
        # payments: each attempt 300 ms, the whole call (retries, Retry-After waits) 4 s
        "RESILIENT__PAYMENTS_ATTEMPT__TIMEOUT__SECONDS": "300ms",
        "RESILIENT__PAYMENTS__TIMEOUT__SECONDS": "4s",
        "RESILIENT__RECOMMENDATIONS_ATTEMPT__TIMEOUT__SECONDS": "200ms",
        "RESILIENT__RECOMMENDATIONS__TIMEOUT__SECONDS": "500ms",
        "RESILIENT__RECOMMENDATIONS__RETRY__ATTEMPTS": "2",
        # the payments service sheds load past 4 requests in flight: 503 + Retry-After
        "RESILIENT__PAYMENTS_SHED__BULKHEAD__MAX_CONCURRENT": "4",
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


def _total(text: str, metric: str, **match: str) -> float:
    return sum(
        v
        for labels, v in metric_samples(text, metric)
        if all(labels.get(k) == want for k, want in match.items())
    )


def _read_metrics(text: str) -> dict[str, float]:
    """The orders service's counters shown live and in the summary."""
    return {
        "retries": _total(text, "resilient_retry_attempts_total"),
        "retries after Retry-After (503)": _total(
            text, "shop_retry_after_honoured_total", status="503"
        ),
        "retries after Retry-After (429)": _total(
            text, "shop_retry_after_honoured_total", status="429"
        ),
        "hedged attempts": _total(text, "resilient_hedge_attempts_total"),
        "fallbacks": _total(text, "resilient_calls_total", policy="fallback", outcome="fallback"),
        "rejections": _total(text, "resilient_rejections_total"),
        "sagas completed": _total(text, "resilient_saga_total", outcome="completed"),
        "sagas compensated": _total(text, "resilient_saga_total", outcome="compensated"),
        "sagas stuck": _total(text, "resilient_saga_total", outcome="stuck"),
    }


def _read_payments_metrics(text: str) -> dict[str, float]:
    """What the payments service answered on its own: load shed, throttled, injected."""
    return {
        "shed (503 + Retry-After)": _total(
            text, "resilient_rejections_total", policy="bulkhead", name="payments-shed"
        ),
        "throttled by chaos (429 + Retry-After)": _total(
            text, "resilient_calls_total", policy="chaos_result", outcome="injected"
        ),
        "chaos faults injected": _total(
            text, "resilient_calls_total", policy="chaos_fault", outcome="injected"
        ),
    }


class Demo:
    """One run: the load, the fault schedule, the metric sampler and the live view."""

    def __init__(self, cluster: ShopCluster, orders: int, duration: float, console: Console):
        assert cluster.orders and cluster.payments and cluster.replicas
        self.orders_url = cluster.orders.url
        self.payments_url = cluster.payments.url
        self.replica_urls = [r.url for r in cluster.replicas]
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
        self._extra = 0  # orders beyond the steady ``n``: bursts and the settling trickle

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
        """Switch the chaos switches and the hedge to phase ``index``; note when it began."""
        spec = _PHASES[index]
        await client.post(f"{self.payments_url}/chaos", json=spec.payments)
        for n, url in enumerate(self.replica_urls, 1):
            slow = spec.slow_replica and n == len(self.replica_urls)
            body = spec.slow_replica if slow else spec.notifications
            await client.post(f"{url}/chaos", json=body)
        await client.post(f"{self.orders_url}/hedge", json={"enabled": spec.hedge})
        now = spec.at * self.duration  # as scheduled (the switch itself takes milliseconds)
        if self.tally.phases:
            last = self.tally.phases[-1]
            self.tally.phases[-1] = Phase(last.name, last.start, now)
        self.tally.phases.append(Phase(spec.name, now, now))
        self.tally.phase = spec.name
        with contextlib.suppress(httpx.HTTPError):
            text = (await client.get(f"{self.orders_url}/metrics")).text
            self.tally.hedge_attempts[spec.name] = _total(text, "resilient_hedge_attempts_total")
        chaos = {
            "payments": spec.payments,
            "notifications": spec.notifications,
            "last replica": spec.slow_replica,
        }
        said = ", ".join(f"{k} {v}" for k, v in chaos.items() if v) or "no chaos"
        self.console.log(
            f"phase [cyan]{spec.name}[/]: {said}; hedge {'on' if spec.hedge else 'off'}"
            + (f"; a burst of {spec.burst} orders" if spec.burst else "")
        )

    async def faults(self, client: httpx.AsyncClient, burst: anyio.abc.TaskGroup) -> None:
        """The fault schedule: each phase starts at its fraction of the load's duration."""
        for index, spec in enumerate(_PHASES):
            await anyio.sleep(max(0.0, spec.at * self.duration - self.now()))
            await self.set_phase(client, index)
            for i in range(spec.burst):
                burst.start_soon(self.one_order, client, f"burst-{index}-{i:03d}", i, None)
                self.tally.sent += 1
                self._extra += 1
                self.progress.update(self.task, total=self.n + self._extra)

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

    async def one_order(
        self, client: httpx.AsyncClient, order_id: str, i: int, limit: anyio.Semaphore | None
    ) -> None:
        """Place one order, then read recommendations, and record what happened."""
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
                        "order_id": order_id,
                        "customer": customer,
                        "sku": "mug",
                        "qty": 1,
                        "amount_cents": amount,
                    },
                )
                outcome = _classify(response)
            self.tally.by_order[order_id] = outcome
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
            if limit is not None:
                limit.release()

    async def load(self, client: httpx.AsyncClient) -> None:
        """Place ``n`` orders at a steady rate, at most 16 in flight."""
        limit = anyio.Semaphore(16)
        async with anyio.create_task_group() as tg:
            for i in range(self.n):
                await anyio.sleep(max(0.0, i * self.duration / self.n - self.now()))
                await limit.acquire()
                self.tally.sent += 1
                tg.start_soon(self.one_order, client, f"order-{i:05d}", i, limit)

    async def settle(self, client: httpx.AsyncClient, deadline: float) -> None:
        """After the load: keep a trickle of orders going until every breaker closed again
        (a breaker only probes on a call), for at most ``deadline`` seconds."""
        i = self.n
        end = self.now() + deadline
        while self.now() < end:
            text = (await client.get(f"{self.orders_url}/metrics")).text
            states = breaker_states(text)
            self.tally.breakers = states
            if all(s == "closed" for s in states.values()):
                return
            self._extra += 1
            self.tally.sent += 1
            self.progress.update(self.task, total=self.n + self._extra)
            await self.one_order(client, f"order-{i:05d}", i, None)
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
            # Warm up (connections, the services' first requests) before the clock starts:
            # a cold first second would make payments shed load in the "healthy" phase.
            for i in range(3):
                await client.post(f"{self.orders_url}/orders", json={"order_id": f"warm-up-{i}"})
                await client.get(f"{self.orders_url}/recommendations/warm-up")
            self.start = time.monotonic()
            with Live(self.view(), console=self.console, refresh_per_second=4) as live:

                async def refresh() -> None:
                    while True:
                        live.update(self.view())
                        await anyio.sleep(0.25)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(self.sample, client)
                    tg.start_soon(refresh)
                    async with anyio.create_task_group() as work:
                        work.start_soon(self.faults, client, work)
                        work.start_soon(self.load, client)
                    self.tally.phase = "settling"
                    await self.settle(client, deadline=8.0)
                    text = (await client.get(f"{self.orders_url}/metrics")).text
                    self.tally.breakers = breaker_states(text)
                    self.tally.metrics = _read_metrics(text)
                    self.tally.hedge_attempts["end"] = self.tally.metrics["hedged attempts"]
                    self.tally.states.append(StateSample(self.now(), self.tally.breakers))
                    payments = (await client.get(f"{self.payments_url}/metrics")).text
                    self.tally.payments_metrics = _read_payments_metrics(payments)
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


def _hedge_rows(tally: Tally) -> dict[str, dict[str, float]]:
    """The two slow-replica phases: order latency and the hedged attempts started in each."""
    out: dict[str, dict[str, float]] = {}
    names = [p.name for p in tally.phases]
    for phase in tally.phases:
        if phase.name not in (UNHEDGED, HEDGED):
            continue
        lat = [o.latency_ms for o in tally.orders if phase.start <= o.t < phase.end]
        after = names.index(phase.name) + 1
        end_key = names[after] if after < len(names) else "end"
        started = tally.hedge_attempts.get(phase.name, 0.0)
        out[phase.name] = {
            "orders": len(lat),
            "p50_ms": round(_percentile(lat, 0.5), 1),
            "p95_ms": round(_percentile(lat, 0.95), 1),
            "hedged_attempts": tally.hedge_attempts.get(end_key, started) - started,
        }
    return out


def _retry_after(tally: Tally) -> dict[str, float]:
    """429/503 + Retry-After, end to end: what payments answered, what orders waited."""
    pay, orders = tally.payments_metrics, tally.metrics
    return {
        "payments_shed_503": pay.get("shed (503 + Retry-After)", 0.0),
        "payments_throttled_429": pay.get("throttled by chaos (429 + Retry-After)", 0.0),
        "orders_honoured_503": orders.get("retries after Retry-After (503)", 0.0),
        "orders_honoured_429": orders.get("retries after Retry-After (429)", 0.0),
    }


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
    rows += [(f"payments: {k}", f"{v:g}") for k, v in tally.payments_metrics.items()]
    hedge = _hedge_rows(tally)
    if UNHEDGED in hedge and HEDGED in hedge:
        rows.append(
            (
                "slow replica: order p95 without / with the hedge (ms)",
                f"{hedge[UNHEDGED]['p95_ms']:.1f} / {hedge[HEDGED]['p95_ms']:.1f}",
            )
        )
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


def _report_sections(tally: Tally) -> list[Section]:
    hedge = _hedge_rows(tally)
    ra = _retry_after(tally)
    return [
        Section(
            "Hedging a slow replica",
            "Two notifications replicas; the last one answers 300 ms late. Orders send each "
            "notification to the next replica in turn; with rs.Hedge (50 ms delay) a request "
            "not answered in time is sent again, to the other replica, and the first answer "
            "wins (both carry the same Idempotency-Key: the shared ledger sends it once).",
            ("phase", "orders", "p50 ms", "p95 ms", "hedged attempts"),
            [
                (name, int(r["orders"]), r["p50_ms"], r["p95_ms"], f"{r['hedged_attempts']:g}")
                for name, r in hedge.items()
            ],
        ),
        Section(
            "429 / 503 with Retry-After, end to end",
            "Payments sheds load past 4 requests in flight (resilient.asgi.LoadShedding: 503 + "
            "Retry-After: 1, before reading the body) and, while overloaded, a chaos Result "
            "throttles some charges (429 + Retry-After: 1). The orders service's client "
            "(resilient.httpx transport, presets.http pipeline) waits at least that long "
            "before retrying: each such retry is counted.",
            ("what", "count"),
            [
                ("payments answered 503 + Retry-After (load shedding)", ra["payments_shed_503"]),
                ("payments answered 429 + Retry-After (chaos)", ra["payments_throttled_429"]),
                ("orders retried after waiting the 503's Retry-After", ra["orders_honoured_503"]),
                ("orders retried after waiting the 429's Retry-After", ra["orders_honoured_429"]),
            ],
        ),
    ]


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
    parser.add_argument("--quick", action="store_true", help="a short run (60 orders, 6 s)")
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
    cluster = ShopCluster(_policy_env(args.quick), notification_replicas=2)
    with _sigterm_as_interrupt():
        try:
            console.print("[bold]starting services[/] on 127.0.0.1 ...")
            cluster.start()
            for proc in cluster.processes:
                console.print(f"  {proc.label:<15} pid={proc.pid} {proc.url}")
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
        "hedge": _hedge_rows(tally),
        "retry_after": _retry_after(tally),
        "payments_metrics": tally.payments_metrics,
        "wall_time_s": round(elapsed, 1),
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
            sections=_report_sections(tally),
        ),
        encoding="utf-8",
    )
    console.print(f"report written to [bold]{args.report}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
