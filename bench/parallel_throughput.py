"""Trials per hour: plain ``Trainer.hyperparameter_search`` (sequential) vs hpsearch with 1 and more workers.

- CPU (default): a small random BERT (hidden 128, 4 layers) on the embedded reviews, fixed hyperparameters
  and trial size (500 examples, 2 epochs); hpsearch with ``workers`` = 1, 2 and auto on this machine's cores.
- GPU (``--gpu``): BERT-shaped classifiers with random weights on synthetic text (sequence length 128, bf16):
  22M parameters (MiniLM size) and 110M (BERT-base size), ``workers_per_gpu`` = 1, 2, 4, 8 and auto on one GPU, with
  each run's mean GPU utilisation. Then LoRA: TRL's ``SFTTrainer`` on a Llama-shaped model of about 0.4B
  parameters (random weights) and synthetic chats, ``workers_per_gpu`` = 1, 2, 4, auto; its baseline is the loop a
  user writes without hpsearch (transformers' own search cannot drive ``SFTTrainer``): per trial, build the
  model, attach the adapter, train and evaluate with ``SFTTrainer``.

Every search runs in a fresh process. The baseline gets its best simple setup (``gc.freeze()`` after setup,
the same data, model and arguments). Each row reports trials per hour and its ratio to the baseline. Usage::

    python bench/parallel_throughput.py [--trials 8]
    python bench/parallel_throughput.py --gpu
    python bench/parallel_throughput.py --gpu --models lora --lora-layers 2 --trials 2 --steps 2   # a CPU check
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compose, fixed_space, hpsearch_seconds, plain_seconds

CPU_PARAMS = {"learning_rate": 1e-3, "per_device_train_batch_size": 32, "hidden_dropout_prob": 0.1}
CPU_OVERRIDES = [
    "experiment=ci",
    "data.train_size=500",
    "data.max_length=64",
    "training.num_train_epochs=2",
    "model.model_init.hidden_size=128",
    "model.model_init.num_hidden_layers=4",
    "model.model_init.intermediate_size=256",
]
GPU_PARAMS = {"learning_rate": 1e-4, "per_device_train_batch_size": 32, "hidden_dropout_prob": 0.1}
GPU_MODELS = {  # BERT shapes: (hidden, layers, heads, intermediate); vocabulary 30522 as BERT's
    "22M": (384, 6, 12, 1536),
    "110M": (768, 12, 12, 3072),
}
GPU_STEPS = {"22M": 200, "110M": 100}


def synthetic_corpus(path: Path, rows: int = 4000, seed: int = 0) -> Path:
    """Random 'sentences' of 150 words over a 5,000-word vocabulary, with random binary labels."""
    generator = random.Random(seed)
    words = [f"w{index}" for index in range(5000)]
    lines = ["text,label"] + [
        f"{' '.join(generator.choices(words, k=150))},{generator.randint(0, 1)}" for _ in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


LORA_SIZE = "0.4B"
LORA_MODEL = (896, 24, 14, 4864)  # Llama shape (hidden, layers, heads, intermediate), as Qwen2-0.5B's layers
LORA_PARAMS = {"learning_rate": 2e-4, "per_device_train_batch_size": 16, "r": 16, "alpha_over_r": 2.0}
LORA_STEPS = 60
LORA_LAYERS_ENV = "BENCH_LORA_LAYERS"  # --lora-layers, passed to the fresh processes


def synthetic_chats(path: Path, rows: int = 2000, seed: int = 0) -> Path:
    """Chats of a 100-word user turn and a 20-word answer, over a 5,000-word vocabulary (a jsonl file)."""
    generator = random.Random(seed)
    words = [f"w{index}" for index in range(5000)]

    def turn(role: str, length: int) -> dict[str, str]:
        return {"role": role, "content": " ".join(generator.choices(words, k=length))}

    lines = [json.dumps({"messages": [turn("user", 100), turn("assistant", 20)]}) for _ in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def lora_overrides(chats: Path, steps: int, layers: int) -> list[str]:
    import torch

    hidden, _, heads, intermediate = LORA_MODEL
    bf16 = torch.cuda.is_available()
    return [
        "experiment=lora_sft_smoke",
        "~data",
        f"+data={{_target_:hpsearch.sft.sft_task,source:'{chats}',train_size:1500,eval_size:128}}",
        f"model.model_init.hidden_size={hidden}",
        f"model.model_init.num_hidden_layers={layers}",
        f"model.model_init.num_attention_heads={heads}",
        f"model.model_init.intermediate_size={intermediate}",
        "training.max_length=160",
        f"training.max_steps={steps}",
        f"training.bf16={str(bf16).lower()}",
        "peft.target_modules=all-linear",
    ]


def plain_lora_seconds(overrides: list[str], params: dict[str, Any], n_trials: int, workdir: Path) -> float:
    """The LoRA baseline: the loop a user writes, per trial a model, a fresh adapter, SFTTrainer's train and
    evaluate, with the same data, model and arguments as hpsearch's rows."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from peft import get_peft_model
    from trl import SFTConfig, SFTTrainer

    from hpsearch.build import build_task, quiet_libraries
    from hpsearch.objective import Objectives
    from hpsearch.peft import AdapterSettings

    quiet_libraries()
    cfg = compose(overrides)
    started = time.perf_counter()
    task, tokenizer = build_task(cfg, Objectives.from_config(OmegaConf.to_container(cfg.objective)), cfg.seed)
    adapter = AdapterSettings.from_config(OmegaConf.to_container(cfg.peft))
    assert adapter is not None
    training = {**OmegaConf.to_container(cfg.training, resolve=True), **params}
    arguments = {key: value for key, value in training.items() if key not in ("r", "alpha_over_r")}
    gc.collect()
    gc.freeze()
    for _ in range(n_trials):
        model = get_peft_model(instantiate(cfg.model.model_init, tokenizer=tokenizer), adapter.lora_config(params))
        args = SFTConfig(output_dir=str(workdir / "plain"), seed=cfg.seed, **arguments)
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=task.train, eval_dataset=task.eval, processing_class=tokenizer
        )
        trainer.train()
        trainer.evaluate()
    return time.perf_counter() - started


