"""Trial states, what one trial produced, the records a backend's store holds, and how they are counted."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hpsearch.model_metrics import MODEL_METRICS

RETRIED_METRIC = "retried_out_of_memory"  # 1.0 for a trial that ran out of memory packed, then trained alone
CONSTRAINT_PREFIX = "constraint_"  # constraint_<name>: a constraint's violation (zero or less: feasible)
INFEASIBLE = "infeasible: "  # starts the error of a point that violates a parameter constraint (never trained)


class TrialState(str, Enum):
    """A trial's state, with optuna's names (every backend's states map onto these)."""

    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"
    RUNNING = "RUNNING"

    @property
    def finished(self) -> bool:
        """Counts towards ``n_trials``: a failed trial is retried, a pruned one is not."""
        return self in (TrialState.COMPLETE, TrialState.PRUNED)

    def __str__(self) -> str:
        return self.value


class TrialPruned(Exception):
    """Raised inside training to stop a trial early: a backend's pruner decided, or rank zero did under DDP."""


@dataclass(frozen=True, kw_only=True)
class TrialOutcome:
    """What one trial produced, as the trainer saw it."""

    state: TrialState
    params: dict[str, Any]
    values: list[float] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    duration_s: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", TrialState(self.state))

    @property
    def is_complete(self) -> bool:
        return (
            self.state is TrialState.COMPLETE
            and self.values is not None
            and not any(math.isnan(v) for v in self.values)
        )

    @property
    def feasible(self) -> bool:
        """No constraint is violated (``hpsearch.constraints``): best and Pareto trials are feasible ones."""
        return all(value <= 0 for name, value in self.metrics.items() if name.startswith(CONSTRAINT_PREFIX))

    @property
    def never_trained(self) -> bool:
        """A point that violated a parameter constraint: failed before training, and no failure of training."""
        return self.state is TrialState.FAIL and (self.error or "").startswith(INFEASIBLE)

    @property
    def complete_values(self) -> list[float]:
        """The objective values, which only a COMPLETE trial has."""
        if self.values is None:
            raise ValueError(f"a {self.state} trial has no objective values")
        return self.values


@dataclass(frozen=True, kw_only=True)
class TrialRecord(TrialOutcome):
    """One trial as read back from the backend's own store: its outcome, and where the store keeps it."""

    number: int
    key: str | None = None  # the backend's own id for the trial (a W&B run, a SigOpt observation)
    finished_at: float | None = None  # when it ended (Unix time), where the backend's store keeps it


@dataclass(frozen=True)
class SearchResult:
    trials: list[TrialRecord]
    best: TrialRecord | None
    pareto: list[TrialRecord]


def count_finished(trials: Iterable[TrialOutcome]) -> int:
    """The trials that count towards ``n_trials`` (see ``TrialState.finished``)."""
    return sum(trial.state.finished for trial in trials)


def is_metric(name: str) -> bool:
    """Whether a reported name is a metric of the trial: an evaluation's ``eval_*`` or a model metric."""
    return name.startswith(("eval_", CONSTRAINT_PREFIX)) or name in MODEL_METRICS or name == RETRIED_METRIC


def reported_metrics(reported: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics among what a trial reported to its store (ids, times and flags dropped)."""
    return {
        name: float(value)
        for name, value in reported.items()
        if is_metric(name) and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def stored_trial(
    *,
    number: int,
    state: TrialState | str,
    params: dict[str, Any],
    reported: Mapping[str, Any],
    values: list[float] | None = None,
    duration_s: float | None = None,
    error: str | None = None,
    key: str | None = None,
    finished_at: float | None = None,
) -> TrialRecord:
    """A trial read back from a backend's store, whatever the backend: ``params`` typed (``SearchSpace.read``),
    its metrics the numeric ones among what it ``reported`` there."""
    return TrialRecord(
        number=number,
        state=TrialState(state),
        params=params,
        values=values,
        metrics=reported_metrics(reported),
        duration_s=duration_s,
        error=error if isinstance(error, str) else None,
        key=key,
        finished_at=finished_at,
    )
