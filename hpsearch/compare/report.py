"""The report's plots and its offline HTML page."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.compare.searches import Search
from hpsearch.compare.table import cell_text
from hpsearch.objective import pareto_front

if TYPE_CHECKING:
    import optuna

REPORT_HTML = "report.html"


def best_so_far(search: Search, by_time: bool = False) -> list[tuple[int, float, float]]:
    """(trial number, wall time since the search began, best objective so far) after each completed trial, in
    trial-number order, or with ``by_time`` in the order they ended (parallel trials end out of order).

    Wall time comes from the trials' end times where the backend keeps them, else from their summed
    training times."""
    objectives = search.objectives
    ordered = sorted(search.trials, key=lambda t: t.number)
    ends = [t.finished_at for t in ordered]
    if ordered and all(end is not None for end in ends):
        start = min((end or 0.0) - (t.duration_s or 0.0) for end, t in zip(ends, ordered, strict=True))
        elapsed = [(end or 0.0) - start for end in ends]
    else:
        running = 0.0
        elapsed = [running := running + (t.duration_s or 0.0) for t in ordered]
    steps = (
        sorted(zip(elapsed, ordered, strict=False), key=lambda pair: pair[0])
        if by_time
        else list(zip(elapsed, ordered, strict=False))
    )
    points, best = [], None
    for seconds, trial in steps:
        if trial.is_complete and objectives.is_better(trial.complete_values, [best] if best is not None else None):
            best = trial.complete_values[0]
        if best is not None:
            points.append((trial.number, seconds, best))
    return points


def importance_evaluator() -> optuna.importance.BaseImportanceEvaluator:
    """fANOVA, not optuna 5's default PED-ANOVA: PED-ANOVA compares the best 10% of trials with the rest, and a
    comparison's searches have a handful of trials each, too few for it; fANOVA's forest works on those."""
    import optuna

    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def importance(search: Search) -> dict[str, float]:
    """optuna's importance (``importance_evaluator()``) of each searched hyperparameter for the first objective,
    from the search's completed trials (any backend's: they are added to an in-memory optuna study)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    complete = [t for t in search.trials if t.is_complete]
    names = [name for name in search.distributions if len({repr(t.params.get(name)) for t in complete}) > 1]
    if len({t.complete_values[0] for t in complete}) < 2 or not names:
        return {}  # no variation to attribute
    study = optuna.create_study(directions=search.directions)
    for trial in complete:
        study.add_trial(
            optuna.trial.create_trial(
                params={name: trial.params[name] for name in names},
                distributions={name: search.distributions[name] for name in names},
                values=trial.values,
            )
        )
    return optuna.importance.get_param_importances(
        study, evaluator=importance_evaluator(), target=lambda t: t.values[0]
    )


def plot_all(searches: Sequence[Search], out: Path) -> list[tuple[str, Path]]:
    """Every plot of the report, as (caption, PNG path)."""
    import matplotlib

    matplotlib.use("Agg")
    images = []
    if not searches[0].objectives.is_multi:
        images.append(
            (
                "Best objective so far, by trial number",
                _plot_progress(searches, out / "best_by_trial.png", by_time=False),
            )
        )
        images.append(
            ("Best objective so far, by wall time", _plot_progress(searches, out / "best_by_time.png", by_time=True))
        )
    else:
        images.append(("Pareto fronts", _plot_fronts(searches, out / "pareto_fronts.png")))
    for index, search in enumerate(searches):
        images.append((f"Parallel coordinates: {search.label}", _plot_parallel(search, out / f"parallel_{index}.png")))
    images.append(
        (
            f"Hyperparameter importance (optuna's {type(importance_evaluator()).__name__}, first objective)",
            _plot_importance(searches, out / "importance.png"),
        )
    )
    return images


