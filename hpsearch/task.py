"""``Task``: what a search trains and evaluates on, whatever the task.

hpsearch builds one itself for text classification and regression (``hpsearch.data``). Any other task
(token classification, question answering, causal or seq2seq language modelling) comes from
``data._target_``: a callable that returns a ``Task``. hpsearch passes it, by keyword and only where its
signature asks for them, ``tokenizer`` (``model.tokenizer``) and ``seed``, plus the other keys of ``data``:

.. code-block:: yaml

    data:
      _target_: my_project.tasks.ner          # def ner(tokenizer, seed, source, max_length) -> Task
      source: data/conll.jsonl
      max_length: 128
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpsearch.errors import ConfigError, HPSearchError, first_line, qualified_name


@dataclass(frozen=True)
class Task:
    """The pieces of one task, built once and reused by every trial.

    - ``train``, ``eval``: tokenised datasets (``datasets.Dataset`` or any sized torch dataset) holding the
      model's inputs and its labels;
    - ``data_collator``: turns a list of rows into a batch (None: transformers' default collator);
    - ``compute_metrics``: ``EvalPrediction -> {name: value}``, names without the ``eval_`` prefix (None: the
      loss only);
    - ``metric_names``: the names ``compute_metrics`` returns, so that objectives are checked before training;
    - ``model_context``: what ``model_init`` may ask for by argument name, e.g. ``num_labels``, ``id2label``.
    """

    train: Any
    eval: Any
    data_collator: Callable[[list[Any]], Any] | None = None
    compute_metrics: Callable[[Any], dict[str, float]] | None = None
    metric_names: Sequence[str] = ()
    model_context: Mapping[str, Any] = field(default_factory=dict)


def task_from_target(target: Callable[..., Any], tokenizer: Any, seed: int) -> Task:
    """Call ``data._target_`` (a ``functools.partial`` carrying the other ``data`` keys) and check its result."""
    function = target.func if isinstance(target, functools.partial) else target
    name = qualified_name(function)
    parameters = inspect.signature(function).parameters
    injected = {key: value for key, value in {"tokenizer": tokenizer, "seed": seed}.items() if key in parameters}
    try:
        task = target(**injected)
    except HPSearchError:
        raise
    except Exception as error:  # noqa: BLE001 - a user's function: any failure is one line
        raise ConfigError(f"data._target_: {name} failed ({type(error).__name__}: {first_line(error)})") from None
    if not isinstance(task, Task):
        raise ConfigError(
            f"data._target_: {name} returned {type(task).__name__}, not an hpsearch.Task; return "
            "Task(train=..., eval=..., data_collator=..., compute_metrics=..., metric_names=[...], model_context={...})"
        )
    for key in ("train", "eval"):
        dataset = getattr(task, key)
        if not hasattr(dataset, "__len__") or len(dataset) == 0:
            raise ConfigError(f"data._target_: {name} returned a Task whose {key} dataset is empty or has no length")
    for key in ("data_collator", "compute_metrics"):
        if getattr(task, key) is not None and not callable(getattr(task, key)):
            raise ConfigError(f"data._target_: {name} returned a Task whose {key} is not callable")
    return task
