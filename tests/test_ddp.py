"""DDP searches under real torchrun: 2 CPU processes, gloo. Each run is time-boxed; none may hang."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support import FAILING_MODEL, Served, read_trials, torchrun


def assert_ranks_agree(run_dir: Path, expected_trials: int) -> list[dict]:
    """Every rank trained the same hyperparameters in every trial, read back from each rank's model and args."""
    reports = [json.loads(line) for line in (run_dir / "ranks.jsonl").read_text().splitlines()]
    by_trial: dict[int, dict[int, dict]] = {}
    for report in reports:
        by_trial.setdefault(report["trial"], {})[report["rank"]] = report
    assert len(by_trial) == expected_trials
    for ranks in by_trial.values():
        assert set(ranks) == {0, 1}
        assert ranks[0]["trained"] == ranks[1]["trained"] and ranks[0]["trained"]
        assert ranks[0]["state"] == ranks[1]["state"]
        if ranks[0]["state"] != "FAIL":  # real data parallelism: wrapped in DDP, parameters kept identical
            assert ranks[0]["wrapper"] == ranks[1]["wrapper"] == "DistributedDataParallel"
            assert ranks[0]["checksum"] == ranks[1]["checksum"]
    return reports


def test_every_rank_trains_rank_zeros_trials_in_real_ddp(tmp_path: Path) -> None:
    done = torchrun(tmp_path, "experiment=ci", "n_trials=3")
    assert done.returncode == 0, done.stderr[-3000:]
    reports = assert_ranks_agree(tmp_path / "run", 3)
    rows = read_trials(tmp_path / "run")
    for row, report in zip(rows, [r for r in reports if r["rank"] == 1], strict=False):
        assert float(row["learning_rate"]) == report["trained"]["learning_rate"]
    assert not any(
        p.name.startswith("run") and p != tmp_path / "run" for p in tmp_path.iterdir()
    )  # rank 1 wrote no run dir


@pytest.mark.slow
@pytest.mark.solo
def test_a_trial_pruned_on_rank_zero_stops_on_every_rank(tmp_path: Path) -> None:
    done = torchrun(tmp_path, "experiment=smoke_prune")
    assert done.returncode == 0, done.stderr[-3000:]
    states = [row["state"] for row in read_trials(tmp_path / "run")]
    assert "PRUNED" in states and len(states) == 8
    reports = assert_ranks_agree(tmp_path / "run", 8)
    assert {r["state"] for r in reports if r["rank"] == 1} >= {"PRUNED", "COMPLETE"}


def test_exception_on_both_ranks_fails_the_trial_and_the_search_goes_on(tmp_path: Path) -> None:
    done = torchrun(tmp_path, "experiment=ci", "n_trials=2", *FAILING_MODEL)
    # Both grid points tried, one failed: one trial short of n_trials. torchrun names rank 0's code, exits 1.
    assert done.returncode == 1 and "failed (exitcode: 6) local_rank: 0" in done.stderr, done.stderr[-3000:]
    assert "hpsearch: error: n_trials=2: the search ended with 1 finished trials" in done.stderr
    states = {float(row["hidden_dropout_prob"]): row["state"] for row in read_trials(tmp_path / "run")}
    assert states == {0.0: "COMPLETE", 0.1: "FAIL"}
    assert_ranks_agree(tmp_path / "run", 2)


def test_exception_on_one_rank_ends_the_job_quickly(tmp_path: Path) -> None:
    started = time.monotonic()
    done = torchrun(
        tmp_path,
        "experiment=ci",
        "n_trials=2",
        "model.model_init._target_=helpers.rank_one_failing_tiny_bert",
        "~model.model_init.hidden_size",
        "~model.model_init.num_hidden_layers",
        "~model.model_init.num_attention_heads",
        "~model.model_init.intermediate_size",
    )
    assert done.returncode != 0
    assert time.monotonic() - started < 120
    assert "training.ddp_timeout" in done.stderr or "injected failure on rank 1" in done.stderr


