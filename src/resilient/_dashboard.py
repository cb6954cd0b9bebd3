"""``python -m resilient dashboard``: a Grafana dashboard generated from the metric catalog.

The dashboard is data derived from two tables: the metric catalog (``telemetry/_catalog.py``:
names, labels, help texts, breaker states) and the panel specs below (which question each
panel answers and the PromQL that answers it). Generating it instead of keeping a hand-edited
JSON file means a renamed metric or a new breaker state reaches the dashboard by running one
command, and a test fails while the committed copy (``docs/grafana/resilient-dashboard.json``)
is stale.

Output is deterministic: panel ids and grid positions follow the specs' order, JSON keys are
sorted, so regenerating an unchanged dashboard gives the same bytes.

The PromQL emitted is a small subset (selectors with ``=``, ``=~`` matchers; ``rate`` over
``$__rate_interval``; ``sum by``/``max by``; ``histogram_quantile``; ``+`` and ``*`` with
numbers) so that ``examples/render_dashboard.py`` can evaluate every panel without Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .telemetry._catalog import CATALOG, MetricSpec

__all__ = ["Panel", "Query", "add_parser", "generate", "render", "run"]

SCHEMA_VERSION = 39
"""The Grafana dashboard schema written (Grafana 10.4 / 11); newer Grafana migrates it."""

DASHBOARD_UID = "resilient"
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
NAME = "$name"
"""The ``name`` template variable; a regex (``.*`` for All), so selectors match it with ``=~``."""

_PANEL_HEIGHT = 8
_GRID_WIDTH = 24

_STATE_COLOURS = {
    "closed": "green",
    "open": "red",
    "half_open": "yellow",
    "forced_open": "dark-red",
    "disabled": "#8e8e8e",
    "metrics_only": "blue",
}
_NEW_STATE_COLOUR = "purple"  # a state added to the catalog still gets a visible colour


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel.

    ``metric`` is the catalog family the expression reads. A ``planned`` query names a metric
    the design promises but nothing exports yet: it is left out until the catalog lists the
    metric (then it appears with no other change). Any other query naming a metric missing
    from the catalog is an error, so a typo cannot silently drop a line from a panel.
    """

    metric: str
    expr: str
    legend: str
    planned: bool = False


