"""``tracking=wandb``: W&B run logging for every backend; the W&B sweeps backend logs its runs the same way.

One W&B run per trial, grouped by study (``group=study_name``, ``job_type="trial"``); the objective is logged
last under its metric name, so the run summary holds the trial's objective; after the search the
best trial's run (single objective) or the Pareto trials' runs are tagged ``best`` / ``pareto``.
Point it at wandb.ai or a W&B Server with ``WANDB_BASE_URL``/``WANDB_API_KEY``, or set ``WANDB_MODE=offline``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpsearch.imports import require
from hpsearch.objective import Objectives
from hpsearch.tracking.base import Tracker
from hpsearch.trials import SearchResult, TrialOutcome, TrialState
from hpsearch.wandb_files import read_closed_run

STATE_KEY = "hpsearch/state"  # run summary keys hpsearch writes, and the W&B backend reads back
DURATION_KEY = "hpsearch/duration_s"
ERROR_KEY = "hpsearch/error"
# Read once at import: wandb.agent later sets WANDB_DIR to the working directory for its own runs.
USER_WANDB_DIR = os.environ.get("WANDB_DIR")


def wandb_module(what: str) -> Any:
    return require("wandb", what, "wandb", "wandb")


def wandb_dir(run_dir: Path) -> Path:
    """Where W&B writes its local run files: ``$WANDB_DIR`` when set, else the run directory."""
    folder = Path(USER_WANDB_DIR or run_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def log_outcome(run: Any, outcome: TrialOutcome, objectives: Objectives) -> None:
    """Log one trial's result into an open W&B run, and finish it (failed trials exit non-zero).

    The objective is logged last, under its metric name, so that the run's summary (the last value of each key)
    holds the trial's own objective: its last evaluation, or with ``objective.select=best`` its best one. No
    ``define_metric(summary="min"|"max")``: that would make the summary the best of the in-training evaluations
    logged under the same name, whatever ``objective.select`` says."""
    values = dict(zip(objectives.names, outcome.values or [], strict=False))
    run.log({**outcome.metrics, **values})
    run.summary[STATE_KEY] = outcome.state.value
    run.summary[DURATION_KEY] = outcome.duration_s
    if outcome.error:
        run.summary[ERROR_KEY] = outcome.error[:400]
    finish_run(run, exit_code=0 if outcome.state is TrialState.COMPLETE else 1)


def finish_run(run: Any, exit_code: int = 0) -> None:
    """Finish ``run``; offline, wait until its run file is closed, so that whoever reads the files next (the
    sweep's next suggestion, the results) sees the whole run."""
    sync_file = Path(run.settings.sync_file) if run.settings.mode in ("offline", "dryrun") else None
    run.finish(exit_code=exit_code)
    if sync_file is not None:
        read_closed_run(sync_file)


def tag_runs(
    wandb: Any, entity: str | None, project: str | None, folder: Path, tagged: Mapping[str, list[str]]
) -> None:
    """Set tags on finished runs by resuming them, the W&B way of editing a run (works offline too).

    ``tagged`` holds each run's full tag list: an offline resume cannot see the tags the run already has.
    """
    for run_id, tags in tagged.items():
        run = wandb.init(
            id=run_id,
            resume="allow",
            entity=entity,
            project=project,
            dir=str(folder),
        )
        run.tags = tuple(sorted(set(run.tags or ()) | set(tags)))
        finish_run(run)


def result_tags(result: SearchResult) -> dict[int, list[str]]:
    """Trial number -> tags to add: ``best`` for the best trial, ``pareto`` for each Pareto trial."""
    tags: dict[int, list[str]] = {}
    if result.best is not None:
        tags[result.best.number] = ["best"]
    for trial in result.pareto:
        tags.setdefault(trial.number, []).append("pareto")
    return tags


class WandbTracker(Tracker):
    """A trial-loop listener logging every trial of any backend as one W&B run."""

    name = "wandb"

    def __init__(
        self, settings: Mapping[str, Any], study_name: str, backend: str, objectives: Objectives, run_dir: Path
    ) -> None:
        self.wandb = wandb_module("tracking=wandb")
        self.settings = settings
        self.study_name = study_name
        self.backend = backend
        self.objectives = objectives
        self.folder = wandb_dir(run_dir)
        self.tags = [backend]
        self.logged: list[tuple[str, dict[str, Any]]] = []  # (run id, params) of each trial logged here

    def __call__(self, outcome: TrialOutcome) -> None:
        run = self.wandb.init(
            entity=self.settings.get("entity"),
            project=self.settings.get("project"),
            group=self.study_name,
            job_type="trial",
            tags=self.tags,
            config=outcome.params,
            dir=str(self.folder),
            reinit="create_new",
        )
        self.logged.append((run.id, dict(outcome.params)))
        log_outcome(run, outcome, self.objectives)

    def finish(self, result: SearchResult) -> None:
        """Tag the runs of the best/Pareto trials, matched by their hyperparameters."""
        by_number = {trial.number: trial for trial in result.trials}
        tagged: dict[str, list[str]] = {}
        for number, tags in result_tags(result).items():
            for run_id, params in self.logged:
                if params == by_number[number].params:
                    tagged[run_id] = self.tags + tags
        tag_runs(self.wandb, self.settings.get("entity"), self.settings.get("project"), self.folder, tagged)
