"""Show what each panel of resilient's Grafana dashboard would display, without Grafana.

Takes two scrapes of a Prometheus ``/metrics`` endpoint some seconds apart, evaluates every
panel's PromQL the way Prometheus would over that window, and prints a Markdown page with each
panel's current values (breaker states by name, rates per second, latency quantiles) as one
Markdown table.

    # two scrapes of a live service, 10 s apart
    python examples/render_dashboard.py --url http://127.0.0.1:8000/metrics --interval 10
    # two saved scrapes (e.g. curl ... > before.txt; sleep 10; curl ... > after.txt)
    python examples/render_dashboard.py --before before.txt --after after.txt --seconds 10
    # no arguments: a small in-process workload, scraped twice
    python examples/render_dashboard.py

The evaluator understands exactly the PromQL subset ``python -m resilient dashboard`` emits:
selectors with ``=``, ``!=``, ``=~``, ``!~`` matchers; ``rate``/``increase`` over a range
(computed from the two scrapes: the counter's increase between them, divided by the seconds
between them for ``rate``; a counter that went down was reset and counts from zero, and so
does a series first seen in the second scrape: ``resilient`` creates a series at its first
increment, so it was 0 at the first scrape); ``sum``/``max``/``min``/``avg``/``count`` with
``by (...)``; ``histogram_quantile`` (Prometheus' linear interpolation inside the bucket);
``+ - * /`` between numbers and vectors (vectors match on identical label sets). Grafana's
``$name`` becomes ``--name`` (default ``.*``, the "All" choice) and ``$__rate_interval`` the
window between the scrapes. Prometheus extrapolates ``rate`` to the window's edges; two
scrapes have no edges to extrapolate to, and Prometheus needs two samples of a series before
it shows any rate, so values can differ slightly from Grafana's.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana" / "resilient-dashboard.json"

Labels = tuple[tuple[str, str], ...]
"""A series' labels, sorted by name; ``__name__`` holds the sample name."""
Vector = dict[Labels, float]
Value = float | Vector


class PromQLError(ValueError):
    """An expression outside the subset this evaluator understands (or malformed)."""


# -- scrapes ---------------------------------------------------------------------------------
def parse_scrape(text: str) -> Vector:
    """Every sample of a Prometheus text exposition, keyed by its labels (with
    ``__name__``). ``_created`` samples are timestamps, not values: left out."""
    out: Vector = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = dict(sample.labels)
            labels["__name__"] = sample.name
            out[tuple(sorted(labels.items()))] = float(sample.value)
    return out


@dataclass(frozen=True)
class Window:
    """Two scrapes of one endpoint, ``seconds`` apart."""

    before: Vector
    after: Vector
    seconds: float

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ValueError(f"seconds between the scrapes must be > 0, got {self.seconds!r}")


# -- tokens ----------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<duration>\d+(?:ms|s|m|h|d|w|y)(?:\d+(?:ms|s|m|h|d|w|y))*)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|[-+*/=(){}\[\],])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # duration, number, string, ident, op, end
    text: str
    at: int


