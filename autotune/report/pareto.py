"""The Pareto front (accuracy vs latency) and all three objectives, pairwise."""

from __future__ import annotations

from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from autotune.result import TrialResult

from autotune.report._common import (
    BASELINE,
    CHOSEN,
    COLORSCALE,
    GREY,
    PARETO,
    View,
    base_layout,
    hover,
    log_axis,
    trial_name,
)

#: the budget line is drawn when it is at most this many times the slowest trial
BUDGET_ON_SCALE = 3.0


def front_figure(view: View) -> go.Figure:
    """Accuracy vs median latency; colour = size, budget line, baselines, infeasible greyed."""
    r = view.result
    pareto = view.pareto_numbers
    kib = [t.size_bytes / 1024 for t in r.trials]
    cmin, cmax = (min(kib), max(kib)) if kib else (0.0, 1.0)
    colour = {"colorscale": COLORSCALE, "cmin": cmin, "cmax": cmax}

    infeasible = [t for t in r.trials if not t.feasible]
    dominated = [t for t in r.trials if t.feasible and t.number not in pareto]
    members = sorted(r.pareto, key=lambda t: t.latency_ms)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            name="over budget",
            x=[t.latency_ms for t in infeasible],
            y=[t.accuracy for t in infeasible],
            mode="markers",
            marker={"color": GREY, "size": 8, "symbol": "x-thin-open", "line": {"width": 2, "color": GREY}},
            hovertext=[hover(t, view.metric) for t in infeasible],
            hoverinfo="text",
        )
    )
    fig.add_trace(
        go.Scatter(
            name="under budget",
            x=[t.latency_ms for t in dominated],
            y=[t.accuracy for t in dominated],
            mode="markers",
            marker={**colour, "color": [t.size_bytes / 1024 for t in dominated], "size": 8, "opacity": 0.55},
            hovertext=[hover(t, view.metric) for t in dominated],
            hoverinfo="text",
        )
    )
    frontier = accuracy_latency_frontier(r.feasible)
    fig.add_trace(
        go.Scatter(
            name=f"best {view.metric} for a latency",
            x=[t.latency_ms for t in frontier],
            y=[t.accuracy for t in frontier],
            mode="lines",
            line={"shape": "hv", "color": PARETO, "width": 1.5, "dash": "dot"},
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            name="Pareto set (whiskers: min to p90 latency)",
            x=[t.latency_ms for t in members],
            y=[t.accuracy for t in members],
            mode="markers",
            marker={
                **colour,
                "color": [t.size_bytes / 1024 for t in members],
                "size": 14,
                "line": {"width": 2, "color": PARETO},
                "colorbar": {"title": {"text": "size KiB"}, "thickness": 14, "len": 0.8},
                "showscale": True,
            },
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [max(t.measurement.p90_ms - t.latency_ms, 0.0) for t in members],
                "arrayminus": [max(t.latency_ms - t.measurement.min_ms, 0.0) for t in members],
                "color": PARETO,
                "thickness": 1,
                "width": 3,
            },
            hovertext=[hover(t, view.metric) for t in members],
            hoverinfo="text",
        )
    )
    baselines = sorted(r.baselines.values(), key=lambda t: t.latency_ms)
    fig.add_trace(
        go.Scatter(
            name="uniform baselines",
            x=[t.latency_ms for t in baselines],
            y=[t.accuracy for t in baselines],
            mode="markers+text",
            text=[t.baseline for t in baselines],
            textposition=[("bottom center", "top center")[i % 2] for i in range(len(baselines))],
            textfont={"size": 10, "color": BASELINE},
            marker={"symbol": "diamond-open", "size": 16, "color": BASELINE, "line": {"width": 1.5}},
            hovertext=[hover(t, view.metric) for t in baselines],
            hoverinfo="text",
        )
    )
    if view.chosen is not None:
        c = view.chosen
        fig.add_trace(
            go.Scatter(
                name=f"chosen: trial {c.number}",
                x=[c.latency_ms],
                y=[c.accuracy],
                mode="markers",
                marker={
                    "symbol": "star",
                    "size": 22,
                    "color": CHOSEN,
                    "line": {"width": 1, "color": "white"},
                },
                hovertext=[hover(c, view.metric)],
                hoverinfo="text",
            )
        )
    lat = [t.latency_ms for t in r.trials]
    budget_text = f"budget {r.meta.budget}"
    on_scale = view.has_budget and bool(lat) and view.budget_ms <= BUDGET_ON_SCALE * max(lat)
    log_x = log_axis(lat + ([view.budget_ms] if on_scale else []))
    subtitle = ""
    if on_scale:
        acc = [t.accuracy for t in r.trials]
        lo, hi = min(acc), max(acc)
        pad = (hi - lo) * 0.08 or 1.0
        fig.add_trace(
            go.Scatter(
                name=budget_text,
                x=[view.budget_ms, view.budget_ms],
                y=[lo - pad, hi + pad],
                mode="lines",
                line={"color": CHOSEN, "dash": "dash", "width": 2},
                hoverinfo="name",
            )
        )
        fig.update_yaxes(range=[lo - pad, hi + pad])
    elif view.has_budget and lat:
        subtitle = f"{budget_text} is off the scale: {view.budget_ms / max(lat):.0f}x the slowest trial"
    base_layout(fig, f"Pareto front: {view.metric} vs latency (colour: size)", 560)
    if subtitle:
        fig.update_layout(title={"subtitle": {"text": subtitle, "font": {"color": CHOSEN, "size": 12}}})
    fig.update_xaxes(
        title="median latency, ms" + (" (log scale)" if log_x else ""), type="log" if log_x else "linear"
    )
    fig.update_yaxes(title=view.metric)
    # many legend entries: below the plot, where they cannot cover the title or the points
    fig.update_layout(
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.16, "yanchor": "top"},
        margin={"b": 120},
    )
    return fig


