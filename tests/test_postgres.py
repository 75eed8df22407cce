"""Optuna studies on a real PostgreSQL server (.ci/postgres.sh starts one and exports its URL)."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Callable
from pathlib import Path
from threading import Barrier

from omegaconf import DictConfig
from support import POSTGRES_URL, requires

from hpsearch.app import run

pytestmark = requires(postgres=True)


def test_study_on_postgres_resumes_to_n_trials(make_config: Callable[..., DictConfig], tmp_path: Path) -> None:
    study = f"pg-{uuid.uuid4().hex[:8]}"
    first = run(make_config("experiment=ci", "n_trials=2", f"storage={POSTGRES_URL}", f"study_name={study}"))
    assert [t.state for t in first.trials] == ["COMPLETE", "COMPLETE"]
    second = run(
        make_config(
            "experiment=ci",
            "n_trials=3",
            f"storage={POSTGRES_URL}",
            f"study_name={study}",
            f"run_dir={tmp_path / 'second'}",
        )
    )
    assert [t.number for t in second.trials] == [0, 1, 2]
    assert second.trials[:2] == first.trials  # read back from the server, unchanged


def open_when_all_are_ready(url: str, ready: Barrier) -> str:
    from hpsearch.backends.optuna.study import open_storage

    ready.wait()
    open_storage(url).get_all_studies()
    return "opened"


def test_processes_starting_together_on_an_empty_database_all_open_it() -> None:
    """A SLURM array starts its tasks at once: they race to create optuna's tables, and none may fail on it."""
    import psycopg

    database = f"fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {database}")
    url = f"{POSTGRES_URL.rpartition('/')[0]}/{database}"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(4) as pool:
        ready = manager.Barrier(4)
        assert pool.starmap(open_when_all_are_ready, [(url, ready)] * 4) == ["opened"] * 4
