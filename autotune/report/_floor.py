"""What the summary and the report say about the accuracy floor and final recovery: when nothing
meets both the budget and the floor (the most accurate under the budget, the fastest above the
floor, what could close the gap), and what final recovery did (docs/accuracy-floor.md).

The accuracy floor (``--max-drop``) is the lowest acceptable score; the baselines named
``floor`` and ``floor-fp32`` are something else, the space's most aggressive configurations,
and are named that way here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autotune.result import ParetoSet, TrialResult

#: the space's most aggressive configurations (space/_space.py), as the floor's messages name them
_AGGRESSIVE = {
    "floor": "the most aggressive configuration",
    "floor-fp32": "the most aggressive configuration in fp32",
}


def _x(result: ParetoSet, t: TrialResult) -> str:
    """A candidate's latency as a multiple of the unmodified model's: ``0.31x FP32``."""
    ref = (result.meta.reference or {}).get("latency_ms")
    ratio = t.ratio if t.ratio is not None else (t.latency_ms / ref if ref else None)
    return f"{ratio:.2f}x FP32" if ratio is not None else f"{t.latency_ms:.3f} ms"


def _name(t: TrialResult) -> str:
    label = _AGGRESSIVE.get(t.baseline or "", t.baseline)
    return f"trial {t.number} ({label or t.describe()})"


def final_line(result: ParetoSet) -> str | None:
    """What final recovery did, in one line (None when the run predates it)."""
    final = result.meta.search.get("final")
    if not final:
        return None
    status, share = final["status"], f"{final['share']:.0%}"
    if status == "off":
        return "final recovery: off (--recover-final-steps 0 or --recover-final-share 0)"
    if status == "not needed":
        return (
            "final recovery: not needed (every pruned candidate under the budget is within the floor "
            "or as accurate as the unmodified model)"
        )
    if status == "no pruned candidate":
        return "final recovery: no pruned candidate under the budget to distil"
    if status == "no data":
        return "final recovery: no unlabeled inputs to distil on (Task.recovery_data, calibration)"
    if status == "stopped":
        return f"final recovery: skipped, the search stopped early ({result.meta.stopped})"
    if status == "already done":
        return "final recovery: its finalists were distilled by an earlier run of this study"
    head = (
        f"final recovery: {final['allowance_s']:.0f} s allowed ({share} of the search's wall time), "
        f"{final['wall_s']:.0f} s taken"
    )
    if status == "no time":
        return f"{head}: not enough for one finalist (--recover-final-share)"
    parts = []
    by_number = {t.number: t for t in result.trials}
    for n in final["trials"]:
        t = by_number.get(n)
        if t is None or not t.recovery:
            continue
        steps = t.recovery.get("kd_steps")
        origin = by_number.get(int(t.baseline.split("#")[1])) if t.baseline and "#" in t.baseline else None
        parts.append(
            f"trial {n} ({steps if steps is not None else '?'}/{final['steps']} steps): "
            + (f"trial {origin.number}'s {origin.accuracy:.2f} -> " if origin is not None else "")
            + f"{t.accuracy:.2f}"
        )
    left = f"; {final['left_out']} more finalist(s) had no time left" if final["left_out"] else ""
    return f"{head}, distilled {len(final['trials'])} finalist(s): " + ", ".join(parts) + left


def floor_gap(result: ParetoSet) -> str | None:
    """When candidates meet the budget but none meets the floor: the most accurate under the
    budget, the fastest above the floor, and what could close the gap (as the feasibility probe
    says for latency). None otherwise."""
    floor, meta = result.floor, result.meta
    under = result.most_accurate_under_budget()
    if floor is None or result.best is not None or under is None:
        return None
    ref, metric = result.reference_accuracy, meta.metric
    lines = [
        f"NO candidate meets both the budget of {meta.budget} and the accuracy floor of {floor:.2f} "
        f"({metric} of the unmodified model"
        + (f", {ref:.2f}," if ref is not None else "")
        + f" minus {meta.max_drop}): none is the one to ship (everything is saved).",
        f"The most accurate under the budget: {_name(under)}, {metric} {under.accuracy:.2f}"
        + (f" ({under.accuracy - ref:+.2f})" if ref is not None else "")
        + f" at {_x(result, under)}.",
    ]
    above = result.fastest_above_floor()
    if above is not None:
        over = result.limit.share(above.latency_ms, above.ratio)
        lines.append(
            f"The fastest above the floor: {_name(above)}, {metric} {above.accuracy:.2f} at "
            f"{_x(result, above)}, {over:.0%} over the budget."
        )
    lines.append("Could close the gap: " + "; ".join(_gap_remedies(result, above)) + ".")
    return "\n".join(lines)


def _gap_remedies(result: ParetoSet, above: TrialResult | None) -> list[str]:
    meta, out = result.meta, []
    final = meta.search.get("final") or {}
    status, steps, share = final.get("status"), final.get("steps", 0), final.get("share", 0.0)
    ran = {r for t in result.trials if t.recovery for r in t.recovery.get("ran", [])}
    cut = [
        t.number
        for t in result.trials
        if t.number in final.get("trials", []) and t.recovery and (t.recovery.get("kd_steps") or 0) < steps
    ]
    if status in (None, "off"):
        out.append("final distillation of the pruned finalists (--recover-final-steps 300)")
    elif status == "no data":
        out.append("unlabeled inputs to distil on (Task.recovery_data, or calibration batches)")
    elif status == "stopped":
        out.append("letting the search finish: final distillation runs at its end (a longer --timeout)")
    elif status in ("ran", "already done", "no time"):
        more = f"more distillation steps (--recover-final-steps {max(2 * steps, 300)})"
        if status == "no time" or final.get("left_out") or cut:
            why = (
                f"{final.get('left_out', 0)} finalist(s) had no time"
                if final.get("left_out") or status == "no time"
                else f"trial(s) {', '.join(map(str, cut))} stopped short of {steps} steps"
            )
            more += f" and more time for them (--recover-final-share {min(2 * share, 1):.0%}: {why})"
        out.append(more)
    if (meta.search.get("recovery") or {}).get("mode") != "kd":
        out.append("distillation in every trial (--recover kd --recover-steps 300): trials ranked after it")
    if "finetune" not in ran:
        out.append("a finetune(student, teacher) of your own, with labels (Task.finetune)")
    # the other side: what could make the candidates above the floor faster
    int8 = result.baselines.get("int8")
    if int8 is not None and int8.ratio is not None and int8.ratio > (meta.budget_fraction or 0.0):
        out.append(
            f"a device where int8 pays (int8 runs at {int8.ratio:.2f}x FP32 here; a CPU with VNNI/AMX, "
            "a GPU or TensorRT profile)"
        )
    if meta.space.get("threads") == [1]:
        out.append("more threads (--threads 2, or a profile listing several)")
    if above is not None and above.baseline != "fp32":
        out.append(f"or a looser limit: a budget of {_x(result, above)} ({_name(above)}), or --max-drop none")
    else:
        out.append("or --max-drop none")
    return out
