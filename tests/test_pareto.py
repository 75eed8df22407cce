"""Multi-objective searches: the Pareto front written to pareto.json and pareto.png, per backend."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig
from standins.sigopt_server import SigOptStandIn
from support import read_trials, requires

from hpsearch.app import run
from hpsearch.objective import Objectives, dominates, pareto_front
from hpsearch.trials import TrialRecord

MIXED = ["maximize", "minimize"]


@pytest.mark.parametrize(
    ("a", "b", "directions", "expected"),
    [
        ((0.9, 10.0), (0.8, 20.0), MIXED, True),  # better accuracy and smaller
        ((0.9, 20.0), (0.8, 10.0), MIXED, False),  # a trade-off: neither dominates
        ((0.8, 10.0), (0.8, 10.0), MIXED, False),  # equal: not strictly better anywhere
        ((0.8, 5.0), (0.8, 10.0), MIXED, True),
        ((0.9, 10.0), (0.8, 20.0), ["minimize", "minimize"], False),
        ((0.1, 1.0), (0.2, 2.0), ["minimize", "minimize"], True),
        ((0.3, 3.0), (0.2, 2.0), ["maximize", "maximize"], True),
    ],
)
def test_dominance_honours_each_direction(a: tuple, b: tuple, directions: list[str], expected: bool) -> None:
    assert dominates(a, b, directions) is expected


def test_pareto_front_with_mixed_directions_ignores_failed_trials() -> None:
    def trial(number: int, values: list[float] | None, state: str = "COMPLETE") -> TrialRecord:
        return TrialRecord(number=number, state=state, values=values, params={})

    trials = [
        trial(0, [0.80, 100.0]),
        trial(1, [0.85, 200.0]),
        trial(2, [0.70, 150.0]),  # 2 is dominated by 0
        trial(3, [0.85, 300.0]),
        trial(4, None, "FAIL"),
        trial(5, [0.99, 1.0], "PRUNED"),
        trial(6, [0.90, 400.0]),
    ]
    assert [t.number for t in pareto_front(trials, MIXED)] == [0, 1, 6]


def _check_front(run_dir: Path, objectives: list[tuple[str, str]]) -> list[dict]:
    """pareto.json holds exactly the non-dominated completed trials of trials.csv."""
    rows = [r for r in read_trials(run_dir) if r["state"] == "COMPLETE"]
    points = {int(r["number"]): [float(r[f"objective.{name}"]) for name, _ in objectives] for r in rows}
    directions = [direction for _, direction in objectives]
    expected = {n for n, p in points.items() if not any(dominates(q, p, directions) for q in points.values())}
    front = json.loads((run_dir / "pareto.json").read_text())
    assert {entry["trial"] for entry in front} == expected
    for entry in front:
        assert [entry["objectives"][name] for name, _ in objectives] == points[entry["trial"]]
        assert set(entry) == {"trial", "objectives", "hyperparameters"}
    assert (run_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return front


ACCURACY_VS_SIZE = [("eval_accuracy", "maximize"), ("model_num_parameters", "minimize")]


@pytest.mark.slow
def test_optuna_nsga2_pareto_search(make_config: Callable[..., DictConfig]) -> None:
    cfg = make_config("experiment=smoke_pareto")
    result = run(cfg)
    front = _check_front(Path(cfg.run_dir), ACCURACY_VS_SIZE)
    assert len(result.trials) == 6 and front
    sizes = {t.params["num_hidden_layers"]: t.metrics["model_num_parameters"] for t in result.trials}
    assert len(set(sizes.values())) > 1  # model_init really built models of different size


def test_optuna_latency_objective(make_config: Callable[..., DictConfig]) -> None:
    cfg = make_config(
        "experiment=smoke_pareto",
        "n_trials=3",
        "data.train_size=200",
        "training.num_train_epochs=1",
        "objective.objectives=[{metric:eval_loss,direction:minimize},{metric:model_latency_ms,direction:minimize}]",
    )
    result = run(cfg)
    assert all(t.values[1] > 0 for t in result.trials)
    _check_front(Path(cfg.run_dir), [("eval_loss", "minimize"), ("model_latency_ms", "minimize")])


def test_sigopt_multi_metric_front_comes_from_best_assignments(
    make_config: Callable[..., DictConfig], sigopt_server: SigOptStandIn
) -> None:
    cfg = make_config("experiment=smoke_pareto", "backend=sigopt", "n_trials=5", "data.train_size=300")
    run(cfg)
    (experiment,) = sigopt_server.experiments.values()
    assert [m["name"] for m in experiment["metrics"]] == ["eval_accuracy", "model_num_parameters"]
    assert [m["objective"] for m in experiment["metrics"]] == ["maximize", "minimize"]
    assert ("GET", f"/v1/experiments/{experiment['id']}/best_assignments") in sigopt_server.requests
    _check_front(Path(cfg.run_dir), ACCURACY_VS_SIZE)


@requires("sigoptlite")
def test_sigoptlite_front_matches_the_non_dominated_observations(
    make_config: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The front comes from SigOpt's own optimizer (sigoptlite's best_assignments), and must equal hpsearch's own
    non-dominated computation on the same observations."""
    monkeypatch.delenv("SIGOPT_API_TOKEN", raising=False)
    cfg = make_config(
        "experiment=smoke_pareto", "backend=sigopt", "backend.driver=lite", "n_trials=5", "data.train_size=300"
    )
    result = run(cfg)
    assert len(result.trials) == 5
    _check_front(Path(cfg.run_dir), ACCURACY_VS_SIZE)


