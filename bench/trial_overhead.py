"""Per-trial cost of hpsearch vs plain ``Trainer.hyperparameter_search`` (optuna), each search in a fresh process.

Three sides train the same tiny BERT on the same tokenised data of experiment=ci with the same fixed hyperparameters,
so the difference is orchestration overhead:

- ``plain``: transformers' optuna search as a user writes it;
- ``plain+freeze``: the same with ``gc.freeze()`` after setup: the baseline's best simple setup;
- ``hpsearch``: ``hpsearch.run`` on experiment=ci.

Per-trial cost is the slope between a short and a long search, which cancels start-up (imports, data, the
first model). Every search runs in its own fresh Python process, the sides interleaved. Usage::

    python bench/trial_overhead.py [--short 2] [--long 26] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fixed_space, hpsearch_seconds, in_fresh_process, plain_seconds

FIXED = {"learning_rate": 1e-3, "per_device_train_batch_size": 32, "hidden_dropout_prob": 0.1}
SIDES = ("plain", "plain+freeze", "hpsearch")


def one_search(side: str, n_trials: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        if side == "hpsearch":
            return hpsearch_seconds(["experiment=ci", f"n_trials={n_trials}", *fixed_space(FIXED)], Path(folder))
        return plain_seconds(["experiment=ci"], FIXED, n_trials, Path(folder), freeze=side == "plain+freeze")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=2)
    parser.add_argument("--long", type=int, default=26)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "N"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps({"seconds": one_search(options.child[0], int(options.child[1]))}))
        return
    slopes: dict[str, list[float]] = {side: [] for side in SIDES}
    for _ in range(options.repeats):  # interleaved, so drift hits every side alike
        for side in SIDES:
            short = in_fresh_process(__file__, side, str(options.short))["seconds"]
            long = in_fresh_process(__file__, side, str(options.long))["seconds"]
            slopes[side].append((long - short) / (options.long - options.short))
    per_trial = {side: statistics.median(values) for side, values in slopes.items()}
    print(
        f"seconds per trial (median of {options.repeats}, slope {options.short}->{options.long} trials, fresh process per search)"
    )
    for side in SIDES:
        print(f"  {side:<14} {per_trial[side]:.3f}")
    print(f"  ratio hpsearch / plain+freeze: {per_trial['hpsearch'] / per_trial['plain+freeze']:.2f}")
    print(f"  ratio hpsearch / plain:        {per_trial['hpsearch'] / per_trial['plain']:.2f}")


if __name__ == "__main__":
    main()
