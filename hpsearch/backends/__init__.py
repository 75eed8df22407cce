"""The backend registry, built from the backend classes. Each module imports its optional package only
when used, so importing them all here is cheap and keeps optional packages optional."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from hpsearch.backends.base import Backend
from hpsearch.backends.optuna import OptunaBackend
from hpsearch.backends.ray import RayBackend
from hpsearch.backends.sigopt import SigOptBackend
from hpsearch.backends.wandb import WandbBackend
from hpsearch.errors import ConfigError

BACKENDS: dict[str, type[Backend[Any]]] = {
    cls.name: cls
    for cls in (
        OptunaBackend,
        RayBackend,
        SigOptBackend,
        WandbBackend,
    )
}
log = logging.getLogger(__name__)


def get_backend(name: str) -> Backend[Any]:
    if name not in BACKENDS:
        raise ConfigError(f"backend: unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name]()


def backend_settings(backend: Backend[Any], config: Mapping[str, Any]) -> Any:
    """``backend``'s typed settings from the ``backend`` config group. A key of another backend's settings (an
    experiment that sets ``backend.sampler`` for optuna, run with ``backend=sigopt``) is left out, and said once;
    a key no backend knows is a config error."""
    own = {field.name for field in dataclasses.fields(backend.settings_type)}
    others = {field.name for cls in BACKENDS.values() for field in dataclasses.fields(cls.settings_type)} - own
    ignored = tuple(sorted(set(config) & others))
    if ignored:
        log.info(
            "backend=%s has no setting %s (a setting of another backend): left out", backend.name, ", ".join(ignored)
        )
    return backend.settings(config, ignore=ignored)
