"""The trial budget that one machine's worker processes share through a locked file."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUDGET_ENV = "HPSEARCH_BUDGET"  # set in a worker: the budget file it claims trials from


class TrialBudget:
    """The trials still to train, shared by this machine's workers through a locked file.

    A worker claims one before each trial and gives it back when the trial did not finish (a failed trial
    is retried), so together the workers train no more than the budget.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, path: Path, remaining: int) -> TrialBudget:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"remaining": remaining}))
        return cls(path)

    @contextmanager
    def _locked(self) -> Iterator[dict[str, int]]:
        with self.path.open("r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            state = json.loads(handle.read() or "{}")
            yield state
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(state))

    def claim(self) -> bool:
        with self._locked() as state:
            if state["remaining"] <= 0:
                return False
            state["remaining"] -= 1
            return True

    def give_back(self) -> None:
        with self._locked() as state:
            state["remaining"] += 1


def worker_budget() -> TrialBudget | None:
    """In a worker process: the budget it claims trials from; None elsewhere."""
    path = os.environ.get(BUDGET_ENV)
    return TrialBudget(Path(path)) if path else None
