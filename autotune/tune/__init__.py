"""The search loop: a task and a search configuration -> a :class:`~autotune.result.ParetoSet`.

It wires the stages: space -> builder -> measurer -> evaluation -> Optuna trial, with the
reference, the feasibility probe, the baselines, the confirmation round and progress output.
"""

from autotune.tune._loop import run_search

__all__ = ["run_search"]
