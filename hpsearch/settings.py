"""Typed settings read from a config group: every key known, every value of its declared type.

``TrainingArguments`` fields (``hpsearch.training``) and each backend's settings (``backends/*``) are checked
the same way, so that a misspelt key or a value of the wrong type is a config error naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from typing_extensions import Self

from hpsearch.errors import ConfigError

SettingsT = TypeVar("SettingsT", bound="Settings")


def admits(annotation: Any, value: Any) -> bool:
    """Whether ``value`` fits a field annotation; an annotation this cannot judge admits anything."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(admits(member, value) for member in typing.get_args(annotation))
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


def type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def at_least(minimum: float) -> Any:
    """A settings field whose value, when set, must be a number of at least ``minimum``."""
    return dataclasses.field(metadata={"minimum": minimum})


def _check_minimum(key: str, annotation: Any, value: Any, minimum: float) -> None:
    if value is None and admits(annotation, None):
        return
    if admits(annotation, value) and value >= minimum:
        return
    kind = "an integer" if not admits(annotation, 0.5) else "a number"
    raise ConfigError(f"{key}: must be {kind} >= {minimum} (got {value!r})")


def unknown_key(key: str, known: list[str]) -> str:
    """``did you mean 'x'?`` for a misspelt key, or the list of known keys."""
    close = difflib.get_close_matches(key, known, n=1)
    return f"did you mean {close[0]!r}?" if close else f"known keys: {sorted(known)}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """A config group as a frozen dataclass. Its YAML (``conf/<group>/<name>.yaml``) holds the defaults, so
    the fields have none: the YAML fills every one of them."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], prefix: str, ignore: tuple[str, ...] = ()) -> Self:
        hints = typing.get_type_hints(cls)
        fields = {field.name: field for field in dataclasses.fields(cls)}
        names = list(fields)
        for key, value in config.items():
            if key in ignore:
                continue
            if key not in hints:
                raise ConfigError(f"{prefix}.{key}: not a setting of {prefix}; {unknown_key(key, names)}")
            if "minimum" in fields[key].metadata:
                _check_minimum(f"{prefix}.{key}", hints[key], value, fields[key].metadata["minimum"])
            elif not admits(hints[key], value):
                raise ConfigError(f"{prefix}.{key}: {value!r} is not a valid {type_name(hints[key])}; fix the value")
        missing = [name for name in names if name not in config]
        if missing:
            raise ConfigError(f"{prefix}: missing {missing}; set them, or start from conf/{prefix}/*.yaml")
        return cls(**{name: config[name] for name in names})
