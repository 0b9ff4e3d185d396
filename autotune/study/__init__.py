"""Study: how a search chooses and records trials.

The search options (:class:`SearchConfig`), samplers, the latency predictor, sensitivity, the
guide (reference, feasibility probe, baselines), final recovery and the records a run stores
in the Optuna study (:class:`RunMeta`, :class:`TrialRecord`, :class:`Baseline`, the confirmation
round): the one module that reads and writes the study's attributes. For a study shared by
workers: its database with heartbeats and reconnects (:func:`open_storage`), its artifact store
(:class:`Store`), the settings a worker joins with (:class:`StudySettings`) and the slots that
keep the count exact (:func:`surplus`, :func:`wait_for_slot`).
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
    SETTINGS_KEY,
    SURPLUS_KEY,
    Baseline,
    Reference,
    RunMeta,
    TrialRecord,
    load_confirmed,
    save_confirmed,
)
from autotune.study._samplers import SAMPLERS, SamplerFactory, make_sampler
from autotune.study._sensitivity import FILE_NAME, Table, candidate_probe, measure_sensitivity
from autotune.study._settings import StudySettings, refuse
from autotune.study._slots import surplus, wait_for_slot
from autotune.study._storage import (
    HEARTBEAT_S,
    RECONNECT_S,
    ResilientStorage,
    StorageUnavailable,
    lost,
    open_storage,
)
from autotune.study._store import (
    EXPORT_SUFFIX,
    MEASUREMENTS_PREFIX,
    TRACEBACK_SUFFIX,
    Store,
    normalize_url,
    onnx_id,
)
from autotune.study._trials import (
    StudyPredictor,
    counted,
    enqueue_baselines,
    skipped,
)

__all__ = [
    "CONFIRMED_KEY",
    "DB_NAME",
    "EXPORT_SUFFIX",
    "FAILURES_DIR",
    "FILE_NAME",
    "HEARTBEAT_S",
    "MEASUREMENTS_PREFIX",
    "META_KEY",
    "PREDICTED_KEY",
    "PREDICTION_KEY",
    "RECONNECT_S",
    "SAMPLERS",
    "SETTINGS_KEY",
    "SURPLUS_KEY",
    "TRACEBACK_SUFFIX",
    "Baseline",
    "FinalRecovery",
    "Reference",
    "ResilientStorage",
    "RunMeta",
    "SamplerFactory",
    "SearchConfig",
    "StorageUnavailable",
    "Store",
    "StudyPredictor",
    "StudySettings",
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
    "lost",
    "make_sampler",
    "measure_reference",
    "measure_sensitivity",
    "normalize_url",
    "onnx_id",
    "open_storage",
    "recovery_of_final",
    "refuse",
    "save_confirmed",
    "sensitivity_for_report",
    "sensitivity_guidance",
    "skipped",
    "surplus",
    "wait_for_slot",
]
