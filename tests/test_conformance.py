"""One conformance suite for every backend: drive its native sampler and check every value it yields.

SigOpt samples through sigoptlite, SigOpt's own optimizer; W&B through W&B's own sweeps engine.
"""

from __future__ import annotations

import math
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import EVERY_BACKEND, random_search, read_trials, requires

from hpsearch.backends import BACKENDS, get_backend
from hpsearch.backends.base import SamplesNatively
from hpsearch.space import SearchSpace

SPACE = SearchSpace.from_config(
    {
        "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
        "offset": {"type": "float", "low": 0.05, "high": 0.25, "step": 0.1},
        "ratio": {"type": "float", "low": -1.0, "high": 1.0},
        "layers": {"type": "int", "low": 1, "high": 3},
        "width": {"type": "int", "low": 8, "high": 512, "log": True},
        "stride": {"type": "int", "low": 1, "high": 7, "step": 3},
        "batch": {"type": "categorical", "choices": [16, 32]},
        "scheduler": {"type": "categorical", "choices": ["linear", "cosine", None]},
        "flag": {"type": "categorical", "choices": [True, False]},
        "seed": {"type": "fixed", "value": 7},
    }
)
CONDITIONAL = SearchSpace.from_config(
    {
        "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
        "momentum": {"type": "float", "low": 0.0, "high": 0.9, "when": {"optimizer": "sgd"}},
        "scheduler": {"type": "categorical", "choices": ["linear", "cosine", "constant"]},
        "warmup_ratio": {
            "type": "float",
            "low": 0.0,
            "high": 0.2,
            "step": 0.1,
            "when": {"scheduler": ["linear", "cosine"]},
        },
        "warmup_floor": {"type": "int", "low": 0, "high": 2, "when": {"warmup_ratio": 0.0}},  # a chain of two
    }
)
N = 300
# Every backend's trial path: optuna in the default suite, the others with the slow tests
OPTUNA_NOW_OTHERS_SLOW = [
    param if param.values == ("optuna",) else pytest.param(*param.values, marks=[*param.marks, pytest.mark.slow])
    for param in EVERY_BACKEND
]
# SigOpt draws from sigoptlite, SigOpt's own optimizer, installed with --no-deps (see .ci/run)
BACKEND_NAMES = [
    pytest.param(name, marks=requires("sigoptlite") if name == "sigopt" else ()) for name in sorted(BACKENDS)
]


def draw(name: str, space: SearchSpace) -> list[dict[str, Any]]:
    backend = get_backend(name)
    assert isinstance(backend, SamplesNatively), f"backend={name} has no native sampler for the conformance suite"
    return backend.sample(space, N, seed=3)


@pytest.fixture(params=BACKEND_NAMES)
def samples(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return draw(request.param, SPACE)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_an_inactive_parameter_never_reaches_the_trial_and_an_active_one_always_does(backend: str) -> None:
    samples = draw(backend, CONDITIONAL)
    for sample in samples:
        assert ("momentum" in sample) == (sample["optimizer"] == "sgd"), sample
        assert ("warmup_ratio" in sample) == (sample["scheduler"] != "constant"), sample
        assert ("warmup_floor" in sample) == (sample.get("warmup_ratio") == 0.0), sample
        assert all(CONDITIONAL[name].admits(value) for name, value in sample.items()), sample
    assert {len(sample) for sample in samples} == {2, 3, 4, 5}  # every branch of the conditions is drawn


def test_every_value_is_typed_in_bounds_on_step_and_a_declared_choice(samples: list[dict[str, Any]]) -> None:
    assert len(samples) == N
    for sample in samples:
        assert set(sample) == set(SPACE.names)
        for param in SPACE:
            assert param.admits(sample[param.name]), (param, sample[param.name])


def test_closed_bounds_are_reached(samples: list[dict[str, Any]]) -> None:
    assert {s["layers"] for s in samples} == {1, 2, 3}
    assert {s["stride"] for s in samples} == {1, 4, 7}
    assert {round(s["dropout"], 6) for s in samples} == {0.0, 0.1, 0.2, 0.3}
    assert {round(s["offset"], 6) for s in samples} == {0.05, 0.15, 0.25}
    assert {s["scheduler"] for s in samples} == {"linear", "cosine", None}
    assert {s["flag"] for s in samples} == {True, False}


def test_log_scale_spreads_over_decades(samples: list[dict[str, Any]]) -> None:
    decades = Counter(math.floor(math.log10(s["lr"])) for s in samples)
    assert set(decades) == {-5, -4, -3, -2}, decades  # every decade of [1e-5, 1e-1] is drawn
    assert min(decades.values()) > N / 4 * 0.4  # roughly evenly: log-uniform, not uniform
    widths = [s["width"] for s in samples]
    assert sum(w < 64 for w in widths) > N / 4  # uniform on [8, 512] would put ~11% below 64


@pytest.mark.parametrize("backend", OPTUNA_NOW_OTHERS_SLOW)
def test_every_backends_trials_follow_the_space_and_train_with_the_users_trainer_class(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, backend: str
) -> None:
    """The trial path, not ``sample()``, from the command line, on every backend at once:

    - warm-start points come first and exactly, and every trial gets hyperparameters of its own (transformers'
      ``set_seed`` resets the global generators every trial, which a sampler drawing from them would replay);
    - no point that breaks a parameter constraint is trained, and an inactive parameter never reaches a trial;
    - ``trainer._target_``: hpsearch's per-trial hooks sit in front of the user's class (its ``compute_loss``).
    """
    log = tmp_path / "loss.log"
    search, env = random_search(backend)
    done = cli(
        "experiment=ci",
        "n_trials=4",
        "trainer._target_=helpers.LossLoggingTrainer",
        "+space.hidden_dropout_prob.when={per_device_train_batch_size: 16}",
        "+constraints.small_steps='learning_rate * per_device_train_batch_size <= 0.032'",
        "warm_start.points=[{learning_rate: 0.0005, per_device_train_batch_size: 32}, {learning_rate: 0.0008}]",
        *search,
        timeout=400,
        HPSEARCH_TEST_LOSS_LOG=str(log),
        **env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_trials(tmp_path / "run")
    first, second = rows[0], rows[1]
    assert (float(first["learning_rate"]), first["per_device_train_batch_size"]) == (0.0005, "32"), first
    assert float(second["learning_rate"]) == 0.0008, second  # partial: its batch size was sampled
    assert len({row["learning_rate"] for row in rows}) == len(rows), rows
    trained = [row for row in rows if row["state"] == "COMPLETE"]
    assert len(trained) == 4, rows
    for row in trained:
        assert float(row["learning_rate"]) * int(row["per_device_train_batch_size"]) <= 0.032, row
        assert (row["hidden_dropout_prob"] != "") == (row["per_device_train_batch_size"] == "16"), row
    for row in rows:
        if row["state"] == "FAIL":  # never trained: the point broke the constraint (sigoptlite keeps no error)
            assert float(row["learning_rate"]) * int(row["per_device_train_batch_size"]) > 0.032, row
            assert row["error"].startswith("infeasible: constraints.small_steps: ") or backend == "sigopt", row
    steps_per_trial = {16: 16, 32: 8}  # 256 examples, one epoch; plus one eval batch of 128
    expected = sum(steps_per_trial[int(row["per_device_train_batch_size"])] + 1 for row in trained)
    assert len(log.read_text().split()) == expected  # every step of every trained trial ran its compute_loss
