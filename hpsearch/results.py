"""The files a search leaves in its run directory, from its trial records alone: trials.csv, best.json and its
YAML, pareto.json and .png."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from hpsearch.objective import Objectives, best_trial, pareto_front
from hpsearch.trials import SearchResult, TrialRecord

TRIALS_CSV = "trials.csv"
BEST_JSON = "best.json"
BEST_YAML = "best_hyperparameters.yaml"
PARETO_JSON = "pareto.json"
PARETO_PNG = "pareto.png"


def iso_time(timestamp: float) -> str:
    """A Unix time as ISO 8601 in UTC, to the millisecond (``trials.csv``'s ``finished_at``)."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="milliseconds")


def read_time(text: str | None) -> float | None:
    """``finished_at`` back as a Unix time: ISO 8601, or the plain number that hpsearch 0.3 wrote."""
    if text in ("", None):
        return None
    assert text is not None
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()


def _objective_columns(objectives: Objectives) -> list[str]:
    return ["objective"] if not objectives.is_multi else [f"objective.{name}" for name in objectives.names]


def write_trials_csv(path: Path, trials: Sequence[TrialRecord], param_names: list[str], objectives: Objectives) -> None:
    metric_names = sorted({name for trial in trials for name in trial.metrics})
    header = [
        "number",
        "state",
        *_objective_columns(objectives),
        *param_names,
        *metric_names,
        "duration_s",
        "finished_at",
        "error",
    ]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for trial in sorted(trials, key=lambda t: t.number):
            values: list[float | None] = [*trial.values] if trial.values else [None] * len(objectives.names)
            writer.writerow(
                [
                    trial.number,
                    trial.state.value,
                    *values,
                    *(trial.params.get(name) for name in param_names),
                    *(trial.metrics.get(name) for name in metric_names),
                    None if trial.duration_s is None else round(trial.duration_s, 3),
                    None if trial.finished_at is None else iso_time(trial.finished_at),
                    trial.error,
                ]
            )


def _summary(trial: TrialRecord, objectives: Objectives) -> dict[str, Any]:
    return {
        "trial": trial.number,
        "objective": dict(zip(objectives.names, trial.complete_values, strict=True))
        if objectives.is_multi
        else trial.complete_values[0],
        "hyperparameters": trial.params,
        "metrics": trial.metrics,
    }


def write_results(
    run_dir: Path,
    trials: Sequence[TrialRecord],
    param_names: list[str],
    objectives: Objectives,
    pareto_numbers: Sequence[int] | None = None,
) -> SearchResult:
    """Write trials.csv always; best.json and the best YAML (single objective) or pareto.json and
    pareto.png (several). ``pareto_numbers`` is the front as the backend itself reports it, if it does."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_trials_csv(run_dir / TRIALS_CSV, trials, param_names, objectives)
    if objectives.is_multi:
        if pareto_numbers is None:
            front = pareto_front(trials, objectives.directions)
        else:
            on_front = set(pareto_numbers)
            front = [t for t in trials if t.number in on_front and t.feasible]
        (run_dir / PARETO_JSON).write_text(
            json.dumps(
                [
                    {
                        "trial": t.number,
                        "objectives": dict(zip(objectives.names, t.complete_values, strict=True)),
                        "hyperparameters": t.params,
                    }
                    for t in front
                ],
                indent=2,
            )
        )
        plot_pareto(run_dir / PARETO_PNG, trials, front, objectives)
        return SearchResult(list(trials), None, front)
    best = best_trial(trials, objectives)
    if best is not None:
        (run_dir / BEST_JSON).write_text(json.dumps(_summary(best, objectives), indent=2))
        write_best_yaml(run_dir / BEST_YAML, best)
    return SearchResult(list(trials), best, [])


def write_best_yaml(path: Path, best: TrialRecord) -> None:
    header = (
        f"# Best trial {best.number}. Re-run exactly this configuration with the search's own overrides plus:\n"
        f"#   rerun={path.resolve()}\n"
    )
    path.write_text(header + yaml.safe_dump({"trial": best.number, "hyperparameters": best.params}, sort_keys=True))


def plot_pareto(
    path: Path, trials: Sequence[TrialRecord], front: Sequence[TrialRecord], objectives: Objectives
) -> None:
    """Completed trials on the first two objectives, the Pareto front highlighted and joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = [t for t in trials if t.is_complete]
    (x_name, y_name), (x_dir, y_dir) = objectives.names[:2], objectives.directions[:2]
    figure, axes = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    axes.scatter(
        [t.complete_values[0] for t in complete],
        [t.complete_values[1] for t in complete],
        c="#9aa5b1",
        label="trials",
        zorder=2,
    )
    ordered = sorted(front, key=lambda t: t.complete_values[0])
    axes.plot(
        [t.complete_values[0] for t in ordered],
        [t.complete_values[1] for t in ordered],
        "-o",
        c="#d1495b",
        label="Pareto front",
        zorder=3,
    )
    for trial in ordered:
        axes.annotate(
            str(trial.number),
            (trial.complete_values[0], trial.complete_values[1]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    arrow = {"maximize": "higher is better", "minimize": "lower is better"}
    axes.set_xlabel(f"{x_name} ({arrow[x_dir]})")
    axes.set_ylabel(f"{y_name} ({arrow[y_dir]})")
    axes.set_title(f"{len(front)} Pareto-optimal of {len(complete)} completed trials")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
