"""Ray Tune backend on a real local Ray runtime (each search in its own process)."""

from __future__ import annotations

import csv
import json
import os
import socket
import sys
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from ray import tune

from hpsearch.backends.ray import domain
from hpsearch.space import parse_param

TO_RAY = [
    ({"type": "float", "low": 1e-5, "high": 1e-3, "log": True}, tune.loguniform(1e-5, 1e-3)),
    ({"type": "float", "low": 0.0, "high": 0.5}, tune.uniform(0.0, 0.5)),
    ({"type": "float", "low": 0.0, "high": 0.3, "step": 0.1}, tune.quniform(0.0, 0.3, 0.1)),
    ({"type": "float", "low": 0.05, "high": 0.25, "step": 0.1}, tune.choice([0.05, 0.15000000000000002, 0.25])),
    ({"type": "int", "low": 1, "high": 3}, tune.randint(1, 4)),
    ({"type": "int", "low": 8, "high": 64, "log": True}, tune.lograndint(8, 65)),
    ({"type": "int", "low": 2, "high": 8, "step": 2}, tune.qrandint(2, 8, 2)),
    ({"type": "int", "low": 1, "high": 7, "step": 3}, tune.choice([1, 4, 7])),
    ({"type": "categorical", "choices": ["a", None]}, tune.choice(["a", None])),
]


def _describe(value: object) -> tuple:
    """Ray domains do not compare by value; compare their class, bounds, sampler and quantisation."""
    sampler = getattr(value, "sampler", None)
    return (
        type(value).__name__, getattr(value, "lower", None), getattr(value, "upper", None),
        getattr(value, "categories", None), type(sampler).__name__, getattr(sampler, "q", None),
        type(getattr(sampler, "sampler", None)).__name__,
    )


@pytest.mark.parametrize(("spec", "expected"), TO_RAY)
def test_space_maps_to_exact_ray_domain(spec: dict, expected: object) -> None:
    assert _describe(domain(parse_param("p", spec))) == _describe(expected)


def test_fixed_maps_to_its_value() -> None:
    assert domain(parse_param("p", {"type": "fixed", "value": 3})) == 3


def test_smoke_search_on_a_local_ray_runtime(cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    done = cli("experiment=smoke", "backend=ray", "n_trials=3", HOME=str(tmp_path / "home"))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "run" / "trials.csv").open()))
    assert [row["state"] for row in rows] == ["COMPLETE"] * 3
    assert (tmp_path / "run" / "ray" / "smoke").is_dir()  # Ray's results live under the run directory
    assert not (tmp_path / "home" / "ray_results").exists()
    assert (tmp_path / "run" / "best.json").is_file()


def test_joins_an_existing_ray_cluster(cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    ray_cli = str(Path(sys.executable).parent / "ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = [ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
             "--include-dashboard=false", "--disable-usage-stats"]
    # loopback only, and no auth token to hand over: a throw-away cluster for this test
    local = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    subprocess.run(start, check=True, capture_output=True, timeout=120, env=local)
    try:
        done = cli("experiment=smoke", "backend=ray", "n_trials=2", f"backend.address=127.0.0.1:{port}",
                   RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled")
        assert done.returncode == 0, done.stderr[-3000:]
        assert [row["state"] for row in csv.DictReader((tmp_path / "run" / "trials.csv").open())] == ["COMPLETE"] * 2
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120, env=local)


def test_asha_stops_weak_trials_early(cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    done = cli(
        "experiment=smoke", "backend=ray", "n_trials=4", "backend.scheduler=asha", "training.eval_strategy=steps",
        "training.eval_steps=2", "++backend.scheduler_kwargs={max_t:8,grace_period:1,reduction_factor:2}",
        "backend.resources_per_trial.cpu=2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    states = [row["state"] for row in csv.DictReader((tmp_path / "run" / "trials.csv").open())]
    assert len(states) == 4 and "PRUNED" in states and "COMPLETE" in states


def test_scheduler_without_in_training_evaluation_is_rejected(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    done = cli("experiment=smoke", "backend=ray", "backend.scheduler=asha")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "hpsearch: error: backend.scheduler=asha: early stopping needs in-training evaluation; "
        "set training.eval_strategy=steps and training.eval_steps=N"
    )


def test_more_gpu_than_the_runtime_has_is_an_error_not_a_hang(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    done = cli("experiment=smoke", "backend=ray", "++backend.resources_per_trial.gpu=0.5", timeout=120)
    assert done.returncode == 2
    assert "backend.resources_per_trial.gpu=0.5: the Ray runtime has only 0" in done.stderr


def test_pbt_exploits_checkpoints_and_perturbs_hyperparameters(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli(
        "experiment=smoke", "backend=ray", "n_trials=2", "backend.scheduler=pbt", "training.eval_strategy=steps",
        "training.eval_steps=2", "training.num_train_epochs=2", "++backend.scheduler_kwargs={quantile_fraction:0.5,synch:true}",
        "~space", "+space={learning_rate:{type:float,low:1e-4,high:1e-2,log:true}}", "objective=loss", timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "run" / "trials.csv").open()))
    assert [row["state"] for row in rows] == ["COMPLETE", "COMPLETE"]
    exploits = (tmp_path / "run" / "ray" / "smoke" / "pbt_global.txt").read_text().splitlines()
    assert exploits  # Ray cloned a checkpoint into the weaker trial at least once
    lrs = {json.loads(line)[4]["learning_rate"] for line in exploits} | {json.loads(line)[5]["learning_rate"] for line in exploits}
    assert len(lrs) >= 2  # ... and gave it a perturbed learning rate
