"""SigOpt backend: the real sigopt client against a local stand-in of the SigOpt REST API."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig
from standins.sigopt_server import SigOptStandIn
from support import read_trials, requires

from hpsearch.app import run
from hpsearch.backends.sigopt import native_conditionals, native_parameter, native_parameters
from hpsearch.space import SearchSpace, parse_param

TO_SIGOPT = [
    (
        {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
        {"name": "p", "type": "double", "bounds": {"min": 1e-5, "max": 1e-3}, "transformation": "log"},
    ),
    ({"type": "float", "low": 0.0, "high": 0.5}, {"name": "p", "type": "double", "bounds": {"min": 0.0, "max": 0.5}}),
    ({"type": "float", "low": 0.0, "high": 0.2, "step": 0.1}, {"name": "p", "type": "double", "grid": [0.0, 0.1, 0.2]}),
    ({"type": "int", "low": 1, "high": 3}, {"name": "p", "type": "int", "bounds": {"min": 1, "max": 3}}),
    (
        {"type": "int", "low": 8, "high": 64, "log": True},  # SigOpt log-transforms doubles only; rounded back
        {"name": "p", "type": "double", "bounds": {"min": 8, "max": 64}, "transformation": "log"},
    ),
    ({"type": "int", "low": 2, "high": 8, "step": 3}, {"name": "p", "type": "int", "grid": [2, 5, 8]}),
    (
        {"type": "categorical", "choices": [16, 32, None]},
        {"name": "p", "type": "categorical", "categorical_values": ["16", "32", "None"]},
    ),
    ({"type": "categorical", "choices": ["only"]}, None),
    ({"type": "float", "low": 0.1, "high": 0.1}, None),
    ({"type": "fixed", "value": 1}, None),
]


@pytest.mark.parametrize(("spec", "expected"), TO_SIGOPT)
def test_space_maps_to_exact_sigopt_parameter(spec: dict, expected: object) -> None:
    native = native_parameter(parse_param("p", spec))
    if expected is not None and "grid" in expected:
        assert native["grid"] == pytest.approx(expected["grid"]) and {**native, "grid": 0} == {**expected, "grid": 0}
    else:
        assert native == expected


CONDITIONED = {
    "scheduler": {"type": "categorical", "choices": ["linear", "cosine"]},
    "warmup": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1, "when": {"scheduler": "linear"}},
    "floor": {"type": "int", "low": 0, "high": 2, "when": {"warmup": 0.0}},  # a float parent: no conditional
}


def test_categorical_parents_are_sigopt_conditionals_and_their_children_carry_conditions() -> None:
    space = SearchSpace.from_config(CONDITIONED)
    assert native_conditionals(space) == {"conditionals": [{"name": "scheduler", "values": ["linear", "cosine"]}]}
    by_name = {native["name"]: native for native in native_parameters(space, conditional=True)}
    assert set(by_name) == {"warmup", "floor"}  # the parent is a conditional, not a parameter
    assert by_name["warmup"]["conditions"] == {"scheduler": ["linear"]}
    assert "conditions" not in by_name["floor"]  # drawn always, and dropped by hpsearch where warmup is not 0.0
    assert "conditions" not in str(native_parameters(space))  # sigoptlite: no conditionals at all


def test_a_conditional_parameter_is_left_out_of_the_servers_suggestions(
    make_config: Callable[..., DictConfig], sigopt_server: SigOptStandIn
) -> None:
    cfg = make_config(
        "experiment=ci",
        "backend=sigopt",
        "n_trials=8",
        "+space.hidden_dropout_prob.when={per_device_train_batch_size: 16}",
    )
    result = run(cfg)
    ((experiment_id, experiment),) = sigopt_server.experiments.items()
    assert experiment["conditionals"] == [{"name": "per_device_train_batch_size", "values": ["16", "32"]}]
    for observation in sigopt_server.observations[experiment_id]:
        drawn = observation["assignments"]
        assert ("hidden_dropout_prob" in drawn) == (drawn["per_device_train_batch_size"] == "16"), drawn
    for trial in result.trials:
        assert ("hidden_dropout_prob" in trial.params) == (trial.params["per_device_train_batch_size"] == 16)
    assert {trial.params["per_device_train_batch_size"] for trial in result.trials} == {16, 32}


def test_smoke_search_records_observations_on_the_server(
    make_config: Callable[..., DictConfig], sigopt_server: SigOptStandIn
) -> None:
    cfg = make_config("experiment=ci", "backend=sigopt", "n_trials=3")
    result = run(cfg)
    ((experiment_id, experiment),) = sigopt_server.experiments.items()
    assert experiment["observation_budget"] == 3
    assert experiment["metrics"][0]["name"] == "eval_accuracy" and experiment["metrics"][0]["objective"] == "maximize"
    observations = sigopt_server.observations[experiment_id]
    assert len(observations) == 3 and not any(o["failed"] for o in observations)
    rows = read_trials(Path(cfg.run_dir))
    assert [row["state"] for row in rows] == ["COMPLETE"] * 3
    for row, observation in zip(rows, observations, strict=False):
        assert int(row["per_device_train_batch_size"]) == int(observation["assignments"]["per_device_train_batch_size"])
        assert float(row["objective"]) == observation["values"][0]["value"]
    assert result.best.values[0] == max(o["values"][0]["value"] for o in observations)


def test_failed_trial_is_a_failed_observation_and_rerun_joins_the_experiment(
    make_config: Callable[..., DictConfig], sigopt_server: SigOptStandIn, tmp_path: Path
) -> None:
    from support import FAILING_MODEL

    failing = [o for o in FAILING_MODEL if o != "backend.sampler=grid"]
    run(make_config("experiment=ci", "backend=sigopt", "n_trials=2", "max_failures=10", *failing))
    ((experiment_id, observations),) = sigopt_server.observations.items()
    failed = [o for o in observations if o["failed"]]
    assert all(o["assignments"]["hidden_dropout_prob"] == "0.1" for o in failed)
    assert sum(not o["failed"] for o in observations) == 2

    again = run(
        make_config(
            "experiment=ci",
            "backend=sigopt",
            "n_trials=3",
            "max_failures=10",
            *failing,
            f"run_dir={tmp_path / 'again'}",
        )
    )
    assert list(sigopt_server.experiments) == [experiment_id]  # joined, not created anew
    assert sum(t.state == "COMPLETE" for t in again.trials) == 3
    assert len(again.trials) == len(sigopt_server.observations[experiment_id])


def test_unreachable_server_fails_fast_with_one_line(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    started = time.monotonic()
    done = cli("experiment=ci", "backend=sigopt", SIGOPT_API_URL="http://127.0.0.1:9", SIGOPT_API_TOKEN="x")
    assert time.monotonic() - started < 60
    assert done.returncode == 3  # backend unavailable
    assert done.stderr.strip().startswith(
        "hpsearch: error: backend=sigopt: cannot reach the SigOpt API at http://127.0.0.1:9"
    )
    assert "Traceback" not in done.stderr


def test_missing_token_is_a_config_error(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    done = cli("experiment=ci", "backend=sigopt", SIGOPT_API_TOKEN="")
    assert done.returncode == 2
    assert "set the SIGOPT_API_TOKEN environment variable" in done.stderr


@requires("sigoptlite")
def test_sigoptlite_driver_runs_in_memory(
    make_config: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SigOpt's own in-memory optimizer; optional, since it pins an old numpy (install it with --no-deps)."""
    monkeypatch.delenv("SIGOPT_API_TOKEN", raising=False)
    result = run(make_config("experiment=ci", "backend=sigopt", "backend.driver=lite", "n_trials=3"))
    assert [t.state for t in result.trials] == ["COMPLETE"] * 3
    for trial in result.trials:
        assert trial.params["per_device_train_batch_size"] in (16, 32)
        assert 1e-4 <= trial.params["learning_rate"] <= 1e-2


def test_remembered_experiment_unknown_to_the_server_says_where_it_came_from(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, sigopt_server: SigOptStandIn
) -> None:
    state = tmp_path / ".hpsearch" / "sigopt-ci.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"experiment_id": "999"}')
    done = cli("experiment=ci", "backend=sigopt", "n_trials=1")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"hpsearch: error: backend.experiment_id: '999', remembered for study_name=ci in {state}, is unknown to "
        "the sigopt server; delete that file or pick another study_name to start afresh"
    )


def test_configured_experiment_unknown_to_the_server(
    cli: Callable[..., subprocess.CompletedProcess[str]], sigopt_server: SigOptStandIn
) -> None:
    done = cli("experiment=ci", "backend=sigopt", "n_trials=1", "backend.experiment_id=999")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "hpsearch: error: backend.experiment_id=999: the sigopt server does not know it; check the id and the "
        "server, or drop backend.experiment_id to start a new one"
    )
