"""``python -m hpsearch.compare``: the same as ``hpsearch compare``."""

from hpsearch.compare.cli import main

main()
