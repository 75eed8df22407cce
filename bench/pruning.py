"""What pruning saves: the demo search three ways, with the same random sampler and seed.

The demo task (all-MiniLM-L6-v2 fine-tuned on the embedded Rotten Tomatoes reviews) searched without pruning,
with optuna's median pruner, and with hyperband, each in a fresh ``python -m hpsearch`` process. Each trial
evaluates every ``--eval-steps`` steps; a pruned trial stops at its last evaluation. The random sampler draws
the same hyperparameters in the same order in all three, so the searches differ only in what they stop.

It reports each search's best accuracy and total training steps (a completed trial trains every step; a
pruned one up to the evaluation that stopped it), their ratios to the unpruned search, and runs
``hpsearch compare`` over the three run directories. Usage::

    python bench/pruning.py [--trials 12] [--out bench-pruning]
"""

from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
from pathlib import Path

SEARCHES = {  # name: the backend overrides
    "none": ["backend.pruner=none"],
    "median": ["backend.pruner=median", "++backend.pruner_kwargs={n_startup_trials: 3, n_warmup_steps: 10}"],
    "hyperband": ["backend.pruner=hyperband", "++backend.pruner_kwargs={min_resource: 10, reduction_factor: 3}"],
}


def run_search(name: str, args: argparse.Namespace, out: Path) -> Path:
    run_dir = out / name
    command = [
        sys.executable, "-m", "hpsearch", "backend=optuna", "backend.sampler=random", *SEARCHES[name],
        f"n_trials={args.trials}", f"seed={args.seed}", f"study_name=pruning-{name}", f"storage_dir={out / 'studies'}",
        f"data.train_size={args.train_size}", f"training.num_train_epochs={args.epochs}",
        "training.eval_strategy=steps", f"training.eval_steps={args.eval_steps}", f"hydra.run.dir={run_dir}",
    ]
    subprocess.run(command, check=True)
    return run_dir


def training_steps(name: str, out: Path, steps_per_trial: int) -> int:
    """Every step a completed trial trains; a pruned trial's steps up to its last evaluation."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(out / "studies" / f"pruning-{name}.log")))
    study = optuna.load_study(study_name=f"pruning-{name}", storage=storage)
    total = 0
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            total += steps_per_trial
        elif trial.state == optuna.trial.TrialState.PRUNED:
            total += max(trial.intermediate_values)
    return total


def best_accuracy(run_dir: Path) -> float:
    rows = [row for row in csv.DictReader((run_dir / "trials.csv").open()) if row["state"] == "COMPLETE"]
    return max(float(row["objective"]) for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train-size", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32, help="the demo's training.per_device_train_batch_size")
    parser.add_argument("--out", type=Path, default=Path("bench-pruning"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    steps_per_trial = math.ceil(args.train_size / args.batch_size) * args.epochs
    runs = {name: run_search(name, args, args.out) for name in SEARCHES}
    results = {name: (best_accuracy(run), training_steps(name, args.out, steps_per_trial)) for name, run in runs.items()}
    base_accuracy, base_steps = results["none"]
    print(f"\n{'pruner':<10} {'best accuracy':>13} {'vs none (points)':>16} {'training steps':>14} {'share of none':>13}")
    for name, (accuracy, steps) in results.items():
        print(f"{name:<10} {accuracy:>13.4f} {100 * (accuracy - base_accuracy):>+16.2f} {steps:>14} {steps / base_steps:>13.2f}")
    subprocess.run([sys.executable, "-m", "hpsearch.compare", *map(str, runs.values()), "--out", str(args.out / "compare")], check=True)


if __name__ == "__main__":
    main()
