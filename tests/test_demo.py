"""The README's first command: a real search on the embedded default (minutes, so marked slow)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support import read_trials


@pytest.mark.slow
@pytest.mark.solo
def test_default_demo_finds_a_learning_rate_that_beats_the_majority_class(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli("backend=optuna", timeout=900)
    assert done.returncode == 0, done.stderr
    rows = read_trials(tmp_path / "run")
    assert len(rows) == 4 and {row["state"] for row in rows} == {"COMPLETE"}
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["objective"] > 0.70  # the majority class scores 0.58 on this eval split
    assert "best trial" in done.stdout
