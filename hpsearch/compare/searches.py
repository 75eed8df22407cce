"""A finished search as ``hpsearch compare`` sees it, read back from a run directory or an optuna study."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from hpsearch.errors import ConfigError
from hpsearch.objective import Direction, Objective, Objectives
from hpsearch.results import TRIALS_CSV, read_time
from hpsearch.space import CategoricalParam, SearchSpace
from hpsearch.trials import TrialRecord, TrialState, stored_trial


@dataclass
class Search:
    """One search as the comparison sees it, read back from a run directory or an optuna study."""

    label: str
    study: str  # its study name: the W&B group of its runs
    backend: str
    method: str
    directions: list[Direction]
    objective_names: list[str]
    trials: list[TrialRecord]
    distributions: dict[str, Any] = field(default_factory=dict)  # optuna distributions of the searched parameters
    overrides: list[str] = field(default_factory=list)  # the command line's overrides (a run directory's .hydra)

    @property
    def objectives(self) -> Objectives:
        return Objectives(
            items=tuple(Objective(n, d) for n, d in zip(self.objective_names, self.directions, strict=False))
        )

    def count(self, state: TrialState) -> int:
        return sum(trial.state is state for trial in self.trials)


def read_run_dir(path: Path) -> Search:
    """A run directory's ``trials.csv``, typed through the search space in its ``config.yaml``."""
    from hpsearch.backends import backend_settings, get_backend
    from hpsearch.backends.optuna.space import distribution

    if not path.is_dir():
        raise ConfigError(f"compare: {path} is not a directory; give run directories (outputs/<study>/<time>)")
    table, config_file = path / TRIALS_CSV, path / "config.yaml"
    if not table.is_file() or not config_file.is_file():
        raise ConfigError(
            f"compare: {path} holds no search results ({TRIALS_CSV} and config.yaml); is it a run directory?"
        )
    config = yaml.safe_load(config_file.read_text())
    space = SearchSpace.from_config(config["space"])
    objectives = Objectives.from_config(config["objective"])
    backend = get_backend(config["backend"]["name"])
    columns = ["objective"] if not objectives.is_multi else [f"objective.{name}" for name in objectives.names]
    trials = []
    with table.open() as handle:
        for row in csv.DictReader(handle):
            filled = {name: text for name, text in row.items() if text not in ("", None)}
            values = [float(row[c]) for c in columns] if all(c in filled for c in columns) else None
            trials.append(
                stored_trial(
                    number=int(row["number"]),
                    state=row["state"],
                    params=space.read({**_none_choices(space, row), **filled}) if values else {},
                    reported={name: float(text) for name, text in filled.items() if name.startswith("eval_")},
                    values=values,
                    duration_s=_number(row.get("duration_s")),
                    finished_at=read_time(row.get("finished_at")),
                )
            )
    return Search(
        label=_label(path),
        study=str(config["study_name"]),
        backend=backend.name,
        method=backend.method(backend_settings(backend, config["backend"])),
        directions=objectives.directions,
        objective_names=objectives.names,
        trials=trials,
        distributions=covering({param.name: distribution(param) for param in space.tunable}, trials),
        overrides=_overrides(path),
    )


def read_study(storage: str, study_name: str) -> Search:
    """An optuna study, whichever program wrote it (hpsearch names its objectives with ``set_metric_names``)."""
    import optuna

    from hpsearch.backends.optuna.source import SURPLUS
    from hpsearch.backends.optuna.study import METHOD_ATTR, open_journal, open_storage, trial_record

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if Path(storage).is_file() and Path(storage).read_bytes()[:16] == SQLITE_HEADER:
        opened = open_storage(f"sqlite:///{Path(storage).resolve()}")
    elif Path(storage).is_file():  # a journal file, hpsearch's default storage (<storage_dir>/<study>.log)
        opened = open_journal(storage)
    elif "://" in storage:
        opened = open_storage(storage)
    else:
        raise ConfigError(
            f"compare --study: {storage!r} is neither a storage URL nor a journal file; give e.g. .hpsearch/<study>.log"
        )
    try:
        study = optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        raise ConfigError(f"compare --study: no study {study_name!r} in {storage}") from None
    names = study.metric_names or (
        ["objective"] if len(study.directions) == 1 else [f"objective{i}" for i in range(len(study.directions))]
    )
    kept = [  # as hpsearch's own results: no queued retries, no surplus trials asked past the budget
        trial
        for trial in study.get_trials(deepcopy=False)
        if trial.state.name != "WAITING" and not trial.system_attrs.get(SURPLUS)
    ]
    trials = [trial_record(trial, dict(trial.params)) for trial in kept]
    distributions = covering({name: dist for trial in kept for name, dist in trial.distributions.items()}, trials)
    return Search(
        label=study_name,
        study=study_name,
        backend="optuna",
        method=str(study.user_attrs.get(METHOD_ATTR, type(study.sampler).__name__)),
        directions=[cast(Direction, direction.name.lower()) for direction in study.directions],
        objective_names=list(names),
        trials=trials,
        distributions=distributions,
    )


