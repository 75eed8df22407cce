"""Trial states, what one trial produced, and the records a backend's store holds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


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


@dataclass
class TrialOutcome:
    """What one trial produced, as the trainer saw it."""

    params: dict[str, Any]
    state: TrialState
    values: list[float] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class TrialRecord:
    """One trial as read back from the backend's own store."""

    number: int
    state: TrialState
    values: list[float] | None
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    duration_s: float | None = None
    key: str | None = None  # the backend's own id for the trial (a W&B run, a SigOpt observation)
    finished_at: float | None = None  # when it ended (Unix time), where the backend's store keeps it

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", TrialState(self.state))

    @property
    def is_complete(self) -> bool:
        return self.state is TrialState.COMPLETE and self.values is not None and not any(math.isnan(v) for v in self.values)


@dataclass(frozen=True)
class SearchResult:
    trials: list[TrialRecord]
    best: TrialRecord | None
    pareto: list[TrialRecord]
