"""The text a search prints: the verdict, the table of candidates and the measurement notes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autotune._memory import format_bytes
from autotune.measure import HOST_BUSY_SHARE
from autotune.report._floor import final_line, floor_gap

if TYPE_CHECKING:
    from autotune.result import ParetoSet, TrialResult


def _p90(t: TrialResult) -> float:
    """p90 on the same scale as the latency column: a paired latency is reference x ratio, so the
    candidate's own window p90 is scaled by the same factor as its median."""
    m = t.measurement
    return m.p90_ms * t.latency_ms / m.median_ms if m.median_ms > 0 else m.p90_ms


def table(result: ParetoSet) -> str:
    """The Pareto set (or the closest candidates) as a fixed-width table; ``*`` marks the best."""
    metric = result.meta.metric
    rows = result.pareto if result.pareto else result.closest(5)
    ref = result.reference_accuracy
    header = (
        f"{'trial':>5}  {metric:>9}  {'Δ vs fp32':>9}  {'latency ms':>10}  {'p90 ms':>8}  "
        f"{'CV':>5}  {'size KiB':>9}  config"
    )
    lines = [header, "-" * len(header)]
    for t in rows:
        delta = f"{t.accuracy - ref:+.2f}" if ref is not None else "n/a"
        flag = "" if t.measurement.status == "ok" else f" [{t.measurement.status}]"
        tag = f" ({t.baseline})" if t.baseline else ""
        mark = "*" if result.best and t.number == result.best.number else " "
        lines.append(
            f"{t.number:>4}{mark}  {t.accuracy:>9.2f}  {delta:>9}  {t.latency_ms:>10.3f}  "
            f"{_p90(t):>8.3f}  {t.measurement.cv:>5.1%}  {t.size_bytes / 1024:>9.1f}  "
            f"{t.describe()}{tag}{flag}"
        )
    return "\n".join(lines)


def _verdict(result: ParetoSet) -> list[str]:
    """The lines above the table: limits, what stopped the run, and what the table shows."""
    budget, floor, lines = result.meta.budget, result.meta.floor, []
    if floor is not None:
        lines.append(f"accuracy floor: {floor:.2f} (the unmodified model minus {result.meta.max_drop})")
    if result.meta.infeasible:
        lines.append(f"infeasible: {result.meta.infeasible}")
    if result.meta.stopped == "infeasible":
        lines.append(
            "stopped after the feasibility probe (everything is saved; --keep-going searches anyway)"
        )
    elif result.meta.stopped == "timeout":
        lines.append("stopped by --timeout (everything is saved; run the same command to continue)")
    final = final_line(result)  # None for a run that predates final recovery's record
    recovered = [
        t
        for t in result.trials
        if t.recovery
        and t.recovery.get("accuracy_before") is not None
        # final recovery has its own line (a study stored before it counts them here, as it did)
        and (final is None or not str(t.baseline).startswith("final-kd"))
    ]
    if recovered:
        gain = sum(t.accuracy - t.recovery["accuracy_before"] for t in recovered) / len(recovered)  # type: ignore[index]
        ran = sorted({r for t in recovered for r in t.recovery["ran"]})  # type: ignore[index]
        lines.append(f"recovery ({'+'.join(ran)}) in {len(recovered)} trials: {gain:+.2f} points on average")
    if final is not None:
        lines.append(final)
    if result.pareto:
        lines.append(f"Pareto set under the budget ({len(result.pareto)} candidates, * = best):")
    elif (gap := floor_gap(result)) is not None:
        lines.append(gap)
        lines.append("The most accurate under the budget, and the fastest above the floor:")
    else:
        lines.append(
            f"NO candidate met the budget of {budget}. The fastest candidates found "
            "(everything is saved; try a larger budget or a wider search space):"
        )
    return lines


def predictor_line(result: ParetoSet) -> str | None:
    """The latency predictor: what it skipped, and its error on candidates measured anyway."""
    stats = result.meta.search.get("predictor")
    if not stats:
        return None
    if not stats.get("enabled"):
        return "latency predictor: off (--no-predictor): every candidate was measured"
    skipped = len(result.skipped)
    error = (
        f"its error on {stats['checked']} candidates measured anyway: MAPE {stats['mape']:.1%}, "
        f"{stats['within_10pct']:.0%} within +-10%"
        if stats.get("checked")
        else f"not yet checked on a measured candidate (trained after {stats.get('min_train', 20)})"
    )
    return (
        f"latency predictor: {skipped} candidate(s) skipped, predicted beyond the budget "
        f"(x{stats['budget_ratio']:.3f} of the reference) by more than the safe margin "
        f"(now {stats['margin']:.0%}) - predicted, never measured, never in the Pareto set; {error}"
    )


