"""The backend registry. Modules are imported on first use, so optional packages stay optional."""

from __future__ import annotations

import importlib

from hpsearch.backends.base import Backend
from hpsearch.errors import ConfigError

BACKENDS: dict[str, str] = {
    "optuna": "hpsearch.backends.optuna:OptunaBackend",
    "ray": "hpsearch.backends.ray:RayBackend",
    "sigopt": "hpsearch.backends.sigopt:SigOptBackend",
    "wandb": "hpsearch.backends.wandb:WandbBackend",
}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ConfigError(f"backend: unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    module_name, _, class_name = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)()