def gpu_overrides(size: str, corpus: Path, steps: int) -> list[str]:
    import torch

    hidden, layers, heads, intermediate = GPU_MODELS[size]
    bf16 = torch.cuda.is_available()  # bf16 needs a GPU (the mode also runs, slowly, on CPU as a check)
    return [
        "experiment=ci",
        f"data.source={corpus}",
        "data.max_length=128",
        "data.train_size=3000",
        "data.eval_size=256",
        f"model.tokenizer.corpus={corpus}",
        f"model.model_init.hidden_size={hidden}",
        f"model.model_init.num_hidden_layers={layers}",
        f"model.model_init.num_attention_heads={heads}",
        f"model.model_init.intermediate_size={intermediate}",
        "+model.model_init.vocab_size=30522",
        f"training.max_steps={steps}",
        f"training.bf16={str(bf16).lower()}",
        "training.dataloader_num_workers=2",
    ]


def child(side: str, workers: int | str, n_trials: int, gpu_size: str | None, steps: int) -> float:
    """In the fresh process: one search, its wall time."""
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        if gpu_size == LORA_SIZE:
            chats = synthetic_chats(workdir / "chats.jsonl")
            overrides, params = (
                lora_overrides(chats, steps, int(os.environ.get(LORA_LAYERS_ENV, LORA_MODEL[1]))),
                LORA_PARAMS,
            )
            if side == "plain":
                return plain_lora_seconds(overrides, params, n_trials, workdir)
        elif gpu_size is None:
            overrides, params = CPU_OVERRIDES, CPU_PARAMS
        else:
            overrides, params = gpu_overrides(gpu_size, synthetic_corpus(workdir / "corpus.csv"), steps), GPU_PARAMS
        if side == "plain":
            return plain_seconds(overrides, params, n_trials, workdir, freeze=True)
        workers_key = "workers_per_gpu" if gpu_size is not None else "workers"
        return hpsearch_seconds(
            [*overrides, f"n_trials={n_trials}", f"{workers_key}={workers}", *fixed_space(params)], workdir
        )


