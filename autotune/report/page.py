"""The HTML around the figures: verdict, run facts, candidate and failure tables, footer.

All text from the study is escaped with :func:`html.escape`; nothing is fetched at view time.
"""

from __future__ import annotations

import math
import os
import shlex
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from optuna.trial import TrialState

from autotune._util import first_line
from autotune.report._common import View, esc, latency_flags, latency_line
from autotune.report._floor import final_line, floor_gap
from autotune.report._summary import memory_line, predictor_line
from autotune.study import DB_NAME, TrialRecord

if TYPE_CHECKING:
    from autotune.result import ParetoSet, TrialResult

#: a drop of the metric against fp32 larger than this is highlighted in the verdict
LARGE_DROP = 1.0

CSS = """
:root { --fg:#212529; --muted:#6c757d; --line:#dee2e6; --bg:#f8f9fa; --blue:#1f5fbf; --red:#c92a2a;
        --orange:#e67700; --green:#2b8a3e; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 14px/1.45 -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 20px 28px 60px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 34px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.sub { color: var(--muted); margin: 0 0 14px; }
.verdict { border-left: 6px solid var(--green); background: #ebfbee; padding: 12px 16px; border-radius: 4px; }
.verdict.none { border-color: var(--red); background: #fff5f5; }
.verdict h2 { border: 0; margin: 0 0 6px; padding: 0; font-size: 19px; }
.verdict p { margin: 4px 0; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 6px 22px;
         margin: 16px 0 0; padding: 12px 16px; background: var(--bg); border-radius: 4px; }
.facts div { min-width: 0; }
.facts dt { color: var(--muted); font-size: 12px; }
.facts dd { margin: 0; overflow-wrap: anywhere; }
nav { margin: 14px 0 0; font-size: 13px; }
nav a { margin-right: 14px; color: var(--blue); text-decoration: none; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 6px 0; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--bg); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.chosen td { background: #fff4e6; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--bg);
       padding: 1px 4px; border-radius: 3px; user-select: all; overflow-wrap: anywhere; }
.flag { color: var(--orange); font-weight: 600; }
.bad { color: var(--red); font-weight: 600; }
.ok { color: var(--green); }
.muted { color: var(--muted); }
.figure { margin: 8px 0 0; border: 1px solid var(--line); border-radius: 4px; padding: 4px; }
.note { color: var(--muted); font-size: 13px; margin: 4px 0; }
ul.notes { margin: 6px 0; padding-left: 20px; color: var(--muted); font-size: 13px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""


def _fmt_s(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 90:
        return f"{minutes} min {s} s"
    h, m = divmod(minutes, 60)
    return f"{h} h {m} min"


def _display_path(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def storage_url(result: ParetoSet) -> str:
    """The Optuna storage URL of the study (for optuna-dashboard), relative when it is local."""
    db = result.run_dir / DB_NAME
    if db.is_file():
        return f"sqlite:///{_display_path(db)}"
    return result.storage or "STORAGE_URL"  # a ParetoSet built from a bare study knows no URL


def run_reference(result: ParetoSet) -> str:
    """How the CLI names this run: the runs directory, or ``--storage URL --study NAME``."""
    if (result.run_dir / DB_NAME).is_file():
        return shlex.quote(_display_path(result.run_dir))
    return f"--storage {shlex.quote(storage_url(result))} --study {shlex.quote(result.study.study_name)}"


def export_command(result: ParetoSet, t: TrialResult) -> str:
    return f"autotune export {run_reference(result)} --trial {t.number} -o trial{t.number}.onnx"


def trial_counts(result: ParetoSet) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for t in result.study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] += 1
    return counts


def verdict(view: View) -> str:
    r = view.result
    budget = esc(r.meta.budget)
    device = esc(r.meta.device)
    fp32 = r.baselines.get("fp32")
    c = view.chosen
    ref = r.reference_accuracy
    if c is None and (gap := floor_gap(r)) is not None:
        head, *rest = gap.split("\n")
        return (
            '<section class="verdict none" id="verdict">'
            f"<h2>No trial met both the budget and the accuracy floor on {device}.</h2>"
            f"<p>{esc(head)}</p>"
            + "".join(f"<p>{esc(line)}</p>" for line in rest)
            + (f"<p class='muted'>{esc(line)}</p>" if (line := final_line(r)) else "")
            + "</section>"
        )
    if c is None:
        fastest = view.focus[0] if view.focus else None
        extra = (
            f" The fastest candidate, trial {fastest.number}, has a latency of {fastest.latency_ms:.3f} ms "
            f"({fastest.latency_ms / view.budget_ms:.1f}x the budget) "
            f"at {esc(view.metric)} {fastest.accuracy:.2f}."
            if fastest and view.has_budget
            else ""
        )
        return (
            '<section class="verdict none" id="verdict">'
            f"<h2>No trial met the budget of {budget} on {device}.</h2>"
            f"<p>{len(r.trials)} candidates were measured; none ran under the budget.{extra} "
            "The fastest candidates are shown below. Try a larger budget or a wider search space "
            "(everything measured so far is saved and reused).</p>"
            + (f"<p>{esc(r.meta.infeasible)}</p>" if r.meta.infeasible else "")
            + "</section>"
        )
    m = c.measurement
    n_feasible = len(r.feasible)
    why = (
        f"It is the most accurate of the {n_feasible} candidates under the budget"
        + (f" and above the accuracy floor of {r.floor:.2f}" if r.floor is not None else "")
        + (" (ties broken by latency)" if sum(t.accuracy == c.accuracy for t in r.feasible) > 1 else "")
        + "."
    )
    if fp32 is not None and ref is not None and fp32.number != c.number:
        delta = c.accuracy - ref
        delta_html = f"{esc(view.metric)} {delta:+.2f}"
        if delta < -LARGE_DROP:
            delta_html = f'<span class="flag">{delta_html}</span>'
        why += (
            f" Against the unmodified model (fp32, trial {fp32.number}): {delta_html}, "
            f"{fp32.latency_ms / c.latency_ms:.2f}x faster, "
            f"{fp32.size_bytes / max(c.size_bytes, 1):.2f}x smaller."
        )
    faster = [t for t in r.pareto if t.latency_ms < c.latency_ms]
    if faster:
        alt = max(faster, key=lambda t: t.accuracy)
        why += (
            f" If you need more headroom: trial {alt.number} runs in {alt.latency_ms:.3f} ms "
            f"at {esc(view.metric)} {alt.accuracy:.2f}."
        )
    flags = latency_flags(c)
    tail = (
        f'<span class="ok">p99 {m.p99_ms:.3f} ms is under the budget</span>'
        if view.has_budget and m.p99_ms <= view.budget_ms
        else f'<span class="flag">p99 {m.p99_ms:.3f} ms exceeds the budget: tail latency risk</span>'
        if view.has_budget
        else f"p99 {m.p99_ms:.3f} ms"
    )
    iqr_rel = m.iqr_ms / m.median_ms if m.median_ms > 0 else math.nan
    limit = r.meta.protocol.get("unstable_iqr")
    trust = (
        f'<span class="flag">flagged: {esc(", ".join(flags))}</span>'
        if flags
        else '<span class="ok">measurement ok'
        + (f" (IQR/median under the protocol's {limit:.0%})" if isinstance(limit, (int, float)) else "")
        + ", no drift flag</span>"
    )
    return (
        '<section class="verdict" id="verdict">'
        f"<h2>Ship trial {c.number}{esc(f' ({c.baseline})' if c.baseline else '')}: "
        f"{esc(view.metric)} {c.accuracy:.2f} at a latency of {c.latency_ms:.3f} ms, "
        f"{c.size_bytes / 1024:.1f} KiB</h2>"
        f"<p><b>Why:</b> {why}</p>"
        f"<p><b>How sure of its latency:</b> {esc(latency_line(c))}; in-window median {m.median_ms:.3f} ms, "
        f"in-window p90 {m.p90_ms:.3f} ms, "
        f"IQR/median {iqr_rel:.1%}, CV {m.cv:.1%}, n={m.n} samples of {m.runs_per_sample} run(s) each "
        f"on {device}; {tail}; {trust}.</p>"
        f"<p><b>Get it:</b> <code>{esc(export_command(r, c))}</code></p>"
        f"<p class='muted'>Configuration: {esc(c.describe())}</p>"
        "</section>"
    )


def facts(view: View) -> str:
    r = view.result
    meta = r.meta
    counts = trial_counts(r)
    count_text = ", ".join(
        f"{counts.get(state, 0)} {label}"
        for state, label in (("complete", "complete"), ("pruned", "pruned"), ("fail", "failed"))
    )
    for state in ("running", "waiting"):
        if counts.get(state):
            count_text += f", {counts[state]} {state}"
    count_text += (
        f"; {len(r.feasible)} under budget"
        + (" and above the floor" if r.floor is not None else "")
        + f", {len(r.pareto)} on the Pareto front"
    )
    fp_text = ", ".join(f"{k} {v}" for k, v in meta.fingerprint.items())
    budget = meta.budget + (f" ({meta.budget_ms:g} ms median)" if math.isfinite(meta.budget_ms) else "")
    protocol = meta.protocol
    proto_text = (
        f"warm-up {protocol.get('warmup_s')} s, at least {protocol.get('min_samples')} samples "
        f"and {protocol.get('min_time_s')} s, unstable above IQR/median {protocol.get('unstable_iqr')}"
        if protocol
        else "?"
    )
    items = [
        ("model / task", meta.task),
        ("metric", view.metric),
        ("device", f"{meta.device} (backend {meta.backend})"),
        ("device fingerprint", fp_text or "?"),
        ("latency budget", budget),
        (
            "accuracy floor",
            f"{r.floor:.2f} (the unmodified model minus {meta.max_drop})" if r.floor is not None else "none",
        ),
        ("final recovery", final_line(r) or "not recorded"),
        ("trials", count_text),
        ("wall time", _fmt_s(meta.wall_s)),
        (
            "chosen candidate",
            f"trial {view.chosen.number}: {view.chosen.describe()}"
            if view.chosen
            else "none (no trial met the budget" + (" and the floor)" if r.floor is not None else ")"),
        ),
        ("measurement protocol", proto_text),
        ("latency predictor", predictor_line(r) or "not recorded"),
        ("memory", memory_line(r) or "not recorded"),
        ("study", f"{r.study.study_name} ({run_reference(r)})"),
        ("created", meta.created),
        ("autotune", f"{meta.version}; command: {meta.command}"),
    ]
    body = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in items)
    notes = meta.notes
    notes_html = (
        "<ul class='notes'>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>" if notes else ""
    )
    return f'<dl class="facts">{body}</dl>{notes_html}'


def _mib(n: int | None) -> str:
    return f"{n / 2**20:.0f}" if n else ""


def candidates_table(view: View) -> str:
    r = view.result
    ref = r.reference_accuracy
    rows = []
    for t in view.focus:
        m = t.measurement
        flags = latency_flags(t)
        chosen = view.chosen is not None and t.number == view.chosen.number
        delta = f"{t.accuracy - ref:+.2f}" if ref is not None else "n/a"
        before = t.recovery.get("accuracy_before") if t.recovery else None
        recovered = (
            f"{before:.2f} ({'+'.join(t.recovery['ran'])})" if t.recovery and before is not None else ""
        )
        trust = (
            f'<span class="flag">{esc(", ".join(flags))}</span>' if flags else '<span class="ok">ok</span>'
        )
        star = "\u2605 " if chosen else ""
        rows.append(
            f'<tr class="{"chosen" if chosen else ""}">'
            f'<td class="num">{star}{t.number}</td>'
            f"<td>{esc(t.baseline or '')}</td>"
            f'<td class="num">{t.accuracy:.2f}</td><td class="num">{delta}</td>'
            f'<td class="num">{esc(recovered)}</td>'
            f'<td class="num">{t.latency_ms:.3f}</td>'
            f'<td class="num">{m.median_ms:.3f}</td><td class="num">{m.p90_ms:.3f}</td>'
            f'<td class="num">{m.p99_ms:.3f}</td><td class="num">{m.cv:.1%}</td><td>{trust}</td>'
            f'<td class="num">{t.size_bytes / 1024:.1f}</td>'
            f'<td class="num">{_mib(t.peak_memory_bytes)}</td>'
            f"<td>{esc(t.describe())}</td>"
            f"<td><code>{esc(export_command(r, t))}</code></td></tr>"
        )
    head = (
        '<tr><th class="num">trial</th><th>baseline</th>'
        f'<th class="num">{esc(view.metric)}</th><th class="num">\u0394 vs fp32</th>'
        '<th class="num">before recovery</th>'
        '<th class="num">latency ms</th><th class="num">in-window median ms</th>'
        '<th class="num">in-window p90 ms</th><th class="num">in-window p99 ms</th>'
        '<th class="num">CV</th><th>latency</th><th class="num">size KiB</th>'
        '<th class="num">peak memory MiB</th><th>configuration (as onnxruntime runs it)</th>'
        "<th>export</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def failures_table(result: ParetoSet) -> str:
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    tracebacks: dict[tuple[str, str], str] = {}  # the first trial's full traceback, per group
    for t in result.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        record = TrialRecord.from_trial(t)
        stage = record.fail_stage or "worker"
        reason = record.fail_reason or "no reason recorded: the worker stopped (killed or interrupted)"
        key = (stage, first_line(reason, 300))
        groups[key].append(t.number)
        if record.traceback and key not in tracebacks:
            tracebacks[key] = _display_path(result.run_dir / record.traceback)
    if not groups:
        return '<p class="note">No trial failed.</p>'
    rows = "".join(
        f'<tr><td>{esc(stage)}</td><td class="num">{len(nums)}</td><td>{esc(reason)}</td>'
        f"<td>{esc(', '.join(map(str, nums[:30])) + (' ...' if len(nums) > 30 else ''))}</td>"
        f"<td><code>{esc(tracebacks.get((stage, reason), ''))}</code></td></tr>"
        for (stage, reason), nums in sorted(groups.items(), key=lambda kv: -len(kv[1]))
    )
    return (
        '<table><tr><th>stage</th><th class="num">count</th><th>reason</th><th>trials</th>'
        f"<th>full traceback (first trial)</th></tr>{rows}</table>"
    )
