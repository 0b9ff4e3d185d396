"""Per layer: the configuration of the Pareto members, sensitivity, parameter importances."""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from autotune._util import error_line
from autotune.knobs import LAYER_KNOBS, default_of, value_label
from autotune.report._common import CHOSEN, PARETO, View, aggressiveness, base_layout, trial_name
from autotune.study import TrialRecord

#: fewer completed trials than this and importances are noise
MIN_TRIALS_FOR_IMPORTANCE = 8
#: fANOVA forest size: Optuna's default is 64; 32 gives the same ranking at half the build time
FANOVA_TREES = 32
#: cell labels are drawn only up to this many layers (hover always has them)
MAX_LABELLED_LAYERS = 24


def _searched(view: View) -> tuple[list[str], list[str], dict[str, dict[str, list[Any]]]]:
    """Layers (in model order), knobs with a real choice somewhere, and each layer's choices."""
    space = view.result.meta.space
    choices: dict[str, dict[str, list[Any]]] = {
        layer["name"]: dict(layer.get("knobs", {})) for layer in space.get("layers", [])
    }
    if not choices:  # no stored space: fall back to what the candidates changed
        for t in view.result.trials:
            for name, cfg in t.candidate.layers.items():
                for knob, value in cfg.items():
                    choices.setdefault(name, {}).setdefault(knob, [default_of(knob)]).append(value)
    knobs = [k for k in LAYER_KNOBS if any(len(set(map(str, c.get(k, [])))) > 1 for c in choices.values())]
    layers = [name for name, c in choices.items() if any(len(set(map(str, c.get(k, [])))) > 1 for k in knobs)]
    return layers, knobs, choices


def config_figure(view: View) -> go.Figure | None:
    """Heatmap per searched knob: rows = focus candidates, columns = layers, darker = more compressed."""
    layers, knobs, choices = _searched(view)
    rows = view.focus
    if not layers or not knobs or not rows:
        return None
    labels = [
        ("\u2605 " if view.chosen and t.number == view.chosen.number else "") + trial_name(t) for t in rows
    ]
    fig = make_subplots(
        rows=len(knobs),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04 + 0.02 * len(rows) / 10,
        subplot_titles=[f"{k}" for k in knobs],
    )
    for i, knob in enumerate(knobs, start=1):
        z: list[list[float | None]] = []
        text: list[list[str]] = []
        for t in rows:
            zr: list[float | None] = []
            tr: list[str] = []
            for layer in layers:
                if len(choices.get(layer, {}).get(knob, [])) < 2:
                    zr.append(None)
                    tr.append("")
                    continue
                v = t.candidate.value(layer, knob)
                zr.append(aggressiveness(knob, v))
                tr.append(value_label(knob, v))
            z.append(zr)
            text.append(tr)
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=layers,
                y=labels,
                text=text,
                texttemplate="%{text}" if len(layers) <= MAX_LABELLED_LAYERS else None,
                textfont={"size": 10},
                zmin=0,
                zmax=1,
                colorscale=[[0, "#f1f3f5"], [0.5, "#74a9e8"], [1, "#0b3d91"]],
                showscale=False,
                xgap=2,
                ygap=2,
                hovertemplate=f"%{{y}}<br>%{{x}}: %{{text}}<extra>{knob}</extra>",
                hoverongaps=False,
            ),
            row=i,
            col=1,
        )
        fig.update_yaxes(autorange="reversed", row=i, col=1)
    what = "Pareto members" if view.result.pareto else "fastest candidates (none met the budget)"
    height = 110 + len(knobs) * (40 + 26 * len(rows)) + min(160, 6 * max(len(x) for x in layers))
    base_layout(fig, f"Per-layer configuration of the {what} (darker = compressed more)", height)
    fig.update_xaxes(tickangle=-40, row=len(knobs), col=1)
    fig.update_annotations(font_size=12, x=0, xanchor="left")
    fig.update_layout(margin={"l": 150})
    return fig


