"""The demo's HTML report: one self-contained file with an inline SVG timeline.

No JavaScript, no CDN, no external fonts or images: the file opens the same way offline, in
CI artifacts and in a mail attachment. The timeline shows every order's latency (coloured by
outcome) over time, the fault phases as shaded bands, and each breaker's state as a strip
underneath, so "payments broke -> latency spiked -> breaker opened -> orders failed fast ->
payments healed -> breaker closed" can be read off one picture.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "OUTCOME_COLOURS",
    "STATE_COLOURS",
    "OrderSample",
    "Phase",
    "Section",
    "StateSample",
    "render",
]

OUTCOME_COLOURS = {
    "completed": "#2e9d5b",
    "compensated": "#e8a33c",
    "fail_fast": "#d64545",
    "declined": "#7a5cc7",
    "error": "#444444",
}
STATE_COLOURS = {
    "closed": "#2e9d5b",
    "open": "#d64545",
    "half_open": "#e8a33c",
    "forced_open": "#8b1e1e",
    "disabled": "#999999",
    "metrics_only": "#6fa8dc",
}


@dataclass(frozen=True)
class OrderSample:
    """One order as the load generator saw it (``t`` seconds since the start)."""

    t: float
    latency_ms: float
    outcome: str
    recommendation_source: str


@dataclass(frozen=True)
class StateSample:
    """Every breaker's state as scraped from ``/metrics`` at ``t``."""

    t: float
    states: Mapping[str, str]


@dataclass(frozen=True)
class Phase:
    """A stretch of the run with one fault setting."""

    name: str
    start: float
    end: float


@dataclass(frozen=True)
class Section:
    """An extra table of the report, with a heading and a sentence saying what it shows."""

    title: str
    intro: str
    header: Sequence[str]
    rows: Sequence[Sequence[Any]]

    def html(self) -> str:
        """The section as HTML."""
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
            for row in self.rows
        )
        return (
            f"<h2>{html.escape(self.title)}</h2>\n<p>{html.escape(self.intro)}</p>\n"
            f"<table><tr>{head}</tr>{body}</table>\n"
        )


_W, _LEFT, _RIGHT, _TOP = 960, 110, 16, 44
_PLOT_H, _STRIP_H, _STRIP_GAP = 280, 18, 8


def _x(t: float, span: float) -> float:
    return _LEFT + (_W - _LEFT - _RIGHT) * (t / span if span > 0 else 0.0)


