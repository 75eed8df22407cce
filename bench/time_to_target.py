"""Time to a target accuracy: plain ``Trainer.hyperparameter_search`` against hpsearch ``workers=auto``.

Wall time from a command's start until the best trial so far reaches ``--target`` eval accuracy. Both sides
search the same task, space and trial budget with the same seed, evaluate during training and prune with
optuna's median pruner (the plain side gets it as optuna's default pruner, through transformers' own reports):

- plain: ``Trainer.hyperparameter_search(backend="optuna")`` with a seeded TPE sampler, sequential, with
  ``gc.freeze()`` after setup (its best simple setup);
- hpsearch: ``python -m hpsearch workers=auto backend.pruner=median``, its probe included in its time.

Each side runs in a fresh process. The parent watches both studies and stops a side once its target is
reached; a side that never reaches it runs its whole budget. The median over ``--seeds`` is reported, with the
runs that never reached the target.

- CPU (default): the demo task as ``python -m hpsearch`` runs it (MiniLM on the embedded Rotten Tomatoes subset, one
  epoch of 1500 reviews), evaluated at its middle and its end.
- GPU (``--gpu``): the same task on the GPU, at the space's larger batch sizes and the whole subset.

Usage::

    python bench/time_to_target.py [--target 0.76] [--seeds 1,2,3] [--trials 8]
    python bench/time_to_target.py --gpu
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compose

# the demo's one epoch (47 steps), evaluated at step 24 and at its end: the median pruner's two chances
CPU_OVERRIDES = ["training.eval_strategy=steps", "training.eval_steps=24"]
GPU_OVERRIDES = [
    "training.num_train_epochs=2",
    "training.eval_strategy=epoch",
    "data.train_size=4000",
    "data.eval_size=1000",
    "training.bf16=true",
    "+space.per_device_train_batch_size={type:categorical,choices:[16,32,64]}",
]
POLL_S = 2.0


def plain_search(overrides: list[str], seed: int, n_trials: int, storage: str) -> None:
    """The plain side, in its fresh process: transformers' own optuna search over the same space."""
    import numpy as np
    import optuna
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments

    from hpsearch.backends.optuna.space import suggest
    from hpsearch.build import quiet_libraries
    from hpsearch.data import read_data, tokenize_data
    from hpsearch.model import ModelInit
    from hpsearch.space import SearchSpace

    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cfg = compose([*overrides, f"seed={seed}"])
    space = SearchSpace.from_config(OmegaConf.to_container(cfg.space, resolve=True))
    tokenizer = instantiate(cfg.model.tokenizer)
    data = tokenize_data(read_data(cfg.data, cfg.seed), cfg.data, tokenizer)
    model_init = ModelInit.build(
        instantiate(cfg.model.model_init, _partial_=True), {**data.model_context, "tokenizer": tokenizer}
    )

    def hp_space(trial: Any) -> dict[str, Any]:  # the same space, through optuna's suggest API
        return {name: value for name, value in suggest(trial, space).items() if name not in model_init.consumed}

    def build_model(trial: Any) -> Any:
        params = {} if trial is None else {k: v for k, v in trial.params.items() if k in model_init.consumed}
        return model_init(params)

    def accuracy(prediction: Any) -> dict[str, float]:
        return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}

    training = OmegaConf.to_container(cfg.training, resolve=True)
    trainer = Trainer(
        model_init=build_model,
        args=TrainingArguments(output_dir=tempfile.mkdtemp(), seed=seed, **training),
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=accuracy,
    )
    trainer.remove_callback(PrinterCallback)
    gc.collect()
    gc.freeze()
    trainer.hyperparameter_search(
        hp_space=hp_space,
        compute_objective=lambda metrics: metrics["eval_accuracy"],
        n_trials=n_trials,
        direction="maximize",
        backend="optuna",
        sampler=optuna.samplers.TPESampler(seed=seed),
        storage=storage,
        study_name="plain",
    )


