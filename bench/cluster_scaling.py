"""How a search on one PostgreSQL study scales with the number of workers, and what it costs the database.

Each worker is a separate ``python -m hpsearch`` command, as separate machines would run it, on a fresh
study: trials of fixed size (fixed hyperparameters, a small random BERT), ``TRIALS_PER_WORKER`` trials per
worker. For 1, 2 and 4 workers it reports:

- trials per hour while all workers train (first trial start to last trial end, from the study's own
  timestamps, so each process's start-up is left out), and its ratio to one worker;
- database transactions per trial (``pg_stat_database.xact_commit``: every storage round trip commits one),
  heartbeats included;
- the most connections the workers held at once (``pg_stat_activity``).

Those two numbers bound a cluster: N workers with trials of T seconds send N x (transactions per trial) / T
transactions a second, and hold N x (connections per worker) of PostgreSQL's 100 default connections. Past
that, the workers go through optuna's gRPC storage proxy (``python -m hpsearch.storage_proxy``). Usage::

    python bench/cluster_scaling.py --storage postgresql://postgres@127.0.0.1:55432/hpsearch
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fixed_space

PARAMS = {"learning_rate": 1e-3, "per_device_train_batch_size": 32, "hidden_dropout_prob": 0.1}
OVERRIDES = [
    "experiment=ci",
    "data.train_size=256",
    "data.eval_size=64",
    "training.num_train_epochs=1",
    "progress=false",
]
TRIALS_PER_WORKER = 6


def database_counters(engine: object) -> tuple[int, int]:
    """(committed transactions in this database, its open connections other than ours)."""
    from sqlalchemy import text

    with engine.connect() as connection:  # type: ignore[attr-defined]
        commits = connection.execute(
            text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        ).scalar()
        connections = connection.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        ).scalar()
    return int(commits), int(connections)


def measure(storage: str, workers: int, workdir: Path) -> dict[str, float]:
    import optuna
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(storage.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=NullPool)
    study = f"scaling-{workers}-{uuid.uuid4().hex[:8]}"
    n_trials = TRIALS_PER_WORKER * workers
    commits_before, _ = database_counters(engine)
    peak = 0
    done = threading.Event()

    def watch_connections() -> None:
        nonlocal peak
        while not done.wait(0.5):
            peak = max(peak, database_counters(engine)[1])

    watcher = threading.Thread(target=watch_connections, daemon=True)
    watcher.start()
    commands = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hpsearch",
                *OVERRIDES,
                *fixed_space(PARAMS),
                f"n_trials={n_trials}",
                f"storage={storage}",
                f"study_name={study}",
                f"hydra.run.dir={workdir / study / str(index)}",
            ],
            cwd=workdir,
            env={**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(workers)
    ]
    for command in commands:
        _, stderr = command.communicate()
        if command.returncode != 0:
            raise RuntimeError(f"a worker failed:\n{stderr[-3000:]}")
    done.set()
    watcher.join()
    commits_after, _ = database_counters(engine)
    # The watcher's queries end in a rollback (SQLAlchemy's default), so only the workers' commits count.
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return {
        "trials": len(trials),
        "trials_per_hour": 3600 * len(trials) / span,
        "commits_per_trial": (commits_after - commits_before) / len(trials),
        "peak_connections": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=os.environ.get("HPSEARCH_TEST_POSTGRES_URL"), help="a PostgreSQL URL")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    args = parser.parse_args()
    if not args.storage:
        parser.error(
            "--storage postgresql://... is required (or set HPSEARCH_TEST_POSTGRES_URL; .ci/postgres.sh starts one)"
        )
    counts = [int(count) for count in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        rows = {count: measure(args.storage, count, Path(scratch)) for count in counts}
    base = rows[counts[0]]["trials_per_hour"]
    print(
        f"{'workers':>7} {'trials':>6} {'trials/h':>9} {'ratio':>6} {'transactions/trial':>18} {'peak connections':>16}"
    )
    for count, row in rows.items():
        print(
            f"{count:>7} {row['trials']:>6} {row['trials_per_hour']:>9.0f} {row['trials_per_hour'] / base:>6.2f} "
            f"{row['commits_per_trial']:>18.1f} {row['peak_connections']:>16}"
        )


if __name__ == "__main__":
    main()
