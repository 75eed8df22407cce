"""W&B: the real wandb client against a local stand-in of W&B's GraphQL API, runs written offline
and read back from their run files."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from standins.wandb_server import WandbStandIn
from support import read_trials, wandb_env

from hpsearch.backends.wandb import sweep_parameter
from hpsearch.space import parse_param
from hpsearch.wandb_files import RunFile, read_runs

TO_SWEEP = [
    (
        {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
        {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-3},
    ),
    ({"type": "float", "low": 0.0, "high": 0.5}, {"distribution": "uniform", "min": 0.0, "max": 0.5}),
    (
        {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
        {"distribution": "q_uniform", "min": 0.0, "max": 0.3, "q": 0.1},
    ),
    ({"type": "float", "low": 0.05, "high": 0.25, "step": 0.1}, {"values": [0.05, 0.15000000000000002, 0.25]}),
    ({"type": "int", "low": 1, "high": 3}, {"distribution": "int_uniform", "min": 1, "max": 3}),
    (
        {"type": "int", "low": 8, "high": 64, "log": True},
        {"distribution": "q_log_uniform_values", "min": 8, "max": 64, "q": 1},
    ),
    ({"type": "int", "low": 1, "high": 7, "step": 3}, {"values": [1, 4, 7]}),
    ({"type": "categorical", "choices": [16, "a", None]}, {"values": [16, "a", None]}),
    ({"type": "fixed", "value": 3}, {"value": 3}),
]


@pytest.mark.parametrize(("spec", "expected"), TO_SWEEP)
def test_space_maps_to_exact_sweep_parameter(spec: dict, expected: dict) -> None:
    assert sweep_parameter(parse_param("p", spec)) == expected


def _trial_runs(folder: Path) -> list[RunFile]:
    return [run for run in read_runs(folder) if run.summary.get("hpsearch/state")]


def _tags(folder: Path) -> dict[str, list[str]]:
    """Each run id's tags after every resume (the last file written for an id wins)."""
    tags: dict[str, list[str]] = {}
    for run in read_runs(folder):
        tags[run.run_id] = run.tags
    return tags


