"""``hpsearch compare``: searches side by side, whatever backend ran them.

Inputs are run directories (``outputs/<study>/<time>``, holding ``trials.csv`` and ``config.yaml``), multirun
directories (every job in them), and optuna studies given as ``--study STORAGE STUDY_NAME`` (a storage URL, or
a journal file such as ``.hpsearch/<study>.log``). Every input
must optimise the same objectives. ``--out DIR`` receives:

- ``comparison.csv``, also printed: one row per search with its backend, method, trial counts, best
  objective(s) and hyperparameters, and total training time;
- ``report.html``, one self-contained page (images inlined, no script) with the PNGs beside it: the best
  objective so far against trial number and against wall time, parallel coordinates per search, optuna's
  fANOVA hyperparameter importance on each search's completed trials, and overlaid Pareto fronts for
  several objectives.

``--wandb ENTITY/PROJECT`` also builds a W&B report of the same searches (see ``hpsearch.wandb_report``).

    hpsearch compare outputs/smoke/2026-11-28_07-00-00 multirun/smoke/2026-11-28_08-00-00 --out comparison
    python -m hpsearch.compare --study postgresql://hp@db/hpsearch big-search --out comparison
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpsearch.errors import ConfigError, HPSearchError
from hpsearch.objective import Objective, Objectives, best_trial, pareto_front
from hpsearch.results import TRIALS_CSV
from hpsearch.space import SearchSpace
from hpsearch.trials import TrialRecord, TrialState

COMPARISON_CSV = "comparison.csv"
REPORT_HTML = "report.html"


@dataclass
class Search:
    """One search as the comparison sees it, read back from a run directory or an optuna study."""

    label: str
    study: str  # its study name: the W&B group of its runs
    backend: str
    method: str
    directions: list[str]
    objective_names: list[str]
    trials: list[TrialRecord]
    distributions: dict[str, Any] = field(default_factory=dict)  # optuna distributions of the searched parameters

    @property
    def objectives(self) -> Objectives:
        return Objectives((), tuple(Objective(n, d) for n, d in zip(self.objective_names, self.directions)))

    def count(self, state: TrialState) -> int:
        return sum(trial.state is state for trial in self.trials)


def read_run_dir(path: Path) -> Search:
    """A run directory's ``trials.csv``, typed through the search space in its ``config.yaml``."""
    from hpsearch.backends import get_backend
    from hpsearch.backends.optuna import distribution

    if not path.is_dir():
        raise ConfigError(f"compare: {path} is not a directory; give run directories (outputs/<study>/<time>)")
    table, config_file = path / TRIALS_CSV, path / "config.yaml"
    if not table.is_file() or not config_file.is_file():
        raise ConfigError(f"compare: {path} holds no search results ({TRIALS_CSV} and config.yaml); is it a run directory?")
    config = yaml.safe_load(config_file.read_text())
    space = SearchSpace.from_config(config["space"])
    objectives = Objectives.from_config(config["objective"])
    backend = get_backend(config["backend"]["name"])
    columns = ["objective"] if not objectives.is_multi else [f"objective.{name}" for name in objectives.names]
    trials = []
    with table.open() as handle:
        for row in csv.DictReader(handle):
            metrics = {k: float(v) for k, v in row.items() if k.startswith("eval_") and v not in ("", None)}
            values = [float(row[c]) for c in columns] if all(row.get(c) not in ("", None) for c in columns) else None
            trials.append(TrialRecord(
                number=int(row["number"]),
                state=row["state"],
                values=values,
                params=space.cast({name: row[name] for name in space.names if row.get(name) not in ("", None)}) if values else {},
                metrics=metrics,
                duration_s=_number(row.get("duration_s")),
                finished_at=_number(row.get("finished_at")),
            ))
    return Search(
        label=_label(path),
        study=str(config["study_name"]),
        backend=backend.name,
        method=backend.method(config["backend"]),
        directions=objectives.directions,
        objective_names=objectives.names,
        trials=trials,
        distributions={param.name: distribution(param) for param in space.tunable},
    )


