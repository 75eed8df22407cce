"""End-to-end searches through the compose API: results files, failures, re-runs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from omegaconf import DictConfig
from support import FAILING_MODEL, read_trials

from hpsearch.app import run
from hpsearch.errors import SearchAborted, SearchIncomplete
from hpsearch.results import BEST_JSON, BEST_YAML


def test_smoke_search_writes_every_result_file(make_config: Callable[..., DictConfig]) -> None:
    cfg = make_config("experiment=ci", "n_trials=3", "seed=1")
    result = run(cfg)
    run_dir = Path(cfg.run_dir)

    rows = read_trials(run_dir)
    assert [row["number"] for row in rows] == ["0", "1", "2"]
    assert {row["state"] for row in rows} == {"COMPLETE"}
    ends = [datetime.fromisoformat(row["finished_at"]) for row in rows]  # ISO 8601, not a raw epoch float
    assert all(end.tzinfo is not None for end in ends) and ends == sorted(ends)
    assert [end.timestamp() for end in ends] == pytest.approx([trial.finished_at for trial in result.trials], abs=1e-3)
    for column in (
        "objective",
        "learning_rate",
        "per_device_train_batch_size",
        "hidden_dropout_prob",
        "eval_accuracy",
        "eval_f1",
        "eval_loss",
        "duration_s",
    ):
        assert column in rows[0], column
    for row in rows:
        assert 1e-4 <= float(row["learning_rate"]) <= 1e-2
        assert row["per_device_train_batch_size"] in ("16", "32")
        assert float(row["objective"]) == float(row["eval_accuracy"])

    best = json.loads((run_dir / BEST_JSON).read_text())
    assert set(best) == {"trial", "objective", "hyperparameters", "metrics"}
    assert best["objective"] == max(float(row["objective"]) for row in rows)
    assert best["trial"] == result.best.number
    assert set(best["hyperparameters"]) == {"learning_rate", "per_device_train_batch_size", "hidden_dropout_prob"}
    best_yaml = yaml.safe_load((run_dir / BEST_YAML).read_text())
    assert best_yaml["hyperparameters"] == best["hyperparameters"]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["space"]["learning_rate"]["low"] == 1e-4 and saved["n_trials"] == 3


def test_trials_reach_training_arguments_and_model_init(make_config: Callable[..., DictConfig]) -> None:
    cfg = make_config(
        "experiment=ci",
        "n_trials=2",
        "~space.hidden_dropout_prob",
        "+space.hidden_dropout_prob={type:fixed,value:0.2}",
    )
    seen: list[tuple[float, float, int]] = []
    from hpsearch import trainer as trainer_module

    original = trainer_module.SearchTrainer._hp_search_setup

    def spy(self, trial):  # type: ignore[no-untyped-def]
        original(self, trial)
        if self._trial_params is not None:  # inside a trial, not the Trainer's own set-up
            seen.append(
                (self.args.learning_rate, self.model.config.hidden_dropout_prob, self.args.per_device_train_batch_size)
            )

    trainer_module.SearchTrainer._hp_search_setup = spy
    try:
        result = run(cfg)
    finally:
        trainer_module.SearchTrainer._hp_search_setup = original
    assert len(seen) == 2
    for (lr, dropout, batch), trial in zip(seen, result.trials, strict=False):
        assert lr == trial.params["learning_rate"] and batch == trial.params["per_device_train_batch_size"]
        assert dropout == 0.2 == trial.params["hidden_dropout_prob"]


def test_rerun_from_best_yaml_trains_exactly_the_best_hyperparameters(
    make_config: Callable[..., DictConfig], tmp_path: Path
) -> None:
    first = run(make_config("experiment=ci", "n_trials=2"))
    best_yaml = tmp_path / "run" / BEST_YAML
    again = run(make_config("experiment=ci", f"rerun={best_yaml}", f"run_dir={tmp_path / 'rerun'}"))
    assert len(again.trials) == 1
    assert again.trials[0].params == first.best.params
    assert again.best.values == pytest.approx(first.best.values)


def test_failing_trial_is_recorded_and_the_search_goes_on(make_config: Callable[..., DictConfig]) -> None:
    """Both grid points are tried; with one failed, the grid runs out one trial short of n_trials=2."""
    cfg = make_config("experiment=ci", "n_trials=2", *FAILING_MODEL)
    with pytest.raises(SearchIncomplete, match=r"n_trials=2: the search ended with 1 finished trials: .* grid"):
        run(cfg)
    rows = {float(row["hidden_dropout_prob"]): row for row in read_trials(Path(cfg.run_dir))}
    assert rows[0.1]["state"] == "FAIL" and rows[0.1]["objective"] == ""
    assert rows[0.0]["state"] == "COMPLETE"
    assert json.loads((Path(cfg.run_dir) / "best.json").read_text())["hyperparameters"]["hidden_dropout_prob"] == 0.0


def test_too_many_failures_stop_the_search(make_config: Callable[..., DictConfig]) -> None:
    cfg = make_config("experiment=ci", "n_trials=2", "max_failures=0", *FAILING_MODEL)
    with pytest.raises(SearchAborted, match=r"max_failures: 1 trials failed \(max_failures=0\).*injected failure"):
        run(cfg)
    assert any(row["state"] == "FAIL" for row in read_trials(Path(cfg.run_dir)))


def test_nan_objective_is_a_failed_trial(make_config: Callable[..., DictConfig]) -> None:
    overrides = [
        o.replace("failing_tiny_bert", "nan_tiny_bert").replace("fail_when", "nan_when") for o in FAILING_MODEL
    ]
    cfg = make_config("experiment=ci", "n_trials=2", "objective=loss", *overrides)
    with pytest.raises(SearchIncomplete):
        run(cfg)
    states = {float(row["hidden_dropout_prob"]): row["state"] for row in read_trials(Path(cfg.run_dir))}
    assert states == {0.0: "COMPLETE", 0.1: "FAIL"}


def test_default_demo_composes_and_its_model_and_data_load(make_config: Callable[..., DictConfig]) -> None:
    from hydra.utils import instantiate

    from hpsearch.data import read_data, tokenize_data
    from hpsearch.model import ModelInit

    cfg = make_config()
    assert cfg.backend.name == "optuna" and cfg.n_trials == 4
    tokenizer = instantiate(cfg.model.tokenizer)
    data = tokenize_data(read_data(cfg.data, cfg.seed), cfg.data, tokenizer)
    assert (len(data.train), len(data.eval)) == (1500, 500)
    assert data.label_names == ["fresh", "rotten"]
    assert 0.40 < sum(data.eval["labels"]) / len(data.eval) < 0.44  # stratified: 42% "rotten", as in the corpus
    assert max(len(ids) for ids in data.train["input_ids"]) <= 64
    model = ModelInit.build(instantiate(cfg.model.model_init, _partial_=True), data.model_context)(
        {"hidden_dropout_prob": 0.1}
    )
    assert model.config.num_labels == 2 and model.config.id2label == {0: "fresh", 1: "rotten"}
    assert model.config.hidden_dropout_prob == 0.1
    assert sum(p.numel() for p in model.parameters()) > 22_000_000  # the real pretrained MiniLM


@pytest.mark.parametrize("select", ["last", "best"])
def test_objective_from_the_last_or_the_best_evaluation(
    make_config: Callable[..., DictConfig], tmp_path: Path, select: str
) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    # eval_loss of a high learning rate: it jumps about, so a trial's best evaluation is seldom its last.
    cfg = make_config(
        "experiment=ci",
        "objective=loss",
        "n_trials=2",
        "study_name=select",
        f"objective.select={select}",
        "space.learning_rate.low=0.005",
        "training.eval_strategy=steps",
        "training.eval_steps=2",
        "training.num_train_epochs=2",
    )
    result = run(cfg)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "studies" / "select.log")))
    for record, trial in zip(
        result.trials, optuna.load_study(study_name="select", storage=storage).trials, strict=False
    ):
        evaluations = [trial.intermediate_values[step] for step in sorted(trial.intermediate_values)]
        assert len(evaluations) >= 8  # 256 examples, batches of 16 or 32, 2 epochs: 16 or 32 steps, evaluated every 2
        expected = min(evaluations) if select == "best" else evaluations[-1]
        assert record.values == [expected] and record.metrics["eval_loss"] == expected
    if select == "best":  # the test can tell the two apart: some trial's best evaluation was not its last
        assert any(
            min(t.intermediate_values.values()) != t.intermediate_values[max(t.intermediate_values)]
            for t in optuna.load_study(study_name="select", storage=storage).trials
        )


def test_failed_trials_are_replaced_until_n_trials_finished(
    make_config: Callable[..., DictConfig], caplog: pytest.LogCaptureFixture
) -> None:
    """One process, optuna: a failed trial does not count towards n_trials, so another one runs in its place, and
    the progress counts finished trials only (it never runs past n_trials)."""
    random_failures = [override for override in FAILING_MODEL if override != "backend.sampler=grid"]
    overrides = ["n_trials=3", "max_failures=10", "backend.sampler=random", "progress=true", *random_failures]
    cfg = make_config("experiment=ci", *overrides)
    with caplog.at_level("INFO", logger="hpsearch.progress"):
        states = [trial.state.value for trial in run(cfg).trials]
    assert states.count("COMPLETE") == 3 and "FAIL" in states, states
    assert [row["state"] for row in read_trials(Path(cfg.run_dir))] == states
    counts = [int(done) for done in re.findall(r"\((\d+)/3 finished", caplog.text)]
    assert counts == sorted(counts) and len(counts) == len(states) and max(counts) == 3  # a FAIL line adds none