@pytest.mark.slow
@pytest.mark.solo
def test_multi_objective_search(tmp_path: Path) -> None:
    done = torchrun(tmp_path, "experiment=smoke_pareto", "n_trials=3", "data.train_size=300")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert_ranks_agree(tmp_path / "run", 3)


@pytest.mark.slow
@pytest.mark.solo
def test_resumed_study_runs_only_the_missing_trials_on_every_rank(tmp_path: Path) -> None:
    assert torchrun(tmp_path, "experiment=ci", "n_trials=2", name="first").returncode == 0
    done = torchrun(tmp_path, "experiment=ci", "n_trials=4", name="second")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [row["state"] for row in read_trials(tmp_path / "second")] == ["COMPLETE"] * 4
    assert_ranks_agree(tmp_path / "second", 2)  # only the two missing trials ran, on both ranks


@pytest.mark.parametrize("served", ["sigopt", "wandb"], indirect=True)
def test_only_rank_zero_talks_to_the_backend_server(served: Served, tmp_path: Path) -> None:
    done = torchrun(tmp_path, "experiment=ci", *served.overrides, "n_trials=2", **served.env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert served.handed_out() == 2  # one trial at a time, from rank zero alone
    assert_ranks_agree(tmp_path / "run", 2)
    assert len([row for row in read_trials(tmp_path / "run") if row["state"] == "COMPLETE"]) == 2


@pytest.mark.slow
@pytest.mark.solo
def test_objectives_match_between_world_size_one_and_two(tmp_path: Path) -> None:
    """With training frozen (learning rate 0), the objective is pure evaluation, which must not depend on
    the world size; transformers' default scales eval_loss by it."""
    frozen = [
        "experiment=ci",
        "n_trials=1",
        "objective=loss",
        "~space",
        "+space={learning_rate:{type:fixed,value:0.0},hidden_dropout_prob:{type:fixed,value:0.1}}",
    ]
    one = torchrun(tmp_path, *frozen, "study_name=ws1", nproc=1, name="one")
    two = torchrun(tmp_path, *frozen, "study_name=ws2", name="two")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    loss_one, loss_two = (float(read_trials(tmp_path / name)[0]["objective"]) for name in ("one", "two"))
    assert loss_two == pytest.approx(loss_one, rel=1e-5)


def test_ray_under_torchrun_is_refused_clearly(tmp_path: Path) -> None:
    done = torchrun(tmp_path, "experiment=ci", "backend=ray")
    assert done.returncode != 0
    assert "backend=ray: Ray starts its own workers, so it does not run under torchrun" in done.stderr


MID_TRIAL_FAILURE = [
    "model.model_init._target_=helpers.rank_one_fails_mid_trial_tiny_bert",
    "~model.model_init.hidden_size",
    "~model.model_init.num_hidden_layers",
    "~model.model_init.num_attention_heads",
    "~model.model_init.intermediate_size",
]


def _study_states(journal: Path) -> list[str]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name=journal.stem, storage=JournalStorage(JournalFileBackend(str(journal))))
    return [trial.state.name for trial in study.trials]


@pytest.mark.slow
@pytest.mark.solo
def test_rank_failure_mid_trial_with_restarts_fails_that_trial_and_the_search_goes_on(tmp_path: Path) -> None:
    done = torchrun(tmp_path, "experiment=ci", "n_trials=3", *MID_TRIAL_FAILURE, restarts=1)
    assert done.returncode == 0, done.stderr[-3000:]
    states = [row["state"] for row in read_trials(tmp_path / "run")]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert _study_states(tmp_path / ".hpsearch" / "ci.log") == states


def test_rank_failure_mid_trial_without_restarts_ends_the_job_and_records_the_trial(tmp_path: Path) -> None:
    started = time.monotonic()
    done = torchrun(tmp_path, "experiment=ci", "n_trials=3", *MID_TRIAL_FAILURE)
    assert done.returncode != 0
    assert time.monotonic() - started < 90  # no hang: two start-ups, three trials and ddp_timeout=20 at most
    assert "injected failure on rank 1 at the third forward" in done.stderr
    assert _study_states(tmp_path / ".hpsearch" / "ci.log") == ["COMPLETE", "FAIL"]  # not left RUNNING
