"""What pruning saves: the demo search three ways, with the same random sampler and seed.

The demo task (all-MiniLM-L6-v2 fine-tuned on the embedded Rotten Tomatoes reviews) searched without pruning,
with optuna's median pruner, and with hyperband, each in a fresh ``python -m hpsearch`` process. Each trial
evaluates every ``--eval-steps`` steps; a pruned trial stops at its last evaluation. The random sampler draws
the same hyperparameters in the same order in all three, so the searches differ only in what they stop.

It reports each search's best accuracy and total training steps (a completed trial trains every step; a
pruned one up to the evaluation that stopped it), their ratios to the unpruned search, how many trials
evaluated exactly as the unpruned search's same trial (a check that training is reproducible), and runs
``hpsearch compare`` over the three run directories. ``--replay`` runs no search: it feeds the learning
curves of the unpruned searches already in the given directories (default ``--out``), one after another as
one search, through optuna's pruners at the settings in ``REPLAYED``, trial by trial in the same order, and
prints what each would have kept and trained. That is exact where training is reproducible (the ``curves as
none`` column); it is how the settings in ``SEARCHES`` and the default ``--trials`` were chosen. Usage::

    python bench/pruning.py [--trials 32] [--epochs 2] [--seed 3] [--out bench-pruning]
    python bench/pruning.py --replay bench-pruning-42 [bench-pruning-7 ...]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

SEARCHES = {  # name: the backend overrides
    "none": ["backend.pruner=none"],
    # Both pruners' settings were chosen on the learning curves of an unpruned seed-42 search (16 trials,
    # 2 epochs), replayed through optuna's own pruners; the README's table is a fresh search, seed 3.
    # Pruning from the first evaluation on: a trial still at the majority class at step 10 while the
    # median has left it did not become a good one; waiting until step 20 costs 47% of the steps instead of 34%.
    "median": ["backend.pruner=median", "++backend.pruner_kwargs={n_startup_trials: 4, n_warmup_steps: 10}"],
    # Rungs at 20 and 80 steps of 94, in 2 brackets: on seed 42 the cheapest replayed setting that kept the
    # best trial with more than one bracket (min_resource 30 leaves one: successive halving). At step 10
    # nearly every trial still ties at the majority class, and ties pass a rung.
    "hyperband": ["backend.pruner=hyperband", "++backend.pruner_kwargs={min_resource: 20, reduction_factor: 4}"],
}


REPLAYED = [  # (pruner, its options) for --replay
    *(
        ("median", {"n_startup_trials": startup, "n_warmup_steps": warmup})
        for startup in (2, 4, 5)
        for warmup in (10, 20, 30)
    ),
    *(("hyperband", {"min_resource": low, "reduction_factor": factor}) for low in (10, 20, 30) for factor in (3, 4)),
]


def run_search(name: str, args: argparse.Namespace, out: Path) -> Path:
    run_dir = out / name
    command = [
        sys.executable,
        "-m",
        "hpsearch",
        "backend=optuna",
        "backend.sampler=random",
        *SEARCHES[name],
        f"n_trials={args.trials}",
        f"seed={args.seed}",
        f"study_name=pruning-{name}",
        f"storage_dir={out / 'studies'}",
        f"data.train_size={args.train_size}",
        f"training.num_train_epochs={args.epochs}",
        "training.eval_strategy=steps",
        f"training.eval_steps={args.eval_steps}",
        f"hydra.run.dir={run_dir}",
    ]
    subprocess.run(command, check=True)
    return run_dir


def load_trials(name: str, out: Path) -> list:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(out / "studies" / f"pruning-{name}.log")))
    return optuna.load_study(study_name=f"pruning-{name}", storage=storage).trials


def training_steps(trials: list) -> int:
    """The steps each trial trained: up to its last evaluation, which for a completed trial is its final step
    (the Trainer evaluates the last step too), whatever the batch size."""
    from optuna.trial import TrialState

    return sum(
        max(trial.intermediate_values) for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
    )


def matching_trials(trials: list, unpruned: list) -> int:
    """Trials whose every evaluation equals the unpruned search's same trial at the same step: the searches
    differ only in what they stop when training is reproducible."""
    curves = {trial.number: trial.intermediate_values for trial in unpruned}
    return sum(
        all(curves.get(trial.number, {}).get(step) == value for step, value in trial.intermediate_values.items())
        for trial in trials
    )


def replay(pruner: str, options: dict, unpruned: list) -> list:
    """The unpruned trials' curves fed to ``pruner`` in trial order, in a study of the real search's name
    (hyperband assigns brackets by name and number): the trials as that search would have ended them."""
    import optuna
    from optuna.trial import TrialState

    from hpsearch.backends.optuna.samplers import make_pruner

    study = optuna.create_study(
        study_name=f"pruning-{pruner}", direction="maximize", pruner=make_pruner(pruner, options)
    )
    for original in unpruned:
        trial = study.ask()
        for step in sorted(original.intermediate_values):
            trial.report(original.intermediate_values[step], step)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, original.value)
    return study.trials


def print_replays(unpruned: list) -> None:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    base_accuracy = max(trial.value for trial in unpruned)
    base_steps = training_steps(unpruned)
    print(
        f"{'pruner':<10} {'options':<44} {'best accuracy':>13} {'vs none (points)':>16} {'share of none':>13} {'complete':>8}"
    )
    for pruner, options in REPLAYED:
        replayed = replay(pruner, options, unpruned)
        completed = [trial.value for trial in replayed if trial.state == TrialState.COMPLETE]
        accuracy, steps = max(completed), training_steps(replayed)
        print(
            f"{pruner:<10} {options!s:<44} {accuracy:>13.4f} {100 * (accuracy - base_accuracy):>+16.2f} "
            f"{steps / base_steps:>13.2f} {len(completed):>8}"
        )


def best_accuracy(run_dir: Path) -> float:
    rows = [row for row in csv.DictReader((run_dir / "trials.csv").open()) if row["state"] == "COMPLETE"]
    return max(float(row["objective"]) for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 32: with 16, 40% of the steps leaves room for at most 5 full trials, and the median pruner's startup takes 4.
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench-pruning"))
    parser.add_argument(
        "--replay",
        nargs="*",
        type=Path,
        metavar="OUT",
        help="replay REPLAYED over the unpruned searches in these --out directories (default --out), as one search; train nothing",
    )
    args = parser.parse_args()
    if args.replay is not None:
        print_replays([trial for out in args.replay or [args.out] for trial in load_trials("none", out)])
        return
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {name: run_search(name, args, args.out) for name in SEARCHES}
    trials = {name: load_trials(name, args.out) for name in runs}
    base_accuracy = best_accuracy(runs["none"])
    base_steps = training_steps(trials["none"])
    print(
        f"\n{'pruner':<10} {'best accuracy':>13} {'vs none (points)':>16} {'training steps':>14} {'share of none':>13} {'curves as none':>14}"
    )
    for name, run in runs.items():
        accuracy, steps = best_accuracy(run), training_steps(trials[name])
        matching = f"{matching_trials(trials[name], trials['none'])}/{len(trials[name])}"
        print(
            f"{name:<10} {accuracy:>13.4f} {100 * (accuracy - base_accuracy):>+16.2f} {steps:>14} {steps / base_steps:>13.2f} {matching:>14}"
        )
    subprocess.run(
        [sys.executable, "-m", "hpsearch.compare", *map(str, runs.values()), "--out", str(args.out / "compare")],
        check=True,
    )


if __name__ == "__main__":
    main()
