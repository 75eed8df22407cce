"""``workers=N``: persistent worker processes on one machine sharing one search, run as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import (
    POSTGRES_URL,
    Served,
    assert_shared_search,
    cli_env,
    read_trials,
    requires,
    run_command,
    worker_lines,
)

from hpsearch.budget import TrialBudget
from hpsearch.workers import worker_count, worker_environments

# 3 epochs: trials of a few seconds, so a worker that starts a little later still gets one of the 4
TWO_WORKERS = ["experiment=ci", "workers=2", "n_trials=4", "training.num_train_epochs=3"]
# two workers on trials long enough (seconds each) to kill one mid-trial
KILLABLE = [
    sys.executable,
    "-m",
    "hpsearch",
    "experiment=ci",
    "workers=2",
    "data.train_size=400",
    "training.num_train_epochs=3",
]


DEVICES = [  # (workers, workers_per_gpu, gpus, cores) -> each worker's CUDA_VISIBLE_DEVICES and threads
    ((2, None, [], 2), [(None, "1"), (None, "1")]),
    ((None, None, [], 2), [(None, "2")]),
    ((None, 2, ["0", "1"], 16), [("0", "4"), ("1", "4"), ("0", "4"), ("1", "4")]),
    ((3, None, ["0", "1"], 12), [("0", "4"), ("1", "4"), ("0", "4")]),
    ((None, 2, ["3", "5"], 2), [("3", "1"), ("5", "1"), ("3", "1"), ("5", "1")]),
]


@pytest.mark.parametrize(("given", "expected"), DEVICES)
def test_each_worker_gets_its_gpu_round_robin_and_its_share_of_the_cores(given: tuple, expected: list[tuple]) -> None:
    workers, per_gpu, gpus, cores = given
    environments = worker_environments(worker_count(workers, per_gpu, gpus), gpus, cores)
    assert [(env.get("CUDA_VISIBLE_DEVICES"), env["OMP_NUM_THREADS"]) for env in environments] == expected
    assert [env["HPSEARCH_WORKER"] for env in environments] == [str(i) for i in range(len(expected))]


def test_budget_is_shared_and_failed_trials_are_given_back(tmp_path: Path) -> None:
    budget = TrialBudget.create(tmp_path / "budget.json", 2)
    other = TrialBudget(tmp_path / "budget.json")  # another worker's view of the same file
    assert budget.claim(pid=1) and other.claim(pid=2)
    assert not budget.claim(pid=1) and not other.claim(pid=2)
    other.settle(finished=False, pid=2)  # a failed trial is retried
    assert budget.claim(pid=1) and not other.claim(pid=2)


def test_a_dead_worker_gives_back_only_the_claim_it_held(tmp_path: Path) -> None:
    budget = TrialBudget.create(tmp_path / "budget.json", 3)
    assert budget.claim(pid=1) and budget.claim(pid=2)
    budget.settle(finished=True, pid=1)  # worker 1 finished its trial, then died between trials
    assert not budget.reclaim(1)  # nothing to give back
    assert budget.reclaim(2)  # worker 2 died mid-trial: its claim goes back
    assert budget.claim(pid=3) and budget.claim(pid=3) and not budget.claim(pid=3)  # 3 - 1 finished = 2 left


@pytest.mark.parametrize("served", ["optuna", "sigopt", "wandb"], indirect=True)
def test_two_workers_train_exactly_n_trials_of_one_search(
    served: Served, cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli(*TWO_WORKERS, *served.overrides, "save_best_model=true", **served.env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_shared_search(tmp_path / "run", 4)
    assert not (tmp_path / "run" / "budget.json").exists()  # the workers' claims are not a result
    assert "(4/4 finished" in done.stdout  # one progress display over the whole search
    # Whichever worker trained the best trial saved its model; the other worker's offers did not replace it.
    kept = json.loads((tmp_path / "run" / "best_model" / "hpsearch_best.json").read_text())
    assert kept["values"] == [json.loads((tmp_path / "run" / "best.json").read_text())["objective"]]
    if served.backend == "optuna":
        assert (tmp_path / ".hpsearch" / "ci.log").is_file()  # optuna's journal file: safe for parallel writers
    elif served.backend == "sigopt":
        (experiment,) = served.server.experiments.values()
        assert experiment["parallel_bandwidth"] == 2
        assert served.handed_out() == 4
    else:
        assert len(served.server.sweeps) == 1  # the workers are agents of one sweep
        assert len(set(served.server.agents.values())) == 1 and len(served.server.agents) >= 2


@pytest.mark.slow
@pytest.mark.solo
@requires("psycopg", postgres=True)
def test_a_twenty_trial_search_holds_a_few_connections_per_process(tmp_path: Path) -> None:
    """The launcher reads the study every second and each worker trains trial after trial: each process keeps
    its own few connections (2 to 4) instead of opening new ones; PostgreSQL allows 100 by default. Only this
    command's connections count: libpq names them by ``PGAPPNAME``, and other tests may share the server."""
    import psycopg

    study = f"connections-{os.getpid()}-{time.time_ns()}"
    command = [*KILLABLE[:5], "n_trials=20", f"storage={POSTGRES_URL}", f"study_name={study}", "progress=false"]
    search = subprocess.Popen(
        [*command, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=cli_env(PGAPPNAME=study),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak, deadline = 0, time.monotonic() + 300
    with psycopg.connect(POSTGRES_URL, autocommit=True) as watcher:
        while search.poll() is None and time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
                (study,),
            ).fetchone()
            peak = max(peak, row[0] if row else 0)
            time.sleep(0.2)
    _, stderr = search.communicate(timeout=60)
    assert search.returncode == 0, stderr[-3000:]
    assert [row["state"] for row in read_trials(tmp_path / "run")].count("COMPLETE") == 20
    assert 3 <= peak <= 12, peak  # the launcher and two workers, 2 to 4 connections each


@requires(postgres=True)
def test_two_workers_share_a_postgresql_study(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli(*TWO_WORKERS, f"storage={POSTGRES_URL}", f"study_name=workers-{os.getpid()}-{time.time_ns()}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_shared_search(tmp_path / "run", 4)
    assert "Heartbeat of storage" not in done.stderr  # optuna's warning for asks outside study.optimize


def _study(tmp_path: Path, name: str):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(tmp_path / ".hpsearch" / f"{name}.log")))
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.slow
@pytest.mark.solo
def test_a_killed_worker_is_replaced_and_the_search_reaches_n_trials(tmp_path: Path) -> None:
    # 12 trials: the other worker alone cannot finish the rest while the successor starts (about 10 s of imports)
    args = [*KILLABLE, "n_trials=12", "study_name=kill", f"hydra.run.dir={tmp_path / 'run'}"]
    launcher = subprocess.Popen(
        args, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    import psutil

    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            study = _study(tmp_path, "kill")
        except (KeyError, FileNotFoundError, ValueError):
            continue
        running = [t for t in study.trials if t.state.name == "RUNNING" and t.number >= 1]
        if running:
            victim = int(running[0].user_attrs["worker_pid"])
    assert victim is not None and psutil.pid_exists(victim)
    os.kill(victim, signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=240)
    assert launcher.returncode == 0, stderr[-3000:]
    states = [t.state.name for t in _study(tmp_path, "kill").trials]
    assert "RUNNING" not in states and "WAITING" not in states  # the killed worker's trial was failed
    assert states.count("FAIL") >= 1 and states.count("COMPLETE") == 12  # ... and retried by the workers
    assert f"(process {victim}) died (exit code -9)" in stderr and "a new worker takes its place" in stderr
    assert stderr.count(") died (exit code") == 1  # the launcher's own shutdown of its workers is no death
    pids = {line["pid"] for line in worker_lines(tmp_path / "run")}
    assert len(pids - {victim}) == 2, pids  # the other worker, and the successor that took the victim's place


def test_a_config_error_in_the_workers_is_one_line_with_its_exit_code(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """The workers find a data error only once they load the data: the launcher reports it once, as one process
    would, stops the other worker, and exits with the error's code; nothing is restarted."""
    done = cli(*TWO_WORKERS, "data.label_column=nope")
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("trials:")]
    assert len(lines) == 1 and lines[0].startswith("hpsearch: error: data.label_column: column 'nope' does not exist")
    assert "Traceback" not in done.stderr


def test_out_of_memory_trial_is_failed_and_the_worker_goes_on(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli(
        "experiment=ci",
        "workers=2",
        "n_trials=3",
        "max_failures=10",
        "model.model_init._target_=helpers.oom_tiny_bert",
        "~model.model_init.hidden_size",
        "~model.model_init.num_hidden_layers",
        "~model.model_init.num_attention_heads",
        "~model.model_init.intermediate_size",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = read_trials(tmp_path / "run")
    assert [row["state"] for row in table].count("COMPLETE") == 3
    failed = [row for row in table if row["state"] == "FAIL"]
    assert len(failed) == 2  # each worker's first trial
    assert all(row["error"].startswith("OutOfMemoryError: CUDA out of memory") for row in failed), failed


@pytest.mark.slow
@pytest.mark.solo
def test_worker_memory_stays_flat_over_twenty_trials(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli("experiment=ci", "workers=2", "n_trials=20", "data.train_size=128", "data.eval_size=64", timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    by_worker: dict[int, list[float]] = {}
    for entry in worker_lines(tmp_path / "run"):
        by_worker.setdefault(entry["pid"], []).append(entry["rss_mb"])
    assert sum(map(len, by_worker.values())) >= 20
    # The workers claim trials as they free up, so the split between them varies (a CI run gave 16 and 4).
    long_enough = [series for series in by_worker.values() if len(series) >= 5]
    assert long_enough, by_worker
    for series in long_enough:
        settled = series[2:]  # the first trials warm caches and allocators up
        assert max(settled) - min(settled) < 40, series


def test_workers_under_torchrun_is_a_config_error(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "hpsearch",
        "experiment=ci",
        "workers=2",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = run_command(command, tmp_path, timeout=180, GLOO_SOCKET_IFNAME="lo")
    assert done.returncode != 0
    assert "workers=2: torchrun already runs one process per device" in done.stderr


@pytest.mark.slow
@pytest.mark.solo
def test_rerun_after_killing_the_whole_command_retrains_its_orphaned_trials(tmp_path: Path) -> None:
    """kill -9 of the launcher and its workers leaves RUNNING trials in the journal file, which has no heartbeat:
    the rerun fails those of dead processes on this machine and trains the search to n_trials, without waiting."""
    args = [*KILLABLE, "n_trials=4", "study_name=orphans", f"hydra.run.dir={tmp_path / 'first'}"]
    launcher = subprocess.Popen(
        args, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            if any(
                t.state.name == "RUNNING" and "worker_pid" in t.user_attrs for t in _study(tmp_path, "orphans").trials
            ):
                break
        except (KeyError, FileNotFoundError, ValueError):
            continue
    os.killpg(launcher.pid, signal.SIGKILL)  # the whole command: nobody is left to fail the trials
    launcher.wait()
    assert "RUNNING" in [t.state.name for t in _study(tmp_path, "orphans").trials]

    args[-1] = f"hydra.run.dir={tmp_path / 'second'}"
    started = time.monotonic()
    again = run_command(args, tmp_path, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    states = [t.state.name for t in _study(tmp_path, "orphans").trials]
    assert states.count("COMPLETE") == 4 and "RUNNING" not in states
    assert time.monotonic() - started < 150  # no wait for backend.wait_s (300 s by default)
