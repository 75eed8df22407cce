"""Example ``data._target_`` tasks: how any Trainer task runs through the same search (see ``hpsearch.task``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hpsearch.task import Task


@dataclass(frozen=True)
class Perplexity:
    """``compute_metrics`` for causal language modelling: the perplexity of the eval tokens, each predicted
    from the ones before it (labels of -100, padding, are left out)."""

    def __call__(self, eval_prediction: Any) -> dict[str, float]:
        logits, labels = eval_prediction.predictions, eval_prediction.label_ids
        logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits, dtype=np.float64)[:, :-1]
        labels = np.asarray(labels)[:, 1:]
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        mask = labels != -100
        picked = np.take_along_axis(log_probs, np.where(mask, labels, 0)[..., None], axis=-1)[..., 0]
        return {"perplexity": float(np.exp(-picked[mask].mean()))}


def causal_lm(
    tokenizer: Any, seed: int, source: str, text_column: str, train_size: int, eval_size: int, max_length: int
) -> Task:
    """Fine-tune a causal language model on a csv file's text column: each text one sequence of at most
    ``max_length`` tokens, padded per batch; the objective is ``eval_loss``, and ``eval_perplexity`` is reported."""
    from datasets import load_dataset
    from transformers import DataCollatorForLanguageModeling

    from hpsearch.locate import resolve_location

    texts = load_dataset("csv", data_files=resolve_location(source, "data.source"), split="train").select_columns(
        [text_column]
    )
    split = texts.shuffle(seed=seed).train_test_split(train_size=train_size, test_size=eval_size, seed=seed)

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, Any]:
        return dict(tokenizer([str(text) for text in batch[text_column]], truncation=True, max_length=max_length))

    train, evaluation = (
        split[name].map(tokenize, batched=True, remove_columns=[text_column]) for name in ("train", "test")
    )
    return Task(
        train=train,
        eval=evaluation,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        compute_metrics=Perplexity(),
        metric_names=("perplexity",),
    )
