"""``examples/render_dashboard.py``: its PromQL evaluator against hand-made scrapes whose
answers are worked out by hand, and the page it renders from the committed dashboard."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server

import resilient as rs
from resilient.telemetry import configure_telemetry, reset_telemetry

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.render_dashboard import (  # noqa: E402
    DASHBOARD,
    PromQLError,
    Window,
    bucket_quantile,
    evaluate,
    evaluate_dashboard,
    main,
    parse,
    parse_scrape,
    substitute,
)

BEFORE = """\
# TYPE resilient_calls_total counter
resilient_calls_total{policy="breaker",name="payments",outcome="success"} 100
resilient_calls_total{policy="breaker",name="payments",outcome="failure"} 10
resilient_calls_total{policy="retry",name="payments",outcome="success"} 90
resilient_calls_total{policy="breaker",name="stock",outcome="success"} 500
# TYPE resilient_rejections_total counter
resilient_rejections_total{policy="breaker",name="payments",reason="open"} 4
# TYPE resilient_breaker_state gauge
resilient_breaker_state{name="payments",state="closed"} 1
resilient_breaker_state{name="payments",state="open"} 0
resilient_breaker_state{name="payments",state="half_open"} 0
resilient_breaker_state{name="payments",state="forced_open"} 0
resilient_breaker_state{name="payments",state="disabled"} 0
resilient_breaker_state{name="payments",state="metrics_only"} 0
# TYPE resilient_call_duration_seconds histogram
resilient_call_duration_seconds_bucket{policy="breaker",name="payments",le="0.1"} 5
resilient_call_duration_seconds_bucket{policy="breaker",name="payments",le="0.5"} 5
resilient_call_duration_seconds_bucket{policy="breaker",name="payments",le="1.0"} 5
resilient_call_duration_seconds_bucket{policy="breaker",name="payments",le="+Inf"} 5
resilient_call_duration_seconds_sum{policy="breaker",name="payments"} 0.2
resilient_call_duration_seconds_count{policy="breaker",name="payments"} 5
# TYPE resilient_saga_total counter
resilient_saga_total{name="order",outcome="completed"} 7
resilient_saga_created{name="order",outcome="completed"} 1.7e9
"""

# 10 s later: payments succeeded 30 more times and failed 20 more; its breaker opened and
# rejected 6 more calls; a "timeout" outcome appeared; stock's counter was reset (restart).
AFTER = """\
# TYPE resilient_calls_total counter
resilient_calls_total{policy="breaker",name="payments",outcome="success"} 130
resilient_calls_total{policy="breaker",name="payments",outcome="failure"} 30
resilient_calls_total{policy="breaker",name="payments",outcome="timeout"} 5
resilient_calls_total{policy="retry",name="payments",outcome="success"} 110
resilient_calls_total{policy="breaker",name="stock",outcome="success"} 40
# TYPE resilient_rejections_total counter
resilient_rejections_total{policy="breaker",name="payments",reason="open"} 10
# TYPE resilient_breaker_state gauge
resilient_breaker_state{name="payments",state="closed"} 0
resilient_breaker_state{name="payments",state="open"} 1
resilient_breaker_state{name="payments",state="half_open"} 0
resilient_breaker_state{name="payments",state="forced_open"} 0
resilient_breaker_state{name="payments",state="disabled"} 0
resilient_breaker_state{name="payments",state="metrics_only"} 0
resilient_breaker_state{name="stock",state="closed"} 0
resilient_breaker_state{name="stock",state="open"} 0
resilient_breaker_state{name="stock",state="half_open"} 1
resilient_breaker_state{name="stock",state="forced_open"} 0
resilient_breaker_state{name="stock",state="disabled"} 0
resilient_breaker_state{name="stock",state="metrics_only"} 0
# TYPE resilient_call_duration_seconds histogram
resilient_call_duration_seconds_bucket{policy="breaker",name="payments",le="0.1"} 15
resilient_call_duration_seconds_bucket{policy="breaker",name="payments",le="0.5"} 35
resilient_call_duration_seconds_bucket{policy="breaker",name="payments",le="1.0"} 45
resilient_call_duration_seconds_bucket{policy="breaker",name="payments",le="+Inf"} 45
resilient_call_duration_seconds_sum{policy="breaker",name="payments"} 9.0
resilient_call_duration_seconds_count{policy="breaker",name="payments"} 45
# TYPE resilient_saga_total counter
resilient_saga_total{name="order",outcome="completed"} 9
resilient_saga_total{name="order",outcome="compensated"} 3
resilient_saga_created{name="order",outcome="completed"} 1.7e9
"""


@pytest.fixture
def window() -> Window:
    return Window(parse_scrape(BEFORE), parse_scrape(AFTER), 10.0)


def run(expr: str, window: Window, name: str = ".*") -> dict[str, float] | float:
    """``expr`` evaluated, with each series keyed by its labels as ``k=v,k=v``."""
    value = evaluate(parse(substitute(expr, name, window.seconds)), window)
    if isinstance(value, float):
        return value
    return {",".join(f"{k}={v}" for k, v in labels): v for labels, v in value.items()}


def test_rate_is_the_increase_between_scrapes_per_second(window: Window) -> None:
    got = run('rate(resilient_calls_total{name="payments"}[$__rate_interval])', window)
    assert got == {
        "name=payments,outcome=success,policy=breaker": 3.0,  # (130 - 100) / 10
        "name=payments,outcome=failure,policy=breaker": 2.0,  # (30 - 10) / 10
        "name=payments,outcome=timeout,policy=breaker": 0.5,  # new series: from 0 to 5
        "name=payments,outcome=success,policy=retry": 2.0,
    }


def test_increase_counts_a_reset_counter_from_zero(window: Window) -> None:
    got = run('increase(resilient_calls_total{name="stock"}[1m])', window)
    assert got == {"name=stock,outcome=success,policy=breaker": 40.0}  # 500 -> restart -> 40


def test_sum_and_max_by(window: Window) -> None:
    rate = "rate(resilient_calls_total[$__rate_interval])"
    assert run(f"sum by (name) ({rate})", window) == {"name=payments": 7.5, "name=stock": 4.0}
    assert run(f"sum by (policy) ({rate})", window) == {"policy=breaker": 9.5, "policy=retry": 2.0}
    assert run(f"max by (name) ({rate})", window) == {"name=payments": 3.0, "name=stock": 4.0}
    assert run(f"sum({rate})", window) == {"": 11.5}
    assert run(f"sum({rate}) by (name)", window) == {"name=payments": 7.5, "name=stock": 4.0}
    assert run(f"count by (name) ({rate})", window) == {"name=payments": 4.0, "name=stock": 1.0}
    assert run(f"avg by (name) ({rate})", window) == {"name=payments": 1.875, "name=stock": 4.0}


def test_histogram_quantile_interpolates_inside_the_bucket(window: Window) -> None:
    inner = (
        "sum by (le, name) "
        '(rate(resilient_call_duration_seconds_bucket{policy="breaker"}[$__rate_interval]))'
    )
    # increases per bucket: le 0.1: 10, 0.5: 30, 1.0: 40, +Inf: 40 (rates: / 10 s)
    # p50: rank 2.0 of 4.0 falls in (0.1, 0.5], 1.0 into its 2.0 -> 0.1 + 0.4 * 0.5 = 0.3
    # p99: rank 3.96 falls in (0.5, 1.0], 0.96 into its 1.0 -> 0.5 + 0.5 * 0.96 = 0.98
    p50 = run(f"histogram_quantile(0.5, {inner})", window)
    p99 = run(f"histogram_quantile(0.99, {inner})", window)
    assert isinstance(p50, dict) and isinstance(p99, dict)
    assert p50["name=payments"] == pytest.approx(0.3)
    assert p99["name=payments"] == pytest.approx(0.98)


def test_bucket_quantile_edges() -> None:
    inf = math.inf
    assert bucket_quantile(0.99, [(1.0, 40.0), (inf, 50.0)]) == 1.0  # in +Inf: highest bound
    assert bucket_quantile(0.25, [(2.0, 8.0), (inf, 8.0)]) == 0.5  # first bucket from 0
    assert math.isnan(bucket_quantile(0.5, [(1.0, 0.0), (inf, 0.0)]))  # no observations
    assert math.isnan(bucket_quantile(0.5, [(1.0, 3.0), (2.0, 4.0)]))  # no +Inf bucket
    assert bucket_quantile(-0.1, [(1.0, 1.0), (inf, 1.0)]) == -inf
    assert bucket_quantile(1.5, [(1.0, 1.0), (inf, 1.0)]) == inf
    assert bucket_quantile(0.5, [(inf, 4.0), (1.0, 2.0), (0.5, 1.0)]) == 1.0  # any order


def test_breaker_state_expression_gives_each_breakers_state_index(window: Window) -> None:
    from resilient._dashboard import generate

    (panel,) = [p for p in generate()["panels"] if p["title"] == "Breaker states"]
    got = run(panel["targets"][0]["expr"], window)
    assert got == {"name=payments": 1.0, "name=stock": 2.0}  # open, half_open
    assert run(panel["targets"][0]["expr"], window, name="st.*") == {"name=stock": 2.0}


def test_arithmetic_on_numbers_and_vectors(window: Window) -> None:
    assert run("1 + 2 * 3", window) == 7.0
    assert run("(1 + 2) * 3 - 4 / 2", window) == 7.0
    inf, nan = run("1 / 0", window), run("0 / 0", window)
    assert isinstance(inf, float) and inf == math.inf  # IEEE 754, as in Prometheus
    assert isinstance(nan, float) and math.isnan(nan)
    rejected = "sum by (name) (rate(resilient_rejections_total[$__rate_interval]))"
    calls = 'sum by (name) (rate(resilient_calls_total{policy="breaker"}[$__rate_interval]))'
    # 0.6 rejections/s over 5.5 calls/s for payments; stock has no rejections: no match
    ratio = run(f"{rejected} / {calls}", window)
    assert ratio == {"name=payments": pytest.approx(0.6 / 5.5)}
    assert run(f"2 * {rejected}", window) == {"name=payments": pytest.approx(1.2)}


def test_matchers_are_anchored_regexes_and_negations(window: Window) -> None:
    states = "resilient_breaker_state"
    assert run(f'{states}{{name=~"pay", state="open"}}', window) == {}
    assert run(f'sum by (name) ({states}{{name=~"pay.*"}})', window) == {"name=payments": 1.0}
    assert run(f'sum by (name) ({states}{{name!="payments"}})', window) == {"name=stock": 1.0}
    assert run(f'count({states}{{state!~"open|closed"}})', window) == {"": 8.0}
    assert run('{__name__=~"resilient_saga_total"}', window) == {
        "__name__=resilient_saga_total,name=order,outcome=completed": 9.0,
        "__name__=resilient_saga_total,name=order,outcome=compensated": 3.0,
    }


def test_created_samples_are_not_values() -> None:
    assert not [k for k in parse_scrape(AFTER) if dict(k)["__name__"].endswith("_created")]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("rate(resilient_calls_total[$__rate_interval])", "unexpected '\\$"),
        ("label_replace(resilient_calls_total)", "outside the supported subset"),
        ('resilient_calls_total{name="payments}', "unexpected"),
        ("sum by (name) (resilient_calls_total", "expected"),
        ('resilient_calls_total{name=~"("}', "bad regex"),
        ("resilient_calls_total == 1", "expected 'end'"),
        ("{}", "empty selector"),
        ("rate(resilient_calls_total)", "expected '\\['"),
    ],
)
def test_expressions_outside_the_subset_are_refused(expr: str, message: str) -> None:
    with pytest.raises(PromQLError, match=message):
        parse(expr)


def test_a_window_must_have_a_length() -> None:
    with pytest.raises(ValueError, match="seconds"):
        Window({}, {}, 0.0)


def test_every_panel_of_the_committed_dashboard_renders(window: Window) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = {p.title: dict(p.series) for p in evaluate_dashboard(dashboard, window, ".*")}
    assert panels["Breaker states"] == {"payments": "open", "stock": "half_open"}
    assert panels["Call rate by outcome"]["breaker payments: failure"] == "2/s"
    assert panels["Call rate by outcome"]["breaker payments: timeout"] == "0.5/s"
    assert panels["Rejections by reason"] == {"breaker payments: open": "0.6/s"}
    assert panels["Latency p50 / p99 per policy"]["p50 breaker payments"] == "300 ms"
    assert panels["Latency p50 / p99 per policy"]["p99 breaker payments"] == "980 ms"
    assert panels["Saga outcomes"] == {"order: completed": "0.2/s", "order: compensated": "0.3/s"}
    assert panels["Retry and hedge attempts"] == {}


def test_main_renders_two_saved_scrapes(tmp_path: Path) -> None:
    before, after, out = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "page.md"
    before.write_text(BEFORE, encoding="utf-8")
    after.write_text(AFTER, encoding="utf-8")
    argv = ["--before", str(before), "--after", str(after), "--seconds", "10"]
    assert main([*argv, "--out", str(out), "--name", "payments"]) == 0
    page = out.read_text(encoding="utf-8")
    assert "over 10 s between two scrapes" in page
    assert "| **Circuit breakers / Breaker states** | payments | open |" in page
    assert "|  | breaker payments: success | 3/s |" in page
    row = "| **Retries and bulkheads / Retry and hedge attempts** | _no series in this window_ | |"
    assert row in page
    assert "stock" not in page  # --name filtered it out, as Grafana's $name would


def test_main_refuses_half_given_sources(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--before", "a.txt"])
    assert "--before needs --after and --seconds" in capsys.readouterr().err


def test_main_scrapes_a_live_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    registry = CollectorRegistry()
    configure_telemetry(registry=registry, tracing=False)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        breaker = rs.CircuitBreaker("live-render")
        breaker.force_open()
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        assert main(["--url", url, "--interval", "0.05"]) == 0
    finally:
        server.shutdown()
        thread.join(5)
        reset_telemetry()
    assert "| live-render | forced_open |" in capsys.readouterr().out
