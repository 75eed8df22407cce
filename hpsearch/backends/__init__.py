"""The backend registry, built from the backend classes. Each module imports its optional package only
when used, so importing them all here is cheap and keeps optional packages optional."""

from __future__ import annotations

from hpsearch.backends.base import Backend
from hpsearch.backends.optuna import OptunaBackend
from hpsearch.backends.ray import RayBackend
from hpsearch.backends.sigopt import SigOptBackend
from hpsearch.backends.wandb import WandbBackend
from hpsearch.errors import ConfigError

BACKENDS: dict[str, type[Backend]] = {
    cls.name: cls
    for cls in (
        OptunaBackend,
        RayBackend,
        SigOptBackend,
        WandbBackend,
    )
}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ConfigError(f"backend: unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name]()