def read_study(storage: str, study_name: str) -> Search:
    """An optuna study, whichever program wrote it (hpsearch names its objectives with ``set_metric_names``)."""
    import optuna

    from hpsearch.backends.optuna import open_storage, trial_record

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if Path(storage).is_file():  # a journal file, hpsearch's default storage (<storage_dir>/<study>.log)
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        opened = JournalStorage(JournalFileBackend(storage))
    elif "://" in storage:
        opened = open_storage(storage)
    else:
        raise ConfigError(f"compare --study: {storage!r} is neither a storage URL nor a journal file; give e.g. .hpsearch/<study>.log")
    try:
        study = optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        raise ConfigError(f"compare --study: no study {study_name!r} in {storage}") from None
    names = study.metric_names or (["objective"] if len(study.directions) == 1 else [f"objective{i}" for i in range(len(study.directions))])
    trials = [trial_record(trial, dict(trial.params)) for trial in study.get_trials(deepcopy=False) if trial.state.name != "WAITING"]
    distributions = {name: dist for trial in study.get_trials(deepcopy=False) for name, dist in trial.distributions.items()}
    return Search(
        label=study_name,
        study=study_name,
        backend="optuna",
        method=str(study.user_attrs.get("hpsearch_method", type(study.sampler).__name__)),
        directions=[direction.name.lower() for direction in study.directions],
        objective_names=list(names),
        trials=trials,
        distributions=distributions,
    )


def expand(path: Path) -> list[Path]:
    """A run directory, or every job of a multirun directory (its numbered subdirectories)."""
    if (path / TRIALS_CSV).is_file() or not path.is_dir():
        return [path]
    jobs = sorted((child for child in path.iterdir() if child.is_dir() and child.name.isdigit()), key=lambda p: int(p.name))
    return jobs or [path]


def check_same_objectives(searches: Sequence[Search]) -> None:
    first = searches[0]
    for other in searches[1:]:
        if (other.objective_names, other.directions) != (first.objective_names, first.directions):
            raise ConfigError(
                f"compare: {other.label} optimises {_objective_text(other)} but {first.label} optimises "
                f"{_objective_text(first)}; compare searches of the same objectives"
            )


def comparison_rows(searches: Sequence[Search]) -> list[dict[str, Any]]:
    rows = []
    for search in searches:
        objectives = search.objectives
        row: dict[str, Any] = {
            "search": search.label,
            "backend": search.backend,
            "method": search.method,
            "complete": search.count(TrialState.COMPLETE),
            "pruned": search.count(TrialState.PRUNED),
            "failed": search.count(TrialState.FAIL),
        }
        if objectives.is_multi:
            front = pareto_front(search.trials, objectives.directions)
            row["pareto_front"] = len(front)
            for index, (name, direction) in enumerate(zip(objectives.names, objectives.directions)):
                values = [trial.values[index] for trial in front]
                row[f"best {name}"] = (max if direction == "maximize" else min)(values) if values else None
            row["best hyperparameters"] = ""
        else:
            best = best_trial(search.trials, objectives)
            row[f"best {objectives.names[0]}"] = best.values[0] if best else None
            row["best hyperparameters"] = _params_text(best.params) if best else ""
        row["training time (s)"] = round(sum(trial.duration_s or 0.0 for trial in search.trials), 1)
        rows.append(row)
    return rows


def write_comparison_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    header = list(rows[0])
    cells = [[cell_text(row[column]) for column in header] for row in rows]
    widths = [max(len(column), *(len(line[index]) for line in cells)) for index, column in enumerate(header)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(header, widths))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def best_so_far(search: Search, by_time: bool = False) -> list[tuple[int, float, float]]:
    """(trial number, wall time since the search began, best objective so far) after each completed trial, in
    trial-number order, or with ``by_time`` in the order they ended (parallel trials end out of order).

    Wall time comes from the trials' end times where the backend keeps them, else from their summed
    training times."""
    objectives = search.objectives
    ordered = sorted(search.trials, key=lambda t: t.number)
    timed = bool(ordered) and all(t.finished_at is not None for t in ordered)
    if timed:
        start = min(t.finished_at - (t.duration_s or 0.0) for t in ordered)
        elapsed = [t.finished_at - start for t in ordered]
    else:
        running = 0.0
        elapsed = [running := running + (t.duration_s or 0.0) for t in ordered]
    steps = sorted(zip(elapsed, ordered), key=lambda pair: pair[0]) if by_time else list(zip(elapsed, ordered))
    points, best = [], None
    for seconds, trial in steps:
        if trial.is_complete and objectives.is_better(trial.values, [best] if best is not None else None):
            best = trial.values[0]
        if best is not None:
            points.append((trial.number, seconds, best))
    return points