def sensitivity_figure(view: View) -> go.Figure | None:
    """Per-layer sensitivity, when the run computed it (study meta ``sensitivity``).

    Accepted shapes: ``{layer: drop}`` or ``{layer: {setting: drop}}`` ({metric} change when only
    that layer is compressed with that setting).
    """
    sens = find_sensitivity(view)
    if sens is None:
        return None
    layers = list(sens)
    if all(isinstance(v, (int, float)) for v in sens.values()):
        fig = go.Figure(
            go.Bar(
                x=layers,
                y=[float(sens[name]) for name in layers],
                marker_color=PARETO,
                hovertemplate="%{x}: %{y:.3f}<extra></extra>",
            )
        )
        fig.update_yaxes(title=f"{view.metric} change")
    else:
        settings: list[str] = []
        for v in sens.values():
            for s in v if isinstance(v, dict) else {}:
                if str(s) not in settings:
                    settings.append(str(s))
        z = [
            [_num(sens[name].get(s) if isinstance(sens[name], dict) else None) for name in layers]
            for s in settings
        ]
        fig = go.Figure(
            go.Heatmap(
                z=z,
                x=layers,
                y=settings,
                colorscale="RdBu",
                zmid=0,
                texttemplate="%{z:.2f}" if len(layers) <= MAX_LABELLED_LAYERS else None,
                colorbar={"title": {"text": f"{view.metric} change"}},
                hovertemplate="%{x} at %{y}: %{z:.3f}<extra></extra>",
            )
        )
    base_layout(fig, f"Per-layer sensitivity ({view.metric} change when only that layer is compressed)", 420)
    fig.update_xaxes(tickangle=-40)
    return fig


def find_sensitivity(view: View) -> dict[str, Any] | None:
    """Study meta ``sensitivity``, else the first trial user attribute ``sensitivity``."""
    sens = view.result.meta.sensitivity
    if isinstance(sens, dict) and sens:
        return sens
    for t in view.result.study.get_trials(deepcopy=False):
        cand = TrialRecord.from_trial(t).sensitivity
        if isinstance(cand, dict) and cand:
            return cand
    return None


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def importances(view: View) -> tuple[dict[str, dict[str, float]], str | None]:
    """fANOVA importances of the Optuna parameters for accuracy and for latency, or why not."""
    study = view.result.study
    n = len(view.result.trials)
    if n < MIN_TRIALS_FOR_IMPORTANCE:
        return (
            {},
            f"parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials ({n} so far)",
        )
    out: dict[str, dict[str, float]] = {}
    targets = {view.metric: 0, "latency": 1}
    for name, index in targets.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[name] = optuna.importance.get_param_importances(
                    study,
                    evaluator=optuna.importance.FanovaImportanceEvaluator(n_trees=FANOVA_TREES, seed=0),
                    target=lambda t, i=index: t.values[i],  # type: ignore[misc]
                )
        except Exception as exc:  # noqa: BLE001 - a report never fails on an optional figure
            return {}, f"parameter importances unavailable: {error_line(exc)}"
    if not any(out.values()):
        return {}, "parameter importances unavailable: no parameter varied across completed trials"
    return out, None


def importance_figure(view: View, imp: dict[str, dict[str, float]], top: int = 20) -> go.Figure:
    first = next(iter(imp))
    params = sorted(imp[first], key=lambda p: -imp[first][p])[:top]
    fig = go.Figure()
    for (target, values), color in zip(imp.items(), (CHOSEN, PARETO), strict=False):
        fig.add_trace(
            go.Bar(
                name=f"for {target}",
                y=params,
                x=[values.get(p, 0.0) for p in params],
                orientation="h",
                marker_color=color,
                hovertemplate="%{y}: %{x:.3f}<extra>" + target + "</extra>",
            )
        )
    base_layout(fig, f"Optuna parameter importances (fANOVA), top {len(params)}", 140 + 22 * len(params) * 2)
    fig.update_layout(barmode="group", margin={"l": 190})
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="importance (sums to 1 per target)")
    return fig
