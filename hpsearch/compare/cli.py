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

``--wandb ENTITY/PROJECT`` also builds a W&B report of the same searches (see ``hpsearch.compare.wandb``).

    hpsearch compare outputs/smoke/2026-11-28_07-00-00 multirun/smoke/2026-11-28_08-00-00 --out comparison
    python -m hpsearch.compare --study postgresql://hp@db/hpsearch big-search --out comparison
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpsearch.compare.report import REPORT_HTML, plot_all, write_report
from hpsearch.compare.searches import check_same_objectives, expand, label_by_differences, read_run_dir, read_study
from hpsearch.compare.table import COMPARISON_CSV, comparison_rows, format_table, write_comparison_csv
from hpsearch.errors import ConfigError, HPSearchError


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
    label_by_differences(searches)
    out.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(searches)
    write_comparison_csv(out / COMPARISON_CSV, rows)
    write_report(out / REPORT_HTML, rows, plot_all(searches, out))
    if wandb:
        from hpsearch.compare.wandb import build_report

        print(f"W&B report: {build_report(wandb, searches, rows)}")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    summary = (__doc__ or "").splitlines()[0].replace("``", "")  # the docstring's first line, without its markup
    parser = argparse.ArgumentParser(prog="hpsearch compare", description=summary)
    parser.add_argument("runs", nargs="*", type=Path, help="run directories, or multirun directories")
    parser.add_argument(
        "--study",
        nargs=2,
        action="append",
        default=[],
        metavar=("STORAGE_URL", "STUDY_NAME"),
        help="an optuna study (repeatable)",
    )
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
