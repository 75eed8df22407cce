"""optuna's samplers and pruners by the names ``backend.sampler`` and ``backend.pruner`` take."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hpsearch.space import SearchSpace

if TYPE_CHECKING:
    import optuna

SAMPLERS = ("tpe", "random", "cmaes", "grid", "nsga2")
PRUNERS = ("none", "median", "successive_halving", "hyperband")


def make_sampler(name: str, options: Mapping[str, Any], space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    factories: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, **options),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed, **options),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, **options),
        "grid": lambda: optuna.samplers.GridSampler(space.grid("backend.sampler=grid"), seed=seed, **options),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, **options),
    }
    return factories[name]()


def sampler_options(sampler: str, options: Mapping[str, Any], n_trials: int) -> dict[str, Any]:
    """``backend.sampler_kwargs``, and for TPE without ``n_startup_trials``: half of ``n_trials`` random
    start-up trials, at most optuna's default (10), so that a short search is TPE's too and not all random."""
    import inspect

    import optuna

    chosen = dict(options)
    if sampler == "tpe" and "n_startup_trials" not in chosen:
        default = inspect.signature(optuna.samplers.TPESampler).parameters["n_startup_trials"].default
        chosen["n_startup_trials"] = min(int(default), max(1, n_trials // 2))
    return chosen


def startup_trials(sampler: str, options: Mapping[str, Any]) -> int:
    """How many first trials TPE draws at random before it models anything (0 for the other samplers)."""
    return int(options.get("n_startup_trials", 0)) if sampler == "tpe" else 0


def make_pruner(name: str, options: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    import optuna

    factories: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
        "none": optuna.pruners.NopPruner,
        "median": lambda: optuna.pruners.MedianPruner(**options),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(**options),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(**options),
    }
    return factories[name]()
