"""The optuna backend, as a package split by job (see ``backend`` for what it does and how)."""

from hpsearch.backends.optuna.backend import OptunaBackend, OptunaSettings

__all__ = ["OptunaBackend", "OptunaSettings"]