def _ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) from 0 to ``top``."""
    if top <= 0:
        return [0.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(top // step) + 1)]


def _svg(
    orders: Sequence[OrderSample], states: Sequence[StateSample], phases: Sequence[Phase]
) -> str:
    span = max([o.t for o in orders] + [s.t for s in states] + [p.end for p in phases] + [1.0])
    latencies = sorted(o.latency_ms for o in orders) or [1.0]
    cap = max(50.0, latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1.15)
    breakers = sorted({name for s in states for name in s.states})
    height = _TOP + _PLOT_H + 40 + len(breakers) * (_STRIP_H + _STRIP_GAP) + 30
    bottom = _TOP + _PLOT_H
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {height}" '
        f'width="{_W}" height="{height}" role="img" '
        'aria-label="Order latency and breaker state over time" font-family="sans-serif" '
        'font-size="11">'
    ]
    shades = ("#f4f6f8", "#fdf1e6", "#fbe9e9", "#eef3fb", "#eef8f1")
    for i, phase in enumerate(phases):
        x0, x1 = _x(phase.start, span), _x(phase.end, span)
        out.append(
            f'<rect x="{x0:.1f}" y="{_TOP}" width="{max(0.0, x1 - x0):.1f}" '
            f'height="{_PLOT_H}" fill="{shades[i % len(shades)]}"/>'
            f'<text x="{x0 + 4:.1f}" y="{_TOP - 8 - 14 * (i % 2)}" fill="#333">'
            f"{html.escape(phase.name)}</text>"
        )
    for tick in _ticks(cap):
        y = bottom - _PLOT_H * tick / cap
        out.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
    out.append(
        f'<text x="14" y="{_TOP + _PLOT_H / 2:.0f}" transform="rotate(-90 14 '
        f'{_TOP + _PLOT_H / 2:.0f})" text-anchor="middle">latency (ms)</text>'
    )
    for o in orders:
        y = bottom - _PLOT_H * min(o.latency_ms, cap) / cap
        colour = OUTCOME_COLOURS.get(o.outcome, "#444")
        out.append(
            f'<circle cx="{_x(o.t, span):.1f}" cy="{y:.1f}" r="2.4" fill="{colour}" '
            f'fill-opacity="0.8"><title>{o.t:.2f}s {html.escape(o.outcome)} '
            f"{o.latency_ms:.1f} ms</title></circle>"
        )
    out.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{bottom}" y2="{bottom}" stroke="#333"/>')
    for tick in _ticks(span, 8):
        x = _x(tick, span)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#333"/>'
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{tick:g}s</text>'
        )
    y = bottom + 40
    for name in breakers:
        out.append(
            f'<text x="{_LEFT - 6}" y="{y + 13}" text-anchor="end">{html.escape(name)}</text>'
        )
        for here, after in zip(states, [*states[1:], None], strict=True):
            state = here.states.get(name)
            if state is None:
                continue
            x0 = _x(here.t, span)
            x1 = _x(after.t if after is not None else span, span)
            out.append(
                f'<rect x="{x0:.1f}" y="{y}" width="{max(0.5, x1 - x0):.1f}" '
                f'height="{_STRIP_H}" shape-rendering="crispEdges" '
                f'fill="{STATE_COLOURS.get(state, "#999")}">'
                f"<title>{html.escape(name)}: {html.escape(state)} at {here.t:.2f}s</title></rect>"
            )
        y += _STRIP_H + _STRIP_GAP
    out.append(
        f'<text x="{_LEFT}" y="{y + 14}" fill="#555">breaker state strips: '
        "green closed, red open, amber half-open</text></svg>"
    )
    return "".join(out)


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


def render(
    *,
    title: str,
    summary: Sequence[tuple[str, Any]],
    phase_rows: Sequence[Sequence[Any]],
    orders: Sequence[OrderSample],
    states: Sequence[StateSample],
    phases: Sequence[Phase],
    data: Mapping[str, Any],
    sections: Sequence[Section] = (),
) -> str:
    """The whole report as one HTML string. ``data`` is embedded as JSON (not executed) so
    tools and tests can read the numbers back without parsing the tables."""
    legend = " ".join(
        f'<span class="key"><span class="dot" style="background:{c}"></span>'
        f"{html.escape(k.replace('_', ' '))}</span>"
        for k, c in OUTCOME_COLOURS.items()
    )
    head = "".join(
        f"<th>{html.escape(h)}</th>"
        for h in ("phase", "orders", "completed", "compensated", "fail fast", "p50 ms", "p95 ms")
    )
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
        for row in phase_rows
    )
    payload = json.dumps(data, sort_keys=True).replace("</", "<\\/")
    extra = "".join(section.html() for section in sections)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}
th {{ background: #f4f6f8; }}
.key {{ margin-right: 1.2em; }}
.dot {{ display: inline-block; width: 10px; height: 10px; border-radius: 5px;
        margin-right: 4px; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Four services on loopback (orders, payments, two notifications replicas). The load
generator placed orders while payments and notifications were broken and healed through their
chaos switches; each dot is one order.</p>
<h2>Summary</h2>
{_table(summary)}
<h2>Timeline</h2>
<p>{legend}</p>
{_svg(orders, states, phases)}
<h2>By phase</h2>
<table><tr>{head}</tr>{body}</table>
{extra}<script type="application/json" id="demo-data">{payload}</script>
</body></html>
"""
