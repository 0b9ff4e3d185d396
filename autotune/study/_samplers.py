"""Samplers: the ``--sampler`` registry, name -> a factory ``seed -> optuna sampler``.

All are Optuna's own; the latency budget reaches them as the trial constraint
(``trial.set_constraint``), which each of them reads. ``auto`` is the one
``benchmarks/search_quality.py`` found best on the enumerable space (see the README).
The configuration check, the CLI's choices and help, and :func:`make_sampler` read
:data:`SAMPLERS`; a sampler registered there is accepted by all of them.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from autotune._registry import Registry

SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]

#: name -> (factory, one-line help); ``--sampler`` and ``SearchConfig.sampler`` choose from it
SAMPLERS: Registry[SamplerFactory] = Registry("--sampler")
AUTO = "tpe"  # chosen by benchmarks/search_quality.py (README: "How good is the search")
STARTUP_TRIALS = 10


@SAMPLERS.register("auto", f"the best in benchmarks/search_quality.py, now {AUTO}")
def _auto(seed: int) -> optuna.samplers.BaseSampler:
    return SAMPLERS.get(AUTO)(seed)


@SAMPLERS.register("tpe", f"Optuna's multivariate TPE after {STARTUP_TRIALS} random trials")
def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=STARTUP_TRIALS)


@SAMPLERS.register("nsga2", "Optuna's NSGA-II, population 16")
def _nsga2(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=16)


@SAMPLERS.register("gp", f"Optuna's Gaussian-process sampler after {STARTUP_TRIALS} random trials")
def _gp(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=STARTUP_TRIALS)


@SAMPLERS.register("random", "Optuna's random sampler")
def _random(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The registered sampler ``name``; an unknown name is a one-line :class:`UserError`."""
    return SAMPLERS.get(name)(seed)
