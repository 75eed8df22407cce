"""``rerun=PATH``: train the hyperparameters of a ``best_hyperparameters.yaml`` once, with the search's own config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hpsearch.errors import ConfigError
from hpsearch.space import SearchSpace


def read_best_yaml(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text())
        return dict(content["hyperparameters"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise ConfigError(f"rerun: cannot read hyperparameters from {str(path)!r} ({error}); fix the path") from None


def rerun_space(space: SearchSpace, path: Path) -> SearchSpace:
    """``space`` with every parameter fixed to the values saved in ``path``."""
    best = read_best_yaml(path)
    missing = [name for name in space.names if name not in best]
    if missing:
        raise ConfigError(f"rerun: {path} has no value for {missing}; re-run with the search's own space")
    return space.fixed(best)
