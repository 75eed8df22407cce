"""Per-trial model build in a LoRA search: hpsearch's one base per process vs reloading the base every trial.

- ``reload``: what a ``model_init`` does under transformers' own search: each trial reads the base model from
  disk and attaches a fresh LoRA adapter (``get_peft_model``);
- ``hpsearch``: ``hpsearch.peft.AdaptedModelInit``: the base is read once, each trial removes the previous
  adapter (restoring the base) and attaches a fresh one.

Both build the same adapters on the same saved Llama-shaped model (random weights, about 200M parameters by
default), ``--trials`` times, each side in its own fresh Python process, the sides interleaved. Usage::

    python bench/lora_model_build.py [--trials 6] [--repeats 3] [--hidden 1024] [--layers 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import in_fresh_process

SIDES = ("reload", "hpsearch")
LORA = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}


def save_base(folder: Path, hidden: int, layers: int) -> int:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=8,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    return sum(parameter.numel() for parameter in model.parameters())


def load_base(name_or_path: str) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(name_or_path)


def child(side: str, folder: str, trials: int) -> dict[str, Any]:
    """Build ``trials`` trial models; the seconds of each build."""
    from peft import LoraConfig, get_peft_model

    from hpsearch.model import ModelInit
    from hpsearch.peft import AdaptedModelInit, AdapterSettings

    adapted = AdaptedModelInit(ModelInit.build(load_base, {"name_or_path": folder}), AdapterSettings(LORA))
    seconds = []
    for _ in range(trials):
        started = time.perf_counter()
        if side == "reload":
            get_peft_model(load_base(folder), LoraConfig(**LORA))
        else:
            adapted({})
        seconds.append(time.perf_counter() - started)
    return {"seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=SIDES)
    parser.add_argument("--folder")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(child(options.side, options.folder, options.trials)))
        return
    with tempfile.TemporaryDirectory() as folder:
        parameters = save_base(Path(folder), options.hidden, options.layers)
        per_trial: dict[str, list[float]] = {side: [] for side in SIDES}
        first: dict[str, list[float]] = {side: [] for side in SIDES}
        for _ in range(options.repeats):
            for side in SIDES:
                args = ("--side", side, "--folder", folder, "--trials", str(options.trials))
                seconds = in_fresh_process(__file__, *args)["seconds"]
                first[side].append(seconds[0])
                per_trial[side].append(statistics.mean(seconds[1:]))
    print(
        f"base model: {parameters / 1e6:.0f}M parameters, {options.trials} trials, median of {options.repeats} processes"
    )
    print("| side | first trial (s) | each later trial (s) | later trials x hpsearch |")
    print("|---|---|---|---|")
    ours = statistics.median(per_trial["hpsearch"])
    for side in SIDES:
        mean = statistics.median(per_trial[side])
        print(f"| {side} | {statistics.median(first[side]):.3f} | {mean:.3f} | {mean / ours:.1f} |")


if __name__ == "__main__":
    main()
