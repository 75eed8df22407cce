"""``hpsearch compare`` over runs of every kind, and Hydra multiruns compared in one command."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from standins.wandb_server import WandbStandIn
from support import read_trials, requires, run_command

from hpsearch.compare import importance, read_run_dir

CLI = Callable[..., subprocess.CompletedProcess[str]]
SMOKE_LOSS = ["experiment=ci", "objective=loss", "n_trials=4"]  # eval_loss varies from trial to trial


def compare(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_command([sys.executable, "-m", "hpsearch", "compare", *args], cwd, timeout=180)


def search(cli: CLI, tmp_path: Path, name: str, *overrides: str) -> Path:
    done = cli(*SMOKE_LOSS, f"study_name={name}", f"hydra.run.dir={tmp_path / name}", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / name


@pytest.mark.slow
@requires("sigoptlite")
def test_compare_runs_of_three_backends(cli: CLI, tmp_path: Path) -> None:
    runs = [
        search(cli, tmp_path, "tpe"),
        search(cli, tmp_path, "ray", "backend=ray"),
        search(cli, tmp_path, "lite", "backend=sigopt", "backend.driver=lite"),
    ]
    done = compare(*map(str, runs), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = list(csv.DictReader((tmp_path / "out" / "comparison.csv").open()))
    assert [(row["backend"], row["method"]) for row in rows] == [
        ("optuna", "tpe"),
        ("ray", "basic"),
        ("sigopt", "sigoptlite"),
    ]
    for row, run in zip(rows, runs, strict=False):
        assert float(row["best eval_loss"]) == json.loads((run / "best.json").read_text())["objective"]
        assert (row["complete"], row["pruned"], row["failed"]) == ("4", "0", "0")
    assert "best eval_loss" in done.stdout and "sigoptlite" in done.stdout  # the table, printed

    page = (tmp_path / "out" / "report.html").read_text()
    pngs = sorted(path.name for path in (tmp_path / "out").glob("*.png"))
    assert pngs == [
        "best_by_time.png",
        "best_by_trial.png",
        "importance.png",
        "parallel_0.png",
        "parallel_1.png",
        "parallel_2.png",
    ]
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == len(pngs)  # every plot, inlined
    assert "<script" not in page and "http" not in page  # opens offline, fetches nothing
    ray_importance = importance(read_run_dir(runs[1]))
    assert set(ray_importance) and abs(sum(ray_importance.values()) - 1) < 1e-6  # optuna's fANOVA on a Ray search


def test_compare_an_optuna_study_by_its_storage(cli: CLI, tmp_path: Path) -> None:
    search(cli, tmp_path, "stored")
    done = compare(
        "--study", str(tmp_path / ".hpsearch" / "stored.log"), "stored", "--out", str(tmp_path / "out"), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = csv.DictReader((tmp_path / "out" / "comparison.csv").open())
    assert (row["search"], row["method"], row["complete"]) == ("stored", "tpe", "4")
    assert float(row["best eval_loss"]) == json.loads((tmp_path / "stored" / "best.json").read_text())["objective"]


@pytest.mark.slow
def test_compare_bad_inputs_are_one_line(cli: CLI, tmp_path: Path) -> None:
    loss = search(cli, tmp_path, "loss", "n_trials=1")
    accuracy = search(cli, tmp_path, "accuracy", "n_trials=1", "objective=accuracy")
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "missing")], "is not a directory"),
        ([str(tmp_path / "empty")], "holds no search results (trials.csv and config.yaml)"),
        ([str(loss), str(accuracy)], "optimises eval_accuracy (maximize) but"),
        (["--study", "nowhere", "x"], "is neither a storage URL nor a journal file"),
        ([str(loss), "--wandb", "just-an-entity"], "compare --wandb just-an-entity: give ENTITY/PROJECT"),
    ]
    for args, message in cases:
        done = compare(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("hpsearch compare: error: ") and message in line


@pytest.mark.slow
@pytest.mark.parametrize(
    "sweep", [["backend=optuna,ray"], ["backend.sampler=tpe,random"]], ids=["backends", "samplers"]
)
def test_multirun_searches_are_compared_in_one_command(tmp_path: Path, sweep: list[str]) -> None:
    done = run_command(
        [
            sys.executable,
            "-m",
            "hpsearch",
            "-m",
            *sweep,
            *SMOKE_LOSS[:2],
            "n_trials=2",
            "progress=false",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ],
        tmp_path,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = [tmp_path / "multirun" / str(index) for index in (0, 1)]
    for job in jobs:  # each job searched its own study: both trained n_trials trials
        assert [row["state"] for row in read_trials(job)] == ["COMPLETE", "COMPLETE"]
    done = compare(str(tmp_path / "multirun"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "out" / "comparison.csv").open()))
    assert len(rows) == 2 and [row["complete"] for row in rows] == ["2", "2"]
    key, values = sweep[0].split("=")[0], sweep[0].split("=")[1].split(",")
    assert [row["backend" if sweep[0].startswith("backend=") else "method"] for row in rows] == values
    assert [row["search"] for row in rows] == [f"{key}={value}" for value in values]  # what differs, not a time


def test_rerunning_a_finished_study_says_so(cli: CLI, tmp_path: Path) -> None:
    search(cli, tmp_path, "done", "n_trials=2")
    again = cli(*SMOKE_LOSS, "n_trials=2", "study_name=done", f"hydra.run.dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        "hpsearch: study_name=done already has 2 finished trials (n_trials=2), so nothing will run; for more, "
        "raise n_trials or pick another study_name"
    ) in again.stderr
    assert len(read_trials(tmp_path / "again")) == 2  # results still written


@pytest.mark.slow
@requires("wandb_workspaces")
def test_wandb_report_through_the_real_client(cli: CLI, tmp_path: Path, wandb_server: WandbStandIn) -> None:
    """``--wandb``: wandb-workspaces builds the report and sends it to the W&B stand-in, which keeps the spec."""
    server = wandb_server
    runs = [
        search(cli, tmp_path, "first", "n_trials=2"),
        search(cli, tmp_path, "second", "n_trials=2", "backend.sampler=random"),
    ]
    server.projects.add(("team", "searches"))  # where the searches logged their runs (tracking=wandb)
    env = {"WANDB_BASE_URL": server.url, "WANDB_API_KEY": server.api_key, "WANDB_SILENT": "true"}
    done = run_command(
        [
            sys.executable,
            "-m",
            "hpsearch",
            "compare",
            *map(str, runs),
            "--out",
            str(tmp_path / "out"),
            "--wandb",
            "team/searches",
        ],
        tmp_path,
        timeout=180,
        **env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (report,) = server.reports
    assert (report["entityName"], report["projectName"], report["displayName"]) == (
        "team",
        "searches",
        "hpsearch comparison",
    )
    assert f"{server.url}/team/searches/reports/" in done.stdout
    blocks = report["spec"]["blocks"]
    (table,) = [block["content"] for block in blocks if block["type"] == "markdown-block"]
    assert "| search | backend | method |" in table and "| tpe |" in table and "| random |" in table
    searches_grid, best_grid = [block["metadata"] for block in blocks if block["type"] == "panel-grid"]

    def group_filter(runset: dict) -> list:
        return [(f["key"]["name"], f["op"], f["value"]) for f in runset["filters"]["filters"]]

    assert [group_filter(runset) for runset in searches_grid["runSets"]] == [
        [("group", "=", "first")],
        [("group", "=", "second")],
    ]
    (parallel,) = searches_grid["panelBankSectionConfig"]["panels"]
    assert parallel["viewType"] == "Parallel Coordinates Plot"
    assert [c["accessor"] for c in parallel["config"]["columns"]] == [
        "config:learning_rate.value",
        "config:per_device_train_batch_size.value",
        "config:hidden_dropout_prob.value",
        "summary:eval_loss",
    ]
    (best_runs,) = best_grid["runSets"]
    assert group_filter(best_runs) == [("tags", "IN", ["best"]), ("group", "IN", ["first", "second"])]
    assert [panel["viewType"] for panel in best_grid["panelBankSectionConfig"]["panels"]] == ["Run Comparer"]


def test_a_study_keeps_its_objective(cli: CLI, tmp_path: Path) -> None:
    search(cli, tmp_path, "kept", "n_trials=1")
    other = cli(
        "experiment=ci", "objective=accuracy", "n_trials=1", "study_name=kept", f"hydra.run.dir={tmp_path / 'other'}"
    )
    assert other.returncode == 2
    assert (
        "hpsearch: error: study_name=kept: the stored study optimises [('eval_loss', 'minimize')], not "
        "[('eval_accuracy', 'maximize')]; choose another study_name"
    ) in other.stderr


def test_compare_a_sqlite_study_resumed_with_a_narrower_space(tmp_path: Path) -> None:
    """The README's ``old.db``: a SQLite file given to ``--study``; its study was resumed with a narrower
    learning-rate range, has a ``None`` choice, and one surplus trial (asked past the budget, never trained)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from hpsearch.backends.optuna.source import SURPLUS

    study = optuna.create_study(study_name="old", storage=f"sqlite:///{tmp_path / 'old.db'}", direction="minimize")
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(["eval_loss"])
    scheduler = CategoricalDistribution([None, "linear"])
    for lr, high, schedule, loss in [(5e-3, 1e-2, None, 0.5), (5e-4, 1e-3, "linear", 0.4), (2e-4, 1e-3, None, 0.6)]:
        params = {"learning_rate": lr, "lr_scheduler_type": schedule}
        distributions = {"learning_rate": FloatDistribution(1e-4, high, log=True), "lr_scheduler_type": scheduler}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=loss))
    surplus = study.ask()
    study._storage.set_trial_system_attr(surplus._trial_id, SURPLUS, True)
    study.tell(surplus, state=optuna.trial.TrialState.FAIL)

    done = compare("--study", str(tmp_path / "old.db"), "old", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = csv.DictReader((tmp_path / "out" / "comparison.csv").open())
    assert (row["complete"], row["failed"], row["best eval_loss"]) == ("3", "0", "0.4")
    assert "lr_scheduler_type=linear" in row["best hyperparameters"]
    assert {path.name for path in (tmp_path / "out").glob("*.png")} >= {"importance.png", "parallel_0.png"}
    # labelled with the evaluator it uses: optuna 5's default is PED-ANOVA, the report's fANOVA
    assert (
        "Hyperparameter importance (optuna&#x27;s FanovaImportanceEvaluator"
        in (tmp_path / "out" / "report.html").read_text()
    )


def test_a_none_choice_is_read_back_from_a_run_directory(tmp_path: Path) -> None:
    import yaml

    from hpsearch.compare.searches import read_run_dir
    from hpsearch.config import config_dir

    run = tmp_path / "run"
    run.mkdir()
    config = {
        "study_name": "s",
        "backend": yaml.safe_load((config_dir() / "backend" / "optuna.yaml").read_text()),
        "objective": {"objectives": [{"metric": "eval_loss", "direction": "minimize"}]},
        "space": {"lr_scheduler_type": {"type": "categorical", "choices": [None, "linear"]}},
    }
    (run / "config.yaml").write_text(json.dumps(config))
    (run / "trials.csv").write_text(
        "number,state,objective,lr_scheduler_type,duration_s,finished_at,error\n"
        "0,COMPLETE,0.5,,1.0,,\n1,COMPLETE,0.4,linear,1.0,,\n2,FAIL,,,1.0,,boom\n"
    )
    search = read_run_dir(run)
    assert [trial.params for trial in search.trials] == [
        {"lr_scheduler_type": None},
        {"lr_scheduler_type": "linear"},
        {},
    ]


LABELS = [  # (each search's overrides, the labels they get)
    ([["backend=optuna", "n_trials=2"], ["backend=ray", "n_trials=2"]], ["backend=optuna", "backend=ray"]),
    ([["seed=1", "x=1"], ["seed=2", "x=1"], ["seed=2", "x=2"]], ["seed=1 x=1", "seed=2 x=1", "seed=2 x=2"]),
    ([["n_trials=2"], ["n_trials=2"]], ["a", "b"]),  # nothing tells them apart: their folder labels stay
    ([["hydra.run.dir=/a"], ["hydra.run.dir=/b"]], ["a", "b"]),
]


@pytest.mark.parametrize(("overrides", "labels"), LABELS)
def test_searches_are_labelled_by_what_differs(overrides: list[list[str]], labels: list[str]) -> None:
    from hpsearch.compare.searches import Search, label_by_differences

    searches = [
        Search(f"{name}", "s", "optuna", "tpe", ["minimize"], ["eval_loss"], [], overrides=given)
        for name, given in zip("abc", overrides, strict=False)
    ]
    label_by_differences(searches)
    assert [search.label for search in searches] == labels
