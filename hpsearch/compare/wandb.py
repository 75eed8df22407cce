"""``hpsearch compare --wandb ENTITY/PROJECT``: the compared searches as one W&B report (``wandb-workspaces``).

The searches' trials must be W&B runs in that project: ``backend=wandb``, or any backend with
``tracking=wandb``, which log each trial as a run whose group is the study name and tag the best run ``best``.
The report holds the comparison table; a panel grid with one runset per search (filtered on its group) and a
parallel-coordinates panel over the searched hyperparameters and the objective; and a run comparer over the
best run of each search. Credentials come from ``WANDB_API_KEY`` (and ``WANDB_BASE_URL`` for W&B Server).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hpsearch.compare.table import cell_text
from hpsearch.errors import BackendUnavailableError, ConfigError, first_line
from hpsearch.imports import require

if TYPE_CHECKING:
    from hpsearch.compare.searches import Search


def build_report(target: str, searches: Sequence[Search], rows: Sequence[dict[str, Any]]) -> str:
    """Save the report to ``ENTITY/PROJECT``; its URL."""
    entity, _, project = target.partition("/")
    if not entity or not project or "/" in project:
        raise ConfigError(
            f"compare --wandb {target}: give ENTITY/PROJECT, the project the searches logged their runs to"
        )
    require("wandb_workspaces", "compare --wandb", "wandb-workspaces", "wandb")
    import wandb_workspaces.reports.v2 as wr

    objective = searches[0].objective_names[0]
    names = list(dict.fromkeys(name for search in searches for name in search.distributions))
    studies = [search.study for search in searches]
    runsets = [
        wr.Runset(entity=entity, project=project, name=search.label, filters=f"Metric('Group') == '{search.study}'")
        for search in searches
    ]
    best_runs = wr.Runset(
        entity=entity,
        project=project,
        name="best run of each search",
        filters=f"Tags() in ['best'] and Metric('Group') in {studies!r}",
    )
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(name)) for name in names]
    columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(objective)))
    report = wr.Report(
        entity=entity,
        project=project,
        title="hpsearch comparison",
        description=f"{len(searches)} searches: " + ", ".join(studies),
        blocks=[
            wr.H1(text="Searches"),
            wr.MarkdownBlock(text=markdown_table(rows)),
            wr.PanelGrid(
                runsets=runsets,
                panels=[wr.ParallelCoordinatesPlot(columns=columns, title=f"hyperparameters and {objective}")],
            ),
            wr.H1(text="Best runs, side by side"),
            wr.PanelGrid(runsets=[best_runs], panels=[wr.RunComparer(diff_only="split")]),
        ],
    )
    try:
        report.save()
    except Exception as error:  # noqa: BLE001 - wandb raises many types for one unreachable or refusing server
        raise BackendUnavailableError(
            f"compare --wandb {target}: W&B did not save the report ({first_line(error)})"
        ) from None
    return str(report.url)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell_text(row[column]) for column in header) + " |" for row in rows]
    return "\n".join(lines)