def completed(storage: Any, study_name: str) -> list[tuple[float, float]]:
    """(completion time, eval accuracy) of each COMPLETE trial of a study, as it stands now."""
    import optuna

    if storage is None:  # not written yet
        return []
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except (KeyError, ValueError):  # not created yet
        return []
    return [
        (trial.datetime_complete.timestamp(), float(trial.value))
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if trial.datetime_complete is not None and trial.value is not None
    ]


def race(command: list[str], storage: Any, study_name: str, target: float) -> dict[str, Any]:
    """Start one side, watch its study, stop it once a trial reached ``target``; its time to the target."""
    started = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reached: float | None = None
    while reached is None:
        ended = process.poll() is not None
        hits = [at for at, accuracy in completed(storage(), study_name) if accuracy >= target]
        if hits:
            reached = min(hits) - started
        if ended:
            break
        time.sleep(POLL_S)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    _, errors = process.communicate(timeout=600)
    if reached is None and process.returncode not in (0, -signal.SIGTERM, 130):
        raise RuntimeError(f"{' '.join(command)} failed:\n{errors[-3000:]}")
    best = max((accuracy for _, accuracy in completed(storage(), study_name)), default=None)
    packing = [line for line in errors.splitlines() if "workers=auto:" in line]
    return {"seconds": reached, "wall_s": time.time() - started, "best": best, "packing": packing[-1:] or None}


def run_side(side: str, seed: int, n_trials: int, target: float, gpu: bool, folder: Path) -> dict[str, Any]:
    overrides = GPU_OVERRIDES if gpu else CPU_OVERRIDES
    if side == "plain":
        url = f"sqlite:///{folder / 'plain.db'}"
        command = [sys.executable, __file__, "--child", json.dumps([overrides, seed, n_trials, url])]
        return race(command, lambda: url, "plain", target)
    study = f"time-to-target-{seed}"
    command = [
        sys.executable,
        "-m",
        "hpsearch",
        *overrides,
        "workers=auto",
        "backend.pruner=median",
        f"n_trials={n_trials}",
        f"seed={seed}",
        f"study_name={study}",
        f"storage_dir={folder}",
        f"run_dir={folder / 'run'}",
        "progress=false",
    ]

    def journal() -> Any:
        import optuna

        path = folder / f"{study}.log"
        if not path.is_file():
            return None
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))

    return race(command, journal, study, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="the GPU mode (the same task on one GPU)")
    parser.add_argument("--target", type=float, default=0.76, help="eval accuracy to reach (default 0.76)")
    parser.add_argument("--seeds", default="1,2,3", help="sampler and training seeds (default 1,2,3)")
    parser.add_argument("--trials", type=int, default=8, help="trial budget of each search (default 8)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        plain_search(*json.loads(options.child))
        return
    seeds = [int(seed) for seed in options.seeds.split(",")]
    results: dict[str, list[dict[str, Any]]] = {"plain": [], "hpsearch": []}
    for seed in seeds:
        for side, rows in results.items():  # interleaved: load on the machine hits both sides alike
            with tempfile.TemporaryDirectory() as folder:
                row = run_side(side, seed, options.trials, options.target, options.gpu, Path(folder))
            rows.append(row)
            print(f"seed {seed} {side}: {json.dumps(row)}", flush=True)
    mode = "GPU" if options.gpu else "CPU"
    print(f"\n{mode}, demo task, target eval accuracy {options.target}, {options.trials} trials, seeds {seeds}")
    print(f"  {'search':<46} {'median s to target':>19} {'never reached':>14} {'x plain':>8}")
    medians = {}
    for side, rows in results.items():
        times = [row["seconds"] for row in rows if row["seconds"] is not None]
        medians[side] = statistics.median(times) if times else None
    for side, rows in results.items():
        name = (
            "plain Trainer.hyperparameter_search (TPE, gc.freeze)"
            if side == "plain"
            else "hpsearch workers=auto, median pruner"
        )
        median = medians[side]
        missed = sum(row["seconds"] is None for row in rows)
        ratio = f"{medians['plain'] / median:.2f}" if median and medians["plain"] else "-"
        shown = f"{median:.0f}" if median is not None else "-"
        print(f"  {name:<46} {shown:>19} {missed:>11}/{len(rows)} {ratio:>8}")


if __name__ == "__main__":
    main()