def _gpu_utilisation(stop: threading.Event, samples: list[float]) -> None:
    while not stop.is_set():
        try:
            done = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError:  # no NVIDIA driver here: nothing to sample
            return
        if done.returncode == 0 and done.stdout.strip():
            samples.append(statistics.mean(float(line) for line in done.stdout.split()))
        stop.wait(0.5)


def measure(side: str, workers: int | str, n_trials: int, gpu_size: str | None, steps: int = 0) -> dict[str, Any]:
    """One search in a fresh process: trials per hour, and the mean GPU utilisation on a GPU."""
    samples: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_gpu_utilisation, args=(stop, samples), daemon=True)
    if gpu_size is not None:
        sampler.start()
    command = [sys.executable, __file__, "--child", side, str(workers), str(n_trials), gpu_size or "cpu", str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    stop.set()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    return {"trials_per_hour": n_trials * 3600 / seconds, "gpu_util": statistics.mean(samples) if samples else None}


def report(title: str, rows: list[tuple[str, dict[str, Any]]]) -> None:
    baseline = rows[0][1]["trials_per_hour"]
    print(f"\n{title}")
    print(f"  {'search':<34} {'trials/hour':>12} {'x plain':>8} {'GPU util':>9}")
    for name, row in rows:
        util = f"{row['gpu_util']:.0f}%" if row["gpu_util"] is not None else "-"
        print(f"  {name:<34} {row['trials_per_hour']:>12.1f} {row['trials_per_hour'] / baseline:>8.2f} {util:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="the GPU mode (22M and 110M models, workers_per_gpu 1..8)")
    parser.add_argument("--trials", type=int, default=None, help="trials per search (default: 48 on CPU, 16 on GPU)")
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps per GPU-mode trial (default: 200 at 22M, 100 at 110M)"
    )
    parser.add_argument("--models", default="22M,110M,lora", help="GPU mode: which tables (default: all three)")
    parser.add_argument(
        "--lora-layers", type=int, default=LORA_MODEL[1], help="layers of the LoRA model (fewer: a quick CPU check)"
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        side, workers, n_trials, size, steps = options.child
        print(json.dumps({"seconds": child(side, workers, int(n_trials), None if size == "cpu" else size, int(steps))}))
        return
    if not options.gpu:
        n_trials = options.trials or 48
        rows = [("plain Trainer.hyperparameter_search", measure("plain", 1, n_trials, None))]
        rows += [(f"hpsearch workers={n}", measure("hpsearch", n, n_trials, None)) for n in (1, 2, "auto")]
        report(f"CPU, small BERT (hidden 128, 4 layers), {n_trials} trials per search", rows)
        return
    n_trials = options.trials or 16
    os.environ[LORA_LAYERS_ENV] = str(options.lora_layers)
    chosen = options.models.split(",")
    for size in (size for size in GPU_MODELS if size in chosen):
        steps = options.steps or GPU_STEPS[size]
        rows = [("plain Trainer.hyperparameter_search", measure("plain", 1, n_trials, size, steps))]
        rows += [
            (f"hpsearch workers_per_gpu={k}", measure("hpsearch", k, n_trials, size, steps))
            for k in (1, 2, 4, 8, "auto")
        ]
        report(f"GPU, {size} BERT-shaped model, {steps} steps x {n_trials} trials", rows)
    if "lora" not in chosen:
        return
    steps = options.steps or LORA_STEPS
    rows = [("plain SFTTrainer loop", measure("plain", 1, n_trials, LORA_SIZE, steps))]
    rows += [
        (f"hpsearch workers_per_gpu={k}", measure("hpsearch", k, n_trials, LORA_SIZE, steps)) for k in (1, 2, 4, "auto")
    ]
    shape = LORA_SIZE if options.lora_layers == LORA_MODEL[1] else f"{options.lora_layers}-layer"
    report(f"GPU, LoRA on a {shape} Llama-shaped model (SFTTrainer), {steps} steps x {n_trials} trials", rows)


if __name__ == "__main__":
    main()
