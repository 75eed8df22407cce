"""Study names of Hydra multirun jobs: each job searches its own study, named from what it sweeps."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

from hpsearch.config import SECRET_KEY, redact_text

# Top-level keys that change how a search runs or where it is kept, not what it searches: a job sweeping them
# (or a rerun that raises n_trials) resumes the same study.
NOT_THE_SEARCH = frozenset(
    {
        "n_trials",
        "progress",
        "storage",
        "storage_dir",
        "results_only",
        "workers",
        "workers_per_gpu",
        "max_failures",
        "max_worker_restarts",
        "array_task",
        "save_best_model",
        "rerun",
        "run_dir",
        "study_name",
        "tracking",
    }
)
READABLE_CHARS = 60  # of the name's readable part; the hash tells the rest apart
_UNSAFE = re.compile(r"[^\w.,=+-]")  # study names become file names (the journal file): nothing else


def swept_keys(command_line: Sequence[str]) -> set[str]:
    """The keys a multirun command sweeps (``seed=1,2``, ``choice(...)``, ``range(...)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    keys = set()
    for arg in command_line:
        if arg.startswith("-"):
            continue
        try:
            override = parser.parse_override(arg)
        except HydraException:
            continue
        if override.is_sweep_override():
            keys.add(override.key_or_group)
    return keys


def _changes_the_search(key: str) -> bool:
    top = re.split(r"[./]", key, maxsplit=1)[0]
    return top not in NOT_THE_SEARCH and top != "hydra" and not SECRET_KEY.search(key)


def job_study_name(study_name: str, job_overrides: Iterable[str], swept: set[str]) -> str:
    """``study_name`` plus a short readable part and a hash of the swept values that change the search
    (``smoke-seed=2-1f3a9c04``); ``study_name`` alone when nothing such is swept. Secrets never enter it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parts = []
    for text in job_overrides:
        override = parser.parse_override(text)
        key = override.key_or_group
        if key in swept and _changes_the_search(key):
            parts.append(redact_text(f"{key}={text.split('=', 1)[1]}"))
    if not parts:
        return study_name
    described = ",".join(sorted(parts))
    digest = hashlib.sha256(described.encode()).hexdigest()[:8]
    readable = _UNSAFE.sub("_", described)[:READABLE_CHARS]
    return f"{study_name}-{readable}-{digest}"
