"""Cluster sweeps on a real PostgreSQL study: separate commands as separate machines run them, a killed one,
optuna's gRPC storage proxy, and a submitit job array (.ci/run starts PostgreSQL and exports its URL)."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import POSTGRES_URL, cli_env, free_port, read_trials, requires, run_command

pytestmark = [requires(postgres=True), pytest.mark.solo]  # several commands each: never beside another test
SHARED = ["experiment=ci", "data.train_size=128", "data.eval_size=64"]
LONG_TRIALS = ["data.train_size=400", "training.num_train_epochs=3"]  # seconds each: time to kill one mid-trial


def command(study: str, run_dir: Path, *overrides: str, storage: str | None = POSTGRES_URL) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hpsearch",
        *SHARED,
        f"storage={storage}",
        f"study_name={study}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(args, cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def load(study: str) -> Any:
    import optuna

    return optuna.load_study(study_name=study, storage=POSTGRES_URL)


def finished_rows(run_dir: Path) -> list[dict[str, str]]:
    return [row for row in read_trials(run_dir) if row["state"] in ("COMPLETE", "PRUNED")]


def assert_complete_study(study: str, n_trials: int) -> list[Any]:
    """Exactly ``n_trials`` finished trials, none left RUNNING or WAITING, no hyperparameters trained twice."""
    trials = load(study).trials
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == n_trials, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert len({t.number for t in trials}) == len(trials)
    assert len({tuple(sorted(t.params.items())) for t in finished}) == n_trials
    return finished


@pytest.mark.slow
def test_two_commands_share_one_study(tmp_path: Path) -> None:
    study = f"machines-{uuid.uuid4().hex[:8]}"
    commands = [start(command(study, tmp_path / name, "n_trials=6", *LONG_TRIALS[:1]), tmp_path) for name in ("a", "b")]
    outputs = [process.communicate(timeout=300) for process in commands]
    for process, (_, stderr) in zip(commands, outputs, strict=False):
        assert process.returncode == 0, stderr[-3000:]
    finished = assert_complete_study(study, 6)
    assert {t.user_attrs["worker_pid"] for t in finished} == {process.pid for process in commands}  # both trained
    assert all(t.user_attrs["worker_host"] == socket.gethostname() for t in finished)
    # The command that finished last waited for the other's trials: its results hold the whole search.
    assert max(len(finished_rows(tmp_path / name)) for name in ("a", "b")) == 6


@pytest.mark.slow
def test_killed_command_trial_is_retried_by_the_survivor(tmp_path: Path) -> None:
    study = f"preempted-{uuid.uuid4().hex[:8]}"
    heartbeat = [
        "backend.heartbeat_interval_s=1",
        "backend.grace_period_s=3",
        "backend.wait_s=60",
        "n_trials=5",
        *LONG_TRIALS,
    ]
    victim, survivor = (start(command(study, tmp_path / name, *heartbeat), tmp_path) for name in ("victim", "survivor"))
    killed_trial = None
    deadline = time.monotonic() + 180
    while killed_trial is None and time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            running = [
                t
                for t in load(study).trials
                if t.state.name == "RUNNING" and t.user_attrs.get("worker_pid") == victim.pid and t.params
            ]  # training: its hyperparameters drawn (a trial is marked with its process just before)
        except KeyError:  # the study does not exist yet
            continue
        if running:
            killed_trial = running[0]
    assert killed_trial is not None, "the victim never started a trial"
    os.kill(victim.pid, signal.SIGKILL)  # a preempted job: no chance to clean up
    victim.communicate()
    _, stderr = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, stderr[-3000:]

    finished = assert_complete_study(study, 5)
    trials = load(study).trials
    assert trials[killed_trial.number].state.name == "FAIL"  # failed as stale, not left RUNNING
    (retry,) = [t for t in finished if t.system_attrs.get("failed_trial") == killed_trial.number]
    assert (
        retry.params == killed_trial.params
    )  # optuna's RetryHeartbeatStaleTrialCallback queued the same hyperparameters
    assert retry.user_attrs["worker_pid"] == survivor.pid
    assert len(finished_rows(tmp_path / "survivor")) == 5


def _loopback(ip: str) -> bool:
    """127.0.0.1, also as gRPC's dual-stack socket shows it (``::ffff:127.0.0.1``)."""
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


