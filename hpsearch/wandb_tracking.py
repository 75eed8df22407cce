"""W&B run logging shared by the W&B sweeps backend and ``tracking=wandb`` (every other backend).

One W&B run per trial, grouped by study (``group=study_name``, ``job_type="trial"``); the objective is logged
under its metric name with ``define_metric`` so the run summary holds the best value; after the search the
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
from hpsearch.trials import SearchResult, TrialOutcome, TrialRecord, TrialState

STATE_KEY = "hpsearch/state"
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
    """Log one trial's result into an open W&B run, and finish it (failed trials exit non-zero)."""
    for item in objectives.items:
        run.define_metric(item.metric, summary="max" if item.direction == "maximize" else "min")
    values = dict(zip(objectives.names, outcome.values or []))
    run.log({**outcome.metrics, **values})
    run.summary[STATE_KEY] = outcome.state.value
    run.summary["hpsearch/duration_s"] = outcome.duration_s
    if outcome.error:
        run.summary["hpsearch/error"] = outcome.error[:400]
    run.finish(exit_code=0 if outcome.state is TrialState.COMPLETE else 1)


def tag_runs(wandb: Any, settings: Mapping[str, Any], folder: Path, tagged: Mapping[str, list[str]]) -> None:
    """Set tags on finished runs by resuming them, the W&B way of editing a run (works offline too).

    ``tagged`` holds each run's full tag list: an offline resume cannot see the tags the run already has.
    """
    for run_id, tags in tagged.items():
        run = wandb.init(
            id=run_id, resume="allow", entity=settings.get("entity"), project=settings.get("project"), dir=str(folder),
        )
        run.tags = tuple(sorted(set(run.tags or ()) | set(tags)))
        run.finish()


def result_tags(result: SearchResult) -> dict[int, list[str]]:
    """Trial number -> tags to add: ``best`` for the best trial, ``pareto`` for each Pareto trial."""
    tags: dict[int, list[str]] = {}
    if result.best is not None:
        tags[result.best.number] = ["best"]
    for trial in result.pareto:
        tags.setdefault(trial.number, []).append("pareto")
    return tags


class WandbTracker:
    """A trial-loop listener logging every trial of any backend as one W&B run."""

    def __init__(self, settings: Mapping[str, Any], study_name: str, backend: str, objectives: Objectives, run_dir: Path) -> None:
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
        tag_runs(self.wandb, self.settings, self.folder, tagged)


def records_from_runs(runs: list[Any], objectives: Objectives, names: list[str], cast: Any) -> list[TrialRecord]:
    """Trial records from W&B runs (offline ``RunFile``s or public-API runs), oldest first."""
    records = []
    for number, run in enumerate(runs):
        summary = dict(run.summary)
        state = TrialState(summary.get(STATE_KEY, TrialState.RUNNING.value))
        records.append(
            TrialRecord(
                number=number,
                state=state,
                values=[_summary_value(summary[n]) for n in objectives.names] if state is TrialState.COMPLETE else None,
                params=cast({k: v for k, v in dict(run.config).items() if k in names}),
                metrics={k: _summary_value(v) for k, v in summary.items() if k.startswith("eval_")},
                duration_s=summary.get("hpsearch/duration_s"),
                key=getattr(run, "run_id", None) or run.id,
                finished_at=summary.get("_timestamp"),
            )
        )
    return records


def _summary_value(value: Any) -> float:
    """A ``define_metric(summary="max"|"min")`` summary is stored as ``{"max": v}`` / ``{"min": v}``."""
    if isinstance(value, Mapping):
        value = value.get("max", value.get("min"))
    return float(value)