def memory_line(result: ParetoSet) -> str | None:
    """The memory budget, the largest peak of a trial, and the candidates that needed more."""
    budget = result.meta.search.get("max_memory")
    peaks = [(t.peak_memory_bytes, t.number) for t in result.trials if t.peak_memory_bytes]
    over = [f.number for f in result.failures if f.stage == "memory"]
    if not budget and not peaks:
        return None
    parts = []
    if budget:
        enforced = "" if budget.get("enforced") else " (recorded, not enforced on this platform)"
        parts.append(f"memory budget {budget['label']}{enforced}")
    if peaks:
        peak, number = max(peaks)
        parts.append(f"largest trial peak {format_bytes(peak)} (trial {number})")
    if over:
        parts.append(f"{len(over)} candidate(s) needed more and failed: trials {over}")
    return "; ".join(parts)


def precision_line(result: ParetoSet) -> str | None:
    """Trials in which onnxruntime runs a layer in another precision than the candidate chose."""
    changed = {t.number: t.precision_changes for t in result.trials if t.precision_changes}
    if not changed:
        return None
    kinds = sorted({f"{c}->{r}" for diff in changed.values() for c, r in diff.values()})
    return (
        f"precision as run: onnxruntime's optimiser runs some layers in another precision than chosen "
        f"({', '.join(kinds)}) in trials {sorted(changed)}; the configurations above show what runs "
        "(the export JSON has both)"
    )


def summary(result: ParetoSet) -> str:
    """What ``autotune`` prints at the end of a search."""
    n_fail = len(result.failures)
    lines = []
    budget = result.meta.budget
    device = result.meta.device
    lines.append(
        f"study {result.study.study_name}: {len(result.trials)} complete, {n_fail} failed; "
        f"budget {budget} on {device}"
    )
    if n_fail:
        lines.append(
            "failures: "
            + ", ".join(f"{k} x{v}" for k, v in result.failure_reasons().items())
            + (f"; full tracebacks in {result.tracebacks_dir}" if result.tracebacks_dir else "")
        )
    lines.extend(_verdict(result))
    lines.append(table(result))
    for line in (precision_line(result), predictor_line(result), memory_line(result)):
        if line is not None:
            lines.append(line)
    stats = result.meta.measurer
    if stats:
        lines.append("measurements this run: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
        if stats.get("cache_hits") and not stats.get("measured"):
            lines.append("every latency this run came from the measurement cache (identical artifacts)")
    cached = [t.number for t in result.trials if t.measurement.cached]
    if cached:
        lines.append(f"latency reused from the measurement cache in {len(cached)} trial(s): {cached}")
    unstable = [t.number for t in result.trials if t.measurement.status == "unstable"]
    if unstable:
        lines.append(
            f"unstable latency (IQR/median > 10% or CPU contention, after retries) in trials {unstable}"
        )
    drifted = [
        f"{t.number} (x{t.measurement.drift_ratio:.2f})"
        for t in result.trials
        if t.measurement.drift_flag and t.measurement.drift_ratio is not None
    ]
    if drifted:
        lines.append(
            "device drift (canary model slower or faster than at the start) in trials "
            f"{', '.join(drifted)}: their latency is suspect; re-run with --remeasure on a quiet machine"
        )
    busy = [t.number for t in result.trials if t.measurement.host_busy]
    if busy:
        lines.append(
            f"host busy (other processes took >{HOST_BUSY_SHARE:.0%} of the CPUs while measuring) in trials "
            f"{busy}: paired ratios discount the contention, their absolute ms are less certain"
        )
    if result.confirmed:
        lines.append(
            "confirmed with a longer interleaved protocol: "
            + ", ".join(
                f"{n} {c['latency_ms']:.3f} ms (x{c['ratio']:.3f} [{c['ratio_ci'][0]:.3f}, "
                f"{c['ratio_ci'][1]:.3f}])" + (" borderline" if c.get("borderline") else "")
                for n, c in sorted(result.confirmed.items())
            )
        )
    if result.borderline:
        lines.append(
            f"borderline (the confirmed interval straddles the budget) in trials {result.borderline}"
        )
    return "\n".join(lines)
