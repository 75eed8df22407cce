"""``TrainingArguments`` from the ``training`` config group, with every key and value type checked.

transformers accepts ``learning_rate="abc"`` and fails, if at all, deep inside a trial; here a value of the
wrong type for its field is a config error that names the key.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from transformers import TrainingArguments

from hpsearch.errors import ConfigError, first_line
from hpsearch.settings import admits, type_name

TRAINING_ARGUMENT_FIELDS = frozenset(field.name for field in dataclasses.fields(TrainingArguments))
log = logging.getLogger(__name__)


@cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainingArguments)


def check_training(training: Mapping[str, Any], space_names: list[str]) -> None:
    """Every key a ``TrainingArguments`` field, every value of its type; say which ones the space overrides."""
    types_by_name = _field_types()
    for key, value in training.items():
        if key not in TRAINING_ARGUMENT_FIELDS:
            raise ConfigError(f"training.{key}: not a TrainingArguments field; fix or remove it")
        if not admits(types_by_name[key], value):
            raise ConfigError(
                f"training.{key}: {value!r} is not a valid {type_name(types_by_name[key])}; fix the value"
            )
    overridden = [name for name in space_names if name in training]
    if overridden:
        log.info(
            "the search space sets %s, so each trial overrides %s",
            ", ".join(overridden),
            ", ".join(f"training.{name}={training[name]!r}" for name in overridden),
        )


def training_arguments(training: Mapping[str, Any], run_dir: Path, seed: int) -> TrainingArguments:
    options = {"output_dir": str(run_dir / "trials"), "seed": seed, **training}
    try:
        return TrainingArguments(**options)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"training: invalid TrainingArguments ({first_line(error)})") from None
