"""``hpsearch compare``: searches side by side, whatever backend ran them (see ``cli``)."""

from hpsearch.compare.cli import compare, main
from hpsearch.compare.report import best_so_far, importance
from hpsearch.compare.searches import Search, read_run_dir, read_study

__all__ = ["Search", "best_so_far", "compare", "importance", "main", "read_run_dir", "read_study"]
