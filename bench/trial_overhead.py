"""Per-trial cost of hpsearch vs plain ``Trainer.hyperparameter_search`` (optuna), measured in one run.

Both sides train the same tiny BERT on the same tokenised smoke data with the same fixed hyperparameters,
so the difference is orchestration overhead. Per-trial cost is the slope between a short and a long
search, which cancels start-up (imports, data, the first model). Usage::

    python bench/trial_overhead.py [--short 2] [--long 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import optuna
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments

from hpsearch.app import _quiet_libraries, run
from hpsearch.config import config_dir
from hpsearch.data import load_data
from hpsearch.model import ModelInit

FIXED = {"learning_rate": 1e-3, "per_device_train_batch_size": 32, "hidden_dropout_prob": 0.1}


def hpsearch_seconds(n_trials: int, workdir: Path) -> float:
    space = ",".join(f"{k}:{{type:fixed,value:{v}}}" for k, v in FIXED.items())
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["experiment=smoke", f"n_trials={n_trials}", "~space", f"+space={{{space}}}", "progress=false",
                       f"run_dir={workdir / f'hp{n_trials}'}", f"storage_dir={workdir}", f"study_name=bench{n_trials}-{time.time_ns()}"],
        )
    started = time.perf_counter()
    run(cfg)
    return time.perf_counter() - started


def plain_seconds(n_trials: int, workdir: Path) -> float:
    """What a user writes without hpsearch: the same data and model through transformers' optuna path."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=smoke"])
    started = time.perf_counter()
    tokenizer = instantiate(cfg.model.tokenizer)
    data = load_data(cfg.data, tokenizer, seed=cfg.seed)
    model_init = ModelInit.build(instantiate(cfg.model.model_init, _partial_=True), {**data.model_context, "tokenizer": tokenizer})
    args = TrainingArguments(output_dir=str(workdir / f"plain{n_trials}"), seed=cfg.seed, **cfg.training)
    trainer = Trainer(
        model_init=lambda trial: model_init({"hidden_dropout_prob": FIXED["hidden_dropout_prob"]}),
        args=args, train_dataset=data.train, eval_dataset=data.eval,
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.hyperparameter_search(
        hp_space=lambda trial: {k: v for k, v in FIXED.items() if k != "hidden_dropout_prob"},
        n_trials=n_trials, direction="minimize", backend="optuna",
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=2)
    parser.add_argument("--long", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    _quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    slopes: dict[str, list[float]] = {"plain": [], "hpsearch": []}
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        for _ in range(options.repeats):  # interleaved, so drift hits both sides alike
            for name, measure in (("plain", plain_seconds), ("hpsearch", hpsearch_seconds)):
                short, long = measure(options.short, workdir), measure(options.long, workdir)
                slopes[name].append((long - short) / (options.long - options.short))
    plain, ours = statistics.median(slopes["plain"]), statistics.median(slopes["hpsearch"])
    print(f"seconds per trial (median of {options.repeats}, slope {options.short}->{options.long} trials)")
    print(f"  plain Trainer.hyperparameter_search: {plain:.3f}")
    print(f"  hpsearch:                            {ours:.3f}")
    print(f"  ratio hpsearch / plain:              {ours / plain:.2f}")


if __name__ == "__main__":
    main()