def test_sweep_runs_one_wandb_run_per_trial_and_reads_results_back(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    done = cli("experiment=ci", "backend=wandb", "backend.method=random", "n_trials=3", **wandb_env(wandb_server))
    assert done.returncode == 0, done.stderr[-3000:]

    ((sweep_name, sweep),) = wandb_server.sweeps.items()
    assert sweep["config"]["metric"] == {
        "name": "eval_accuracy",
        "goal": "maximize",
    }  # the custom objective, not eval/loss
    assert sweep["config"]["parameters"]["learning_rate"] == {
        "distribution": "log_uniform_values",
        "min": 1e-4,
        "max": 1e-2,
    }
    # One suggestion per trial. Heartbeats while a run is going hand out nothing, and a loaded machine sends more.
    assert len(wandb_server.issued[sweep_name]) == 3

    runs = _trial_runs(tmp_path / "run" / "wandb")
    assert len(runs) == 3 and len({run.run_id for run in runs}) == 3  # exactly one run per trial
    rows = read_trials(tmp_path / "run")
    for run, row in zip(runs, rows, strict=False):
        assert (run.group, run.job_type, run.sweep_id) == ("ci", "trial", sweep_name)
        assert set(run.config) == {"learning_rate", "per_device_train_batch_size", "hidden_dropout_prob"}
        assert run.config["learning_rate"] == float(row["learning_rate"])
        assert run.summary["eval_accuracy"] == float(row["objective"])  # the trial's own objective
        assert run.history[-1]["eval_accuracy"] == float(row["objective"])
        assert "assignments" not in run.config and "metric" not in run.config

    best = json.loads((tmp_path / "run" / "best.json").read_text())
    best_run = runs[best["trial"]].run_id
    assert _tags(tmp_path / "run" / "wandb")[best_run] == ["best", "ci"]


def test_warm_start_points_are_the_served_sweeps_first_runs(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    """A sweep cannot queue a point: hpsearch trains each one itself, as a run that joins the sweep, and the
    server's own suggestions come after."""
    done = cli(
        "experiment=ci",
        "backend=wandb",
        "backend.method=random",
        "n_trials=3",
        "warm_start.points=[{learning_rate: 0.0005, per_device_train_batch_size: 32}, {learning_rate: 0.0008}]",
        **wandb_env(wandb_server),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ((sweep_name, _),) = wandb_server.sweeps.items()
    assert len(wandb_server.issued[sweep_name]) == 1  # the third trial only
    runs = sorted(_trial_runs(tmp_path / "run" / "wandb"), key=lambda run: run.summary["_timestamp"])
    assert [run.sweep_id for run in runs] == [sweep_name] * 3  # the sweep_id setting: the server counts them in
    assert (runs[0].config["learning_rate"], runs[0].config["per_device_train_batch_size"]) == (0.0005, 32)
    assert runs[1].config["learning_rate"] == 0.0008 and "hidden_dropout_prob" in runs[1].config  # filled in
    rows = read_trials(tmp_path / "run")
    assert [float(row["learning_rate"]) for row in rows[:2]] == [0.0005, 0.0008]


@pytest.mark.slow
def test_rerun_joins_the_same_sweep(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    env = {**wandb_env(wandb_server), "WANDB_DIR": str(tmp_path / "wandb-files")}
    assert cli("experiment=ci", "backend=wandb", "backend.method=random", "n_trials=2", **env).returncode == 0
    again = cli("experiment=ci", "backend=wandb", "backend.method=random", "n_trials=3", **env)
    assert again.returncode == 0, again.stderr[-3000:]
    (issued,) = wandb_server.issued.values()
    assert len(issued) == 3  # one sweep, and one more suggestion for the one more trial
    assert len(read_trials(tmp_path / "run")) == 3


@pytest.mark.slow
def test_grid_sweep_stops_when_the_grid_is_exhausted(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    done = cli(
        "experiment=ci",
        "backend=wandb",
        "backend.method=grid",
        "n_trials=10",
        "~space",
        "+space={per_device_train_batch_size:{type:categorical,choices:[16,32]}}",
        **wandb_env(wandb_server),
    )
    assert done.returncode == 6, done.stderr[-3000:]
    assert (
        "hpsearch: error: n_trials=10: the search ended with 2 finished trials: the backend has no more" in done.stderr
    )
    rows = read_trials(tmp_path / "run")
    assert sorted(row["per_device_train_batch_size"] for row in rows) == ["16", "32"]


def test_tracking_logs_optuna_trials_as_runs_and_tags_the_best(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    done = cli("experiment=ci", "tracking=wandb", "n_trials=3", **wandb_env(wandb_server))
    assert done.returncode == 0, done.stderr[-3000:]
    runs = _trial_runs(tmp_path / "run" / "wandb")
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert len(runs) == 3
    assert {(run.group, run.job_type) for run in runs} == {("ci", "trial")}
    best_runs = [run for run in runs if run.config == best["hyperparameters"]]
    assert len(best_runs) == 1
    assert _tags(tmp_path / "run" / "wandb")[best_runs[0].run_id] == ["best", "optuna"]
    assert wandb_server.operations == []  # offline tracking never calls the server


@pytest.mark.slow
def test_tracking_logs_ray_trials_from_the_driver(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli(
        "experiment=ci", "backend=ray", "tracking=wandb", "n_trials=2", WANDB_MODE="offline", WANDB_SILENT="true"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = _trial_runs(tmp_path / "run" / "wandb")
    assert len(runs) == 2 and {run.tags[0] for run in runs} == {"ray"}
    rows = read_trials(tmp_path / "run")
    assert sorted(run.config["learning_rate"] for run in runs) == sorted(float(row["learning_rate"]) for row in rows)


def test_unreachable_server_fails_within_seconds(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    started = time.monotonic()
    done = cli("experiment=ci", "backend=wandb", WANDB_BASE_URL="http://127.0.0.1:9", WANDB_API_KEY="k" * 40)
    assert time.monotonic() - started < 60  # start-up aside, at once: W&B's client alone retries for minutes
    assert done.returncode == 3  # backend unavailable
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("hpsearch: error: backend=wandb: cannot use the W&B API at http://127.0.0.1:9")
    )
    assert "Traceback" not in done.stderr


def test_several_objectives_are_rejected(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    done = cli(
        "experiment=ci",
        "backend=wandb",
        "objective.objectives=[{metric:eval_accuracy,direction:maximize},{metric:eval_loss,direction:minimize}]",
    )
    assert done.returncode == 2
    assert "backend=wandb: a W&B sweep optimises a single metric" in done.stderr


def _all_run_file_bytes(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in folder.rglob("*") if path.is_file())


def test_no_secret_reaches_the_wandb_run_files(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    """A password typed on the command line is not in what W&B would upload: command line, config, metadata."""
    done = cli(
        "experiment=ci",
        "backend=wandb",
        "backend.method=random",
        "n_trials=1",
        "storage=postgresql://bob:hunter2@127.0.0.1:9/studies",
        '+data.notes="api_token=sk-live-42"',
        **wandb_env(wandb_server),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    files = _all_run_file_bytes((tmp_path / "run" / "wandb").resolve())
    assert b".wandb" in b"".join(p.name.encode() for p in (tmp_path / "run" / "wandb").resolve().rglob("*"))
    assert b"hunter2" not in files and b"sk-live-42" not in files
    assert b"postgresql://bob:***@127.0.0.1:9/studies" in files  # the command line is recorded, masked


@pytest.mark.slow
def test_offline_search_resumes_from_a_new_run_directory(tmp_path: Path, wandb_server: WandbStandIn) -> None:
    """Two separate commands, each with its own timestamped run directory, as a user runs them."""
    from support import run_cli

    args = ["experiment=ci", "backend=wandb", "backend.method=random"]
    first = run_cli([*args, "n_trials=2", f"hydra.run.dir={tmp_path / 'first'}"], tmp_path, **wandb_env(wandb_server))
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli([*args, "n_trials=3", f"hydra.run.dir={tmp_path / 'second'}"], tmp_path, **wandb_env(wandb_server))
    assert second.returncode == 0, second.stderr[-3000:]
    (issued,) = wandb_server.issued.values()
    assert len(issued) == 3  # one more trial, not three
    rows = read_trials(tmp_path / "second")
    assert [row["state"] for row in rows] == ["COMPLETE"] * 3
    first_rows = read_trials(tmp_path / "first")
    assert rows[:2] == first_rows


def test_offline_mode_checks_no_server_reachability(
    cli: Callable[..., subprocess.CompletedProcess[str]], wandb_server: WandbStandIn
) -> None:
    """hpsearch's own reachability probe is for online runs only; offline, only the sweep's own calls happen."""
    done = cli("experiment=ci", "backend=wandb", "backend.method=random", "n_trials=1", **wandb_env(wandb_server))
    assert done.returncode == 0, done.stderr[-3000:]
    assert wandb_server.silent_connections == 0  # no bare connect-and-close probe


def test_remembered_sweep_unknown_to_the_server_says_where_it_came_from(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, wandb_server: WandbStandIn
) -> None:
    state = tmp_path / ".hpsearch" / "wandb-ci.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"sweep_id": "gone123"}))
    done = cli("experiment=ci", "backend=wandb", "n_trials=1", **wandb_env(wandb_server))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"hpsearch: error: backend.sweep_id: 'gone123', remembered for study_name=ci in {state}, is unknown to "
        "the wandb server; delete that file or pick another study_name to start afresh"
    )


@pytest.mark.slow
def test_offline_sweep_without_a_server_runs_wandbs_engine_locally(tmp_path: Path) -> None:
    """WANDB_MODE=offline and no WANDB_BASE_URL: no network at all (here, any attempt to reach api.wandb.ai
    fails), suggestions from W&B's own engine in-process, and a second command resumes the same sweep."""
    import sys

    from support import cli_env

    env = {
        k: v
        for k, v in cli_env(WANDB_MODE="offline", WANDB_SILENT="true").items()
        if k not in ("WANDB_BASE_URL", "WANDB_API_KEY")
    }

    def search(n_trials: int, name: str) -> subprocess.CompletedProcess[str]:
        args = [
            sys.executable,
            "-m",
            "hpsearch",
            "experiment=ci",
            "backend=wandb",
            "backend.method=bayes",
            f"n_trials={n_trials}",
            f"hydra.run.dir={tmp_path / name}",
        ]
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False)

    first = search(2, "first")
    assert first.returncode == 0, first.stderr[-3000:]
    second = search(3, "second")
    assert second.returncode == 0, second.stderr[-3000:]
    rows = read_trials(tmp_path / "second")
    assert [row["state"] for row in rows] == ["COMPLETE"] * 3
    assert rows[:2] == read_trials(tmp_path / "first")
    runs = _trial_runs((tmp_path / "second" / "wandb").resolve())
    assert len(runs) == 3 and len({run.summary["hpsearch/local_sweep"] for run in runs}) == 1
    best = json.loads((tmp_path / "second" / "best.json").read_text())
    assert "best" in _tags((tmp_path / "second" / "wandb").resolve())[runs[best["trial"]].run_id]


LOCAL_RANDOM_SWEEP = ["experiment=ci", "backend=wandb", "backend.method=random"]


def offline_without_server(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """W&B's own engine in the process: offline, and no server named (the environment may name one)."""
    for name in ("WANDB_BASE_URL", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}


@pytest.mark.slow
def test_offline_random_sweep_suggests_new_hyperparameters_for_every_trial(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W&B's engine draws from Python's ``random``, which transformers' ``set_seed`` resets before every trial:
    here in two worker processes at once (in one process: ``test_conformance``'s trial-path test)."""
    done = cli(*LOCAL_RANDOM_SWEEP, "n_trials=4", "workers=2", **offline_without_server(monkeypatch))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_trials(tmp_path / "run")
    points = {(row["learning_rate"], row["per_device_train_batch_size"], row["hidden_dropout_prob"]) for row in rows}
    assert len(rows) == 4 and len(points) == 4, rows


@pytest.mark.slow
def test_objective_is_the_last_evaluation_not_the_best_of_the_in_training_ones(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With in-training evaluation every evaluation is logged under the objective's name; the recorded objective is
    still the trial's last one (``objective.select=last``), as every other backend records it."""
    done = cli(
        *LOCAL_RANDOM_SWEEP,
        "objective=loss",
        "n_trials=2",
        "training.eval_strategy=steps",
        "training.eval_steps=2",
        "training.num_train_epochs=2",
        "space.learning_rate.low=0.03",
        "space.learning_rate.high=0.1",  # high rates: the loss goes up and down
        **offline_without_server(monkeypatch),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = _trial_runs(tmp_path / "run" / "wandb")
    rows = read_trials(tmp_path / "run")
    assert len(runs) == len(rows) == 2
    for run, row in zip(runs, rows, strict=True):
        evaluations = [entry["eval_loss"] for entry in run.history if "eval_loss" in entry]
        assert len(evaluations) >= 3  # the in-training ones and the final one
        assert float(row["objective"]) == evaluations[-1]
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["objective"] == min(float(row["objective"]) for row in rows)


def test_a_finished_offline_run_is_read_back_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run.finish()`` returns before W&B's service has flushed an offline run file; the results and the next
    sweep suggestion read the files right after, so every finished run must already be whole there."""
    import wandb

    from hpsearch.tracking.wandb import finish_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for index in range(20):
        run = wandb.init(project="flush", dir=str(tmp_path), reinit="create_new", config={"index": index})
        run.log({"eval_loss": 0.5})
        run.summary["hpsearch/state"] = "COMPLETE"
        finish_run(run)
        runs = read_runs(tmp_path / "wandb")
        assert len(runs) == index + 1
        assert all(run.exit_code == 0 and run.summary.get("hpsearch/state") == "COMPLETE" for run in runs), index


def test_a_run_file_still_being_written_reads_as_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another worker's run file is read while W&B appends to it: a cut-off last chunk means "not closed yet"."""
    import wandb

    from hpsearch.tracking.wandb import finish_run
    from hpsearch.wandb_files import read_run_file

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="cut", dir=str(tmp_path), config={"index": 1})
    run.log({"eval_loss": 0.5})
    finish_run(run)
    [path] = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    whole = path.read_bytes()
    assert read_run_file(path).exit_code == 0
    for cut in (len(whole) - 1, len(whole) * 2 // 3, 40):
        path.write_bytes(whole[:cut])
        assert read_run_file(path).exit_code is None


@pytest.mark.slow
@pytest.mark.solo
def test_a_killed_workers_run_is_closed_as_failed_in_the_offline_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W&B buffers an offline run file, so a killed worker's run may hold nothing yet: the launcher closes it as
    failed under its id, with its hyperparameters, as W&B's server marks a run whose heartbeat stopped."""
    import os
    import signal
    import sys

    from support import cli_env

    from hpsearch.wandb_files import merged_runs

    args = [sys.executable, "-m", "hpsearch", *LOCAL_RANDOM_SWEEP, "workers=2", "n_trials=4", "data.train_size=400"]
    args += ["training.num_train_epochs=3", f"hydra.run.dir={tmp_path / 'run'}"]
    env = cli_env(**offline_without_server(monkeypatch))
    launcher = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / ".hpsearch" / "wandb" / "ci"
    victim, deadline = None, time.monotonic() + 120
    while victim is None and time.monotonic() < deadline and launcher.poll() is None:
        time.sleep(0.3)
        markers = sorted((folder / "hpsearch-open").glob("*.json")) if folder.is_dir() else []
        if markers:
            run_id, victim = markers[0].stem, json.loads(markers[0].read_text())["pid"]
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stderr[-3000:]
    runs = {run.run_id: run for run in merged_runs(folder / "wandb") if run.run_id}
    assert all(run.exit_code is not None for run in runs.values())  # nothing left open
    assert runs[run_id].summary["hpsearch/state"] == "FAIL" and runs[run_id].exit_code == 1
    assert runs[run_id].summary["hpsearch/error"] == f"its worker process {victim} died"
    rows = read_trials(tmp_path / "run")
    assert [row["state"] for row in rows].count("COMPLETE") == 4 and "FAIL" in [row["state"] for row in rows]
    assert not list((folder / "hpsearch-open").glob("*.json"))
