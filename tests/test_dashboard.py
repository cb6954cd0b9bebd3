"""The Grafana dashboard (``python -m resilient dashboard``) and its committed copy.

The committed JSON must equal a fresh generation; every PromQL expression in it must parse
(with the tokenizer and parser of ``examples/render_dashboard.py``, which therefore can also
evaluate every panel) and read only catalog metrics, through labels those metrics have.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from resilient.__main__ import main
from resilient._dashboard import generate, render
from resilient.telemetry._catalog import CATALOG, MetricSpec, by_name

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.render_dashboard import (  # noqa: E402
    Aggregate,
    Binary,
    Call,
    Node,
    Range,
    Selector,
    parse,
    selectors,
    substitute,
)

COMMITTED = ROOT / "docs" / "grafana" / "resilient-dashboard.json"
REGENERATE = "python -m resilient dashboard --out docs/grafana/resilient-dashboard.json"
_SUFFIXES = ("_bucket", "_sum", "_count")


def _panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in doc["panels"] if p["type"] != "row"]


def _exprs(doc: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(doc) for t in p["targets"]]


def _catalog_metric(sample_name: str) -> MetricSpec | None:
    if sample_name in by_name():
        return by_name()[sample_name]
    for suffix in _SUFFIXES:
        base = sample_name.removesuffix(suffix)
        if base != sample_name and base in by_name() and by_name()[base].type == "histogram":
            return by_name()[base]
    return None


def test_committed_dashboard_is_up_to_date() -> None:
    fresh = render()
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.exists() else ""
    assert committed == fresh, (
        f"{COMMITTED.relative_to(ROOT)} is stale (the metric catalog or the panel specs "
        f"changed); regenerate it with:\n    {REGENERATE}"
    )


def test_generation_is_deterministic_with_stable_ids_and_layout() -> None:
    assert render() == render()
    doc = generate()
    ids = [p["id"] for p in doc["panels"]]
    assert ids == list(range(1, len(ids) + 1))
    cells: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    for panel in _panels(doc):
        assert [t["refId"] for t in panel["targets"]] == [
            chr(ord("A") + i) for i in range(len(panel["targets"]))
        ]


def test_dashboard_shape_follows_grafana_schema() -> None:
    doc = generate()
    assert doc["schemaVersion"] >= 39 and doc["uid"] == "resilient" and doc["id"] is None
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"] == {}
    assert variables["name"]["type"] == "query"
    assert variables["name"]["includeAll"] and variables["name"]["allValue"] == ".*"
    for panel in _panels(doc):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["type"] in ("timeseries", "state-timeline")
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert "$name" in target["expr"], f"{panel['title']} ignores the name variable"
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == ["Calls", "Circuit breakers", "Retries and bulkheads", "Sagas"]


def test_dashboard_answers_the_questions_it_promises() -> None:
    reads = {p["title"]: {t["expr"] for t in p["targets"]} for p in _panels(generate())}
    wanted = {
        "Breaker states": "resilient_breaker_state",
        "Rejections by reason": "reason",
        "Retry and hedge attempts": "resilient_hedge_attempts_total",
        "Bulkhead occupancy": "resilient_bulkhead_in_flight",
        "Call rate by outcome": "outcome",
        "Latency p50 / p99 per policy": "histogram_quantile(0.99",
        "Saga outcomes": "resilient_saga_total",
    }
    for title, needle in wanted.items():
        assert any(needle in expr for expr in reads[title]), title
    assert any("histogram_quantile(0.5," in e for e in reads["Latency p50 / p99 per policy"])


def _check_labels(node: Node) -> None:
    """Matchers and ``by`` clauses use only labels the metrics they read have."""
    for selector in selectors(node):
        names = selector.metric_names()
        assert names, f"a selector without a metric name: {selector}"
        for name in names:
            metric = _catalog_metric(name)
            assert metric is not None, f"{name} is not a catalog metric"
            allowed = (
                set(metric.labels) | {"__name__"} | ({"le"} if name.endswith("_bucket") else set())
            )
            for matcher in selector.matchers:
                assert matcher.label in allowed, f"{name} has no label {matcher.label!r}"
    if isinstance(node, Aggregate):
        inner = set().union(*(_labels_of(s) for s in selectors(node.expr)))
        assert set(node.by) <= inner, f"by {node.by} groups on labels {inner} lacks"
        _check_labels(node.expr)
    elif isinstance(node, Binary):
        _check_labels(node.lhs)
        _check_labels(node.rhs)
    elif isinstance(node, Call):
        for arg in node.args:
            _check_labels(arg)


def _labels_of(selector: Selector) -> set[str]:
    out: set[str] = set()
    for name in selector.metric_names():
        metric = _catalog_metric(name)
        assert metric is not None
        out |= set(metric.labels) | ({"le"} if name.endswith("_bucket") else set())
    return out


@pytest.mark.parametrize("expr", _exprs(generate()))
def test_every_expression_parses_and_reads_catalog_metrics(expr: str) -> None:
    node = parse(substitute(expr, name=".*", seconds=60.0))
    assert selectors(node)
    _check_labels(node)
    for selector in selectors(node):
        for name in selector.metric_names():
            metric = _catalog_metric(name)
            assert metric is not None, f"{name} (from {expr!r}) is not in the catalog"
            if name.endswith("_bucket"):
                assert metric.type == "histogram"
    if isinstance(node, Call | Aggregate):
        rate_over = [n for n in _walk(node) if isinstance(n, Range)]
        for rng in rate_over:  # rates are only taken of counters and histogram buckets
            for name in rng.selector.metric_names():
                metric = _catalog_metric(name)
                assert metric is not None and metric.type in ("counter", "histogram"), name


def _walk(node: Node) -> list[Node]:
    out: list[Node] = [node]
    if isinstance(node, Call):
        for arg in node.args:
            out += _walk(arg)
    elif isinstance(node, Aggregate):
        out += _walk(node.expr)
    elif isinstance(node, Binary):
        out += _walk(node.lhs) + _walk(node.rhs)
    return out


def test_name_variable_lists_every_named_family() -> None:
    (variable,) = [v for v in generate()["templating"]["list"] if v["name"] == "name"]
    query = variable["query"]["query"]
    assert query == variable["definition"]
    assert query.startswith("label_values(") and query.endswith(", name)")
    node = parse(query[len("label_values(") : -len(", name)")])
    assert isinstance(node, Selector)
    assert set(node.metric_names()) == {m.name for m in CATALOG if "name" in m.labels}


def test_breaker_states_map_to_the_catalog_states_in_order() -> None:
    (panel,) = [p for p in _panels(generate()) if p["title"] == "Breaker states"]
    options = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
    states = by_name()["resilient_breaker_state"].values_of("state")
    assert [options[str(i)]["text"] for i in range(len(states))] == list(states)
    assert len({o["color"] for o in options.values()}) == len(states)


def test_a_planned_query_appears_with_its_catalog_entry() -> None:
    # resilient_bulkhead_limit was planned before the adaptive bulkhead exported it
    without = tuple(m for m in CATALOG if m.name != "resilient_bulkhead_limit")

    def bulkhead_exprs(catalog: tuple[MetricSpec, ...]) -> list[str]:
        (panel,) = [p for p in _panels(generate(catalog)) if p["title"] == "Bulkhead occupancy"]
        return [t["expr"] for t in panel["targets"]]

    assert not any("resilient_bulkhead_limit" in e for e in bulkhead_exprs(without))
    assert "resilient_bulkhead_limit" not in json.dumps(generate(without)["templating"])
    with_limit = bulkhead_exprs(CATALOG)
    assert len(with_limit) == 2 and "resilient_bulkhead_limit" in with_limit[1]
    assert "resilient_bulkhead_limit" in json.dumps(generate(CATALOG)["templating"])


def test_a_panel_reading_an_unknown_metric_is_refused() -> None:
    without = tuple(m for m in CATALOG if m.name != "resilient_retry_attempts_total")
    with pytest.raises(ValueError, match="resilient_retry_attempts_total"):
        generate(without)


def test_help_texts_reach_the_panel_descriptions() -> None:
    renamed = tuple(
        replace(m, help="Changed help.") if m.name == "resilient_saga_total" else m for m in CATALOG
    )
    (panel,) = [p for p in _panels(generate(renamed)) if p["title"] == "Saga outcomes"]
    assert "`resilient_saga_total`: Changed help." in panel["description"]


def test_cli_writes_the_dashboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dash.json"
    assert main(["dashboard", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render()
    capsys.readouterr()
    assert main(["dashboard"]) == 0
    assert capsys.readouterr().out == render()


def test_cli_datasource_uid_becomes_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", "--datasource-uid", "prom-main"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (variable,) = [v for v in doc["templating"]["list"] if v["name"] == "datasource"]
    assert variable["current"] == {"selected": True, "text": "prom-main", "value": "prom-main"}


def test_cli_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", "--datasource-uid", " "]) == 2
    assert "--datasource-uid" in capsys.readouterr().err
    assert main(["dashboard", "--out", str(tmp_path / "missing" / "dash.json")]) == 2
    assert "--out" in capsys.readouterr().err
    with pytest.raises(ValueError, match="datasource_uid"):
        generate(datasource_uid="")
