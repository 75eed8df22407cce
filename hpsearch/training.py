"""``TrainingArguments`` from the ``training`` config group, with every key and value type checked.

transformers accepts ``learning_rate="abc"`` and fails, if at all, deep inside a trial; here a value of the
wrong type for its field is a config error that names the key.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import TrainingArguments

from hpsearch.errors import ConfigError, first_line
from hpsearch.settings import admits, type_name
from hpsearch.space import SearchSpace

log = logging.getLogger(__name__)


def argument_fields(arguments: type[TrainingArguments] = TrainingArguments) -> frozenset[str]:
    """The fields of a trainer's arguments class (``TrainingArguments``, or e.g. TRL's ``SFTConfig``)."""
    return frozenset(field.name for field in dataclasses.fields(arguments))


def arguments_class(trainer_class: Any) -> type[TrainingArguments]:
    """The arguments class a Trainer class takes: the most specific ``TrainingArguments`` subclass its ``args``
    annotation names (``SFTConfig`` for TRL's ``SFTTrainer``), else ``TrainingArguments``."""
    initializer = trainer_class.__init__
    annotation = inspect.signature(initializer).parameters.get("args")
    hint = annotation.annotation if annotation is not None else None
    if isinstance(hint, str):  # postponed annotations
        try:
            hint = typing.get_type_hints(initializer).get("args")
        except (NameError, TypeError):
            hint = None
    members = typing.get_args(hint) or (hint,)
    named = [member for member in members if isinstance(member, type) and issubclass(member, TrainingArguments)]
    return max(named, key=lambda member: len(member.__mro__), default=TrainingArguments)


def _field_types(arguments: type[TrainingArguments] = TrainingArguments) -> dict[str, Any]:
    return typing.get_type_hints(arguments)


# Fields whose values beyond these bounds can never train: (bound, whether the bound itself is allowed).
LOWEST = {
    "per_device_train_batch_size": (1, True),
    "per_device_eval_batch_size": (1, True),
    "gradient_accumulation_steps": (1, True),
    "num_train_epochs": (0, False),
    "learning_rate": (0, True),
}


def _trainable(name: str, value: Any) -> bool:
    bound, inclusive = LOWEST[name]
    return not isinstance(value, (int, float)) or (value >= bound if inclusive else value > bound)


def _bound_text(name: str) -> str:
    bound, inclusive = LOWEST[name]
    return f"{'>=' if inclusive else '>'} {bound}"


def check_training(
    training: Mapping[str, Any], space: SearchSpace, arguments: type[TrainingArguments] = TrainingArguments
) -> None:
    """Every key a field of the arguments class, every value of its type and one that can train, also where
    the space sets it (its every value, even when the space overrides ``training``); say which ones it
    overrides."""
    types_by_name = _field_types(arguments)
    for key, value in training.items():
        if key not in argument_fields(arguments):
            raise ConfigError(f"training.{key}: not a {arguments.__name__} field; fix or remove it")
        if not admits(types_by_name[key], value):
            raise ConfigError(
                f"training.{key}: {value!r} is not a valid {type_name(types_by_name[key])}; fix the value"
            )
        if key in LOWEST and not _trainable(key, value):
            raise ConfigError(f"training.{key}: must be {_bound_text(key)} (got {value!r}); nothing can train with it")
    for param in space:
        if param.name in LOWEST:
            for value in param.extremes():
                if not _trainable(param.name, value):
                    raise ConfigError(
                        f"space.{param.name}: {value!r} can never train ({param.name} must be {_bound_text(param.name)}); "
                        "change the space"
                    )
    space_names = space.names
    overridden = [name for name in space_names if name in training]
    if overridden:
        log.info(
            "the search space sets %s, so each trial overrides %s",
            ", ".join(overridden),
            ", ".join(f"training.{name}={training[name]!r}" for name in overridden),
        )


def training_arguments(
    training: Mapping[str, Any], run_dir: Path, seed: int, arguments: type[TrainingArguments] = TrainingArguments
) -> TrainingArguments:
    options = {"output_dir": str(run_dir / "trials"), "seed": seed, **training}
    try:
        return arguments(**options)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"training: invalid {arguments.__name__} ({first_line(error)})") from None
