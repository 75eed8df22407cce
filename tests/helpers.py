"""model_init targets used by tests to inject failures; referenced from configs as ``helpers.NAME``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from hpsearch.model import tiny_bert


def failing_tiny_bert(
    num_labels: int, id2label: dict, label2id: dict, tokenizer: Any, fail_when: float, hidden_dropout_prob: float
) -> Any:
    """Raises for one dropout value, so exactly the trials that draw it fail."""
    if abs(hidden_dropout_prob - fail_when) < 1e-9:
        raise RuntimeError(f"injected failure at hidden_dropout_prob={hidden_dropout_prob}")
    return tiny_bert(num_labels, id2label, label2id, tokenizer, hidden_dropout_prob=hidden_dropout_prob)


def nan_tiny_bert(
    num_labels: int, id2label: dict, label2id: dict, tokenizer: Any, nan_when: float, hidden_dropout_prob: float
) -> Any:
    """A model whose classifier weights are NaN for one dropout value, so its loss is NaN."""
    model = tiny_bert(num_labels, id2label, label2id, tokenizer, hidden_dropout_prob=hidden_dropout_prob)
    if abs(hidden_dropout_prob - nan_when) < 1e-9:
        with torch.no_grad():
            model.classifier.weight.fill_(float("nan"))
    return model


def rank_one_failing_tiny_bert(
    num_labels: int, id2label: dict, label2id: dict, tokenizer: Any, hidden_dropout_prob: float
) -> Any:
    """Raises on rank 1 only (a crash on one rank of a DDP job)."""
    if os.environ.get("RANK") == "1":
        raise RuntimeError("injected failure on rank 1")
    return tiny_bert(num_labels, id2label, label2id, tokenizer, hidden_dropout_prob=hidden_dropout_prob)


_models_built = 0
_models_built_as_worker = 0


def rank_one_fails_mid_trial_tiny_bert(
    num_labels: int, id2label: dict, label2id: dict, tokenizer: Any, hidden_dropout_prob: float
) -> Any:
    """On rank 1 of torchrun's first attempt, the second trial's model raises at its third forward pass:
    a crash mid-training, while rank 0 waits in the gradient all-reduce."""
    import itertools

    global _models_built
    _models_built += 1  # the first model is the Trainer's own check before any trial
    model = tiny_bert(num_labels, id2label, label2id, tokenizer, hidden_dropout_prob=hidden_dropout_prob)
    if (
        os.environ.get("RANK") == "1"
        and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        and _models_built == 3
    ):
        forwards = itertools.count(1)

        def fail_at_third_forward(module: Any, args: Any) -> None:
            if next(forwards) == 3:
                raise RuntimeError("injected failure on rank 1 at the third forward")

        model.register_forward_pre_hook(fail_at_third_forward)
    return model


def oom_tiny_bert(num_labels: int, id2label: dict, label2id: dict, tokenizer: Any, hidden_dropout_prob: float) -> Any:
    """Each process's first trial runs out of memory, as a batch too large for a packed GPU would."""
    global _models_built
    _models_built += 1  # the first model is the Trainer's own check before any trial
    model = tiny_bert(num_labels, id2label, label2id, tokenizer, hidden_dropout_prob=hidden_dropout_prob)
    if _models_built == 2:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
    return model


def not_a_task(**data: Any) -> dict:
    """A data._target_ that returns a dict instead of an hpsearch.Task."""
    return {"train": [], "eval": []}


def logged_pretrained_classifier(
    name_or_path: str, num_labels: int, id2label: dict, label2id: dict, load_log: str
) -> Any:
    """``pretrained_classifier``, appending this process's pid to ``load_log`` each time it reads the weights."""
    from hpsearch.model import pretrained_classifier

    with open(load_log, "a") as log:
        log.write(f"{os.getpid()}\n")
    return pretrained_classifier(name_or_path, num_labels, id2label, label2id)


class LossLoggingTrainer(Trainer):
    """A user's Trainer subclass with its own ``compute_loss``: appends this process's pid to the file in
    ``HPSEARCH_TEST_LOSS_LOG`` at every training step, so a test sees that its method, not Trainer's, ran."""

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any) -> Any:
        with open(os.environ["HPSEARCH_TEST_LOSS_LOG"], "a") as log:
            log.write(f"{os.getpid()}\n")
        return super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)


def api_tiny_bert(trial: dict[str, Any] | None, tokenizer: Any, num_labels: int, id2label: dict, label2id: dict) -> Any:
    """A script's module-level ``model_init(trial)`` (bound with ``functools.partial``), as
    ``hpsearch.search(workers=N)`` needs one: a worker process imports it."""
    dropout = (trial or {}).get("hidden_dropout_prob", 0.1)
    return tiny_bert(num_labels, id2label, label2id, tokenizer, hidden_dropout_prob=dropout)


def packed_oom_tiny_bert(
    num_labels: int, id2label: dict, label2id: dict, tokenizer: Any, hidden_dropout_prob: float
) -> Any:
    """Each worker's first trial runs out of memory, as a trial too large for its share of a packed GPU would;
    the probes of workers=auto (a kept probe before it became a worker, too) and a retry fit."""
    global _models_built_as_worker
    model = tiny_bert(num_labels, id2label, label2id, tokenizer, hidden_dropout_prob=hidden_dropout_prob)
    if "HPSEARCH_WORKER" in os.environ:
        _models_built_as_worker += 1  # the first model is the Trainer's own check before any trial
        if _models_built_as_worker == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
    return model


def counting_probe(config: dict[str, Any], environment: dict[str, str], connection: Any) -> None:
    """A probe process of ``hpsearch.probe.ProbePool`` without a trainer: it notes its start, measures its torch
    thread count as its throughput, and once kept notes the worker environment it was handed."""
    from hpsearch.probe import ProbeResult, serve
    from hpsearch.workers import enter_environment

    enter_environment(environment)
    folder = Path(config["folder"])
    with (folder / "starts").open("a") as starts:
        starts.write(f"{os.getpid()}\n")
    kept = serve(connection, lambda: ProbeResult(1, 1, None, float(torch.get_num_threads())))
    if kept is not None:
        worker_config, worker_environment = kept
        (folder / f"worker-{os.getpid()}").write_text(
            f"{worker_config['folder']} {worker_environment['HPSEARCH_WORKER']}"
        )


def dying_probe(config: dict[str, Any], environment: dict[str, str], connection: Any) -> None:
    """A probe process that dies before it is ready, as one killed by the kernel would."""
    os._exit(9)
