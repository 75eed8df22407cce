"""Metrics measured on the trained model itself, not on its predictions: for accuracy-vs-cost searches.

One table, ``name -> function(model, batch)``; a new metric is one function and one table entry.
``batch`` is one prepared eval batch without its labels.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

LATENCY_REPEATS = 5


def num_parameters(model: Any, batch: Mapping[str, Any]) -> float:
    return float(sum(parameter.numel() for parameter in model.parameters()))


def trainable_parameters(model: Any, batch: Mapping[str, Any]) -> float:
    """The parameters training updates: a LoRA adapter's, the whole model's otherwise."""
    return float(sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad))


def latency_ms(model: Any, batch: Mapping[str, Any]) -> float:
    """Median forward time of one eval batch, after one warm-up pass."""
    import torch

    model.eval()
    timings = []
    with torch.inference_mode():
        for _ in range(LATENCY_REPEATS + 1):
            started = time.perf_counter()
            model(**batch)
            timings.append((time.perf_counter() - started) * 1000)
    return float(statistics.median(timings[1:]))


MODEL_METRICS: dict[str, Callable[[Any, Mapping[str, Any]], float]] = {
    "model_num_parameters": num_parameters,
    "model_trainable_parameters": trainable_parameters,
    "model_latency_ms": latency_ms,
}
