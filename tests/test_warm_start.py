"""``warm_start``: points checked against the space, which ones are still to train, another study's best."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import read_trials

from hpsearch.errors import ConfigError
from hpsearch.objective import Objective, Objectives
from hpsearch.space import SearchSpace
from hpsearch.trials import TrialRecord, TrialState
from hpsearch.warm_start import check_points, pending_points, points_of_study, study_to_start_from

SPACE = SearchSpace.from_config(
    {
        "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
        "num_train_epochs": {"type": "int", "low": 1, "high": 3},
        "lr_scheduler_type": {"type": "categorical", "choices": ["linear", "cosine"]},
        "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2, "when": {"lr_scheduler_type": "linear"}},
    },
    {"short": "learning_rate * num_train_epochs <= 0.002"},
)


def test_points_are_typed_as_the_space_declares() -> None:
    points = check_points([{"learning_rate": 1e-4, "num_train_epochs": 2.0}, {"warmup_ratio": 0}], SPACE)
    assert points == ({"learning_rate": 1e-4, "num_train_epochs": 2}, {"warmup_ratio": 0.0})
    assert type(points[0]["num_train_epochs"]) is int and type(points[1]["warmup_ratio"]) is float


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([{"lr": 1e-4}], "warm_start.points[0].lr: not a parameter of the space; known: ['learning_rate'"),
        ([{}, {"learning_rate": 1.0}], "warm_start.points[0]: expected a mapping of parameters to values"),
        ([{"learning_rate": 1e-4}, {"learning_rate": 1.0}], "warm_start.points[1].learning_rate=1.0: outside"),
        ([{"num_train_epochs": 1.5}], "warm_start.points[0].num_train_epochs=1.5: outside space.num_train_epochs"),
        ([{"lr_scheduler_type": "constant"}], "warm_start.points[0].lr_scheduler_type='constant': outside"),
        (
            [{"lr_scheduler_type": "cosine", "warmup_ratio": 0.1}],
            "warm_start.points[0].warmup_ratio: inactive in this point (space.warmup_ratio.when: "
            "{'lr_scheduler_type': ('linear',)}); drop it",
        ),
        (
            [{"learning_rate": 1e-3, "num_train_epochs": 3}],
            "warm_start.points[0]: breaks constraints.short: learning_rate * num_train_epochs <= 0.002 fails",
        ),
        ({"learning_rate": 1e-4}, "warm_start.points: expected a list of points"),
    ],
)
def test_a_point_outside_the_space_is_a_config_error_naming_it(points: Any, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_points(points, SPACE)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def _record(number: int, params: dict[str, Any], state: TrialState, value: float | None = None) -> TrialRecord:
    return TrialRecord(number=number, state=state, params=params, values=None if value is None else [value])


def test_a_point_is_pending_until_a_trial_trains_it_and_again_when_that_trial_failed() -> None:
    points = [{"learning_rate": 1e-4}, {"learning_rate": 2e-4, "num_train_epochs": 1}]
    assert pending_points(points, []) == points
    running = _record(0, {"learning_rate": 1e-4, "num_train_epochs": 3}, TrialState.RUNNING)
    assert pending_points(points, [running]) == points[1:]  # partial: matched on its own keys
    failed = _record(1, {"learning_rate": 2e-4, "num_train_epochs": 1}, TrialState.FAIL)
    assert pending_points(points, [running, failed]) == points[1:]
    other = _record(2, {"learning_rate": 2e-4, "num_train_epochs": 2}, TrialState.COMPLETE, 0.5)
    assert pending_points(points, [running, failed, other]) == points[1:]


def test_another_studys_points_are_its_best_feasible_ones_best_first() -> None:
    records = [
        _record(0, {"learning_rate": 1e-4}, TrialState.COMPLETE, 0.6),
        _record(1, {"learning_rate": 2e-4}, TrialState.COMPLETE, 0.9),
        _record(2, {"learning_rate": 3e-4}, TrialState.FAIL),
        _record(3, {"learning_rate": 4e-4}, TrialState.COMPLETE, 0.7),
        TrialRecord(
            number=4,
            state=TrialState.COMPLETE,
            params={"learning_rate": 5e-4},
            values=[0.99],
            metrics={"constraint_c": 1.0},
        ),
    ]
    objectives = Objectives(items=(Objective("eval_accuracy", "maximize"),))
    assert points_of_study(records, objectives, 2) == [{"learning_rate": 2e-4}, {"learning_rate": 4e-4}]
    assert len(points_of_study(records, objectives, 10)) == 3


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"top_k": 2}, "warm_start.from: expected {study_name: NAME, storage: URL, top_k: K}"),
        ({"study_name": "a", "topk": 2}, "warm_start.from: unknown key(s) ['topk']"),
        ({"study_name": "a", "top_k": 0}, "warm_start.from.top_k: must be an integer >= 1 (got 0)"),
    ],
)
def test_a_bad_study_to_start_from_is_a_config_error(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        study_to_start_from(config, None)
    assert str(raised.value).startswith(message)


def test_a_study_starts_from_another_studys_best_trials(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """Two commands on one storage directory: the second study trains the first one's two best points first
    (on experiment=ci every trial ties, so its best are its first; ``points_of_study``'s ranking has a table)."""
    first = cli("experiment=ci", "study_name=last-month", "run_dir=" + str(tmp_path / "first"), timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    earlier = sorted(read_trials(tmp_path / "first"), key=lambda row: -float(row["objective"]))
    done = cli(
        "experiment=ci",
        "study_name=this-month",
        "seed=7",  # its own draws differ from the other study's
        "n_trials=3",
        "+warm_start.from={study_name: last-month, top_k: 2}",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_trials(tmp_path / "run")
    names = ["learning_rate", "per_device_train_batch_size", "hidden_dropout_prob"]
    assert [[row[n] for n in names] for row in rows[:2]] == [[row[n] for n in names] for row in earlier[:2]]
