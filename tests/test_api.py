"""``hpsearch.search(trainer, ...)``: a Trainer built in Python, searched through the same loop as the CLI."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import assert_shared_search, read_trials, requires

import hpsearch
from hpsearch.errors import ConfigError
from hpsearch.space import SearchSpace

CI_DATA = {
    "source": "pkg:hpsearch/resources/rotten_tomatoes.csv.gz",
    "text_column": "text",
    "label_column": "label",
    "train_split": "train",
    "eval_split": None,
    "train_size": 256,
    "eval_size": 128,
    "max_length": 48,
}
CI_SPACE = {  # conf/space/smoke.yaml
    "learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "per_device_train_batch_size": {"type": "categorical", "choices": [16, 32]},
    "hidden_dropout_prob": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
}


def ci_trainer(
    tmp_path: Path, with_model_init: bool = True, importable: bool = False, trainer_class: Any = None
) -> Any:
    """experiment=ci's search as a user writes it in a script: a tokenizer, the data, a model_init (a local
    function, or with ``importable`` a module-level one), a Trainer."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from hpsearch.data import read_data, tokenize_data
    from hpsearch.model import tiny_bert, wordpiece_tokenizer
    from hpsearch.objective import Objectives

    tokenizer = wordpiece_tokenizer(CI_DATA["source"], "text", 2000)
    data = tokenize_data(read_data(CI_DATA, 42), CI_DATA, tokenizer)
    labels = {key: data.model_context[key] for key in ("num_labels", "id2label", "label2id")}

    def model_init(trial: dict[str, Any] | None = None) -> Any:
        dropout = (trial or {}).get("hidden_dropout_prob", 0.1)
        return tiny_bert(
            labels["num_labels"], labels["id2label"], labels["label2id"], tokenizer, hidden_dropout_prob=dropout
        )

    objectives = Objectives.from_config(
        {"metrics": ["accuracy", "f1"], "objectives": [{"metric": "eval_accuracy", "direction": "maximize"}]}
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "mine"),
        num_train_epochs=1,
        logging_strategy="no",
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        ddp_timeout=300,
        average_tokens_across_devices=False,
    )
    if importable:
        import functools

        from helpers import api_tiny_bert

        model_init = functools.partial(api_tiny_bert, tokenizer=tokenizer, **labels)  # type: ignore[assignment]
    return (trainer_class or Trainer)(
        model_init=model_init if with_model_init else None,
        model=None if with_model_init else model_init(),
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=objectives.metric_function(regression=False),
        processing_class=tokenizer,
    )


