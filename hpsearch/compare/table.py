"""The comparison table: one row per search, as CSV and as text."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpsearch.compare.searches import Search
from hpsearch.objective import best_trial, pareto_front
from hpsearch.trials import TrialState

COMPARISON_CSV = "comparison.csv"


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
            for index, (name, direction) in enumerate(zip(objectives.names, objectives.directions, strict=False)):
                values = [trial.complete_values[index] for trial in front]
                row[f"best {name}"] = (max if direction == "maximize" else min)(values) if values else None
            row["best hyperparameters"] = ""
        else:
            best = best_trial(search.trials, objectives)
            row[f"best {objectives.names[0]}"] = best.complete_values[0] if best else None
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
    lines = ["  ".join(column.ljust(width) for column, width in zip(header, widths, strict=False))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) for line in cells]
    return "\n".join(lines)


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{name}={cell_text(value)}" for name, value in params.items())


def cell_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
