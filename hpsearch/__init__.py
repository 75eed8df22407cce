"""hpsearch: hyperparameter search for Hugging Face transformers, one backend-neutral search space for
optuna, Ray Tune, W&B sweeps and SigOpt.

``python -m hpsearch [overrides]`` runs a search from the Hydra configs; ``run(cfg)`` is the same search
from a composed config, and ``search(trainer, space=..., ...)`` from a Trainer built in Python.
"""

from hpsearch.api import SearchOutcome, search
from hpsearch.app import run
from hpsearch.errors import (
    BackendUnavailableError,
    CollectiveTimeout,
    ConfigError,
    DataError,
    HPSearchError,
    MissingPackageError,
    ObjectiveError,
    SearchAborted,
    SearchSpaceError,
    TrialFailed,
)
from hpsearch.objective import Objectives
from hpsearch.space import SearchSpace
from hpsearch.task import Task

__version__ = "0.3.0"

__all__ = [
    "BackendUnavailableError",
    "CollectiveTimeout",
    "ConfigError",
    "DataError",
    "HPSearchError",
    "MissingPackageError",
    "ObjectiveError",
    "Objectives",
    "SearchAborted",
    "SearchOutcome",
    "SearchSpace",
    "SearchSpaceError",
    "Task",
    "TrialFailed",
    "__version__",
    "run",
    "search",
]