def importance(search: Search) -> dict[str, float]:
    """optuna's fANOVA importance of each searched hyperparameter for the first objective, from the search's
    completed trials (any backend's: they are added to an in-memory optuna study)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    complete = [t for t in search.trials if t.is_complete]
    names = [name for name in search.distributions if len({repr(t.params.get(name)) for t in complete}) > 1]
    if len({t.values[0] for t in complete}) < 2 or not names:
        return {}  # no variation to attribute
    study = optuna.create_study(directions=search.directions)
    for trial in complete:
        study.add_trial(optuna.trial.create_trial(
            params={name: trial.params[name] for name in names},
            distributions={name: search.distributions[name] for name in names},
            values=trial.values,
        ))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return optuna.importance.get_param_importances(study, evaluator=evaluator, target=lambda t: t.values[0])


def plot_all(searches: Sequence[Search], out: Path) -> list[tuple[str, Path]]:
    """Every plot of the report, as (caption, PNG path)."""
    import matplotlib

    matplotlib.use("Agg")
    images = []
    if not searches[0].objectives.is_multi:
        images.append(("Best objective so far, by trial number", _plot_progress(searches, out / "best_by_trial.png", by_time=False)))
        images.append(("Best objective so far, by wall time", _plot_progress(searches, out / "best_by_time.png", by_time=True)))
    else:
        images.append(("Pareto fronts", _plot_fronts(searches, out / "pareto_fronts.png")))
    for index, search in enumerate(searches):
        images.append((f"Parallel coordinates: {search.label}", _plot_parallel(search, out / f"parallel_{index}.png")))
    images.append(("Hyperparameter importance (optuna fANOVA, first objective)", _plot_importance(searches, out / "importance.png")))
    return images


def _plot_progress(searches: Sequence[Search], path: Path, by_time: bool) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for search in searches:
        points = best_so_far(search, by_time)
        axes.step([p[1] if by_time else p[0] for p in points], [p[2] for p in points], where="post", marker="o",
                  markersize=3, label=f"{search.label} ({search.method})")
    axes.set_xlabel("wall time since the search began (s)" if by_time else "trial number")
    axes.set_ylabel(f"best {searches[0].objective_names[0]} so far ({searches[0].directions[0]})")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def _plot_parallel(search: Search, path: Path) -> Path:
    """One line per completed trial across the searched hyperparameters (scaled to [0, 1]; log scale where
    the space is), coloured by the first objective."""
    import matplotlib.pyplot as plt

    complete = [t for t in search.trials if t.is_complete]
    names = list(search.distributions)
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    if complete and names:
        columns = [_scaled([t.params.get(name) for t in complete], search.distributions[name]) for name in names]
        objective = [t.values[0] for t in complete]
        columns.append(_scaled(objective, None))
        low, high = min(objective), max(objective)
        colormap = plt.get_cmap("viridis")
        for row, value in enumerate(objective):
            shade = 0.5 if high == low else (value - low) / (high - low)
            axes.plot(range(len(columns)), [column[row] for column in columns], color=colormap(shade), alpha=0.8)
        axes.set_xticks(range(len(columns)), [*names, search.objective_names[0]], rotation=20, fontsize=8)
        ranges = [_range_text(search.distributions[name]) for name in names] + [(cell_text(low), cell_text(high))]
        for x, (bottom, top) in enumerate(ranges):
            axes.annotate(bottom, (x, 0), xytext=(3, -10), textcoords="offset points", fontsize=7)
            axes.annotate(top, (x, 1), xytext=(3, 4), textcoords="offset points", fontsize=7)
    axes.set_yticks([])
    axes.set_title(f"{search.label}: {len(complete)} completed trials", fontsize=10)
    return _save(figure, path)


def _plot_importance(searches: Sequence[Search], path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 1.2 + 0.9 * len(searches)), dpi=110)
    labels, offsets = [], 0.0
    for search in searches:
        importances = importance(search)
        for name, value in importances.items():
            axes.barh(offsets, value, color="#3d7ea6")
            labels.append((offsets, f"{search.label}: {name}"))
            offsets += 1
        if not importances:
            labels.append((offsets, f"{search.label}: none (the objective or the hyperparameters never varied)"))
            offsets += 1
        offsets += 0.5
    axes.set_yticks([y for y, _ in labels], [text for _, text in labels], fontsize=7)
    axes.set_xlabel("importance (share of the objective's variance)")
    axes.invert_yaxis()
    return _save(figure, path)


def _plot_fronts(searches: Sequence[Search], path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for search in searches:
        front = sorted(pareto_front(search.trials, search.directions), key=lambda t: t.values[0])
        axes.plot([t.values[0] for t in front], [t.values[1] for t in front], "-o", label=search.label)
    axes.set_xlabel(f"{searches[0].objective_names[0]} ({searches[0].directions[0]})")
    axes.set_ylabel(f"{searches[0].objective_names[1]} ({searches[0].directions[1]})")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def write_report(path: Path, rows: Sequence[dict[str, Any]], images: Sequence[tuple[str, Path]]) -> None:
    """One HTML file that opens offline: the table, and every plot inlined as a data URI (no script)."""
    header = "".join(f"<th>{html.escape(column)}</th>" for column in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell_text(row[c]))}</td>" for c in rows[0]) + "</tr>" for row in rows)
    figures = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()}">'
        f"<figcaption>{html.escape(caption)} ({image.name})</figcaption></figure>"
        for caption, image in images
    )
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%}"
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>hpsearch comparison</title><style>{style}</style></head>"
        f"<body><h1>hpsearch comparison</h1><table><tr>{header}</tr>{body}</table>{figures}</body></html>"
    )


def compare(
    run_dirs: Sequence[Path], studies: Sequence[tuple[str, str]], out: Path, wandb: str | None = None
) -> list[dict[str, Any]]:
    """Read every input, write comparison.csv, report.html and its PNGs to ``out`` (and with ``wandb``, a W&B
    report); the table's rows."""
    searches = [read_run_dir(path) for given in run_dirs for path in expand(given)]
    searches += [read_study(storage, name) for storage, name in studies]
    if not searches:
        raise ConfigError("compare: nothing to compare; give run directories or --study STORAGE_URL STUDY_NAME")
    check_same_objectives(searches)
    out.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(searches)
    write_comparison_csv(out / COMPARISON_CSV, rows)
    write_report(out / REPORT_HTML, rows, plot_all(searches, out))
    if wandb:
        from hpsearch.wandb_report import build_report

        print(f"W&B report: {build_report(wandb, searches, rows)}")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hpsearch compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories, or multirun directories")
    parser.add_argument("--study", nargs=2, action="append", default=[], metavar=("STORAGE_URL", "STUDY_NAME"),
                        help="an optuna study (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="folder for comparison.csv, report.html and the PNGs")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also build a W&B report of the searches' runs")
    args = parser.parse_args(argv)
    try:
        rows = compare(args.runs, [tuple(study) for study in args.study], args.out, args.wandb)
    except HPSearchError as error:
        print(f"hpsearch compare: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    print(format_table(rows))
    print(f"\n{args.out / COMPARISON_CSV}\n{args.out / REPORT_HTML}")


def _label(path: Path) -> str:
    """``study/time``, or ``study/time/job`` for a multirun job: short, and unique among the inputs."""
    return "/".join(path.resolve().parts[-3:] if path.name.isdigit() else path.resolve().parts[-2:])


def _objective_text(search: Search) -> str:
    return ", ".join(f"{n} ({d})" for n, d in zip(search.objective_names, search.directions))


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{name}={cell_text(value)}" for name, value in params.items())


def cell_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _number(text: str | None) -> float | None:
    return float(text) if text not in ("", None) else None


def _scaled(values: Sequence[Any], dist: Any) -> list[float]:
    """Values mapped to [0, 1] for a parallel-coordinates axis: categorical by choice index, log ranges in log."""
    choices = getattr(dist, "choices", None)
    if choices is not None:
        positions = [list(choices).index(value) if value in choices else 0 for value in values]
        return [p / max(1, len(choices) - 1) for p in positions]
    log = bool(getattr(dist, "log", False))
    numbers = [math.log(v) if log else float(v) for v in values]
    low = math.log(dist.low) if dist is not None and log else (dist.low if dist is not None else min(numbers))
    high = math.log(dist.high) if dist is not None and log else (dist.high if dist is not None else max(numbers))
    return [0.5 if high == low else (n - low) / (high - low) for n in numbers]


def _range_text(dist: Any) -> tuple[str, str]:
    """What the bottom and top of a parallel-coordinates axis stand for."""
    choices = getattr(dist, "choices", None)
    return (cell_text(choices[0]), cell_text(choices[-1])) if choices is not None else (cell_text(dist.low), cell_text(dist.high))


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


if __name__ == "__main__":
    main()
