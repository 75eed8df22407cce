"""``hpsearch.search(trainer, ...)``: the search from a script or notebook, on a Trainer already built.

Its keywords are the CLI's config keys. They compose the same config as ``python -m hpsearch``, and the search
runs through the same ``run``: one trial loop, resume, failures, and the results files in ``run_dir``. What
the CLI builds from ``model`` and ``data`` comes from the trainer instead: its class (any ``Trainer``
subclass), its arguments, datasets, collator, ``compute_metrics`` and tokenizer, and its ``model_init`` or, if
it has none, its model, whose weights every trial starts from.

.. code-block:: python

    result = hpsearch.search(trainer, space={"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3,
                             "log": True}}, n_trials=20, objective="eval_loss")
    result.best.params, result.trials  # trials.csv as a DataFrame; result.pareto for several objectives
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from hpsearch.build import TrainerParts
from hpsearch.config import config_dir, plain
from hpsearch.errors import ConfigError, qualified_name
from hpsearch.settings import unknown_key
from hpsearch.space import SearchSpace
from hpsearch.trials import TrialRecord

# The CLI's keys a keyword may set directly; any other keyword is a setting of the backend (backend.KEY).
CONFIG_KEYWORDS = (
    "n_trials",
    "seed",
    "study_name",
    "storage",
    "storage_dir",
    "max_failures",
    "save_best_model",
    "constraints",  # {name: "a * b <= 256"}
    "warm_start",  # {"points": [...], "from": {...}}
)


@dataclass(frozen=True)
class SearchOutcome:
    """What ``search`` returns: the best trial (None for several objectives), the Pareto front, every trial."""

    best: TrialRecord | None
    pareto: list[TrialRecord]
    trials: Any  # pandas.DataFrame: trials.csv
    run_dir: Path


def search(
    trainer: Any,
    *,
    space: Mapping[str, Any] | SearchSpace,
    backend: str = "optuna",
    objective: str | Sequence[Mapping[str, str]] = "eval_loss",
    peft: Mapping[str, Any] | Any = None,
    workers: int | str | None = None,
    run_dir: str | Path | None = None,
    **keywords: Any,
) -> SearchOutcome:
    """Search ``space`` by training ``trainer``'s task once per trial (module docstring).

    ``objective``: a metric name (minimised if it is a loss, else maximised) or a list of
    ``{metric, direction}`` for a Pareto search. ``peft``: ``LoraConfig`` keys, or a ``LoraConfig``.
    ``workers``: worker processes, or ``"auto"`` to let hpsearch measure and pick them.
    ``n_trials``, ``seed``, ``study_name``, ``storage``, ``storage_dir``, ``max_failures``, ``save_best_model``,
    ``constraints`` and ``warm_start`` are the CLI's keys; any other keyword must be a setting of ``backend`` (e.g. ``sampler="random"``).
    """
    import pandas as pd

    from hpsearch.app import run
    from hpsearch.results import TRIALS_CSV

    parts = TrainerParts.of(trainer)  # not a Trainer: one line, before anything else
    cfg = compose_search_config(parts, space, backend, objective, peft, workers, run_dir, keywords)
    result = run(cfg, parts)
    assert result is not None  # this process owns the search
    folder = Path(cfg.run_dir)
    return SearchOutcome(result.best, result.pareto, pd.read_csv(folder / TRIALS_CSV), folder)


def compose_search_config(
    parts: TrainerParts,
    space: Mapping[str, Any] | SearchSpace,
    backend: str,
    objective: str | Sequence[Mapping[str, str]],
    peft: Mapping[str, Any] | Any,
    workers: int | str | None,
    run_dir: str | Path | None,
    keywords: Mapping[str, Any],
) -> DictConfig:
    """The config ``python -m hpsearch`` would compose for the same search."""
    from hydra import compose, initialize_config_dir

    from hpsearch.backends import get_backend

    get_backend(backend)  # an unknown backend: one line naming the known ones
    overrides = [f"backend={backend}", *(["peft=lora"] if peft is not None else [])]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        for key, value in keywords.items():
            if key == "warm_start":
                cfg.warm_start = {**plain(cfg.warm_start), **value}
            elif key in CONFIG_KEYWORDS:
                cfg[key] = value
            elif key in cfg.backend:
                cfg.backend[key] = value
            else:
                known = [*CONFIG_KEYWORDS, "space", "objective", "peft", "workers", "run_dir", *map(str, cfg.backend)]
                raise ConfigError(f"hpsearch.search: {key}: not a keyword; {unknown_key(key, known)}")
        cfg.space = _space_config(space)
        cfg.objective = {"metrics": [], "select": "last", "objectives": _objectives(objective)}
        if peft is not None:
            cfg.peft = {**plain(cfg.peft), **_peft_settings(peft)}
        cfg.workers = workers
        cfg.study_name = keywords.get("study_name", f"{parts.trainer_class.__name__.lower()}-search")
        cfg.run_dir = str(run_dir or Path("outputs") / str(cfg.study_name) / time.strftime("%Y-%m-%d_%H-%M-%S"))
        cfg.trainer = {"_target_": qualified_name(parts.trainer_class)}
        cfg.training = _changed_arguments(parts.args)
        # What defines the study beside the space: the starting model and the data, as the trainer holds them.
        cfg.model = {"given": parts.model_text()}
        cfg.data = {"given": {split: _dataset_text(getattr(parts, f"{split}_dataset")) for split in ("train", "eval")}}
    return cfg


def _changed_arguments(args: Any) -> dict[str, Any]:
    """The trainer's arguments that differ from their class's defaults, as ``training`` (checked and recorded as
    the CLI's are); the trainer keeps its own arguments object."""
    values = args.to_dict()
    changed = {}
    for field in dataclasses.fields(args):
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            continue
        if field.name in values and field.name not in ("output_dir", "logging_dir", "seed"):
            value = getattr(args, field.name)
            if getattr(value, "value", value) != getattr(default, "value", default):
                changed[field.name] = values[field.name]
    return changed


def _space_config(space: Mapping[str, Any] | SearchSpace) -> dict[str, Any]:
    if isinstance(space, SearchSpace):
        conditions = {
            name: {parent: list(values) for parent, values in when.items()} for name, when in space.conditions.items()
        }
        return {
            p.name: {**_param_config(p), **({"when": conditions[p.name]} if p.name in conditions else {})}
            for p in space
        }
    SearchSpace.from_config(space)  # a bad range is one line naming the parameter
    return {str(name): dict(spec) if isinstance(spec, Mapping) else spec for name, spec in space.items()}


def _param_config(param: Any) -> dict[str, Any]:
    kind = {"FloatParam": "float", "IntParam": "int", "CategoricalParam": "categorical", "FixedParam": "fixed"}
    fields = {field.name: getattr(param, field.name) for field in dataclasses.fields(param) if field.name != "name"}
    return {"type": kind[type(param).__name__], **{key: value for key, value in fields.items() if value is not None}}


def _objectives(objective: str | Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    if isinstance(objective, str):
        return [{"metric": objective, "direction": "minimize" if "loss" in objective else "maximize"}]
    return [dict(item) for item in objective]


def _peft_settings(peft: Mapping[str, Any] | Any) -> dict[str, Any]:
    """``LoraConfig`` keys from a mapping, or the fields a ``LoraConfig`` sets away from their defaults."""
    if isinstance(peft, Mapping):
        return dict(peft)
    if not dataclasses.is_dataclass(peft):
        raise ConfigError(
            f"hpsearch.search: peft: a mapping of LoraConfig keys or a LoraConfig (got {type(peft).__name__})"
        )
    defaults = type(peft)()  # type: ignore[misc] # a LoraConfig: every field has a default
    return {
        field.name: _plain(getattr(peft, field.name))
        for field in dataclasses.fields(peft)
        if field.name
        in {"r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "use_dora", "bias", "task_type"}
        and getattr(peft, field.name) != getattr(defaults, field.name)
    }


def _plain(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value)
    return getattr(value, "value", value)  # peft's TaskType enum


def _dataset_text(dataset: Any) -> str | None:
    """A dataset's identity: its fingerprint (``datasets``), else its type and length."""
    if dataset is None:
        return None
    fingerprint = getattr(dataset, "_fingerprint", None)
    return str(fingerprint) if fingerprint else f"{type(dataset).__name__} of {len(dataset)}"
