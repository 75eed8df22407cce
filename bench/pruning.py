"""What pruning saves: the demo search three ways, with the same random sampler and seed.

The demo task (all-MiniLM-L6-v2 fine-tuned on the embedded Rotten Tomatoes reviews) searched without pruning,
with optuna's median pruner, and with hyperband, each in a fresh ``python -m hpsearch`` process. Each trial
evaluates every ``--eval-steps`` steps; a pruned trial stops at its last evaluation. The random sampler draws
the same hyperparameters in the same order in all three, so the searches differ only in what they stop.

It reports each search's best accuracy and total training steps (a completed trial trains every step; a
pruned one up to the evaluation that stopped it), their ratios to the unpruned search, how many trials
evaluated exactly as the unpruned search's same trial (a check that training is reproducible), and runs
``hpsearch compare`` over the three run directories. Usage::

    python bench/pruning.py [--trials 16] [--epochs 2] [--out bench-pruning]
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
    # Warm up past step 10: in 1-epoch pilot runs nearly every trial still predicted the majority class there.
    "median": ["backend.pruner=median", "++backend.pruner_kwargs={n_startup_trials: 4, n_warmup_steps: 20}"],
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


def load_trials(name: str, out: Path) -> list:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(out / "studies" / f"pruning-{name}.log")))
    return optuna.load_study(study_name=f"pruning-{name}", storage=storage).trials


def training_steps(trials: list, steps_per_trial: int) -> int:
    """Every step a completed trial trains; a pruned trial's steps up to its last evaluation."""
    from optuna.trial import TrialState

    return sum(steps_per_trial if trial.state == TrialState.COMPLETE else max(trial.intermediate_values)
               for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED))


def matching_trials(trials: list, unpruned: list) -> int:
    """Trials whose every evaluation equals the unpruned search's same trial at the same step: the searches
    differ only in what they stop when training is reproducible."""
    curves = {trial.number: trial.intermediate_values for trial in unpruned}
    return sum(all(curves.get(trial.number, {}).get(step) == value for step, value in trial.intermediate_values.items())
               for trial in trials)


def best_accuracy(run_dir: Path) -> float:
    rows = [row for row in csv.DictReader((run_dir / "trials.csv").open()) if row["state"] == "COMPLETE"]
    return max(float(row["objective"]) for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train-size", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32, help="the demo's training.per_device_train_batch_size")
    parser.add_argument("--out", type=Path, default=Path("bench-pruning"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    steps_per_trial = math.ceil(args.train_size / args.batch_size) * args.epochs
    runs = {name: run_search(name, args, args.out) for name in SEARCHES}
    trials = {name: load_trials(name, args.out) for name in runs}
    base_accuracy = best_accuracy(runs["none"])
    base_steps = training_steps(trials["none"], steps_per_trial)
    print(f"\n{'pruner':<10} {'best accuracy':>13} {'vs none (points)':>16} {'training steps':>14} {'share of none':>13} {'curves as none':>14}")
    for name, run in runs.items():
        accuracy, steps = best_accuracy(run), training_steps(trials[name], steps_per_trial)
        matching = f"{matching_trials(trials[name], trials['none'])}/{len(trials[name])}"
        print(f"{name:<10} {accuracy:>13.4f} {100 * (accuracy - base_accuracy):>+16.2f} {steps:>14} {steps / base_steps:>13.2f} {matching:>14}")
    subprocess.run([sys.executable, "-m", "hpsearch.compare", *map(str, runs.values()), "--out", str(args.out / "compare")], check=True)


if __name__ == "__main__":
    main()