def accuracy_latency_frontier(trials: list[TrialResult]) -> list[TrialResult]:
    """Trials no other beats on both accuracy and latency, fastest first (the 2-D front)."""
    out: list[TrialResult] = []
    for t in sorted(trials, key=lambda t: (t.latency_ms, -t.accuracy)):
        if not out or t.accuracy > out[-1].accuracy:
            out.append(t)
    return out


def objectives_figure(view: View) -> go.Figure:
    """The three objectives together, as the three pairwise panels of a scatter matrix."""
    r = view.result
    pareto = view.pareto_numbers
    groups = [
        ("over budget", [t for t in r.trials if not t.feasible], GREY, 7),
        ("under budget", [t for t in r.trials if t.feasible and t.number not in pareto], "#74a9e8", 8),
        ("Pareto set", [t for t in r.trials if t.number in pareto], PARETO, 11),
        ("chosen", [view.chosen] if view.chosen else [], CHOSEN, 16),
    ]
    panels = [
        ("latency_ms", "accuracy", "median latency, ms", view.metric),
        ("size_kib", "accuracy", "size, KiB", view.metric),
        ("latency_ms", "size_kib", "median latency, ms", "size, KiB"),
    ]

    def get(t: TrialResult, key: str) -> float:
        return t.size_bytes / 1024 if key == "size_kib" else float(getattr(t, key))

    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08)
    for col, (xk, yk, xt, yt) in enumerate(panels, start=1):
        for name, trials, color, size in groups:
            fig.add_trace(
                go.Scatter(
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1 and bool(trials),
                    x=[get(t, xk) for t in trials],
                    y=[get(t, yk) for t in trials],
                    mode="markers",
                    marker={
                        "color": color,
                        "size": size,
                        "symbol": "star" if name == "chosen" else "circle",
                        "line": {"width": 1, "color": "white"},
                    },
                    # a short card: the front above carries the full one (configuration, spread)
                    hovertext=[
                        f"trial {trial_name(t)}<br>{view.metric} {t.accuracy:.2f}<br>"
                        f"{t.latency_ms:.3f} ms median<br>{t.size_bytes / 1024:.1f} KiB"
                        for t in trials
                    ],
                    hoverinfo="text",
                ),
                row=1,
                col=col,
            )
        log_x = xk == "latency_ms" and log_axis([t.latency_ms for t in r.trials])
        fig.update_xaxes(title=xt, type="log" if log_x else "linear", row=1, col=col)
        fig.update_yaxes(title=yt, row=1, col=col)
    base_layout(fig, f"All three objectives: {view.metric}, latency, size (pairwise)", 420)
    return fig
