"""``save_best_model=true``: the best trial's trained model and tokenizer, kept in ``<run_dir>/best_model``.

Whichever process trained a trial offers its model once the trial completes (rank zero under DDP, each worker
process, each Ray worker); a file lock makes the compare-and-replace atomic among the processes of one run
directory, and the folder is swapped in whole, so a reader never sees half a model. ``best_model/hpsearch_best.json``
holds the objective, hyperparameters and eval metrics the saved model scored. For a LoRA search the folder
holds the adapter (``PeftModel.from_pretrained(base, folder)`` loads it), and ``base_model`` says which
``model_init`` built its base.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpsearch.objective import Objectives
from hpsearch.trials import TrialOutcome

SCORE_FILE = "hpsearch_best.json"


@dataclass(frozen=True)
class BestModelKeeper:
    folder: Path
    objectives: Objectives
    notes: Mapping[str, Any] = field(default_factory=dict)  # kept beside the score, e.g. an adapter's base model

    def offer(self, model: Any, tokenizer: Any, outcome: TrialOutcome) -> bool:
        """Save ``model`` if its trial beats the kept one; True when it replaced it."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with (self.folder.parent / f".{self.folder.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            kept = self.score()
            if kept is not None and not self.objectives.is_better(outcome.complete_values, kept["values"]):
                return False
            staging = self.folder.with_name(f".{self.folder.name}.{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            model.save_pretrained(staging)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
            score = {
                "values": outcome.values,
                "hyperparameters": outcome.params,
                "metrics": outcome.metrics,
                **self.notes,
            }
            (staging / SCORE_FILE).write_text(json.dumps(score, indent=2, default=str))
            retired = self.folder.with_name(f".{self.folder.name}.old")
            shutil.rmtree(retired, ignore_errors=True)  # left by a crash mid-swap
            if self.folder.exists():
                self.folder.rename(retired)
            staging.rename(self.folder)
            shutil.rmtree(retired, ignore_errors=True)
            return True

    def score(self) -> dict[str, Any] | None:
        """What the kept model scored, or None when none is kept yet."""
        path = self.folder / SCORE_FILE
        return json.loads(path.read_text()) if path.is_file() else None
