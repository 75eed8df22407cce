"""Evaluation metrics and the objective(s) a search optimises.

Config form (``conf/objective/*.yaml``)::

    metrics: [accuracy, f1]          # computed on the eval split
    select: last                     # last | best: a trial's final evaluation, or its best in-training one
    objectives:                      # one entry, or several for a Pareto search
      - {metric: eval_accuracy, direction: maximize}
      - {metric: model_num_parameters, direction: minimize}   # or model_latency_ms
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpsearch.errors import ObjectiveError
from hpsearch.model_metrics import MODEL_METRICS
from hpsearch.trials import TrialRecord

DIRECTIONS = ("minimize", "maximize")
SELECTIONS = ("last", "best")


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float((predictions == labels).mean())


def macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    scores = []
    for label in np.unique(np.concatenate([predictions, labels])):
        true_pos = np.sum((predictions == label) & (labels == label))
        predicted, actual = np.sum(predictions == label), np.sum(labels == label)
        scores.append(2 * true_pos / (predicted + actual) if predicted + actual else 0.0)
    return float(np.mean(scores))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"accuracy": accuracy, "f1": macro_f1}


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str


@dataclass(frozen=True)
class Objectives:
    metrics: tuple[str, ...]
    items: tuple[Objective, ...]
    select: str = "last"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Objectives:
        metrics = tuple(config.get("metrics") or ())
        for name in metrics:
            if name not in METRICS:
                raise ObjectiveError(f"objective.metrics: unknown metric {name!r}; choose from {sorted(METRICS)}")
        specs = config.get("objectives") or ()
        if not specs:
            raise ObjectiveError("objective.objectives: declare at least one {metric, direction}")
        items = []
        for index, spec in enumerate(specs):
            key = f"objective.objectives[{index}]"
            if not isinstance(spec, Mapping) or set(spec) != {"metric", "direction"}:
                raise ObjectiveError(f"{key}: expected exactly the keys metric and direction, got {spec!r}")
            if spec["direction"] not in DIRECTIONS:
                raise ObjectiveError(f"{key}.direction: must be minimize or maximize (got {spec['direction']!r})")
            items.append(Objective(_eval_name(str(spec["metric"])), str(spec["direction"])))
        if len({item.metric for item in items}) != len(items):
            raise ObjectiveError("objective.objectives: each metric may appear only once")
        select = config.get("select", "last")
        if select not in SELECTIONS:
            raise ObjectiveError(f"objective.select: must be last or best (got {select!r})")
        if select == "best" and len(items) > 1:
            raise ObjectiveError("objective.select=best: several objectives have no single best evaluation; use select=last")
        objectives = cls(metrics, tuple(items), select)
        objectives.check_reachable()
        return objectives

    @property
    def names(self) -> list[str]:
        return [item.metric for item in self.items]

    @property
    def directions(self) -> list[str]:
        return [item.direction for item in self.items]

    @property
    def is_multi(self) -> bool:
        return len(self.items) > 1

    @property
    def available(self) -> list[str]:
        """Every metric name a trial reports, known before any training."""
        return ["eval_loss", *(f"eval_{name}" for name in self.metrics), *MODEL_METRICS]

    @property
    def model_metrics(self) -> list[str]:
        return [name for name in self.names if name in MODEL_METRICS]

    def check_reachable(self) -> None:
        for index, item in enumerate(self.items):
            if item.metric not in self.available:
                raise ObjectiveError(
                    f"objective.objectives[{index}].metric: {item.metric!r} is never returned by evaluation; "
                    f"use one of {self.available} or add it to objective.metrics"
                )

    def compute_metrics(self, eval_prediction: Any) -> dict[str, float]:
        logits, labels = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        predictions = np.asarray(logits).argmax(axis=-1)
        return {name: METRICS[name](predictions, np.asarray(labels)) for name in self.metrics}

    def values(self, metrics: Mapping[str, float]) -> list[float]:
        """The objective values, in declared order, from one evaluation's metrics."""
        values = []
        for item in self.items:
            if item.metric not in metrics:
                raise ObjectiveError(
                    f"objective: metric {item.metric!r} is not in the evaluation results "
                    f"{sorted(metrics)}; fix objective.objectives"
                )
            values.append(float(metrics[item.metric]))
        return values

    def choose(self, kept: Mapping[str, float] | None, latest: Mapping[str, float]) -> dict[str, float]:
        """The evaluation a trial's objective comes from, as evaluations arrive: the latest one, or with
        ``select: best`` the best so far."""
        if self.select == "last" or kept is None or self.is_better(self.values(latest), self.values(kept)):
            return dict(latest)
        return dict(kept)

    def compute_objective(self, metrics: Mapping[str, float]) -> float | list[float]:
        """The ``compute_objective`` callable handed to ``Trainer.hyperparameter_search``."""
        values = self.values(metrics)
        return values if self.is_multi else values[0]

    def is_better(self, candidate: Sequence[float], incumbent: Sequence[float] | None) -> bool:
        """Single-objective comparison; NaN never wins."""
        if incumbent is None or math.isnan(incumbent[0]):
            return not math.isnan(candidate[0])
        if self.directions[0] == "maximize":
            return candidate[0] > incumbent[0]
        return candidate[0] < incumbent[0]


def _eval_name(metric: str) -> str:
    return metric if metric.startswith("eval_") or metric in MODEL_METRICS else f"eval_{metric}"


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when ``a`` is no worse than ``b`` in every objective and better in one."""
    signs = [1.0 if direction == "maximize" else -1.0 for direction in directions]
    no_worse = all(s * x >= s * y for s, x, y in zip(signs, a, b))
    better = any(s * x > s * y for s, x, y in zip(signs, a, b))
    return no_worse and better


def pareto_front(trials: Sequence[TrialRecord], directions: Sequence[str]) -> list[TrialRecord]:
    """The non-dominated completed trials."""
    complete = [t for t in trials if t.is_complete]
    return [t for t in complete if not any(dominates(o.values, t.values, directions) for o in complete)]


def best_trial(trials: Sequence[TrialRecord], objectives: Objectives) -> TrialRecord | None:
    best = None
    for trial in trials:
        if trial.is_complete and objectives.is_better(trial.values, best.values if best else None):
            best = trial
    return best
