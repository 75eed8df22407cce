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
from typing import Any, Literal, cast

import numpy as np

from hpsearch.errors import ObjectiveError
from hpsearch.model_metrics import MODEL_METRICS
from hpsearch.trials import TrialRecord

Direction = Literal["minimize", "maximize"]
DIRECTIONS: tuple[Direction, ...] = ("minimize", "maximize")
SELECTIONS = ("last", "best")


def _sklearn(name: str) -> Callable[..., float]:
    from sklearn import metrics

    function: Callable[..., float] = getattr(metrics, name)
    return function


def _scipy_correlation(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
        from scipy import stats

        return float(getattr(stats, name)(predictions, labels).statistic)

    return correlation


# Classification metrics take predicted class ids (the argmax of the logits); regression metrics take the
# model's single output. Computed by scikit-learn and scipy.
CLASSIFICATION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda predictions, labels: float(_sklearn("accuracy_score")(labels, predictions)),
    "f1": lambda predictions, labels: float(_sklearn("f1_score")(labels, predictions, average="macro")),
    "matthews_correlation": lambda predictions, labels: float(_sklearn("matthews_corrcoef")(labels, predictions)),
}
REGRESSION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "pearson": _scipy_correlation("pearsonr"),
    "spearman": _scipy_correlation("spearmanr"),
    "mse": lambda predictions, labels: float(_sklearn("mean_squared_error")(labels, predictions)),
}
METRICS = {**CLASSIFICATION_METRICS, **REGRESSION_METRICS}


@dataclass(frozen=True)
class MetricFunction:
    """``compute_metrics`` for the built-in text tasks: ``names`` on the argmax of the logits, or for
    regression on the model's single output. A plain object, so Ray workers can receive it."""

    names: tuple[str, ...]
    regression: bool

    def __call__(self, eval_prediction: Any) -> dict[str, float]:
        logits, labels = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        logits = np.asarray(logits)
        predictions = logits.reshape(len(logits)) if self.regression else logits.argmax(axis=-1)
        return {name: METRICS[name](predictions, np.asarray(labels)) for name in self.names}


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: Direction


@dataclass(frozen=True, kw_only=True)
class Objectives:
    items: tuple[Objective, ...]
    metrics: tuple[str, ...] = ()  # computed on the eval split besides the loss
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
            items.append(Objective(_eval_name(str(spec["metric"])), cast(Direction, spec["direction"])))
        if len({item.metric for item in items}) != len(items):
            raise ObjectiveError("objective.objectives: each metric may appear only once")
        select = config.get("select", "last")
        if select not in SELECTIONS:
            raise ObjectiveError(f"objective.select: must be last or best (got {select!r})")
        if select == "best" and len(items) > 1:
            raise ObjectiveError(
                "objective.select=best: several objectives have no single best evaluation; use select=last"
            )
        return cls(items=tuple(items), metrics=metrics, select=select)

    @property
    def names(self) -> list[str]:
        return [item.metric for item in self.items]

    @property
    def directions(self) -> list[Direction]:
        return [item.direction for item in self.items]

    @property
    def is_multi(self) -> bool:
        return len(self.items) > 1

    def available(self, task_metrics: Sequence[str] = ()) -> list[str]:
        """Every metric name a trial reports, known before any training: the loss, the declared metrics (or
        those a ``data._target_`` task computes), the model metrics."""
        names = task_metrics or self.metrics
        return ["eval_loss", *(f"eval_{name}" for name in names), *MODEL_METRICS]

    @property
    def model_metrics(self) -> list[str]:
        return [name for name in self.names if name in MODEL_METRICS]

    def check_reachable(self, task_metrics: Sequence[str] = ()) -> None:
        available = self.available(task_metrics)
        for index, item in enumerate(self.items):
            if item.metric not in available:
                raise ObjectiveError(
                    f"objective.objectives[{index}].metric: {item.metric!r} is never returned by evaluation; "
                    f"use one of {available} or add it to objective.metrics"
                )

    def metric_function(self, regression: bool) -> MetricFunction:
        """``compute_metrics`` for a built-in text task; a classification metric on regression labels, or the
        reverse, is a config error."""
        fitting = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
        for name in self.metrics:
            if name not in fitting:
                kind, other = ("regression", "float") if regression else ("classification", "class")
                raise ObjectiveError(
                    f"objective.metrics: {name!r} does not apply to {kind} (data.label_column holds {other} labels); "
                    f"choose from {sorted(fitting)}"
                )
        return MetricFunction(self.metrics, regression)

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
    no_worse = all(s * x >= s * y for s, x, y in zip(signs, a, b, strict=False))
    better = any(s * x > s * y for s, x, y in zip(signs, a, b, strict=False))
    return no_worse and better


def pareto_front(trials: Sequence[TrialRecord], directions: Sequence[str]) -> list[TrialRecord]:
    """The non-dominated completed trials among the feasible ones."""
    complete = [t for t in trials if t.is_complete and t.feasible]
    return [
        t for t in complete if not any(dominates(o.complete_values, t.complete_values, directions) for o in complete)
    ]


def best_trial(trials: Sequence[TrialRecord], objectives: Objectives) -> TrialRecord | None:
    best = None
    for trial in trials:
        if (
            trial.is_complete
            and trial.feasible
            and objectives.is_better(trial.complete_values, best.complete_values if best else None)
        ):
            best = trial
    return best
