"""``TrainingArguments`` from the ``training`` config group, with every key and value type checked.

transformers accepts ``learning_rate="abc"`` and fails, if at all, deep inside a trial; here a value of the
wrong type for its field is a config error that names the key.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from transformers import TrainingArguments

from hpsearch.errors import ConfigError, first_line

TRAINING_ARGUMENT_FIELDS = frozenset(field.name for field in dataclasses.fields(TrainingArguments))
log = logging.getLogger(__name__)


@cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainingArguments)


def _admits(annotation: Any, value: Any) -> bool:
    """Whether ``value`` fits a field annotation; an annotation this cannot judge admits anything."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_admits(member, value) for member in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return isinstance(value, annotation)
    if origin in (list, tuple) or annotation in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or annotation is dict:
        return isinstance(value, Mapping)
    return True


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def check_training(training: Mapping[str, Any], space_names: list[str]) -> None:
    """Every key a ``TrainingArguments`` field, every value of its type; say which ones the space overrides."""
    types_by_name = _field_types()
    for key, value in training.items():
        if key not in TRAINING_ARGUMENT_FIELDS:
            raise ConfigError(f"training.{key}: not a TrainingArguments field; fix or remove it")
        if not _admits(types_by_name[key], value):
            raise ConfigError(
                f"training.{key}: {value!r} is not a valid {_type_name(types_by_name[key])}; fix the value"
            )
    overridden = [name for name in space_names if name in training]
    if overridden:
        log.info(
            "the search space sets %s, so each trial overrides %s",
            ", ".join(overridden), ", ".join(f"training.{name}={training[name]!r}" for name in overridden),
        )


def training_arguments(training: Mapping[str, Any], run_dir: Path, seed: int) -> TrainingArguments:
    options = {"output_dir": str(run_dir / "trials"), "seed": seed, **training}
    try:
        return TrainingArguments(**options)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"training: invalid TrainingArguments ({first_line(error)})") from None