def tokenize(expr: str) -> list[Token]:
    """Split ``expr`` into tokens; :class:`PromQLError` at the first character that starts
    none (a Grafana variable left in, a quote never closed, ...)."""
    tokens = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise PromQLError(f"unexpected {expr[pos : pos + 10]!r} at {pos} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(Token("end", "", len(expr)))
    return tokens


# -- syntax tree -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str  # = != =~ !~
    value: str

    def matches(self, actual: str) -> bool:
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None  # PromQL regexes are anchored
        return found if self.op == "=~" else not found


@dataclass(frozen=True)
class Selector:
    matchers: tuple[Matcher, ...]

    def metric_names(self) -> list[str]:
        """The metric names this selector can match (``__name__`` equality or a regex of
        plain alternatives, like Grafana's ``label_values`` query uses)."""
        names: list[str] = []
        for m in self.matchers:
            if m.label == "__name__" and m.op == "=":
                names.append(m.value)
            elif m.label == "__name__" and m.op == "=~":
                names.extend(m.value.split("|"))
        return names


@dataclass(frozen=True)
class Range:
    selector: Selector
    duration: str


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Aggregate:
    op: str
    by: tuple[str, ...]
    expr: Node


@dataclass(frozen=True)
class Binary:
    op: str
    lhs: Node
    rhs: Node


Node = Number | Selector | Range | Call | Aggregate | Binary

AGGREGATIONS = ("sum", "max", "min", "avg", "count")
RANGE_FUNCTIONS = ("rate", "increase")


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = tokenize(expr)
        self.i = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self, kind: str, text: str | None = None) -> Token:
        token = self.peek()
        if token.kind != kind or (text is not None and token.text != text):
            want = text or kind
            raise PromQLError(
                f"expected {want!r} at {token.at} in {self.expr!r}, found {token.text!r}"
            )
        self.i += 1
        return token

    def at(self, kind: str, text: str) -> bool:
        token = self.peek()
        return token.kind == kind and token.text == text

    def parse(self) -> Node:
        node = self.sum_expr()
        self.take("end")
        return node

    def sum_expr(self) -> Node:
        node = self.product()
        while self.at("op", "+") or self.at("op", "-"):
            op = self.take("op").text
            node = Binary(op, node, self.product())
        return node

    def product(self) -> Node:
        node = self.operand()
        while self.at("op", "*") or self.at("op", "/"):
            op = self.take("op").text
            node = Binary(op, node, self.operand())
        return node

    def operand(self) -> Node:
        token = self.peek()
        if token.kind == "number":
            self.i += 1
            return Number(float(token.text))
        if token.kind == "op" and token.text == "(":
            self.i += 1
            node = self.sum_expr()
            self.take("op", ")")
            return node
        if token.kind == "op" and token.text == "{":
            return self.selector(None)
        if token.kind != "ident":
            raise PromQLError(f"unexpected {token.text!r} at {token.at} in {self.expr!r}")
        self.i += 1
        if token.text in AGGREGATIONS and (self.at("ident", "by") or self.at("op", "(")):
            return self.aggregate(token.text)
        if token.text in RANGE_FUNCTIONS and self.at("op", "("):
            self.take("op", "(")
            selector = self.selector(self.take("ident").text)
            self.take("op", "[")
            duration = self.take("duration").text
            self.take("op", "]")
            self.take("op", ")")
            return Call(token.text, (Range(selector, duration),))
        if token.text == "histogram_quantile" and self.at("op", "("):
            self.take("op", "(")
            q = Number(float(self.take("number").text))
            self.take("op", ",")
            inner = self.sum_expr()
            self.take("op", ")")
            return Call(token.text, (q, inner))
        if self.at("op", "("):
            raise PromQLError(f"function {token.text!r} is outside the supported subset")
        return self.selector(token.text)

    def aggregate(self, op: str) -> Aggregate:
        by: tuple[str, ...] = ()
        if self.at("ident", "by"):
            by = self.labels()
        self.take("op", "(")
        inner = self.sum_expr()
        self.take("op", ")")
        if self.at("ident", "by"):  # PromQL allows the clause after the expression too
            if by:
                raise PromQLError(f"two 'by' clauses in {self.expr!r}")
            by = self.labels()
        return Aggregate(op, by, inner)

    def labels(self) -> tuple[str, ...]:
        self.take("ident", "by")
        self.take("op", "(")
        names = [self.take("ident").text]
        while self.at("op", ","):
            self.take("op", ",")
            names.append(self.take("ident").text)
        self.take("op", ")")
        return tuple(names)

    def selector(self, name: str | None) -> Selector:
        matchers = [] if name is None else [Matcher("__name__", "=", name)]
        if self.at("op", "{"):
            self.take("op", "{")
            while not self.at("op", "}"):
                label = self.take("ident").text
                op = self.take("op").text
                if op not in ("=", "!=", "=~", "!~"):
                    raise PromQLError(f"bad matcher operator {op!r} in {self.expr!r}")
                raw = self.take("string").text
                value = json.loads(raw)  # PromQL's double-quoted strings escape like JSON's
                if op in ("=~", "!~"):
                    try:
                        re.compile(value)
                    except re.error as exc:
                        raise PromQLError(f"bad regex {value!r} in {self.expr!r}: {exc}") from None
                matchers.append(Matcher(label, op, value))
                if not self.at("op", "}"):
                    self.take("op", ",")
            self.take("op", "}")
        if not matchers:
            raise PromQLError(f"an empty selector in {self.expr!r}")
        return Selector(tuple(matchers))


