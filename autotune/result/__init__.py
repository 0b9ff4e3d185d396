"""Result: a finished (or running) study read back as typed records.

:class:`ParetoSet` loads a study from its storage and answers what to ship: the Pareto set
under the budget, ``best``, exports and the report.
"""

from autotune.result._pareto import FailedTrial, ParetoSet, SkippedTrial, TrialResult, load_study, storage_url

__all__ = ["FailedTrial", "ParetoSet", "SkippedTrial", "TrialResult", "load_study", "storage_url"]
