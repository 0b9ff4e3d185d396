"""Study: how a search chooses and records trials.

The search options (:class:`SearchConfig`), samplers, the latency predictor, sensitivity, the
guide (reference, feasibility probe, baselines), final recovery and the records a run stores
in the Optuna study (:class:`RunMeta`, :class:`TrialRecord`, :class:`Baseline`, the confirmation
round): the one module that reads and writes the study's attributes.
"""

from autotune.study._config import SearchConfig
from autotune.study._final import (
    FinalRecovery,
    enqueue_final,
    final_candidates,
    final_recovery,
    recovery_of_final,
)
from autotune.study._guide import (
    baseline_latencies,
    baselines_within,
    infeasible_message,
    measure_reference,
    sensitivity_for_report,
    sensitivity_guidance,
)
from autotune.study._records import (
    CONFIRMED_KEY,
    DB_NAME,
    FAILURES_DIR,
    META_KEY,
    PREDICTED_KEY,
    PREDICTION_KEY,
    Baseline,
    Reference,
    RunMeta,
    TrialRecord,
    load_confirmed,
    save_confirmed,
)
from autotune.study._samplers import SAMPLERS, SamplerFactory, make_sampler
from autotune.study._sensitivity import FILE_NAME, Table, candidate_probe, measure_sensitivity
from autotune.study._trials import (
    StudyPredictor,
    counted,
    enqueue_baselines,
    skipped,
)

__all__ = [
    "CONFIRMED_KEY",
    "DB_NAME",
    "FAILURES_DIR",
    "FILE_NAME",
    "META_KEY",
    "PREDICTED_KEY",
    "PREDICTION_KEY",
    "SAMPLERS",
    "Baseline",
    "FinalRecovery",
    "Reference",
    "RunMeta",
    "SamplerFactory",
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
    "final_candidates",
    "final_recovery",
    "infeasible_message",
    "load_confirmed",
    "make_sampler",
    "measure_reference",
    "measure_sensitivity",
    "recovery_of_final",
    "save_confirmed",
    "sensitivity_for_report",
    "sensitivity_guidance",
    "skipped",
]
