"""``save_best_model=true``: the best trial's model is kept, reloads, and scores what its trial recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf
from support import requires

from hpsearch.app import run
from hpsearch.best_model import SCORE_FILE, BestModelKeeper
from hpsearch.objective import Objectives
from hpsearch.trials import TrialOutcome, TrialState


def evaluate_saved(folder: Path, cfg: DictConfig, tmp_path: Path, model: Any = None) -> dict[str, float]:
    """Reload the kept model (or take ``model``, reloaded by the caller) and tokenizer with ``from_pretrained``,
    and evaluate them on the search's eval split."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from hpsearch.data import read_data, tokenize_data

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if model is None:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
    config = OmegaConf.to_container(cfg.data, resolve=True)
    data = tokenize_data(read_data(config, cfg.seed), config, tokenizer)
    objectives = Objectives.from_config(OmegaConf.to_container(cfg.objective, resolve=True))
    args = TrainingArguments(output_dir=str(tmp_path / "eval"), per_device_eval_batch_size=128, report_to=[])
    trainer = Trainer(
        model=model,
        args=args,
        eval_dataset=data.eval,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=objectives.metric_function(regression=False),
    )
    return trainer.evaluate()


@pytest.mark.parametrize("backend", ["optuna", pytest.param("sigopt", marks=requires("sigoptlite"))])
def test_best_model_reloads_and_reproduces_its_metrics(
    make_config: Callable[..., DictConfig], tmp_path: Path, backend: str
) -> None:
    extra = ["backend.driver=lite"] if backend == "sigopt" else []
    cfg = make_config("experiment=ci", "n_trials=3", f"backend={backend}", *extra, "save_best_model=true")
    result = run(cfg)
    folder = Path(cfg.run_dir) / "best_model"
    kept = json.loads((folder / SCORE_FILE).read_text())
    assert kept["values"] == result.best.values  # the best of the three, whichever trial came first
    assert kept["hyperparameters"] == result.best.params
    metrics = evaluate_saved(folder, cfg, tmp_path)
    assert metrics["eval_accuracy"] == pytest.approx(kept["metrics"]["eval_accuracy"], abs=1e-9)
    assert metrics["eval_loss"] == pytest.approx(kept["metrics"]["eval_loss"], rel=1e-4)


def test_kept_model_is_replaced_only_by_a_better_trial(tmp_path: Path) -> None:
    objectives = Objectives.from_config(
        {"metrics": ["accuracy"], "objectives": [{"metric": "eval_accuracy", "direction": "maximize"}]}
    )
    keeper = BestModelKeeper(tmp_path / "best_model", objectives)
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    )

    def outcome(value: float) -> TrialOutcome:
        return TrialOutcome(
            state=TrialState.COMPLETE, params={"learning_rate": value}, values=[value], metrics={"eval_accuracy": value}
        )

    assert keeper.offer(model, None, outcome(0.6))
    assert not keeper.offer(model, None, outcome(0.5))  # worse: the kept model stays
    assert not keeper.offer(model, None, outcome(0.6))  # a tie does not replace it either
    assert keeper.score()["values"] == [0.6]
    assert keeper.offer(model, None, outcome(0.7))
    assert keeper.score()["hyperparameters"] == {"learning_rate": 0.7}
    assert sorted(path.name for path in tmp_path.iterdir()) == [".best_model.lock", "best_model"]  # no staging left


def test_rerun_keeps_its_model(make_config: Callable[..., DictConfig], tmp_path: Path) -> None:
    first = make_config("experiment=ci", "n_trials=1")
    run(first)
    again = make_config(
        "experiment=ci",
        f"rerun={Path(first.run_dir) / 'best_hyperparameters.yaml'}",
        "save_best_model=true",
        f"run_dir={tmp_path / 'rerun'}",
    )
    result = run(again)
    assert json.loads((tmp_path / "rerun" / "best_model" / SCORE_FILE).read_text())["values"] == result.best.values
