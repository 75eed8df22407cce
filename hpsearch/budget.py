"""The trial budget that one machine's worker processes share through a locked file."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BUDGET_ENV = "HPSEARCH_BUDGET"  # set in a worker: the budget file it claims trials from


class TrialBudget:
    """The trials still to train, shared by this machine's workers through a locked file.

    A worker claims one before each trial and settles it after: a finished trial uses it up, one that did not
    finish (a failed trial is retried) gives it back. The file remembers which process holds a claim, so that the
    launcher gives back exactly the claim of a worker that died mid-trial, and nothing for one that died between
    trials. Together the workers train no more than the budget.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, path: Path, remaining: int) -> TrialBudget:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"remaining": remaining, "held": []}))
        return cls(path)

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with self.path.open("r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            state = json.loads(handle.read() or "{}")
            yield state
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(state))

    def claim(self, pid: int | None = None) -> bool:
        """Take one trial for process ``pid`` (this one by default); False when none is left."""
        with self._locked() as state:
            if state["remaining"] <= 0:
                return False
            state["remaining"] -= 1
            state["held"].append(pid or os.getpid())
            return True

    def settle(self, finished: bool, pid: int | None = None) -> None:
        """The claimed trial of process ``pid`` ended: a finished one uses its claim up, another gives it back."""
        with self._locked() as state:
            self._release(state, pid or os.getpid(), give_back=not finished)

    def reclaim(self, pid: int) -> bool:
        """Process ``pid`` died: give back the claim it held, if any; whether it held one."""
        with self._locked() as state:
            return self._release(state, pid, give_back=True)

    @staticmethod
    def _release(state: dict[str, Any], pid: int, give_back: bool) -> bool:
        if pid not in state["held"]:
            return False
        state["held"].remove(pid)
        state["remaining"] += give_back
        return True


def worker_budget() -> TrialBudget | None:
    """In a worker process: the budget it claims trials from; None elsewhere."""
    path = os.environ.get(BUDGET_ENV)
    return TrialBudget(Path(path)) if path else None