def parse(expr: str) -> Node:
    """The syntax tree of ``expr``; :class:`PromQLError` outside the supported subset."""
    return _Parser(expr).parse()


def selectors(node: Node) -> list[Selector]:
    """Every selector in ``node``, left to right."""
    if isinstance(node, Selector):
        return [node]
    if isinstance(node, Range):
        return [node.selector]
    if isinstance(node, Call):
        return [s for arg in node.args for s in selectors(arg)]
    if isinstance(node, Aggregate):
        return selectors(node.expr)
    if isinstance(node, Binary):
        return selectors(node.lhs) + selectors(node.rhs)
    return []


# -- evaluation ------------------------------------------------------------------------------
def _without_name(labels: Labels) -> Labels:
    return tuple(item for item in labels if item[0] != "__name__")


def _select(vector: Vector, selector: Selector) -> Vector:
    out: Vector = {}
    for labels, value in vector.items():
        found = dict(labels)
        if all(m.matches(found.get(m.label, "")) for m in selector.matchers):
            out[labels] = value
    return out


def _increase(window: Window, selector: Selector) -> Vector:
    out: Vector = {}
    before = window.before
    for labels, now in _select(window.after, selector).items():
        then = before.get(labels, 0.0)  # created between the scrapes: it started at zero
        out[_without_name(labels)] = now - then if now >= then else now  # reset: from zero
    return out


def _aggregate(op: str, by: tuple[str, ...], vector: Vector) -> Vector:
    groups: dict[Labels, list[float]] = {}
    for labels, value in vector.items():
        found = dict(labels)
        key = tuple(sorted((k, found[k]) for k in by if found.get(k, "") != ""))
        groups.setdefault(key, []).append(value)
    reduce: dict[str, Callable[[list[float]], float]] = {
        "sum": math.fsum,
        "max": max,
        "min": min,
        "avg": lambda xs: math.fsum(xs) / len(xs),
        "count": lambda xs: float(len(xs)),
    }
    return {key: reduce[op](values) for key, values in groups.items()}


def bucket_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """Prometheus' ``histogram_quantile`` for one histogram: ``buckets`` are
    ``(upper bound, cumulative count)`` pairs, ``+Inf`` included."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return math.nan
    counts: list[float] = []
    for _, count in ordered:  # rates of cumulative counts can dip by float noise: clamp
        counts.append(max(count, counts[-1]) if counts else count)
    total = counts[-1]
    if total == 0:
        return math.nan
    rank = q * total
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(ordered) - 1:
        return ordered[-2][0]  # in the +Inf bucket: the highest finite bound
    if b == 0 and ordered[0][0] <= 0:
        return ordered[0][0]
    start = 0.0
    end = ordered[b][0]
    count = counts[b]
    if b > 0:
        start = ordered[b - 1][0]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


def _histogram_quantile(q: float, vector: Vector) -> Vector:
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for labels, value in vector.items():
        found = dict(labels)
        if "le" not in found:
            continue
        key = tuple(item for item in _without_name(labels) if item[0] != "le")
        groups.setdefault(key, []).append((float(found["le"]), value))
    return {key: bucket_quantile(q, buckets) for key, buckets in groups.items()}


def _arith(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:  # IEEE 754, as Prometheus: x/0 is +-Inf, 0/0 is NaN
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a)
    return a / b


def evaluate(node: Node, window: Window) -> Value:
    """The value of ``node`` at the second scrape: a number or ``{labels: value}``."""
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Selector):
        return _select(window.after, node)
    if isinstance(node, Call) and node.func in RANGE_FUNCTIONS:
        rng = node.args[0]
        assert isinstance(rng, Range)
        increase = _increase(window, rng.selector)
        if node.func == "increase":
            return increase
        return {labels: v / window.seconds for labels, v in increase.items()}
    if isinstance(node, Call) and node.func == "histogram_quantile":
        q, inner = node.args
        assert isinstance(q, Number)
        return _histogram_quantile(q.value, _vector(evaluate(inner, window)))
    if isinstance(node, Aggregate):
        return _aggregate(node.op, node.by, _vector(evaluate(node.expr, window)))
    if isinstance(node, Binary):
        lhs, rhs = evaluate(node.lhs, window), evaluate(node.rhs, window)
        if isinstance(lhs, float) and isinstance(rhs, float):
            return _arith(node.op, lhs, rhs)
        if isinstance(rhs, float):
            assert isinstance(lhs, dict)
            return {_without_name(k): _arith(node.op, v, rhs) for k, v in lhs.items()}
        if isinstance(lhs, float):
            return {_without_name(k): _arith(node.op, lhs, v) for k, v in rhs.items()}
        right = {_without_name(k): v for k, v in rhs.items()}
        out: Vector = {}
        for labels, value in lhs.items():
            key = _without_name(labels)
            if key in right:  # one-to-one on identical label sets
                out[key] = _arith(node.op, value, right[key])
        return out
    raise PromQLError(f"cannot evaluate {node!r}")


def _vector(value: Value) -> Vector:
    if isinstance(value, float):
        raise PromQLError("expected an instant vector, got a number")
    return value


def substitute(expr: str, name: str, seconds: float) -> str:
    """Grafana's variables: ``$name`` (a regex) and ``$__rate_interval`` (the window)."""
    window = f"{max(1, round(seconds * 1000))}ms"
    return expr.replace("$__rate_interval", window).replace("$name", name)


