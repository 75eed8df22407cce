"""The tracker registry: ``tracking=<name>`` picks one of these, as ``backend=<name>`` picks a backend."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpsearch.errors import ConfigError
from hpsearch.objective import Objectives
from hpsearch.tracking.base import Tracker
from hpsearch.tracking.wandb import WandbTracker

NONE = "none"
TRACKERS: dict[str, type[Tracker]] = {cls.name: cls for cls in (WandbTracker,)}


def get_tracker(
    settings: Mapping[str, Any],
    study_name: str,
    backend: str,
    objectives: Objectives,
    run_dir: Path,
    logged_by_backend: str | None,
) -> Tracker | None:
    """The configured tracker, or None for ``tracking=none`` or when the backend logs to that tracker itself."""
    name = str(settings.get("name", NONE))
    if name in (NONE, logged_by_backend):
        return None
    if name not in TRACKERS:
        raise ConfigError(f"tracking: unknown tracking {name!r}; choose one of {[NONE, *sorted(TRACKERS)]}")
    return TRACKERS[name](settings, study_name, backend, objectives, run_dir)
