"""The Pareto front (accuracy vs latency) and all three objectives, pairwise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from autotune.result import TrialResult

from autotune.report._common import (
    BASELINE,
    CHOSEN,
    COLORSCALE,
    GREY,
    OVER_BUDGET,
    PARETO,
    WARN,
    View,
    base_layout,
    error_x,
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

    def points(
        name: str, trials: list[TrialResult], marker: dict[str, Any], error: dict[str, Any]
    ) -> go.Scatter:
        """Candidates at (latency, accuracy), with their latency interval and a hover card."""
        return go.Scatter(
            name=name,
            x=[t.latency_ms for t in trials],
            y=[t.accuracy for t in trials],
            mode="markers",
            marker=marker,
            error_x=error,
            hovertext=[hover(t, view.metric) for t in trials],
            hoverinfo="text",
        )

    over = {"color": GREY, "size": 8, **OVER_BUDGET}
    fig.add_trace(points("over budget", infeasible, over, error_x(infeasible, GREY)))
    under = {**colour, "color": [t.size_bytes / 1024 for t in dominated], "size": 8, "opacity": 0.55}
    fig.add_trace(points("under budget", dominated, under, error_x(dominated, GREY)))
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
    front = {
        **colour,
        "color": [t.size_bytes / 1024 for t in members],
        "size": 14,
        "line": {"width": 2, "color": PARETO},
        "colorbar": {"title": {"text": "size KiB"}, "thickness": 14, "len": 0.8},
        "showscale": True,
    }
    name = "Pareto set (bars: the latency's 95% interval, ratio interval x reference)"
    fig.add_trace(points(name, members, front, error_x(members, PARETO, 1.5)))
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
    _confirmed_trace(fig, view)
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


def _confirmed_trace(fig: go.Figure, view: View) -> None:
    """The confirmation round's figures with their intervals; borderline ones marked."""
    r = view.result
    rows = [(r.trial(n), c) for n, c in sorted(r.confirmed.items()) if c.get("ratio_ci") and c.get("ratio")]
    if not rows:
        return
    xs = [c["latency_ms"] for _, c in rows]
    lo = [c["latency_ms"] * c["ratio_ci"][0] / c["ratio"] for _, c in rows]
    hi = [c["latency_ms"] * c["ratio_ci"][1] / c["ratio"] for _, c in rows]
    border = [bool(c.get("borderline")) for _, c in rows]
    fig.add_trace(
        go.Scatter(
            name="confirmed (longer protocol; red: borderline, its interval straddles the budget)",
            x=xs,
            y=[t.accuracy for t, _ in rows],
            mode="markers+text",
            text=["borderline" if b else "" for b in border],
            textposition="middle right",
            textfont={"size": 11, "color": WARN},
            marker={
                "symbol": "circle-open",
                "size": 20,
                "color": [WARN if b else CHOSEN for b in border],
                "line": {"width": 2},
            },
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [h - x for h, x in zip(hi, xs, strict=True)],
                "arrayminus": [x - low for low, x in zip(lo, xs, strict=True)],
                "color": CHOSEN,
                "thickness": 2.5,
                "width": 6,
            },
            hovertext=[
                f"trial #{t.number} confirmed: {c['latency_ms']:.3f} ms, x{c['ratio']:.3f} "
                f"[{c['ratio_ci'][0]:.3f}, {c['ratio_ci'][1]:.3f}]"
                + (" <b>borderline</b>" if c.get("borderline") else "")
                for t, c in rows
            ],
            hoverinfo="text",
        )
    )


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
                        f"latency {t.latency_ms:.3f} ms<br>{t.size_bytes / 1024:.1f} KiB"
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