# -- the page --------------------------------------------------------------------------------
def _legend(template: str, labels: Labels) -> str:
    found = dict(labels)
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: found.get(m.group(1), ""), template)
    return text or ", ".join(f"{k}={v}" for k, v in labels) or "(value)"


def _format(value: float, unit: str, mappings: Mapping[str, str]) -> str:
    if math.isnan(value):
        return "no data (NaN)"
    if mappings and value == int(value) and str(int(value)) in mappings:
        return mappings[str(int(value))]
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if unit == "ops":
        return f"{value:.3g}/s"
    if unit == "s":
        return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"
    return f"{value:g}"


def _mappings(panel: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for mapping in panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
        if mapping.get("type") == "value":
            for raw, result in mapping.get("options", {}).items():
                out[raw] = str(result.get("text", raw))
    return out


@dataclass(frozen=True)
class PanelValues:
    """One panel's series at the second scrape, ``(legend, formatted value)``, sorted by
    legend within each of the panel's queries."""

    row: str
    title: str
    series: tuple[tuple[str, str], ...]


def evaluate_dashboard(
    dashboard: Mapping[str, Any], window: Window, name: str
) -> list[PanelValues]:
    """Every panel of ``dashboard`` evaluated over ``window`` with ``$name`` = ``name``."""
    out = []
    row = ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        mappings = _mappings(panel)
        series: list[tuple[str, str]] = []
        for target in panel["targets"]:
            value = evaluate(parse(substitute(target["expr"], name, window.seconds)), window)
            if isinstance(value, float):
                value = {(): value}
            legend = target.get("legendFormat", "")
            shown = sorted((_legend(legend, labels), v) for labels, v in value.items())
            series += [(text, _format(v, unit, mappings)) for text, v in shown]
        out.append(PanelValues(row, panel["title"], tuple(series)))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(panels: Iterable[PanelValues], heading: str) -> str:
    """The panels as one Markdown table (panel, series, value) under ``heading``: no
    headings of its own, so it can be pasted into a page as it is."""
    lines = [heading, "", "| panel | series | value |", "|---|---|---|"]
    for panel in panels:
        title = _cell(f"{panel.row} / {panel.title}" if panel.row else panel.title)
        if not panel.series:
            lines.append(f"| **{title}** | _no series in this window_ | |")
            continue
        for i, (legend, value) in enumerate(panel.series):
            shown = f"**{title}**" if i == 0 else ""
            lines.append(f"| {shown} | {_cell(legend)} | {_cell(value)} |")
    return "\n".join(lines) + "\n"


# -- sources ---------------------------------------------------------------------------------
def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode("utf-8")


def _from_url(url: str, interval: float) -> tuple[Window, str]:
    first = _scrape(url)
    started = time.monotonic()
    time.sleep(interval)
    second = _scrape(url)
    seconds = time.monotonic() - started
    return Window(parse_scrape(first), parse_scrape(second), seconds), f"`{url}`"


def _in_process_demo() -> tuple[Window, str]:
    """A few policies and a saga on a private registry, scraped before and after a burst of
    calls in which a dependency fails: the breaker opens, retries and rejections count."""
    from prometheus_client import CollectorRegistry, generate_latest

    import resilient as rs
    from resilient.telemetry import reset_telemetry

    registry = CollectorRegistry()
    rs.configure_telemetry(registry=registry)
    try:
        breaker = rs.CircuitBreaker("inventory", window_size=10, minimum_calls=10)
        retry = rs.Retry("inventory", attempts=3, wait=0, on=(ConnectionError,))
        bulkhead = rs.Bulkhead("inventory", max_concurrent=4)
        fallback = rs.Fallback(value=[], name="inventory")
        healthy = True

        @rs.pipeline(fallback, retry, breaker, bulkhead)
        def stock() -> list[str]:
            if not healthy:
                raise ConnectionError("inventory is down")
            return ["mug"]

        saga = rs.Saga("checkout")

        @saga.step()
        def reserve(ctx: rs.SagaContext) -> str:
            return "reserved"

        for _ in range(20):
            stock()
        saga.run_sync({})
        first = generate_latest(registry).decode()
        started = time.monotonic()
        for _ in range(40):
            stock()
        time.sleep(0.5)  # a window of human size, so rates read like a service's
        healthy = False
        for _ in range(20):  # fails, retries, opens the breaker, then fails fast
            stock()
        for _ in range(5):
            saga.run_sync({})
        seconds = time.monotonic() - started
        second = generate_latest(registry).decode()
    finally:
        reset_telemetry()
    window = Window(parse_scrape(first), parse_scrape(second), seconds)
    return window, "an in-process workload (no server: run with --url to scrape one)"


def main(argv: list[str] | None = None) -> int:
    """Scrape (or read) twice, evaluate every panel, print or write the Markdown page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--url", help="a /metrics endpoint to scrape twice")
    source.add_argument("--before", type=Path, help="the first scrape, saved as a file")
    parser.add_argument("--after", type=Path, help="the second scrape (with --before)")
    parser.add_argument(
        "--interval", type=float, default=10.0, help="seconds between the two --url scrapes"
    )
    parser.add_argument(
        "--seconds", type=float, help="seconds between the --before and --after scrapes"
    )
    parser.add_argument("--name", default=".*", help="the $name variable: a regex (default .*)")
    parser.add_argument(
        "--dashboard", type=Path, default=DASHBOARD, help=f"dashboard JSON (default {DASHBOARD})"
    )
    parser.add_argument("--out", type=Path, help="write the Markdown here instead of stdout")
    args = parser.parse_args(argv)
    if args.before is not None and (args.after is None or args.seconds is None):
        parser.error("--before needs --after and --seconds")
    if args.before is None and (args.after is not None or args.seconds is not None):
        parser.error("--after and --seconds go with --before")
    if args.url is not None and not args.interval > 0:
        parser.error(f"--interval must be > 0, got {args.interval}")

    if args.url is not None:
        window, what = _from_url(args.url, args.interval)
    elif args.before is not None:
        before = parse_scrape(args.before.read_text(encoding="utf-8"))
        after = parse_scrape(args.after.read_text(encoding="utf-8"))
        window, what = Window(before, after, args.seconds), f"`{args.before}` and `{args.after}`"
    else:
        window, what = _in_process_demo()
    dashboard = json.loads(args.dashboard.read_text(encoding="utf-8"))
    panels = evaluate_dashboard(dashboard, window, args.name)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    heading = (
        f"Panels of *{dashboard['title']}* over {window.seconds:.3g} s between two scrapes of "
        f"{what}, rendered {stamp} by `examples/render_dashboard.py`."
    )
    page = markdown(panels, heading)
    if args.out is not None:
        args.out.write_text(page, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
