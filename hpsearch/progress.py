"""Search-level progress: on a terminal, a bar over trials (k/N, best so far) and one for the running trial's
steps and latest evaluation; elsewhere (a log, a pipe, CI), one line per finished trial. Every trial's line
also goes to the run's log file."""

from __future__ import annotations

import logging
import sys
from typing import Any

from tqdm.auto import tqdm

from hpsearch.objective import Objectives
from hpsearch.trials import TrialOutcome, TrialState

log = logging.getLogger(__name__)


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class SearchProgress:
    """A trial-loop listener; only the process that owns the search shows it."""

    def __init__(
        self, n_trials: int, objectives: Objectives, enabled: bool = True, interactive: bool | None = None
    ) -> None:
        self.objectives = objectives
        self.n_trials = n_trials
        self.enabled = enabled
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.best: list[float] | None = None
        self.finished = 0
        self.bar: tqdm | None = None
        self.trial_bar: tqdm | None = None

    def start(self, already_done: int) -> None:
        """Show the bar once the backend is connected, counting trials a resumed study already finished."""
        self.finished = already_done
        if self.enabled and self.interactive:
            self.bar = tqdm(
                total=self.n_trials,
                initial=already_done,
                desc="trials",
                unit="trial",
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def __call__(self, outcome: TrialOutcome) -> None:
        if not self.enabled:
            return
        if (
            outcome.state is TrialState.COMPLETE
            and not self.objectives.is_multi
            and self.objectives.is_better(outcome.complete_values, self.best)
        ):
            self.best = outcome.complete_values
        if outcome.state.finished:  # a failed trial is retried: only finished ones count towards n_trials
            self.finished += 1
        result = (
            ", ".join(f"{n}={_format(v)}" for n, v in zip(self.objectives.names, outcome.values, strict=False))
            if outcome.values
            else outcome.error or ""
        )
        params = " ".join(f"{k}={_format(v)}" for k, v in outcome.params.items())
        line = f"trial {outcome.state.value:<8} {result}  [{params}]  {outcome.duration_s or 0.0:.1f}s"
        best = f", best {self.objectives.names[0]}={_format(self.best[0])}" if self.best is not None else ""
        if self.bar is None:  # not a terminal: the line is the progress
            log.info("%s  (%d/%d finished%s)", line, self.finished, self.n_trials, best)
            return
        self.bar.write(line, file=sys.stderr)
        _to_log_files(f"{line}  ({self.finished}/{self.n_trials} finished{best})")
        if outcome.state.finished:
            self.bar.update(1)
        if self.best is not None:
            self.bar.set_postfix({f"best {self.objectives.names[0]}": _format(self.best[0])})

    def trial_callback(self) -> Any:
        """A ``TrainerCallback`` showing the running trial's steps and latest evaluation under the trials bar."""
        from transformers import TrainerCallback

        progress = self

        class TrialSteps(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                progress._trial_begins(int(state.max_steps or 0))

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if progress.trial_bar is not None:
                    progress.trial_bar.update(state.global_step - progress.trial_bar.n)

            def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                metrics = kwargs.get("metrics") or {}
                if progress.trial_bar is not None and metrics:
                    name = next((n for n in progress.objectives.names if n in metrics), None) or next(iter(metrics))
                    progress.trial_bar.set_postfix({name: _format(metrics[name])})

            def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                progress._trial_ends()

        return TrialSteps()

    def _trial_begins(self, steps: int) -> None:
        if self.bar is None:
            return
        self._trial_ends()
        self.trial_bar = tqdm(
            total=steps, desc="  steps", unit="step", file=sys.stderr, position=1, leave=False, dynamic_ncols=True
        )

    def _trial_ends(self) -> None:
        if self.trial_bar is not None:
            self.trial_bar.close()
            self.trial_bar = None

    def close(self) -> None:
        self._trial_ends()
        if self.bar is not None:
            self.bar.close()


def _to_log_files(line: str) -> None:
    """On a terminal the bar shows the line; the run's log file (Hydra's ``<job>.log``) gets it too."""
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, line, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