def test_the_api_and_the_cli_give_the_same_trials(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli("experiment=ci", "n_trials=2", "backend.sampler=random", "study_name=same")
    assert done.returncode == 0, done.stderr[-3000:]
    from_cli = read_trials(tmp_path / "run")
    result = hpsearch.search(
        ci_trainer(tmp_path),
        space=CI_SPACE,
        objective="eval_accuracy",
        n_trials=2,
        seed=42,
        sampler="random",
        study_name="same-api",
        storage_dir=str(tmp_path / "api-studies"),
        run_dir=tmp_path / "api",
    )
    from_api = read_trials(tmp_path / "api")
    assert list(result.trials["state"]) == ["COMPLETE", "COMPLETE"]
    for cli_row, api_row in zip(from_cli, from_api, strict=True):
        for name in CI_SPACE:
            assert api_row[name] == cli_row[name]
        assert float(api_row["eval_loss"]) == pytest.approx(float(cli_row["eval_loss"]), rel=1e-5)
        assert api_row["eval_accuracy"] == cli_row["eval_accuracy"]
    assert result.best is not None and result.best.params == {
        name: type(result.best.params[name])(from_api[result.best.number][name]) for name in CI_SPACE
    }
    assert (tmp_path / "api" / "best.json").is_file()


def test_a_rerun_of_the_same_call_resumes_its_study(tmp_path: Path) -> None:
    call = {
        "space": CI_SPACE,
        "objective": "eval_loss",
        "storage_dir": str(tmp_path / "studies"),
        "study_name": "resumed",
    }
    hpsearch.search(ci_trainer(tmp_path), n_trials=1, run_dir=tmp_path / "first", **call)
    result = hpsearch.search(ci_trainer(tmp_path), n_trials=2, run_dir=tmp_path / "second", **call)
    assert list(result.trials["number"]) == [0, 1]  # the first trial kept, one more trained


def test_the_api_takes_conditions_constraints_and_warm_start_points(tmp_path: Path) -> None:
    space = {
        **CI_SPACE,
        "hidden_dropout_prob": {**CI_SPACE["hidden_dropout_prob"], "when": {"per_device_train_batch_size": 16}},
    }
    result = hpsearch.search(
        ci_trainer(tmp_path),
        space=SearchSpace.from_config(space),  # a SearchSpace keeps its conditions too
        objective="eval_loss",
        n_trials=3,
        storage_dir=str(tmp_path / "studies"),
        run_dir=tmp_path / "run",
        constraints={"small_steps": "learning_rate * per_device_train_batch_size <= 0.032"},
        warm_start={"points": [{"learning_rate": 0.0005, "per_device_train_batch_size": 32}]},
    )
    trials = result.trials
    first = trials.iloc[0]
    assert (first["learning_rate"], first["per_device_train_batch_size"]) == (0.0005, 32)
    assert trials["hidden_dropout_prob"].isna().tolist() == (trials["per_device_train_batch_size"] == 32).tolist()
    trained = trials[trials["state"] == "COMPLETE"]
    assert len(trained) == 3 and (trained["constraint_small_steps"] <= 0).all()


@requires("peft")
def test_a_lora_search_on_a_given_model_leaves_its_weights_as_they_were(tmp_path: Path) -> None:
    import torch

    trainer = ci_trainer(tmp_path, with_model_init=False)
    before = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    space = {
        "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "r": {"type": "categorical", "choices": [4, 16]},
    }
    result = hpsearch.search(
        trainer,
        space=space,
        peft={"r": 8},
        n_trials=4,
        sampler="random",
        seed=3,
        run_dir=tmp_path / "lora",
        storage_dir=str(tmp_path / "studies"),
    )
    sizes = dict(zip(result.trials["r"], result.trials["model_trainable_parameters"], strict=True))
    assert len(set(sizes.values())) == len(sizes) == 2, sizes
    after = trainer.model.state_dict()
    assert all(torch.equal(after[name], tensor) for name, tensor in before.items())


@pytest.mark.parametrize(
    ("keywords", "error"),
    [
        ({"samplr": "tpe"}, "hpsearch.search: samplr: not a keyword; did you mean 'sampler'?"),
        (
            {"workers": 2},
            "workers=2: the trainer's model_init cannot be sent to a worker process (AttributeError: Can't",
        ),
        (
            {"workers": "auto"},
            "workers=auto: the trainer's model_init cannot be sent to a worker process (AttributeError: Can't",
        ),
        ({"backend": "nope"}, "backend: unknown backend 'nope'"),
        (
            {"space": {"learning_rate": {"type": "float", "low": 1.0, "high": 0.1}}},
            "space.learning_rate: low must be <= high",
        ),
    ],
)
def test_bad_keywords_are_config_errors(tmp_path: Path, keywords: dict[str, Any], error: str) -> None:
    call = {
        "space": CI_SPACE,
        "n_trials": 1,
        "run_dir": tmp_path / "run",
        "storage_dir": str(tmp_path / "s"),
        **keywords,
    }
    with pytest.raises(ConfigError) as raised:
        hpsearch.search(ci_trainer(tmp_path), **call)
    assert str(raised.value).startswith(error), raised.value


@pytest.mark.slow
@pytest.mark.solo
def test_workers_from_python_train_in_both_processes(tmp_path: Path) -> None:
    """A module-level model_init and in-memory datasets reach each worker process (pickled, as spawn sends them)."""
    result = hpsearch.search(
        ci_trainer(tmp_path, importable=True),
        space={**CI_SPACE, "num_train_epochs": {"type": "fixed", "value": 12}},  # outlasts a worker start-up
        objective="eval_accuracy",
        n_trials=4,
        workers=2,
        sampler="random",
        run_dir=tmp_path / "run",
        storage_dir=str(tmp_path / "studies"),
    )
    assert list(result.trials["state"]) == ["COMPLETE"] * 4
    assert_shared_search(tmp_path / "run", 4)


def test_a_trainer_subclass_defined_in_a_function_trains_every_trial(tmp_path: Path) -> None:
    """A notebook's own subclass, which no import can find: its compute_loss runs in every trial."""
    from transformers import Trainer

    class CountingTrainer(Trainer):
        steps = 0

        def compute_loss(self, *args: Any, **kwargs: Any) -> Any:
            CountingTrainer.steps += 1
            return super().compute_loss(*args, **kwargs)

    trainer = ci_trainer(tmp_path, trainer_class=CountingTrainer)
    space = {**CI_SPACE, "per_device_train_batch_size": {"type": "fixed", "value": 32}}
    result = hpsearch.search(
        trainer, space=space, n_trials=2, run_dir=tmp_path / "run", storage_dir=str(tmp_path / "s")
    )
    assert list(result.trials["state"]) == ["COMPLETE"] * 2
    assert CountingTrainer.steps == 2 * (8 + 1)  # 256 examples in batches of 32, and one eval batch, per trial


def test_a_trainer_is_required() -> None:
    with pytest.raises(ConfigError, match=r"hpsearch\.search: trainer: a transformers\.Trainer or subclass instance"):
        hpsearch.search(object(), space=CI_SPACE)
