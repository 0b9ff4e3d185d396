"""Shared pieces of the report: the view of a run every figure reads, labels, colours, HTML."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
import plotly.io as pio

from autotune.knobs import LAYER_KNOBS, KnobValue, default_of, value_label

if TYPE_CHECKING:
    from autotune.result import ParetoSet, TrialResult

#: canary ratio outside [1/t, t] flags drift when the measurement carries no flag of its own
#: (the measurer's DEFAULT_DRIFT_THRESHOLD; it sets ``Measurement.drift_flag``)
DRIFT_THRESHOLD = 1.15
#: hover text lists at most this many changed layers
HOVER_LAYERS = 16

GREY = "#b8bcc4"
#: how a candidate over the budget is drawn: a grey cross
OVER_BUDGET = {"symbol": "x-thin-open", "line": {"width": 2, "color": GREY}}
PARETO = "#1f5fbf"
CHOSEN = "#e8590c"
BASELINE = "#212529"
OK = "#2b8a3e"
WARN = "#e67700"
BAD = "#c92a2a"
COLORSCALE = "Viridis"

FONT = "-apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


@dataclass
class View:
    """What the figures share: the result plus the few derived facts they all need."""

    result: ParetoSet
    metric: str
    budget_ms: float
    chosen: TrialResult | None
    #: the candidates the report is about: the Pareto set, or the fastest when none met the budget
    focus: list[TrialResult]

    @classmethod
    def of(cls, result: ParetoSet) -> View:
        focus = list(result.pareto) if result.pareto else result.fastest(5)
        return cls(
            result=result,
            metric=result.meta.metric,
            budget_ms=result.budget_ms,
            chosen=result.best,
            focus=focus,
        )

    @property
    def pareto_numbers(self) -> set[int]:
        return {t.number for t in self.result.pareto}

    @property
    def has_budget(self) -> bool:
        return math.isfinite(self.budget_ms)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def aggressiveness(knob: str, value: KnobValue) -> float:
    """How far from the unchanged layer a value is, in [0, 1] (for heatmap colours)."""
    k = LAYER_KNOBS.get(knob)
    return k.heat(value) if k is not None else 0.5


def layer_label(cfg: dict[str, KnobValue]) -> str:
    return " ".join(value_label(k, v) for k, v in cfg.items() if v != default_of(k)) or "unchanged"


def config_lines(t: TrialResult, limit: int = HOVER_LAYERS) -> list[str]:
    """Changed layers, one per line, e.g. ``stem: w0.5 int8``; then the runtime."""
    items = [(name, cfg) for name, cfg in t.as_run.layers.items() if cfg]  # as onnxruntime runs it
    lines = [f"{name}: {layer_label(cfg)}" for name, cfg in items[:limit]]
    if len(items) > limit:
        lines.append(f"... and {len(items) - limit} more layers")
    if not items:
        lines.append("all layers unchanged (fp32)")
    lines.extend(
        f"{name}: runs {runs}, chosen {chosen}" for name, (chosen, runs) in t.precision_changes.items()
    )
    lines.append(f"threads {t.candidate.runtime.threads}")
    return lines


def latency_spread(t: TrialResult) -> str:
    m = t.measurement
    text = (
        f"in-window median {m.median_ms:.3f} ms, p90 {m.p90_ms:.3f}, p99 {m.p99_ms:.3f}<br>"
        f"min {m.min_ms:.3f}, IQR {m.iqr_ms:.3f} ms, CV {m.cv:.1%}, n={m.n}"
        + (" (cached)" if m.cached else "")
    )
    flags = latency_flags(t)
    return text + (f"<br><b>{', '.join(flags)}</b>" if flags else "")


def latency_flags(t: TrialResult) -> list[str]:
    """Why not to trust a latency blindly: unstable, device drift or a busy host while measuring."""
    m = t.measurement
    flags: list[str] = []
    if m.status != "ok":
        flags.append(m.status)
    if drifted(t):
        flags.append(f"drift x{m.drift_ratio:.2f}" if m.drift_ratio else "drift")
    if m.host_busy:
        flags.append(f"host busy ({m.host_busy:.0%} of CPUs to other processes)")
    return flags


def drifted(t: TrialResult) -> bool:
    m = t.measurement
    if m.drift_flag:
        return True
    r = m.drift_ratio
    return r is not None and math.isfinite(r) and r > 0 and abs(math.log(r)) > math.log(DRIFT_THRESHOLD)


def interval_ms(t: TrialResult) -> tuple[float, float] | None:
    """The latency's 95% interval: the ratio's interval x the reference latency (paired timing)."""
    m = t.measurement
    if not m.ratio or not m.ratio_ci:
        return None
    return t.latency_ms * m.ratio_ci[0] / m.ratio, t.latency_ms * m.ratio_ci[1] / m.ratio


def error_x(trials: list[TrialResult], color: str, thickness: float = 1.0) -> dict[str, Any]:
    """Plotly error bars for the trials' 95% latency intervals (none where unpaired)."""
    spans = [interval_ms(t) or (t.latency_ms, t.latency_ms) for t in trials]
    return {
        "type": "data",
        "symmetric": False,
        "array": [max(hi - t.latency_ms, 0.0) for t, (_, hi) in zip(trials, spans, strict=True)],
        "arrayminus": [max(t.latency_ms - lo, 0.0) for t, (lo, _) in zip(trials, spans, strict=True)],
        "color": color,
        "thickness": thickness,
        "width": 3,
    }


