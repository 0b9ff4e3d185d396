"""Latency distributions of the candidates that matter, from the stored samples."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from autotune.report._common import (
    BAD,
    CHOSEN,
    OK,
    WARN,
    View,
    base_layout,
    drifted,
    latency_flags,
    trial_name,
)

#: a log axis when the slowest sample is this many times the fastest (outliers would squash boxes)
LOG_SPREAD = 4.0


def latency_figure(view: View) -> go.Figure | None:
    """One box per focus candidate (plus the fp32 baseline for scale); colour = trust."""
    rows = list(view.focus)
    fp32 = view.result.baselines.get("fp32")
    if fp32 is not None and all(t.number != fp32.number for t in rows):
        rows.append(fp32)
    rows = [t for t in rows if t.measurement.samples_ms]
    if not rows:
        return None
    fig = go.Figure()
    for t in sorted(rows, key=lambda t: t.latency_ms):
        m = t.measurement
        flags = latency_flags(t)
        color = BAD if drifted(t) else WARN if m.status != "ok" or m.host_busy else OK
        label = ("\u2605 " if view.chosen and t.number == view.chosen.number else "") + trial_name(t)
        if flags:
            label += " \u26a0"
        fig.add_trace(
            go.Box(
                name=label,
                y=m.samples_ms,
                marker={"color": color, "size": 3},
                line={"color": color},
                boxpoints="outliers",
                boxmean=False,
                hoverinfo="y+name",
                showlegend=False,
            )
        )
    top = max(max(t.measurement.samples_ms) for t in rows)
    low = min(min(t.measurement.samples_ms) for t in rows)
    log_y = low > 0 and top / low > LOG_SPREAD
    title = "Latency distributions (stored samples; green ok, orange unstable or busy host, red drift)"
    if view.has_budget:
        budget = view.result.meta.budget
        if view.budget_ms <= top * 1.5:  # else the boxes would be squashed flat
            fig.add_hline(y=view.budget_ms, line={"color": CHOSEN, "dash": "dash", "width": 2})
            fig.add_annotation(
                xref="paper",
                x=0,
                xanchor="left",
                yanchor="bottom",
                # annotations take log10 positions on a log axis (shapes take data values)
                y=math.log10(view.budget_ms) if log_y else view.budget_ms,
                text=f"budget {budget}",
                showarrow=False,
                font={"color": CHOSEN},
            )
        else:
            title += f"; budget {budget} is off the scale"
    base_layout(fig, title, 460)
    if log_y:
        fig.update_yaxes(title="ms per run (log scale)", type="log")
    else:
        fig.update_yaxes(title="ms per run", rangemode="tozero")
    fig.update_xaxes(tickangle=-30 if len(rows) > 6 else 0)
    return fig