SQLITE_HEADER = b"SQLite format 3\x00"


def covering(distributions: dict[str, Any], trials: Sequence[TrialRecord]) -> dict[str, Any]:
    """``distributions`` widened to hold every trial's value: a study resumed with a narrower space still has
    its earlier trials outside the space it ends with."""
    import optuna.distributions as od

    widened: dict[str, Any] = {}
    for name, dist in distributions.items():
        values = [trial.params[name] for trial in trials if name in trial.params]
        if isinstance(dist, od.CategoricalDistribution):
            extra = [value for value in dict.fromkeys(values) if value not in dist.choices]
            widened[name] = od.CategoricalDistribution([*dist.choices, *extra]) if extra else dist
        elif values and (min(values) < dist.low or max(values) > dist.high):
            low, high = min(dist.low, *values), max(dist.high, *values)
            kind = od.IntDistribution if isinstance(dist, od.IntDistribution) else od.FloatDistribution
            widened[name] = kind(low, high, log=dist.log)  # values off the step grid: the step no longer holds
        else:
            widened[name] = dist
    return widened


def _none_choices(space: SearchSpace, row: dict[str, str]) -> dict[str, None]:
    """An empty cell of a categorical parameter with a ``None`` choice is that choice (csv writes None empty)."""
    return {
        param.name: None
        for param in space.tunable
        if isinstance(param, CategoricalParam) and None in param.choices and row.get(param.name) == ""
    }


def expand(path: Path) -> list[Path]:
    """A run directory, or every job of a multirun directory (its numbered subdirectories)."""
    if (path / TRIALS_CSV).is_file() or not path.is_dir():
        return [path]
    jobs = sorted(
        (child for child in path.iterdir() if child.is_dir() and child.name.isdigit()), key=lambda p: int(p.name)
    )
    return jobs or [path]


def label_by_differences(searches: Sequence[Search]) -> None:
    """Label each search by the overrides that tell it apart from the others (``backend=ray``, ``seed=2``)
    rather than by its timestamp folder; a search with nothing of its own keeps its folder label."""
    shared = set.intersection(*(set(search.overrides) for search in searches)) if searches else set()
    labels = [
        " ".join(o for o in search.overrides if o not in shared and not o.startswith("hydra")) for search in searches
    ]
    if len(searches) < 2 or len(set(labels)) < len(labels) or not all(labels):
        return
    for search, label in zip(searches, labels, strict=True):
        search.label = label


def check_same_objectives(searches: Sequence[Search]) -> None:
    first = searches[0]
    for other in searches[1:]:
        if (other.objective_names, other.directions) != (first.objective_names, first.directions):
            raise ConfigError(
                f"compare: {other.label} optimises {_objective_text(other)} but {first.label} optimises "
                f"{_objective_text(first)}; compare searches of the same objectives"
            )


def _overrides(path: Path) -> list[str]:
    file = path / ".hydra" / "overrides.yaml"
    return [str(item) for item in yaml.safe_load(file.read_text()) or []] if file.is_file() else []


def _label(path: Path) -> str:
    """``study/time``, or ``study/time/job`` for a multirun job: short, and unique among the inputs."""
    return "/".join(path.resolve().parts[-3:] if path.name.isdigit() else path.resolve().parts[-2:])


def _objective_text(search: Search) -> str:
    return ", ".join(f"{n} ({d})" for n, d in zip(search.objective_names, search.directions, strict=False))


def _number(text: str | None) -> float | None:
    return float(text) if text not in ("", None) else None
