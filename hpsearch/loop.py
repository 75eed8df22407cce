"""The one trial loop: ask the backend for a trial, train it, record it, until the search is done.

Every trial of every backend is recorded through ``TrialLoop.record``: the failure budget, the progress display,
and listeners such as ``tracking=wandb``. A backend hands the loop a ``TrialSource`` (``TrialLoop.run``); a backend
whose own library schedules the trials (Ray Tune) records each trial that library reports.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpsearch.errors import CollectiveTimeout
from hpsearch.progress import SearchProgress
from hpsearch.trials import TrialOutcome, TrialState

if TYPE_CHECKING:
    from hpsearch.budget import TrialBudget
    from hpsearch.trainer import SearchTrainer

Train = Callable[[Any, dict[str, Any]], TrialOutcome]  # (the backend's trial handle, typed hyperparameters)
Listener = Callable[[TrialOutcome], None]


INFEASIBLE_DRAWS = 50  # points in a row that violate a parameter constraint before a search gives up


@dataclass
class FailureBudget:
    """Counts failed trials; a search stops once more than ``limit`` failed. A point that violated a parameter
    constraint was never trained and is drawn again; ``INFEASIBLE_DRAWS`` of them in a row stop the search."""

    limit: int
    count: int = 0
    last_error: str | None = None
    infeasible_in_a_row: int = 0

    def __call__(self, outcome: TrialOutcome) -> None:
        if outcome.never_trained:
            self.infeasible_in_a_row += 1
            self.last_error = outcome.error
            return
        self.infeasible_in_a_row = 0
        if outcome.state is TrialState.FAIL:
            self.count += 1
            self.last_error = outcome.error

    @property
    def infeasible(self) -> bool:
        """The sampler kept drawing infeasible points: the constraints leave (almost) nothing of the space."""
        return self.infeasible_in_a_row >= INFEASIBLE_DRAWS

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit or self.infeasible


class TrialSource(ABC):
    """A backend's side of ``TrialLoop.run``, one trial at a time.

    The loop calls ``next`` while the search may start another trial: while fewer than ``n_trials`` finished
    (``TrialState.finished``), and in a worker process only once it claimed a trial from the budget that the
    machine's workers share; never once the failure budget is spent. ``report`` is called inside training.
    """

    # True: the backend's store is the trial budget itself, shared by every process and machine on the study.
    # The loop then claims nothing of its own and asks ``next`` until it returns None.
    bounds_trials: bool = False

    @abstractmethod
    def next(self, train: Train) -> TrialOutcome | None:
        """Ask the backend for one trial, ``train(handle, params)`` it, tell the backend the outcome, return it.

        - ``handle`` is the backend's own trial object; it comes back in ``report``.
        - ``params`` holds a typed value for every active parameter of the space (``SearchSpace.cast`` of the
          backend's assignment drops those whose ``when`` fails; a define-by-run library never draws them).
        - The outcome's state may be anything: a FAIL does not count towards ``n_trials``, and the loop asks
          again. Tell the backend a FAIL too, so that its store never keeps a trial RUNNING.
        - If ``train`` raises (Ctrl-C, SIGTERM, a config error found mid-trial), tell the backend that the trial
          failed, then let the exception propagate: the search ends.
        - Return None when the backend has nothing left to give (an exhausted grid; with ``bounds_trials``,
          ``n_trials`` reached in the shared store). The loop then stops.
        """

    def report(self, handle: Any, step: int, metrics: dict[str, float]) -> None:  # noqa: B027 - optional hook
        """One in-training evaluation of trial ``handle`` at ``step``; raise ``TrialPruned`` to stop it there.

        Only called with ``training.eval_strategy`` set. Default: nothing.
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
        self.listeners: list[Listener] = [failures, progress, *listeners]
        self.finished_trials = 0  # of this search, the study's earlier ones included
        self._lost: CollectiveTimeout | None = None  # a DDP rank was lost during the trial being told

    @property
    def stopped(self) -> bool:
        """Too many failures: no further trial may start."""
        return self.failures.exceeded

    def start(self, finished: int) -> None:
        """Count from, and show progress from, the trials a resumed study already finished."""
        self.finished_trials = finished
        self.progress.start(finished)

    def record(self, outcome: TrialOutcome) -> None:
        for listener in self.listeners:
            listener(outcome)

    def train(self, handle: Any, params: dict[str, Any]) -> TrialOutcome:
        """Train and record one trial. A lost DDP rank still comes back as the trial's FAIL outcome, so that the
        backend stores it; ``run`` raises the loss once the backend was told."""
        try:
            outcome = self.trainer.run_trial(params, handle)
        except CollectiveTimeout as lost:
            self._lost = lost
            outcome = self.trainer.latest_outcome or TrialOutcome(
                state=TrialState.FAIL, params=dict(params), error=str(lost)
            )
        self.record(outcome)
        return outcome

    def run(self, source: TrialSource) -> None:
        """Ask, train and tell until ``n_trials`` trials finished (with workers: the shared budget is
        claimed), the budget of failures is spent, or the backend has nothing left."""
        self.trainer.reporter = source.report
        while not self.stopped and self._claim(source):
            outcome = source.next(self.train)
            finished = outcome is not None and outcome.state.finished
            if self.budget is not None and not source.bounds_trials:
                self.budget.settle(finished)  # a trial that did not finish (failed) is retried: its claim goes back
            if self._lost is not None:
                raise self._lost
            if outcome is None:
                return
            self.finished_trials += finished

    def _claim(self, source: TrialSource) -> bool:
        """May another trial start? The source's own budget decides in ``next``; else alone: while fewer than
        ``n_trials`` finished; in a worker: if the budget the workers share has one left."""
        if source.bounds_trials:
            return True
        return self.budget.claim() if self.budget is not None else self.finished_trials < self.n_trials
