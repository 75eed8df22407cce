"""LoRA searches (``peft=lora``): where each parameter goes, a fresh adapter per trial on a base model that is
read once per process and left bit for bit as loaded, and the best adapter reloaded with peft."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig
from support import read_trials, requires

from hpsearch.errors import ConfigError
from hpsearch.model import ModelInit, char_tokenizer, tiny_bert
from hpsearch.space import SearchSpace
from hpsearch.training import argument_fields

pytestmark = requires("peft")

R_CHOICES = "+space.r={type:categorical,choices:[4,8,16]}"
ALPHA_OVER_R = "+space.alpha_over_r={type:categorical,choices:[1.0,2.0]}"
LABELS = {"num_labels": 2, "id2label": {0: "a", 1: "b"}, "label2id": {"a": 0, "b": 1}}


def model_with_r(num_labels: int, id2label: dict, label2id: dict, tokenizer: Any, r: int) -> Any:
    """A model_init that takes an argument named like a LoraConfig field."""
    return tiny_bert(num_labels, id2label, label2id, tokenizer)


def model_with_learning_rate(num_labels: int, id2label: dict, label2id: dict, learning_rate: float) -> Any:
    """A model_init that takes an argument named like a TrainingArguments field."""
    raise AssertionError("never built: the routing check comes first")


ROUTES = [  # (model_init target, parameter, peft set, the config error or None)
    (tiny_bert, "learning_rate", False, None),
    (tiny_bert, "hidden_dropout_prob", True, None),
    (tiny_bert, "r", True, None),
    (tiny_bert, "alpha_over_r", True, None),
    (tiny_bert, "lora_dropout", True, None),
    (tiny_bert, "r", False, "space.r: a LoRA adapter setting, but peft=none; add peft=lora or remove it"),
    (tiny_bert, "rank", True, "space.rank: neither a TrainingArguments field nor an argument of model_init"),
    (model_with_r, "r", True, "space.r: both an argument of model_init and a LoraConfig field (peft)"),
    (model_with_r, "r", False, None),
    (
        model_with_learning_rate,
        "learning_rate",
        False,
        "space.learning_rate: both a TrainingArguments field and an argument of model_init",
    ),
]


@pytest.mark.parametrize(("target", "name", "adapter", "error"), ROUTES)
def test_each_parameter_has_one_destination(target: Any, name: str, adapter: bool, error: str | None) -> None:
    from hpsearch.routing import check_space_routing

    space = SearchSpace.from_config({name: {"type": "categorical", "choices": [1, 2]}})
    model_init = ModelInit.build(target, {**LABELS, "tokenizer": None})
    if error is None:
        check_space_routing(space, argument_fields(), model_init, adapter)
        return
    with pytest.raises(ConfigError) as raised:
        check_space_routing(space, argument_fields(), model_init, adapter)
    assert str(raised.value).startswith(error), raised.value


def adapted(**settings: Any) -> Any:
    from hpsearch.peft import AdaptedModelInit, AdapterSettings

    adapter = AdapterSettings.from_config({"_target_": "peft.LoraConfig", "target_modules": "all-linear", **settings})
    assert adapter is not None
    return AdaptedModelInit(ModelInit.build(tiny_bert, {**LABELS, "tokenizer": char_tokenizer()}), adapter)


def test_r_sizes_the_adapter_and_alpha_over_r_sets_lora_alpha() -> None:
    models = adapted()
    trainable = []
    for r in (4, 8, 16):
        model = models({"r": r, "alpha_over_r": 2.0})
        assert model.peft_config["default"].lora_alpha == 2.0 * r
        trainable.append(models.describe(model)["model_trainable_parameters"])
    assert len(set(trainable)) == 3 and trainable == sorted(trainable), trainable


@pytest.mark.parametrize(
    ("target_modules", "error"),
    [
        ("query-value", None),
        (["query", "value"], None),
        (["query", "q_proj"], "peft.target_modules: 'q_proj' is not a module of the model; its linear modules are"),
    ],
)
def test_target_modules_are_the_models_own(target_modules: Any, error: str | None) -> None:
    models = adapted(target_modules=target_modules)
    if error is None:
        parts = [name.split(".") for name, _ in models({}).named_parameters()]
        adapted_names = {part[part.index("lora_A") - 1] for part in parts if "lora_A" in part}
        assert adapted_names == {"query", "value"}
        return
    with pytest.raises(ConfigError, match=error):
        models({})


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (["+space.r={type:int,low:2,high:4}"], "space.r: a LoRA adapter setting, but peft=none; add peft=lora"),
        (["peft=lora", "+peft.rank=4"], "peft.rank: not a LoraConfig field; fix or remove it"),
        (["peft=lora", "peft.r=0"], "peft.r: must be an integer >= 1 (got 0); fix the value"),
        (["peft=lora", "peft.bias=maybe"], "peft.bias: must be one of none, all, lora_only (got 'maybe')"),
        (["peft=lora", "+space.r={type:int,low:0,high:4}"], "space.r: must be an integer >= 1 (got 0)"),
        (["peft=lora", "peft.use_dora=maybe"], "peft.use_dora: 'maybe' is not a valid bool; fix the value"),
        (
            ["peft=lora", ALPHA_OVER_R, "+space.lora_alpha={type:int,low:8,high:16}"],
            "space.alpha_over_r: sets lora_alpha, which the space also searches; keep one of the two",
        ),
    ],
)
def test_bad_adapter_settings_are_config_errors(
    make_config: Callable[..., DictConfig], overrides: list[str], error: str
) -> None:
    from hpsearch.app import run

    with pytest.raises(ConfigError) as raised:
        run(make_config("experiment=ci", *overrides))
    assert str(raised.value).startswith(error), raised.value


def test_a_trial_trains_its_adapter_and_leaves_the_base_weights_bit_identical(
    make_config: Callable[..., DictConfig],
) -> None:
    import torch

    from hpsearch.app import Plan
    from hpsearch.peft import _BASES

    plan = Plan.from_config(make_config("experiment=ci", "peft=lora", "~space.hidden_dropout_prob", R_CHOICES))
    trainer = plan.trainer()
    models = trainer.hpsearch_model_init
    models.release()  # the adapter Trainer.__init__ attached to check the model builds
    base = _BASES[models._key][1]
    loaded = {name: tensor.clone() for name, tensor in base.state_dict().items()}
    outcome = trainer.run_trial({"learning_rate": 5e-3, "per_device_train_batch_size": 16, "r": 8})
    assert outcome.state.value == "COMPLETE", outcome.error
    assert outcome.metrics["model_trainable_parameters"] < outcome.metrics["model_num_parameters"] / 5
    assert _BASES[models._key][1] is base and not hasattr(base, "peft_config")
    after = base.state_dict()
    assert set(after) == set(loaded)
    assert all(torch.equal(after[name], tensor) for name, tensor in loaded.items())
    assert all(parameter.requires_grad for parameter in base.parameters())


@pytest.fixture
def saved_base(tmp_path: Path) -> Path:
    """A small BERT classifier saved with ``save_pretrained``: a base read from disk, as a real one is."""
    folder = tmp_path / "base"
    tiny_bert(**LABELS, tokenizer=char_tokenizer(), vocab_size=2000).save_pretrained(folder)
    return folder


def test_a_lora_search_with_workers_reads_the_base_once_per_worker(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, saved_base: Path
) -> None:
    load_log = tmp_path / "loads.txt"
    done = cli(
        "experiment=ci",
        "peft=lora",
        "~model.model_init",
        f"+model.model_init={{_target_:helpers.logged_pretrained_classifier,name_or_path:'{saved_base}',"
        f"load_log:'{load_log}'}}",
        "~space.hidden_dropout_prob",
        R_CHOICES,
        ALPHA_OVER_R,
        "backend.sampler=random",
        "n_trials=6",
        "workers=2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = read_trials(tmp_path / "run")
    assert [row["state"] for row in table] == ["COMPLETE"] * 6
    trainable = {row["r"]: row["model_trainable_parameters"] for row in table}
    assert len(set(trainable.values())) == len(trainable) > 1, trainable  # each r its own adapter size
    pids = load_log.read_text().split()
    assert len(pids) == len(set(pids)) == 2, pids  # one read per worker process, none per trial


def test_the_best_adapter_reloads_with_peft_and_reproduces_its_metrics(
    make_config: Callable[..., DictConfig], tmp_path: Path, saved_base: Path
) -> None:
    from peft import PeftModel
    from test_best_model import evaluate_saved

    from hpsearch.app import run
    from hpsearch.best_model import SCORE_FILE
    from hpsearch.model import pretrained_classifier

    cfg = make_config(
        "experiment=ci",
        "peft=lora",
        "~model.model_init",
        f"+model.model_init={{_target_:hpsearch.model.pretrained_classifier,name_or_path:'{saved_base}'}}",
        "~space.hidden_dropout_prob",
        R_CHOICES,
        "n_trials=2",
        "save_best_model=true",
    )
    run(cfg)
    folder = Path(cfg.run_dir) / "best_model"
    kept = json.loads((folder / SCORE_FILE).read_text())
    assert kept["base_model"]["name_or_path"] == str(saved_base)
    assert (folder / "adapter_model.safetensors").is_file() and not (folder / "model.safetensors").exists()
    base = pretrained_classifier(str(saved_base), 2, {0: "fresh", 1: "rotten"}, {"fresh": 0, "rotten": 1})
    model = PeftModel.from_pretrained(base, folder)
    metrics = evaluate_saved(folder, cfg, tmp_path, model)
    assert metrics["eval_loss"] == pytest.approx(kept["metrics"]["eval_loss"], rel=1e-4)
    assert metrics["eval_accuracy"] == pytest.approx(kept["metrics"]["eval_accuracy"], abs=1e-9)