@dataclass(frozen=True)
class Panel:
    """One dashboard panel: the question it answers and the queries that answer it."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str
    kind: Literal["timeseries", "state-timeline"] = "timeseries"
    stacked: bool = False


def _by(labels: str, inner: str, agg: str = "sum") -> str:
    return f"{agg} by ({labels}) ({inner})"


def _rate(metric: str, matchers: str) -> str:
    return f"rate({metric}{{{matchers}}}[{RATE}])"


def _quantile(q: float, metric: str, labels: str, matchers: str) -> str:
    inner = _by(f"le, {labels}", _rate(f"{metric}_bucket", matchers))
    return f"histogram_quantile({q}, {inner})"


def _breaker_state_expr(catalog: dict[str, MetricSpec]) -> str:
    """One number per breaker: the index of its current state in the catalog's state list.

    The gauge is 1 for the current state and 0 for the others, so the sum of
    ``gauge{state=s} * index(s)`` over the states is the current state's index; a state
    timeline maps the indexes back to names and colours.
    """
    metric = catalog["resilient_breaker_state"]
    terms = [
        f'sum by (name) ({metric.name}{{name=~"{NAME}", state="{state}"}}) * {index}'
        for index, state in enumerate(metric.values_of("state"))
    ]
    return " + ".join(terms)


def _rows(catalog: dict[str, MetricSpec]) -> list[tuple[str, list[Panel]]]:
    named = f'name=~"{NAME}"'
    by_saga = f'saga=~"{NAME}"'
    return [
        (
            "Calls",
            [
                Panel(
                    "Call rate by outcome",
                    "Executions per second of every policy, by outcome. In a pipeline each "
                    "policy counts its own executions, so a retried call shows once for the "
                    "retry and once per attempt for the policies inside it.",
                    (
                        Query(
                            "resilient_calls_total",
                            _by(
                                "policy, name, outcome",
                                _rate("resilient_calls_total", named),
                            ),
                            "{{policy}} {{name}}: {{outcome}}",
                        ),
                    ),
                    unit="ops",
                    stacked=True,
                ),
                Panel(
                    "Latency p50 / p99 per policy",
                    "Time spent inside each policy per execution, protected function included.",
                    (
                        Query(
                            "resilient_call_duration_seconds",
                            _quantile(
                                0.5, "resilient_call_duration_seconds", "policy, name", named
                            ),
                            "p50 {{policy}} {{name}}",
                        ),
                        Query(
                            "resilient_call_duration_seconds",
                            _quantile(
                                0.99, "resilient_call_duration_seconds", "policy, name", named
                            ),
                            "p99 {{policy}} {{name}}",
                        ),
                    ),
                    unit="s",
                ),
            ],
        ),
        (
            "Circuit breakers",
            [
                Panel(
                    "Breaker states",
                    "Each circuit breaker's state over time.",
                    (
                        Query(
                            "resilient_breaker_state",
                            _breaker_state_expr(catalog),
                            "{{name}}",
                        ),
                    ),
                    unit="none",
                    kind="state-timeline",
                ),
                Panel(
                    "Rejections by reason",
                    "Calls refused without running them, per second: the load breakers and "
                    "bulkheads are shedding.",
                    (
                        Query(
                            "resilient_rejections_total",
                            _by(
                                "policy, name, reason",
                                _rate("resilient_rejections_total", named),
                            ),
                            "{{policy}} {{name}}: {{reason}}",
                        ),
                    ),
                    unit="ops",
                    stacked=True,
                ),
                Panel(
                    "Shared state backend up",
                    "For breakers and rate limiters shared by a fleet (state=rs.RedisState): 1 "
                    "while every replica reaches Redis, 0 while some replica runs on local "
                    "state (the lowest value across replicas).",
                    (
                        Query(
                            "resilient_state_backend_up",
                            _by("name", f"resilient_state_backend_up{{{named}}}", "min"),
                            "{{name}}",
                        ),
                    ),
                    unit="none",
                ),
            ],
        ),
        (
            "Retries and bulkheads",
            [
                Panel(
                    "Retry and hedge attempts",
                    "Extra attempts per second: retries scheduled after a failure, and hedged "
                    "attempts started because an earlier one was slow to answer.",
                    (
                        Query(
                            "resilient_retry_attempts_total",
                            _by("name", _rate("resilient_retry_attempts_total", named)),
                            "{{name}} retries",
                        ),
                        Query(
                            "resilient_hedge_attempts_total",
                            _by("name", _rate("resilient_hedge_attempts_total", named)),
                            "{{name}} hedges",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Bulkhead occupancy",
                    "Calls holding a bulkhead slot, and the bulkhead's limit.",
                    (
                        Query(
                            "resilient_bulkhead_in_flight",
                            _by("name", f"resilient_bulkhead_in_flight{{{named}}}", "max"),
                            "{{name}} in flight",
                        ),
                        Query(
                            "resilient_bulkhead_limit",
                            _by("name", f"resilient_bulkhead_limit{{{named}}}", "max"),
                            "{{name}} limit",
                            planned=True,
                        ),
                    ),
                    unit="short",
                ),
                Panel(
                    "Rate limiter tokens",
                    "Tokens left in each rate limiter's bucket: at 0, callers wait for their "
                    "turn or are refused (reason rate_limited in the rejections panel).",
                    (
                        Query(
                            "resilient_ratelimiter_tokens",
                            _by("name", f"resilient_ratelimiter_tokens{{{named}}}", "min"),
                            "{{name}}",
                        ),
                    ),
                    unit="short",
                ),
            ],
        ),
        (
            "Sagas",
            [
                Panel(
                    "Saga outcomes",
                    "Sagas finished per second: completed, compensated (rolled back) or stuck "
                    "(an operator must act).",
                    (
                        Query(
                            "resilient_saga_total",
                            _by("name, outcome", _rate("resilient_saga_total", named)),
                            "{{name}}: {{outcome}}",
                        ),
                    ),
                    unit="ops",
                    stacked=True,
                ),
                Panel(
                    "Sagas in flight and stuck",
                    "Sagas this process is driving now, and sagas it left STUCK that no "
                    "operator has resolved yet.",
                    (
                        Query(
                            "resilient_saga_in_flight",
                            _by("saga", f"resilient_saga_in_flight{{{by_saga}}}"),
                            "{{saga}} in flight",
                        ),
                        Query(
                            "resilient_saga_stuck",
                            _by("saga", f"resilient_saga_stuck{{{by_saga}}}"),
                            "{{saga}} stuck",
                        ),
                    ),
                    unit="short",
                ),
                Panel(
                    "Saga step p99",
                    "99th percentile duration of one forward step attempt, per step.",
                    (
                        Query(
                            "resilient_saga_step_seconds",
                            _quantile(
                                0.99,
                                "resilient_saga_step_seconds",
                                "saga, step",
                                f'{by_saga}, phase="forward"',
                            ),
                            "p99 {{saga}} {{step}}",
                        ),
                    ),
                    unit="s",
                ),
            ],
        ),
    ]


def _kept(queries: Iterable[Query], catalog: dict[str, MetricSpec]) -> list[Query]:
    kept = []
    for query in queries:
        if query.metric not in query.expr:
            raise ValueError(f"dashboard query {query.expr!r} does not read {query.metric!r}")
        if query.metric in catalog:
            kept.append(query)
        elif not query.planned:
            raise ValueError(
                f"dashboard query reads {query.metric!r}, which the metric catalog does not "
                "list (a typo, or mark the query planned=True)"
            )
    return kept


def _description(panel: Panel, queries: Sequence[Query], catalog: dict[str, MetricSpec]) -> str:
    metrics = dict.fromkeys(q.metric for q in queries)  # ordered, without repeats
    sources = "\n".join(f"* `{m}`: {catalog[m].help}" for m in metrics)
    return f"{panel.description}\n\n{sources}"


def _field_config(panel: Panel, catalog: dict[str, MetricSpec]) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.kind == "state-timeline":
        states = catalog["resilient_breaker_state"].values_of("state")
        defaults["color"] = {"mode": "thresholds"}
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "text", "value": None}]}
        defaults["mappings"] = [
            {
                "type": "value",
                "options": {
                    str(index): {
                        "color": _STATE_COLOURS.get(state, _NEW_STATE_COLOUR),
                        "index": index,
                        "text": state,
                    }
                    for index, state in enumerate(states)
                },
            }
        ]
        defaults["custom"] = {"fillOpacity": 80, "lineWidth": 0}
    else:
        defaults["min"] = 0
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 20 if panel.stacked else 0,
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if panel.stacked else "none"},
        }
    return {"defaults": defaults, "overrides": []}


def _options(panel: Panel) -> dict[str, Any]:
    legend = {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True}
    tooltip = {"mode": "multi", "sort": "desc"}
    if panel.kind == "state-timeline":
        return {
            "alignValue": "left",
            "legend": legend,
            "mergeValues": True,
            "rowHeight": 0.9,
            "showValue": "auto",
            "tooltip": {"mode": "single", "sort": "none"},
        }
    return {"legend": legend, "tooltip": tooltip}


def _panel_json(
    panel: Panel,
    queries: Sequence[Query],
    catalog: dict[str, MetricSpec],
    panel_id: int,
    grid: dict[str, int],
) -> dict[str, Any]:
    return {
        "datasource": dict(DATASOURCE),
        "description": _description(panel, queries, catalog),
        "fieldConfig": _field_config(panel, catalog),
        "gridPos": grid,
        "id": panel_id,
        "options": _options(panel),
        "targets": [
            {
                "datasource": dict(DATASOURCE),
                "editorMode": "code",
                "expr": query.expr,
                "legendFormat": query.legend,
                "range": True,
                "refId": chr(ord("A") + i),
            }
            for i, query in enumerate(queries)
        ],
        "title": panel.title,
        "type": panel.kind,
    }


def _variables(catalog: dict[str, MetricSpec], datasource_uid: str | None) -> list[Any]:
    current: dict[str, Any] = {}
    if datasource_uid is not None:
        current = {"selected": True, "text": datasource_uid, "value": datasource_uid}
    # Policy names live in the `name` label of every family that has one: list them all, so
    # a saga or a bulkhead that has not run a call yet is selectable too.
    named = "|".join(sorted(m.name for m in catalog.values() if "name" in m.labels))
    names_query = f'label_values({{__name__=~"{named}"}}, name)'
    return [
        {
            "current": current,
            "hide": 0,
            "includeAll": False,
            "label": "Data source",
            "multi": False,
            "name": "datasource",
            "options": [],
            "query": "prometheus",
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
            "type": "datasource",
        },
        {
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "datasource": dict(DATASOURCE),
            "definition": names_query,
            "hide": 0,
            "includeAll": True,
            "label": "Policy / saga name",
            "multi": True,
            "name": "name",
            "options": [],
            "query": {"query": names_query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2,
            "regex": "",
            "skipUrlSync": False,
            "sort": 1,
            "type": "query",
        },
    ]


def generate(
    catalog: Iterable[MetricSpec] = CATALOG, *, datasource_uid: str | None = None
) -> dict[str, Any]:
    """The dashboard as a JSON-ready dict.

    ``catalog`` defaults to the library's; ``datasource_uid`` makes that Prometheus data
    source the ``datasource`` variable's default (otherwise Grafana picks its default
    Prometheus data source). Raises ``ValueError`` when a panel reads a metric the catalog
    does not list (see :class:`Query`).
    """
    if datasource_uid is not None and not datasource_uid.strip():
        raise ValueError(f"datasource_uid must be a non-empty string, got {datasource_uid!r}")
    by_name = {m.name: m for m in catalog}
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for title, row_panels in _rows(by_name):
        shown = [(p, _kept(p.queries, by_name)) for p in row_panels]
        shown = [(p, q) for p, q in shown if q]
        if not shown:
            continue
        panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": _GRID_WIDTH, "x": 0, "y": y},
                "id": next_id,
                "panels": [],
                "title": title,
                "type": "row",
            }
        )
        next_id += 1
        y += 1
        width = _GRID_WIDTH // len(shown)
        for i, (panel, queries) in enumerate(shown):
            grid = {"h": _PANEL_HEIGHT, "w": width, "x": i * width, "y": y}
            panels.append(_panel_json(panel, queries, by_name, next_id, grid))
            next_id += 1
        y += _PANEL_HEIGHT
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": (
            "Circuit breakers, rejections, retries, bulkheads, latency and sagas of the "
            "resilient library. Generated by `python -m resilient dashboard`; edit the "
            "generator, not this JSON."
        ),
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["resilient"],
        "templating": {"list": _variables(by_name, datasource_uid)},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": "resilient",
        "uid": DASHBOARD_UID,
        "version": 1,
    }


def render(catalog: Iterable[MetricSpec] = CATALOG, *, datasource_uid: str | None = None) -> str:
    """:func:`generate` as JSON text: sorted keys, two-space indent, final newline."""
    doc = generate(catalog, datasource_uid=datasource_uid)
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# -- CLI ---------------------------------------------------------------------------------------
def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``dashboard`` with the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dashboard",
        help="print a Grafana dashboard for resilient's metrics",
        description=(
            "Generate a Grafana dashboard (JSON) from resilient's metric catalog: breaker "
            "states, rejections, retries, bulkheads, call rates, latency and sagas. Import it "
            "in Grafana under Dashboards > New > Import."
        ),
    )
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="write the JSON to FILE instead of stdout"
    )
    parser.add_argument(
        "--datasource-uid",
        metavar="UID",
        help="the Prometheus data source the dashboard selects by default "
        "(default: Grafana's default Prometheus data source)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Write the dashboard; exit code 2 for a bad option or an unwritable ``--out``."""
    uid = args.datasource_uid
    if uid is not None and not uid.strip():
        print(f"--datasource-uid must not be empty, got {uid!r}", file=sys.stderr)
        return 2
    text = render(datasource_uid=uid)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"--out {args.out}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