@pytest.mark.slow
def test_ray_optuna_search_with_two_metrics(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli(
        "experiment=smoke_pareto", "backend=ray", "backend.search_alg=optuna", "n_trials=4", "data.train_size=300"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _check_front(tmp_path / "run", ACCURACY_VS_SIZE)


def test_a_pareto_front_holds_feasible_trials_only(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """An outcome constraint on a reported metric: the smallest models, which the unconstrained front would
    hold, break it, and pareto.json leaves them out (optuna's own ``best_trials`` and hpsearch's check)."""
    done = cli(
        "experiment=smoke_pareto",
        "n_trials=6",
        "data.train_size=256",
        "data.eval_size=128",
        "training.num_train_epochs=1",
        "+constraints.big_enough='model_num_parameters >= 150000'",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_trials(tmp_path / "run")
    infeasible = {int(row["number"]) for row in rows if float(row["constraint_big_enough"]) > 0}
    assert infeasible == {int(r["number"]) for r in rows if float(r["objective.model_num_parameters"]) < 150000}
    assert infeasible and len(infeasible) < len(rows), rows  # this seed draws both kinds
    front = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert front and not {entry["trial"] for entry in front} & infeasible, front
    assert all(entry["objectives"]["model_num_parameters"] >= 150000 for entry in front)


def test_pruner_with_several_objectives_is_rejected(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    done = cli("experiment=smoke_pareto", "backend.pruner=median", "training.eval_strategy=steps")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "hpsearch: error: backend.pruner=median: optuna cannot prune a multi-objective study; set backend.pruner=none"
    )


def test_smoke_prune_really_prunes(make_config: Callable[..., DictConfig]) -> None:
    result = run(make_config("experiment=smoke_prune"))
    states = [t.state for t in result.trials]
    assert len(states) == 8 and "PRUNED" in states and "COMPLETE" in states


def test_unknown_objective_metric_lists_what_is_available() -> None:
    objectives = Objectives.from_config(
        {"metrics": ["accuracy"], "objectives": [{"metric": "bleu", "direction": "maximize"}]}
    )
    with pytest.raises(ValueError, match=r"'eval_bleu' is never returned.*model_latency_ms"):
        objectives.check_reachable()  # app.run checks it at once; a data._target_ task's metrics are known later
    objectives.check_reachable(task_metrics=["bleu"])  # ... such as a task that computes bleu
