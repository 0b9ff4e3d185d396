"""Study: how a search chooses and records trials.

The search options (:class:`SearchConfig`), samplers, the latency predictor, sensitivity, the
guide (reference, feasibility probe, baselines, final recovery) and the records a run stores
in the Optuna study (:class:`RunMeta`, :class:`TrialRecord`).
"""

from autotune.study._config import SearchConfig
from autotune.study._guide import (
    Reference,
    baseline_latencies,
    baselines_within,
    enqueue_final,
    infeasible_message,
    measure_reference,
    sensitivity_for_report,
    sensitivity_guidance,
)
from autotune.study._records import DB_NAME, FAILURES_DIR, META_KEY, RunMeta, TrialRecord
from autotune.study._samplers import SAMPLERS, make_sampler
from autotune.study._sensitivity import FILE_NAME, Table, candidate_probe, measure_sensitivity
from autotune.study._trials import (
    PREDICTED_KEY,
    PREDICTION_KEY,
    StudyPredictor,
    counted,
    enqueue_baselines,
    skipped,
)

__all__ = [
    "DB_NAME",
    "FAILURES_DIR",
    "FILE_NAME",
    "META_KEY",
    "PREDICTED_KEY",
    "PREDICTION_KEY",
    "SAMPLERS",
    "Reference",
    "RunMeta",
    "SearchConfig",
    "StudyPredictor",
    "Table",
    "TrialRecord",
    "baseline_latencies",
    "baselines_within",
    "candidate_probe",
    "counted",
    "enqueue_baselines",
    "enqueue_final",
    "infeasible_message",
    "make_sampler",
    "measure_reference",
    "measure_sensitivity",
    "sensitivity_for_report",
    "sensitivity_guidance",
    "skipped",
]
