"""Per-trial cost of hpsearch vs plain ``Trainer.hyperparameter_search`` (optuna), each search in a fresh process.

Three sides train the same tiny BERT on the same tokenised smoke data with the same fixed hyperparameters,
so the difference is orchestration overhead:

- ``plain``: transformers' optuna search as a user writes it;
- ``plain+freeze``: the same, with ``gc.freeze()`` after setup (transformers calls ``gc.collect()`` per trial,
  which otherwise scans every long-lived object: the baseline's best simple setup);
- ``hpsearch``: ``hpsearch.run`` on the smoke experiment.

Per-trial cost is the slope between a short and a long search, which cancels start-up (imports, data, the
first model). Every search runs in its own fresh Python process, sides interleaved. Usage::

    python bench/trial_overhead.py [--short 2] [--long 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXED = {"learning_rate": 1e-3, "per_device_train_batch_size": 32, "hidden_dropout_prob": 0.1}
SIDES = ("plain", "plain+freeze", "hpsearch")


def _compose(overrides: list[str]):  # noqa: ANN202 - a Hydra DictConfig
    from hydra import compose, initialize_config_dir

    from hpsearch.config import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def hpsearch_seconds(n_trials: int, workdir: Path) -> float:
    from hpsearch.app import run

    space = ",".join(f"{k}:{{type:fixed,value:{v}}}" for k, v in FIXED.items())
    cfg = _compose(["experiment=smoke", f"n_trials={n_trials}", "~space", f"+space={{{space}}}", "progress=false",
                    f"run_dir={workdir / 'run'}", f"storage_dir={workdir}", "study_name=bench"])
    started = time.perf_counter()
    run(cfg)
    return time.perf_counter() - started


def plain_seconds(n_trials: int, workdir: Path, freeze: bool) -> float:
    """What a user writes without hpsearch: the same data and model through transformers' optuna path."""
    import gc

    import optuna
    from hydra.utils import instantiate
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments

    from hpsearch.app import _quiet_libraries
    from hpsearch.data import load_data
    from hpsearch.model import ModelInit

    _quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cfg = _compose(["experiment=smoke"])
    started = time.perf_counter()
    tokenizer = instantiate(cfg.model.tokenizer)
    data = load_data(cfg.data, tokenizer, seed=cfg.seed)
    model_init = ModelInit.build(instantiate(cfg.model.model_init, _partial_=True), {**data.model_context, "tokenizer": tokenizer})
    args = TrainingArguments(output_dir=str(workdir / "plain"), seed=cfg.seed, **cfg.training)
    trainer = Trainer(
        model_init=lambda trial: model_init({"hidden_dropout_prob": FIXED["hidden_dropout_prob"]}),
        args=args, train_dataset=data.train, eval_dataset=data.eval,
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)
    if freeze:
        gc.collect()
        gc.freeze()
    trainer.hyperparameter_search(
        hp_space=lambda trial: {k: v for k, v in FIXED.items() if k != "hidden_dropout_prob"},
        n_trials=n_trials, direction="minimize", backend="optuna",
    )
    return time.perf_counter() - started


def one_search(side: str, n_trials: int) -> float:
    """Runs in the child process: one search, its wall time."""
    with tempfile.TemporaryDirectory() as folder:
        if side == "hpsearch":
            return hpsearch_seconds(n_trials, Path(folder))
        return plain_seconds(n_trials, Path(folder), freeze=side == "plain+freeze")


def measure(side: str, n_trials: int) -> float:
    """One search in a fresh Python process."""
    done = subprocess.run([sys.executable, __file__, "--child", side, str(n_trials)], capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=2)
    parser.add_argument("--long", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "N"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps({"seconds": one_search(options.child[0], int(options.child[1]))}))
        return
    slopes: dict[str, list[float]] = {side: [] for side in SIDES}
    for _ in range(options.repeats):  # interleaved, so drift hits every side alike
        for side in SIDES:
            short, long = measure(side, options.short), measure(side, options.long)
            slopes[side].append((long - short) / (options.long - options.short))
    per_trial = {side: statistics.median(values) for side, values in slopes.items()}
    print(f"seconds per trial (median of {options.repeats}, slope {options.short}->{options.long} trials, fresh process per search)")
    for side in SIDES:
        print(f"  {side:<14} {per_trial[side]:.3f}")
    print(f"  ratio hpsearch / plain+freeze: {per_trial['hpsearch'] / per_trial['plain+freeze']:.2f}")
    print(f"  ratio hpsearch / plain:        {per_trial['hpsearch'] / per_trial['plain']:.2f}")


if __name__ == "__main__":
    main()
