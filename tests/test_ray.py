"""Ray Tune backend on a real local Ray runtime (each search in its own process)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from ray import tune
from support import read_trials, run_command

from hpsearch.backends import ray as ray_backend
from hpsearch.backends.ray import RayBackend, RaySettings, domain
from hpsearch.errors import BackendUnavailableError
from hpsearch.space import parse_param

RAY_CI = [sys.executable, "-m", "hpsearch", "experiment=ci", "backend=ray"]
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
        type(value).__name__,
        getattr(value, "lower", None),
        getattr(value, "upper", None),
        getattr(value, "categories", None),
        type(sampler).__name__,
        getattr(sampler, "q", None),
        type(getattr(sampler, "sampler", None)).__name__,
    )


@pytest.mark.parametrize(("spec", "expected"), TO_RAY)
def test_space_maps_to_exact_ray_domain(spec: dict, expected: object) -> None:
    assert _describe(domain(parse_param("p", spec))) == _describe(expected)


def test_fixed_maps_to_its_value() -> None:
    assert domain(parse_param("p", {"type": "fixed", "value": 3})) == 3


@pytest.mark.slow
def test_smoke_search_on_a_local_ray_runtime(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli("experiment=ci", "backend=ray", "n_trials=3", HOME=str(tmp_path / "home"))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_trials(tmp_path / "run")
    assert [row["state"] for row in rows] == ["COMPLETE"] * 3
    assert (tmp_path / "run" / "ray" / "ci").is_dir()  # Ray's results live under the run directory
    assert not (tmp_path / "home" / "ray_results").exists()
    assert (tmp_path / "run" / "best.json").is_file()


@pytest.mark.slow
@pytest.mark.solo  # `ray stop --force` ends every Ray process on the machine: another test's runtime too
def test_joins_an_existing_ray_cluster(cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    ray_cli = str(Path(sys.executable).parent / "ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = [
        ray_cli,
        "start",
        "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    # loopback only, and no auth token to hand over: a throw-away cluster for this test
    local = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    subprocess.run(start, check=True, capture_output=True, timeout=120, env=local)
    try:
        done = cli(
            "experiment=ci",
            "backend=ray",
            "n_trials=2",
            f"backend.address=127.0.0.1:{port}",
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
            RAY_AUTH_MODE="disabled",
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert [row["state"] for row in read_trials(tmp_path / "run")] == ["COMPLETE"] * 2
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120, env=local, check=False)


@pytest.mark.slow
def test_asha_stops_weak_trials_early(cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    done = cli(
        "experiment=ci",
        "backend=ray",
        "n_trials=4",
        "backend.scheduler=asha",
        "training.eval_strategy=steps",
        "training.eval_steps=2",
        "++backend.scheduler_kwargs={max_t:8,grace_period:1,reduction_factor:2}",
        "backend.resources_per_trial.cpu=2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    states = [row["state"] for row in read_trials(tmp_path / "run")]
    assert len(states) == 4 and "PRUNED" in states and "COMPLETE" in states


def test_scheduler_without_in_training_evaluation_is_rejected(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    done = cli("experiment=ci", "backend=ray", "backend.scheduler=asha")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "hpsearch: error: backend.scheduler=asha: early stopping needs in-training evaluation; "
        "set training.eval_strategy=steps and training.eval_steps=N"
    )


def test_more_gpu_than_the_runtime_has_is_an_error_not_a_hang(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    done = cli("experiment=ci", "backend=ray", "++backend.resources_per_trial.gpu=0.5", timeout=120)
    assert done.returncode == 2
    assert "backend.resources_per_trial.gpu=0.5: the Ray runtime has only 0" in done.stderr


def test_an_address_where_nothing_listens_is_one_line_within_seconds(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    done = cli("experiment=ci", "backend=ray", f"backend.address=127.0.0.1:{port}", timeout=120)
    assert time.monotonic() - started < 60  # ray.init alone retries such an address for over 10 minutes
    assert done.returncode == 3  # backend unavailable
    assert done.stderr.strip().startswith(
        f"hpsearch: error: backend.address=127.0.0.1:{port}: cannot connect to the Ray cluster (nothing answers at "
    )
    assert "Traceback" not in done.stderr


def test_a_local_runtime_that_does_not_start_is_one_error_and_leaves_no_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import ray

    def node_timed_out(**_: object) -> None:  # what ray.init raises when its raylet does not register in 30 s
        raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "init", node_timed_out)
    monkeypatch.setattr(ray_backend, "_short_temp_root", lambda: str(tmp_path))
    settings = RaySettings(
        address=None,
        num_cpus=1,
        resources_per_trial={},
        max_concurrent_trials=None,
        search_alg="basic",
        scheduler="none",
        scheduler_kwargs={},
        log_to_driver=False,
    )
    with pytest.raises(BackendUnavailableError) as raised, RayBackend()._ray_runtime(settings):
        pass
    assert str(raised.value) == (
        "backend.address=null: Ray's local runtime did not start (The current node timed out during startup. This "
        "could happen because ...); run the search again, or start a cluster with `ray start --head` and set "
        "backend.address to it"
    )
    assert list(tmp_path.iterdir()) == []  # its private temp folder is removed


@pytest.mark.slow
def test_pbt_exploits_checkpoints_and_perturbs_hyperparameters(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli(
        "experiment=ci",
        "backend=ray",
        "n_trials=2",
        "backend.scheduler=pbt",
        "training.eval_strategy=steps",
        "training.eval_steps=4",
        "training.num_train_epochs=3",
        "data.train_size=512",  # trials long enough to overlap: asynchronous PBT compares the running ones
        "++backend.scheduler_kwargs={quantile_fraction:0.5}",  # Ray's synch mode once left both trials PAUSED
        "~space",
        "+space={learning_rate:{type:float,low:1e-4,high:1e-2,log:true}}",
        "objective=loss",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_trials(tmp_path / "run")
    assert [row["state"] for row in rows] == ["COMPLETE", "COMPLETE"]
    exploits = (tmp_path / "run" / "ray" / "ci" / "pbt_global.txt").read_text().splitlines()
    assert exploits  # Ray cloned a checkpoint into the weaker trial at least once
    lrs = {json.loads(line)[4]["learning_rate"] for line in exploits} | {
        json.loads(line)[5]["learning_rate"] for line in exploits
    }
    assert len(lrs) >= 2  # ... and gave it a perturbed learning rate


def _ray_trial_results(experiment: Path) -> dict[str, bool]:
    """Each Ray trial directory -> whether its last report says the trial finished."""
    finished = {}
    for results in experiment.glob("*/result.json"):
        lines = [line for line in results.read_text().splitlines() if line.strip()]
        finished[results.parent.name] = bool(lines) and json.loads(lines[-1]).get("hpsearch_done", False)
    return finished


@pytest.mark.slow
def test_killed_search_resumes_and_trains_only_the_missing_trials(tmp_path: Path) -> None:

    from support import cli_env

    args = [
        *RAY_CI,
        "n_trials=4",
        "data.train_size=400",
        "training.num_train_epochs=8",
        "backend.max_concurrent_trials=1",
        f"hydra.run.dir={tmp_path / 'first'}",
    ]
    experiment = tmp_path / ".hpsearch" / "ray" / "ci" / "ci"
    first = subprocess.Popen(
        args, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 150
    while sum(_ray_trial_results(experiment).values()) < 2 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    time.sleep(1.5)  # past one experiment snapshot (every second)
    os.killpg(first.pid, 9)  # SIGKILL the driver and its Ray runtime: nothing runs a handler
    first.wait()
    done_before = {trial for trial, done in _ray_trial_results(experiment).items() if done}
    assert 2 <= len(done_before) < 4, "the first run must be killed mid-search"

    args[-1] = f"hydra.run.dir={tmp_path / 'second'}"
    second = run_command(args, tmp_path, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    rows = read_trials(tmp_path / "second")
    assert [row["state"] for row in rows] == ["COMPLETE"] * 4
    trials_after = _ray_trial_results(experiment)
    assert len(trials_after) == 4  # the same four trials: none started again from zero under a new id
    assert done_before <= {trial for trial, done in trials_after.items() if done}


@pytest.mark.slow
def test_local_runtime_keeps_its_files_private_and_needs_a_token_beyond_loopback(tmp_path: Path) -> None:
    """Ray's servers listen on every interface, so the local runtime must run with token authentication, even
    where the environment turned it off; its session files go to a private temp folder, removed afterwards."""
    import tempfile

    import psutil
    from support import cli_env

    scratch = Path(tempfile.mkdtemp(prefix="hps", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    args = [
        *RAY_CI,
        "n_trials=3",
        "data.train_size=400",
        "training.num_train_epochs=3",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    search = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=cli_env(TMPDIR=str(scratch), RAY_AUTH_MODE="disabled"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    servers: dict[str, set[str]] = {}  # Ray's own server binaries listening beyond loopback -> their auth modes
    deadline = time.monotonic() + 120
    while search.poll() is None and time.monotonic() < deadline:
        for process in psutil.Process(search.pid).children(recursive=True):
            try:
                if process.name() not in ("gcs_server", "raylet"):
                    continue
                listening = [c for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
                if any(not c.laddr.ip.startswith(("127.", "::1")) for c in listening):
                    servers.setdefault(process.name(), set()).add(process.environ().get("RAY_AUTH_MODE", "unset"))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.5)
    _, stderr = search.communicate(timeout=60)
    assert search.returncode == 0, stderr[-3000:]
    assert servers == {"gcs_server": {"token"}, "raylet": {"token"}}
    assert not (scratch / "ray").exists()  # not Ray's shared default temp folder
    assert not list(scratch.glob("hpsearch-ray-*"))  # and the private one is gone
    shutil.rmtree(scratch)


@pytest.mark.slow
def test_raising_n_trials_and_failed_trials_get_a_further_experiment(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """A Ray experiment cannot grow: the missing trials run as ``ci+1``, reseeded, so no draw is replayed."""
    from support import FAILING_MODEL

    random_failures = [override for override in FAILING_MODEL if override != "backend.sampler=grid"]
    space = "+space={hidden_dropout_prob:{type:categorical,choices:[0.0,0.1]},learning_rate:{type:float,low:1e-4,high:1e-2,log:true}}"
    overrides = ["experiment=ci", "backend=ray", "seed=3", *random_failures[:-1], space]
    first = cli(*overrides, "n_trials=2", f"hydra.run.dir={tmp_path / 'first'}", timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    first_rows = read_trials(tmp_path / "first")
    assert sum(row["state"] == "COMPLETE" for row in first_rows) == 2
    assert any(row["state"] == "FAIL" for row in first_rows), first_rows  # seed=3 draws a failing trial
    second = cli(*overrides, "n_trials=3", f"hydra.run.dir={tmp_path / 'second'}", timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    rows = read_trials(tmp_path / "second")
    assert rows[: len(first_rows)] == first_rows
    assert sum(row["state"] == "COMPLETE" for row in rows) == 3
    assert len({row["learning_rate"] for row in rows}) == len(rows)
    experiments = sorted(path.name for path in (tmp_path / ".hpsearch" / "ray" / "ci").iterdir())
    assert experiments[0] == "ci" and experiments[1] == "ci+1", experiments


def test_searches_starting_at_once_on_a_fresh_machine_share_one_private_ray_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray writes ``~/.ray/auth_token`` in place on first start, so two at once could lock each other out."""
    import threading

    from hpsearch.backends.ray import _create_auth_token_once

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    start = threading.Barrier(8)

    def create() -> None:
        start.wait()
        _create_auth_token_once()

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    token = tmp_path / ".ray" / "auth_token"
    assert len(token.read_text()) == 64 and int(token.read_text(), 16) >= 0
    assert token.stat().st_mode & 0o777 == 0o600
    assert [path.name for path in token.parent.iterdir()] == ["auth_token"]  # no draft left behind
    first = token.read_text()
    _create_auth_token_once()
    assert token.read_text() == first  # an existing token stands
