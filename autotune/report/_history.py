"""How the search progressed: best feasible accuracy and hypervolume over trials.

The hypervolume comes from Optuna's public ``optuna.visualization.plot_hypervolume_history``
(feasible trials only, Optuna's own WFG computation), read back from the figure it returns.
Its reference point is the worst feasible value of each objective pushed 10% of the range
further out; the curve is divided by the volume of the box between that point and the ideal
point, so it reads as the fraction of the box the Pareto set dominates (0 to 1).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from autotune.report._common import CHOSEN, GREY, OVER_BUDGET, PARETO, View, base_layout


@dataclass
class Hypervolume:
    trials: list[int]
    values: list[float]  # fraction of the reference box
    reference: list[float]  # (accuracy, latency ms, size bytes)
    ideal: list[float]


def hypervolume_history(view: View) -> Hypervolume | None:
    """Normalised hypervolume after each completed trial, or None without feasible trials."""
    feasible = view.result.feasible
    if not feasible:
        return None
    pts = np.array([[t.accuracy, t.latency_ms, float(t.size_bytes)] for t in feasible])
    signs = np.array([-1.0, 1.0, 1.0])  # all minimised
    worst = (pts * signs).max(axis=0)
    best = (pts * signs).min(axis=0)
    span = worst - best
    span = np.where(span > 0, span, np.maximum(np.abs(worst) * 0.1, 1.0))
    ref = (worst + 0.1 * span) * signs
    ideal = best * signs
    box = float(np.prod(np.abs(ref - ideal)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = optuna.visualization.plot_hypervolume_history(view.result.study, reference_point=ref.tolist())
    trace = fig.data[0]
    values = [float(v) / box if box > 0 else 0.0 for v in trace.y]
    return Hypervolume([int(n) for n in trace.x], values, ref.tolist(), ideal.tolist())


def progress_figure(view: View) -> go.Figure:
    r = view.result
    trials = sorted(r.trials, key=lambda t: t.number)
    titles = (f"best {view.metric} under the budget so far", "hypervolume (fraction of reference box)")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, subplot_titles=titles)
    over_marker = {"color": GREY, "size": 6, **OVER_BUDGET}
    for name, marker, suffix, feasible in (
        ("trial under budget", {"color": "#74a9e8", "size": 6}, "", True),
        ("trial over budget", over_marker, " (over budget)", False),
    ):
        shown = [t for t in trials if t.feasible == feasible]
        fig.add_trace(
            go.Scatter(
                name=name,
                x=[t.number for t in shown],
                y=[t.accuracy for t in shown],
                mode="markers",
                marker=marker,
                hovertemplate=f"trial %{{x}}: %{{y:.2f}}{suffix}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    best: list[float] = []
    so_far = -math.inf
    for t in trials:
        if t.feasible:
            so_far = max(so_far, t.accuracy)
        best.append(so_far if math.isfinite(so_far) else math.nan)
    fig.add_trace(
        go.Scatter(
            name=f"best {view.metric} under budget",
            x=[t.number for t in trials],
            y=best,
            mode="lines",
            line={"shape": "hv", "color": CHOSEN, "width": 2},
            hovertemplate="after trial %{x}: %{y:.2f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    hv = hypervolume_history(view)
    if hv is not None:
        ref = hv.reference
        fig.add_trace(
            go.Scatter(
                name="hypervolume",
                x=hv.trials,
                y=hv.values,
                mode="lines+markers",
                line={"shape": "hv", "color": PARETO, "width": 2},
                marker={"size": 4},
                hovertemplate=(
                    "after trial %{x}: %{y:.3f}<br>"
                    f"reference: {view.metric} {ref[0]:.2f}, {ref[1]:.3f} ms, {ref[2] / 1024:.1f} KiB"
                    "<extra></extra>"
                ),
            ),
            row=2,
            col=1,
        )
    if hv is None:  # keep the empty panel's axes, and say why it is empty
        fig.add_trace(
            go.Scatter(x=[t.number for t in trials[:1]], y=[0], mode="markers", opacity=0, showlegend=False,
                       hoverinfo="skip"),
            row=2,
            col=1,
        )  # fmt: skip
        for axis in ("yaxis", "yaxis2"):
            lo, hi = fig.layout[axis].domain
            fig.add_annotation(
                text="no trial under the budget yet",
                xref="paper",
                yref="paper",
                x=0.5,
                y=(lo + hi) / 2,
                showarrow=False,
                font={"color": CHOSEN, "size": 14},
            )
    base_layout(fig, "Search progress", 520)
    fig.update_xaxes(title="trial", row=2, col=1)
    if trials and trials[-1].number <= 15:
        fig.update_xaxes(dtick=1)  # no half trials
    fig.update_yaxes(title=view.metric, row=1, col=1)
    fig.update_yaxes(title="hypervolume", rangemode="tozero", row=2, col=1)
    fig.update_annotations(font_size=12, x=0, xanchor="left", selector=lambda a: a.text in titles)
    return fig
