"""Sampler choice: ``--sampler {auto,tpe,nsga2,gp,random}`` -> an Optuna sampler.

All are Optuna's own; the latency budget reaches them as the trial constraint
(``trial.set_constraint``), which each of them reads. ``auto`` is the one
``benchmarks/search_quality.py`` found best on the enumerable space (see the README).
"""

from __future__ import annotations

import optuna

from autotune.errors import UserError

SAMPLERS = ("auto", "tpe", "nsga2", "gp", "random")
AUTO = "tpe"  # chosen by benchmarks/search_quality.py (README: "How good is the search")
STARTUP_TRIALS = 10


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name not in SAMPLERS:
        raise UserError(f"--sampler {name!r}: choose one of {', '.join(SAMPLERS)}")
    if name == "auto":
        name = AUTO
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=STARTUP_TRIALS)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=16)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
    return optuna.samplers.RandomSampler(seed=seed)
