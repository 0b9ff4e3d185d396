"""The HTML report of a run: which model to ship, why, and how sure we are of its latency.

One self-contained file: plotly.js is embedded once in the page head (the vendored cartesian
bundle when it fits, see :mod:`~autotune.report.plotlyjs`) and every figure is a ``<div>``
drawn by it, so the report opens with no network. It is rebuilt from the Optuna
storage alone (``autotune report runs/STUDY``), so it can be regenerated at any time.

Modules: :mod:`~autotune.report.page` (verdict, facts, tables), :mod:`~autotune.report.pareto`
(front, objectives), :mod:`~autotune.report._history` (best accuracy, hypervolume),
:mod:`~autotune.report.layers` (per-layer configuration, sensitivity, importances),
:mod:`~autotune.report.latency` (latency distributions); :mod:`~autotune.report.browser` opens
a report in headless Chromium for the test and the benchmark.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from autotune.report import plotlyjs
from autotune.report._common import View, esc, figure_html
from autotune.report._history import progress_figure
from autotune.report._summary import predictor_line
from autotune.report._summary import summary as summary_text
from autotune.report._summary import table as summary_table
from autotune.report.latency import latency_figure
from autotune.report.layers import config_figure, importance_figure, importances, sensitivity_figure
from autotune.report.page import (
    CSS,
    candidates_table,
    facts,
    failures_table,
    run_reference,
    storage_url,
    verdict,
)
from autotune.report.pareto import front_figure, objectives_figure

if TYPE_CHECKING:
    from autotune.result import ParetoSet

__all__ = [
    "build_html",
    "default_path",
    "predictor_line",
    "summary_table",
    "summary_text",
    "write_report",
]


def default_path(study_name: str) -> Path:
    """``reports/<study>.html`` relative to the current directory."""
    safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in study_name) or "study"
    return Path("reports") / f"{safe}.html"


def write_report(result: ParetoSet, path: str | Path | None = None) -> Path:
    """Write the report of ``result`` to ``path`` (default ``reports/<study>.html``); returns the path."""
    out = Path(path) if path else default_path(result.study.study_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(build_html(result), encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a report
    return out


def _section(anchor: str, title: str, body: str, intro: str = "") -> str:
    intro_html = f'<p class="note">{intro}</p>' if intro else ""
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{intro_html}{body}</section>'


class _Page:
    """Sections in order, and the trace types of their figures (to pick the plotly.js bundle)."""

    def __init__(self) -> None:
        self.sections: list[tuple[str, str, str]] = []  # (anchor, nav label, html)
        self.trace_types: set[str] = set()

    def figure(self, fig: go.Figure | None, div_id: str) -> str:
        if fig is None:
            return ""
        self.trace_types.update(trace.type or "scatter" for trace in fig.data)
        return f'<div class="figure">{figure_html(fig, div_id)}</div>'

    def add(self, anchor: str, label: str, title: str, body: str, intro: str = "") -> None:
        if body:
            self.sections.append((anchor, label, _section(anchor, title, body, intro)))


def build_html(result: ParetoSet) -> str:
    """The whole report as one HTML string."""
    view = View.of(result)
    name = result.study.study_name
    page = _Page()
    if result.trials:
        page.add(
            "front",
            "Pareto front",
            "Pareto front",
            page.figure(front_figure(view), "fig-front"),
            "Hover a point for its latency spread and per-layer configuration. Grey crosses ran over "
            "the budget; diamonds are the uniform baselines; the star is the chosen candidate.",
        )
        page.add(
            "candidates",
            "Candidates",
            "Pareto set under the budget" if result.pareto else "Fastest candidates (none met the budget)",
            candidates_table(view),
            "Each row's command writes that trial's ONNX artifact and a JSON record of its configuration.",
        )
        page.add(
            "objectives",
            "Objectives",
            "All three objectives",
            page.figure(objectives_figure(view), "fig-objectives"),
        )
        page.add(
            "latency",
            "Latency",
            "Latency distributions",
            page.figure(latency_figure(view), "fig-latency"),
            "Boxes from the stored per-sample latencies. \u26a0 marks an unstable measurement "
            "(IQR/median above the protocol's threshold after retries) or device drift during the run.",
        )
        page.add(
            "layers", "Per-layer", "Per-layer configuration", page.figure(config_figure(view), "fig-layers")
        )
        page.add(
            "sensitivity",
            "Sensitivity",
            "Per-layer sensitivity",
            page.figure(sensitivity_figure(view), "fig-sensitivity"),
        )
        imp, why_not = importances(view)
        page.add(
            "importance",
            "Importances",
            "Parameter importances",
            page.figure(importance_figure(view, imp), "fig-importance")
            if imp
            else f'<p class="note">{esc(why_not)}</p>',
            "optuna.importance.get_param_importances (fANOVA) with the metric, then latency, as target."
            if imp
            else "",
        )
        page.add(
            "progress",
            "Progress",
            "Search progress",
            page.figure(progress_figure(view), "fig-progress"),
            "Hypervolume: optuna.visualization.plot_hypervolume_history over feasible trials, reference "
            "point 10% beyond the worst feasible value of each objective, divided by the volume of the "
            "box between it and the ideal point.",
        )
    else:
        page.add("candidates", "Candidates", "Candidates", '<p class="note">No trial completed yet.</p>')
    page.add("failures", "Failures", "Failures, grouped by reason", failures_table(result))

    nav = "<nav>" + "".join(f'<a href="#{a}">{esc(label)}</a>' for a, label, _ in page.sections) + "</nav>"
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    javascript, js_label = plotlyjs.bundle(page.trace_types)
    footer = (
        f"<footer>Generated {esc(now)} from the study storage with {esc(js_label)} embedded. Rebuild: "
        f"<code>autotune report {esc(run_reference(result))}</code>. Browse the same study interactively: "
        f"<code>pip install optuna-dashboard &amp;&amp; optuna-dashboard {esc(storage_url(result))}</code>."
        "</footer>"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>autotune report: {esc(name)}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{javascript}</script></head><body><main>'
        f"<h1>autotune report: {esc(name)}</h1>"
        f"<p class='sub'>{esc(result.meta.task)} on {esc(result.meta.device)}, "
        f"budget {esc(result.meta.budget)}</p>"
        f"{verdict(view)}{facts(view)}{nav}"
        + "".join(body for _, _, body in page.sections)
        + f"{footer}</main></body></html>\n"
    )