@pytest.mark.slow
def test_workers_through_the_grpc_storage_proxy(tmp_path: Path) -> None:
    import psutil

    port = free_port()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "hpsearch.storage_proxy", POSTGRES_URL, "--port", str(port)],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "serving" in proxy.stdout.readline()
        listening: list[Any] = []
        deadline = time.monotonic() + 60
        while not listening and time.monotonic() < deadline:
            time.sleep(0.2)
            listening = [c.laddr for c in psutil.Process(proxy.pid).net_connections() if c.status == psutil.CONN_LISTEN]
        assert listening and all(_loopback(address.ip) for address in listening), listening  # no authentication
        study = f"proxy-{uuid.uuid4().hex[:8]}"
        run_dir = tmp_path / "run"
        args = command(study, run_dir, "workers=2", "n_trials=4", storage=f"grpc://127.0.0.1:{port}")
        done = run_command(args, tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        proxy.terminate()
        proxy.communicate(timeout=30)
    finished = assert_complete_study(study, 4)  # read from PostgreSQL directly: the proxy stored it there
    assert len({t.user_attrs["worker_pid"] for t in finished}) == 2
    assert len(finished_rows(run_dir)) == 4


@pytest.mark.slow
@requires("hydra_plugins.hydra_submitit_launcher")
def test_submitit_local_job_array_shares_one_study(tmp_path: Path) -> None:
    study = f"array-{uuid.uuid4().hex[:8]}"
    done = run_command(
        [
            sys.executable,
            "-m",
            "hpsearch",
            "-m",
            "hydra/launcher=submitit_local",
            *SHARED,
            f"storage={POSTGRES_URL}",
            f"study_name={study}",
            "n_trials=4",
            "array_task=0,1",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ],
        tmp_path,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert_complete_study(study, 4)
    jobs = [tmp_path / "multirun" / str(index) for index in (0, 1)]
    assert all((job / "trials.csv").is_file() for job in jobs)  # each array task wrote its results files
    assert max(len(finished_rows(job)) for job in jobs) == 4


@pytest.mark.slow
def test_a_stopped_command_whose_trial_went_stale_drops_it_when_resumed(tmp_path: Path) -> None:
    """SIGSTOP (SLURM suspend, a partition): meanwhile another command fails the trial as stale and trains its
    retry; after SIGCONT the first one's result is dropped, not told over the failed trial, and it goes on."""
    study = f"stopped-{uuid.uuid4().hex[:8]}"
    heartbeat = ["backend.heartbeat_interval_s=1", "backend.grace_period_s=3", "n_trials=3", *LONG_TRIALS]
    stopped = start(command(study, tmp_path / "stopped", *heartbeat), tmp_path)
    try:
        deadline, held = time.monotonic() + 180, None
        while held is None and time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                held = next((t for t in load(study).trials if t.state.name == "RUNNING"), None)
            except KeyError:  # the study does not exist yet
                continue
        assert held is not None, "the first command never started a trial"
        os.kill(stopped.pid, signal.SIGSTOP)
        time.sleep(5)  # past the grace period: its trial is stale now
        other = run_command(command(study, tmp_path / "other", *heartbeat), tmp_path, timeout=300)
        assert other.returncode == 0, other.stderr[-3000:]
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
    _, stderr = stopped.communicate(timeout=300)
    assert stopped.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "UpdateFinishedTrialError" not in stderr
    assert_complete_study(study, 3)
    assert load(study).trials[held.number].state.name == "FAIL"


@pytest.mark.slow
@requires("psutil")
def test_chaos_two_worker_pools_under_random_kills_end_with_exactly_n_trials(tmp_path: Path) -> None:
    """Two commands of ``workers=2`` on one 20-trial PostgreSQL study; at random, ``kill -9`` a worker (its
    launcher restarts it) or a whole command (its process group, as a lost node; it is started again)."""
    import random

    import psutil

    study, n_trials, kills = f"chaos-{uuid.uuid4().hex[:8]}", 20, 10
    args = [
        *LONG_TRIALS,
        "workers=2",
        f"n_trials={n_trials}",
        "max_failures=100",  # every kill fails a trial: none of them is the search's fault
        "max_worker_restarts=100",
        "backend.heartbeat_interval_s=1",
        "backend.grace_period_s=3",
        "backend.wait_s=120",
        "progress=false",
    ]
    starts = iter(range(100))

    def launch() -> subprocess.Popen[str]:
        return subprocess.Popen(
            command(study, tmp_path / f"run-{next(starts)}", *args),
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a process group per command: a "node" to kill at once
        )

    def running_pids() -> set[int]:
        try:
            return {t.user_attrs.get("worker_pid") for t in load(study).trials if t.state.name == "RUNNING"}
        except KeyError:  # the study does not exist yet
            return set()

    chooser = random.Random(7)
    commands = [launch(), launch()]
    sent, deadline = 0, time.monotonic() + 420
    while sent < kills and time.monotonic() < deadline and any(process.poll() is None for process in commands):
        time.sleep(chooser.uniform(1.0, 3.0))
        training = {}  # command -> its workers training a trial now: every kill fails a running trial
        running = running_pids()
        for process in commands:
            try:
                children = psutil.Process(process.pid).children() if process.poll() is None else []
            except psutil.Error:  # it ended meanwhile
                continue
            if workers := [child.pid for child in children if child.pid in running]:
                training[process.pid] = (process, workers)
        if not training:
            continue
        target, workers = training[chooser.choice(sorted(training))]
        if chooser.random() < 0.6:
            os.kill(chooser.choice(workers), signal.SIGKILL)
        else:  # a lost node: the command and its workers at once, and the node comes back
            os.killpg(target.pid, signal.SIGKILL)
            target.communicate()
            commands[commands.index(target)] = launch()
        sent += 1
    assert sent == kills, f"only {sent} kills before the search ended"
    for process in commands:
        _, stderr = process.communicate(timeout=max(60.0, deadline - time.monotonic()))
        assert process.returncode == 0, stderr[-3000:]
    assert_complete_study(study, n_trials)
    retried = [t.system_attrs["failed_trial"] for t in load(study).trials if "failed_trial" in t.system_attrs]
    finished_retries = [
        t.system_attrs["failed_trial"]
        for t in load(study).trials
        if "failed_trial" in t.system_attrs and t.state.name == "COMPLETE"
    ]
    assert len(finished_retries) == len(set(finished_retries)) and retried  # each retry completed at most once
