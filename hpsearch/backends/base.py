"""The small interface every backend implements, and what a search hands it."""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from hpsearch.errors import ConfigError, MissingPackageError
from hpsearch.objective import Objectives
from hpsearch.progress import SearchProgress
from hpsearch.results import SearchResult, TrialOutcome, TrialRecord
from hpsearch.space import SearchSpace

if TYPE_CHECKING:
    from hpsearch.trainer import SearchTrainer


def require(module: str, what: str, package: str | None = None, extra: str | None = None) -> ModuleType:
    """Import an optional dependency, or fail with a one-line install hint naming ``what`` needs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingPackageError(what, package or module, extra) from None


def require_in_training_eval(option: str, training: Mapping[str, Any], purpose: str) -> None:
    """Pruners, schedulers and early termination act on evaluations made during training."""
    if str(training.get("eval_strategy", "no")) == "no":
        raise ConfigError(
            f"{option}: {purpose} needs in-training evaluation; set training.eval_strategy=steps and training.eval_steps=N"
        )


@dataclass
class FailureBudget:
    """A trainer listener counting failed trials; a search stops once more than ``limit`` failed."""

    limit: int
    count: int = 0
    last_error: str | None = None

    def __call__(self, trial: Any, outcome: TrialOutcome) -> None:
        if outcome.state == "FAIL":
            self.count += 1
            self.last_error = outcome.error

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit


@dataclass
class SearchJob:
    trainer: "SearchTrainer"
    space: SearchSpace
    objectives: Objectives
    n_trials: int
    seed: int
    study_name: str
    storage: str  # optuna's database URL
    state_dir: Path  # where backends keep local state, such as a SigOpt experiment id
    run_dir: Path
    settings: Mapping[str, Any]  # the backend's own config group
    progress: SearchProgress
    failures: FailureBudget


class Backend(ABC):
    name: ClassVar[str]
    package: ClassVar[str]  # pip name, for the install hint
    extra: ClassVar[str | None] = None  # hpsearch extra that installs it

    def require(self, module: str) -> ModuleType:
        """Import this backend's optional dependency, or fail with a one-line install hint."""
        return require(module, f"backend={self.name}", self.package, self.extra)

    def validate(self, settings: Mapping[str, Any], objectives: Objectives, training: Mapping[str, Any]) -> None:
        """Reject a bad backend config before any model or data is loaded."""

    @abstractmethod
    def search(self, job: SearchJob) -> None:
        """Run trials until the study holds ``job.n_trials`` finished ones."""

    @abstractmethod
    def records(self, job: SearchJob) -> list[TrialRecord]:
        """Every trial of the study, read back from the backend's own store."""

    def pareto_numbers(self, job: SearchJob) -> list[int] | None:
        """The Pareto front's trial numbers as the backend reports it; None: hpsearch computes it."""
        return None

    def remembered_id(self, job: SearchJob, key: str) -> str | None:
        """The remote study id (a SigOpt experiment, a W&B sweep) this study_name used before, if any."""
        if job.settings.get(key):
            return str(job.settings[key])
        path = job.state_dir / f"{self.name}-{job.study_name}.json"
        return json.loads(path.read_text())[key] if path.is_file() else None

    def remember_id(self, job: SearchJob, key: str, value: str) -> None:
        """Keep the remote study id, so that rerunning the same command joins it."""
        job.state_dir.mkdir(parents=True, exist_ok=True)
        (job.state_dir / f"{self.name}-{job.study_name}.json").write_text(json.dumps({key: value}))

    def finish(self, job: SearchJob, result: SearchResult) -> None:
        """After the results are written: e.g. tag the best trial's run in the backend's own store."""

    @abstractmethod
    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        """Draw ``n`` typed assignments with the backend's native sampler and no training (conformance suite)."""
