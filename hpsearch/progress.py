"""Search-level progress: a bar over trials (k/N, best so far) and one line per finished trial."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

from hpsearch.objective import Objectives
from hpsearch.trials import TrialOutcome, TrialState


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class SearchProgress:
    """A trial-loop listener; only the process that owns the search shows it."""

    def __init__(self, n_trials: int, objectives: Objectives, enabled: bool = True) -> None:
        self.objectives = objectives
        self.n_trials = n_trials
        self.enabled = enabled
        self.best: list[float] | None = None
        self.bar: tqdm | None = None

    def start(self, already_done: int) -> None:
        """Show the bar once the backend is connected, counting trials a resumed study already finished."""
        self.bar = tqdm(
            total=self.n_trials,
            initial=already_done,
            desc="trials",
            unit="trial",
            file=sys.stderr,
            disable=not self.enabled,
            dynamic_ncols=True,
        )

    def __call__(self, outcome: TrialOutcome) -> None:
        if self.bar is None or self.bar.disable:
            return
        if (
            outcome.state is TrialState.COMPLETE
            and not self.objectives.is_multi
            and self.objectives.is_better(outcome.complete_values, self.best)
        ):
            self.best = outcome.complete_values
        result = (
            ", ".join(f"{n}={_format(v)}" for n, v in zip(self.objectives.names, outcome.values, strict=False))
            if outcome.values
            else outcome.error or ""
        )
        params = " ".join(f"{k}={_format(v)}" for k, v in outcome.params.items())
        self.bar.write(
            f"trial {outcome.state.value:<8} {result}  [{params}]  {outcome.duration_s or 0.0:.1f}s", file=sys.stderr
        )
        if outcome.state.finished:  # a failed trial is retried: the bar counts towards n_trials, as the search does
            self.bar.update(1)
        if self.best is not None:
            self.bar.set_postfix({f"best {self.objectives.names[0]}": _format(self.best[0])})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
