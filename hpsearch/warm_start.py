"""``warm_start:``: known points a new study evaluates first, before its sampler's own suggestions.

Config form::

    warm_start:
      points:                               # full or partial points; a missing key is sampled
        - {learning_rate: 5.0e-5, per_device_train_batch_size: 32}
        - {learning_rate: 2.0e-5}
      from: {study_name: last-month, storage: null, top_k: 3}   # that study's best trials (same backend)

Every point is checked against the space up front: a key outside it, a value outside its range, a conditional
parameter its own point leaves inactive, or a point that breaks a parameter constraint is a config error naming
the point. Each backend queues the points natively where it can (optuna ``enqueue_trial``, Ray Tune
``points_to_evaluate``, SigOpt suggestions with given assignments); W&B has no such form, so hpsearch trains them
itself as the sweep's first runs (``pending_points``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hpsearch.errors import ConfigError
from hpsearch.objective import Objectives, best_trial, pareto_front
from hpsearch.space import SearchSpace, as_declared
from hpsearch.trials import TrialRecord, TrialState

if TYPE_CHECKING:
    from hpsearch.backends.base import Backend, SearchJob

Point = dict[str, Any]
FROM_KEYS = {"study_name", "storage", "top_k"}


def warm_start_points(config: Mapping[str, Any], backend: Backend[Any], job: SearchJob[Any]) -> tuple[Point, ...]:
    """``warm_start``'s points, then the best points of the study it names (read from ``backend``'s store)."""
    points = check_points(config.get("points"), job.space)
    found = study_to_start_from(config.get("from"), job.storage)
    if found is None:
        return points
    study_name, storage, top_k = found
    records = backend.records(dataclasses.replace(job, study_name=study_name, storage=storage))
    best = points_of_study(records, job.objectives, top_k)
    if not best:
        raise ConfigError(
            f"warm_start.from.study_name={study_name}: backend={backend.name} holds no completed trial of that "
            f"study{' in its storage' if storage else ''}; check the name and warm_start.from.storage"
        )
    return points + check_points(
        [{k: v for k, v in p.items() if k in job.space.names} for p in best],
        job.space,
        f"warm_start.from({study_name})",
    )


def study_to_start_from(config: Any, storage: str | None) -> tuple[str, str | None, int] | None:
    """``warm_start.from`` as (study_name, storage, top_k): the storage defaults to this search's own, top_k to 1."""
    if config is None:
        return None
    key = "warm_start.from"
    if not isinstance(config, Mapping) or "study_name" not in config:
        raise ConfigError(f"{key}: expected {{study_name: NAME, storage: URL, top_k: K}}, got {config!r}")
    if unknown := sorted(set(config) - FROM_KEYS):
        raise ConfigError(f"{key}: unknown key(s) {unknown}; allowed: {sorted(FROM_KEYS)}")
    top_k = config.get("top_k", 1)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ConfigError(f"{key}.top_k: must be an integer >= 1 (got {top_k!r})")
    return str(config["study_name"]), config.get("storage", storage), top_k


def check_points(points: Any, space: SearchSpace, key: str = "warm_start.points") -> tuple[Point, ...]:
    """The points of ``key``, typed as the space types them; a point outside the space is a config error."""
    if points is None:
        return ()
    if not isinstance(points, Sequence) or isinstance(points, str):
        raise ConfigError(f"{key}: expected a list of points such as [{{learning_rate: 5.0e-5}}], got {points!r}")
    return tuple(_check_point(point, space, f"{key}[{index}]") for index, point in enumerate(points))


def _check_point(point: Any, space: SearchSpace, key: str) -> Point:
    if not isinstance(point, Mapping) or not point:
        raise ConfigError(f"{key}: expected a mapping of parameters to values, got {point!r}")
    typed: Point = {}
    for name, written in point.items():
        if name not in space.names:
            raise ConfigError(f"{key}.{name}: not a parameter of the space; known: {space.names}")
        param = space[name]
        value = as_declared(param, written)
        if not param.admits(value):
            raise ConfigError(f"{key}.{name}={value!r}: outside space.{name} ({param.extremes()}); change the point")
        typed[str(name)] = value
    for name in typed:
        parents = space.conditions.get(name, {})
        if all(parent in typed for parent in parents) and not space.is_active(name, typed):
            raise ConfigError(f"{key}.{name}: inactive in this point (space.{name}.when: {dict(parents)}); drop it")
    for constraint, violation in space.constraint_values(typed, on_outcome=False).items():
        if violation > 0:
            raise ConfigError(f"{key}: breaks {constraint.describe(typed)}; change the point")
    return typed


def points_of_study(records: Sequence[TrialRecord], objectives: Objectives, top_k: int) -> list[Point]:
    """The ``top_k`` best feasible trials' points (a Pareto front's, for several objectives), best first."""
    if objectives.is_multi:
        ranked = pareto_front(records, objectives.directions)
    else:
        ranked, remaining = [], list(records)
        while len(ranked) < top_k and (best := best_trial(remaining, objectives)) is not None:
            ranked.append(best)
            remaining.remove(best)
    return [dict(record.params) for record in ranked[:top_k]]


def pending_points(points: Sequence[Point], records: Sequence[TrialRecord]) -> list[Point]:
    """The points that no trial of the study trains or trained (one whose values match it on its keys); a point
    whose trial failed is pending again."""
    return [
        point
        for point in points
        if not any(_matches(record, point) and record.state is not TrialState.FAIL for record in records)
    ]


def _matches(record: TrialRecord, point: Point) -> bool:
    return all(name in record.params and record.params[name] == value for name, value in point.items())