def ratio_text(t: TrialResult) -> str:
    """``x0.512 [0.505, 0.519] of the reference`` (paired timing), else empty."""
    m = t.measurement
    if not m.ratio or not m.ratio_ci:
        return ""
    return f"x{m.ratio:.3f} [{m.ratio_ci[0]:.3f}, {m.ratio_ci[1]:.3f}] of the reference (95%)"


def latency_line(t: TrialResult) -> str:
    """The study's figure, named once: ``latency 0.380 ms [0.372, 0.388] (95%, x0.301 of the
    reference over 3 sessions)``; the raw window figures are called "in-window" everywhere."""
    span = interval_ms(t)
    m = t.measurement
    if span is None or not m.ratio:
        return f"latency {t.latency_ms:.3f} ms"
    over = f" over {len(m.session_ratios)} sessions" if m.session_ratios else " in one session"
    return (
        f"latency {t.latency_ms:.3f} ms [{span[0]:.3f}, {span[1]:.3f}] "
        f"(95%, x{m.ratio:.3f} of the reference{over})"
    )


def trial_name(t: TrialResult) -> str:
    return f"#{t.number}" + (f" ({t.baseline})" if t.baseline else "")


def hover(t: TrialResult, metric: str) -> str:
    """Full hover card: objectives, latency spread and the per-layer configuration."""
    head = f"<b>trial {trial_name(t)}</b>{'' if t.feasible else ' - over budget'}"
    lines = [
        head,
        f"{metric} {t.accuracy:.2f}",
        f"latency {t.latency_ms:.3f} ms, {ratio_text(t)}" if ratio_text(t) else "",
        latency_spread(t),
        f"size {t.size_bytes / 1024:.1f} KiB",
        "<i>configuration</i>",
        *(esc(line) for line in config_lines(t)),
    ]
    return "<br>".join(line for line in lines if line)


def base_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 16}},
        height=height,
        margin={"l": 70, "r": 30, "t": 60, "b": 60},
        font={"family": FONT, "size": 12},
        hoverlabel={"align": "left", "font": {"family": FONT, "size": 12}},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
    )
    return fig


def figure_html(fig: go.Figure, div_id: str) -> str:
    """A figure as a <div>; plotly.js itself is embedded once in the page head."""
    height = fig.layout.height or 450
    return pio.to_html(
        fig,
        include_plotlyjs=False,
        include_mathjax=False,
        full_html=False,
        div_id=div_id,
        default_height=f"{height}px",
        default_width="100%",
        config={"displaylogo": False, "responsive": True, "toImageButtonOptions": {"scale": 2}},
    )


def log_axis(values: list[float]) -> bool:
    """A log axis when the values span more than ten times."""
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    return bool(pos) and max(pos) / min(pos) > 10