def _plot_progress(searches: Sequence[Search], path: Path, by_time: bool) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5), dpi=110)
    for search in searches:
        points = best_so_far(search, by_time)
        axes.step(
            [p[1] if by_time else p[0] for p in points],
            [p[2] for p in points],
            where="post",
            marker="o",
            markersize=3,
            label=f"{search.label} ({search.method})",
        )
    if not by_time:  # trial numbers are whole: no ticks at 0.25 or 1.75
        from matplotlib.ticker import MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("wall time since the search began (s)" if by_time else "trial number")
    axes.set_ylabel(f"best {searches[0].objective_names[0]} so far ({searches[0].directions[0]})")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def _plot_parallel(search: Search, path: Path) -> Path:
    """One line per completed trial across the searched hyperparameters (scaled to [0, 1]; log scale where
    the space is), coloured by the first objective, with its colour bar."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    complete = [t for t in search.trials if t.is_complete]
    names = list(search.distributions)
    figure, axes = plt.subplots(figsize=(10, 5), dpi=110)
    if complete and names:
        columns = [_scaled([t.params.get(name) for t in complete], search.distributions[name]) for name in names]
        objective = [t.complete_values[0] for t in complete]
        columns.append(_scaled(objective, None))
        low, high = min(objective), max(objective)
        colormap = plt.get_cmap("viridis")
        for row, value in enumerate(objective):
            shade = 0.5 if high == low else (value - low) / (high - low)
            axes.plot(range(len(columns)), [column[row] for column in columns], color=colormap(shade), alpha=0.8)
        axes.set_xticks(range(len(columns)), [*names, search.objective_names[0]], rotation=20, fontsize=8)
        scale = ScalarMappable(cmap=colormap, norm=Normalize(low, high if high > low else low + 1e-12))
        figure.colorbar(scale, ax=axes, label=search.objective_names[0], pad=0.02)
        ranges = [_range_text(search.distributions[name]) for name in names] + [(cell_text(low), cell_text(high))]
        for x, (bottom, top) in enumerate(ranges):
            axes.annotate(bottom, (x, 0), xytext=(3, -10), textcoords="offset points", fontsize=7)
            axes.annotate(top, (x, 1), xytext=(3, 4), textcoords="offset points", fontsize=7)
    axes.set_yticks([])
    axes.set_title(f"{search.label}: {len(complete)} completed trials", fontsize=10)
    return _save(figure, path)


def _plot_importance(searches: Sequence[Search], path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 1.2 + 0.9 * len(searches)), dpi=110)
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

    figure, axes = plt.subplots(figsize=(10, 5), dpi=110)
    for search in searches:
        front = sorted(pareto_front(search.trials, search.directions), key=lambda t: t.complete_values[0])
        axes.plot(
            [t.complete_values[0] for t in front], [t.complete_values[1] for t in front], "-o", label=search.label
        )
    axes.set_xlabel(f"{searches[0].objective_names[0]} ({searches[0].directions[0]})")
    axes.set_ylabel(f"{searches[0].objective_names[1]} ({searches[0].directions[1]})")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def write_report(path: Path, rows: Sequence[dict[str, Any]], images: Sequence[tuple[str, Path]]) -> None:
    """One HTML file that opens offline: the table, and every plot inlined as a data URI (no script)."""
    header = "".join(f"<th>{html.escape(column)}</th>" for column in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell_text(row[c]))}</td>" for c in rows[0]) + "</tr>" for row in rows
    )
    figures = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()}">'
        f"<figcaption>{html.escape(caption)} ({image.name})</figcaption></figure>"
        for caption, image in images
    )
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}figure{margin:1.5em 0}img{width:100%;max-width:1100px}"
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>hpsearch comparison</title><style>{style}</style></head>"
        f"<body><h1>hpsearch comparison</h1><table><tr>{header}</tr>{body}</table>{figures}</body></html>"
    )


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
    return (
        (cell_text(choices[0]), cell_text(choices[-1]))
        if choices is not None
        else (cell_text(dist.low), cell_text(dist.high))
    )


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
