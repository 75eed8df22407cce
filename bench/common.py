"""Shared by the benchmarks: composing hpsearch's config, the plain-transformers baseline, fresh processes.

The baseline is what a user writes without hpsearch, given its best simple setup: the same data, model
and training arguments through ``Trainer.hyperparameter_search`` (optuna), with ``gc.freeze()`` after setup
when asked (transformers calls ``gc.collect()`` per trial, which otherwise scans every long-lived object).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def compose(overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from hpsearch.config import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def hpsearch_seconds(overrides: list[str], workdir: Path) -> float:
    """One hpsearch search (``run(cfg)``), its wall time. The libraries are imported before the clock starts,
    as for the baseline (worker processes import them again: that is part of their cost)."""
    import datasets  # noqa: F401
    import transformers  # noqa: F401

    from hpsearch.app import run
    from hpsearch.trainer import SearchTrainer  # noqa: F401

    cfg = compose(
        [*overrides, "progress=false", f"run_dir={workdir / 'run'}", f"storage_dir={workdir}", "study_name=bench"]
    )
    started = time.perf_counter()
    run(cfg)
    return time.perf_counter() - started


def plain_seconds(overrides: list[str], params: dict[str, Any], n_trials: int, workdir: Path, freeze: bool) -> float:
    """The same search through plain ``Trainer.hyperparameter_search``, every trial with ``params``."""
    import optuna
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments

    from hpsearch.build import quiet_libraries
    from hpsearch.data import read_data, tokenize_data
    from hpsearch.model import ModelInit

    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cfg = compose(overrides)
    started = time.perf_counter()
    tokenizer = instantiate(cfg.model.tokenizer)
    data = tokenize_data(read_data(cfg.data, cfg.seed), cfg.data, tokenizer)
    model_init = ModelInit.build(
        instantiate(cfg.model.model_init, _partial_=True), {**data.model_context, "tokenizer": tokenizer}
    )
    training = OmegaConf.to_container(cfg.training, resolve=True)
    args = TrainingArguments(output_dir=str(workdir / "plain"), seed=cfg.seed, **training)
    model_params = {k: v for k, v in params.items() if k in model_init.consumed}
    trainer = Trainer(
        model_init=lambda trial: model_init(model_params),
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)
    if freeze:
        gc.collect()
        gc.freeze()
    trainer.hyperparameter_search(
        hp_space=lambda trial: {k: v for k, v in params.items() if k not in model_params},
        n_trials=n_trials,
        direction="minimize",
        backend="optuna",
    )
    return time.perf_counter() - started


def fixed_space(params: dict[str, Any]) -> list[str]:
    """Overrides that replace the search space with these fixed values."""
    space = ",".join(f"{name}:{{type:fixed,value:{value}}}" for name, value in params.items())
    return ["~space", f"+space={{{space}}}"]


def in_fresh_process(script: str, *args: str) -> dict[str, Any]:
    """Run ``script --child ARGS`` in a new Python process; the JSON object it prints last."""
    done = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script} --child {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
