"""The one trial loop: ask the backend for a trial, train it, tell the backend, until the search is done.

Every backend records its trials through ``TrialLoop.record`` (progress, the failure budget, listeners
such as ``tracking=wandb``), whoever drives the trials:

- SigOpt, W&B and optuna under torchrun give a ``TrialSource`` to ``TrialLoop.run``;
- optuna in one process runs inside ``Trainer.hyperparameter_search``, whose trials reach ``record``
  through the trainer's ``finished`` hook;
- Ray's driver records the trials its workers report.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpsearch.errors import CollectiveTimeout
from hpsearch.progress import SearchProgress
from hpsearch.trials import TrialOutcome, TrialState

if TYPE_CHECKING:
    from hpsearch.trainer import SearchTrainer
    from hpsearch.workers import TrialBudget

Train = Callable[[Any, dict[str, Any]], TrialOutcome]
# Set by ``python -m hpsearch``'s Ctrl-C handler. A KeyboardInterrupt raised while Python runs a finalizer (the
# garbage collected after each trial) is printed and dropped; each trial start checks this flag again.
INTERRUPTED = threading.Event()
Listener = Callable[[TrialOutcome], None]


@dataclass
class FailureBudget:
    """Counts failed trials; a search stops once more than ``limit`` failed."""

    limit: int
    count: int = 0
    last_error: str | None = None

    def __call__(self, outcome: TrialOutcome) -> None:
        if outcome.state is TrialState.FAIL:
            self.count += 1
            self.last_error = outcome.error

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit


class TrialSource(ABC):
    """A backend's side of ``TrialLoop.run``: its store's count, and one ask -> train -> tell step."""

    # True: the backend's store is the trial budget itself, shared by every process and machine on the study;
    # ``next`` returns None once it is spent, and the loop claims nothing of its own.
    bounds_trials: bool = False

    @abstractmethod
    def finished(self) -> int:
        """Trials the backend's store already counts as finished (a resumed search starts from them)."""

    @abstractmethod
    def next(self, train: Train) -> TrialOutcome | None:
        """Ask for one trial, train it with ``train(handle, params)``, tell the backend its outcome.

        None when the backend has no trial left to give (an exhausted grid).
        """


class TrialLoop:
    def __init__(
        self,
        trainer: SearchTrainer,
        n_trials: int,
        progress: SearchProgress,
        failures: FailureBudget,
        listeners: Sequence[Listener] = (),
        budget: TrialBudget | None = None,
    ) -> None:
        self.trainer = trainer
        self.n_trials = n_trials
        self.budget = budget  # set in a worker process: trials are claimed from the budget the workers share
        self.progress = progress
        self.failures = failures
        self.listeners = [failures, progress, *listeners]
        self._lost: CollectiveTimeout | None = None  # a DDP rank was lost during the trial being told
        self.attach()

    @property
    def shared(self) -> bool:
        """Several worker processes share this search."""
        return self.budget is not None

    @property
    def stopped(self) -> bool:
        """Too many failures: no further trial may start."""
        return self.failures.exceeded

    def start(self, finished: int) -> None:
        """Show progress from the trials a resumed study already finished."""
        self.progress.start(finished)

    def record(self, outcome: TrialOutcome) -> None:
        for listener in self.listeners:
            listener(outcome)

    def attach(
        self,
        assign: Callable[[Any], dict[str, Any]] | None = None,
        report: Callable[[Any, int, dict[str, float]], None] | None = None,
        finished: Callable[[Any, TrialOutcome], None] | None = None,
    ) -> None:
        """Hand the trainer the backend's hooks; every finished trial is also recorded here, once."""
        from hpsearch.trainer import TrialHooks

        def on_finished(trial: Any, outcome: TrialOutcome) -> None:
            if finished is not None:
                finished(trial, outcome)
            self.record(outcome)

        self.trainer.attach(TrialHooks(assign=assign, report=report, finished=on_finished))

    def train(self, handle: Any, params: dict[str, Any]) -> TrialOutcome:
        """Train one trial. A lost DDP rank still comes back as the trial's FAIL outcome, so that the backend
        records it; ``run`` raises the loss once the backend was told."""
        try:
            return self.trainer.run_trial(params, handle)
        except CollectiveTimeout as lost:
            self._lost = lost
            if self.trainer.latest_outcome is not None:
                return self.trainer.latest_outcome
            outcome = TrialOutcome(dict(params), TrialState.FAIL, error=str(lost))  # lost before training began
            self.record(outcome)
            return outcome

    def run(self, source: TrialSource) -> None:
        """Ask, train and tell until ``n_trials`` trials finished (with workers: the shared budget is
        claimed), the budget of failures is spent, or the backend has nothing left."""
        finished = source.finished()
        self.start(finished)
        while not self.stopped and self._claim(source, finished):
            outcome = source.next(self.train)
            if self._lost is not None:
                raise self._lost
            if outcome is None or not outcome.state.finished:
                self._give_back(source)
            if outcome is None:
                return
            finished += outcome.state.finished

    def _claim(self, source: TrialSource, finished: int) -> bool:
        """May another trial start? The source's own budget decides in ``next``; else alone: while fewer than
        ``n_trials`` finished; in a worker: if the budget the workers share has one left."""
        if source.bounds_trials:
            return True
        return self.budget.claim() if self.budget is not None else finished < self.n_trials

    def _give_back(self, source: TrialSource) -> None:
        """A trial that did not finish (failed) is retried: its claim goes back to the shared budget."""
        if self.budget is not None and not source.bounds_trials:
            self.budget.give_back()
