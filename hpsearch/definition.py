"""What defines a study (its space, objectives, model, adapter and data): kept with the study when it is created, and
compared on every rerun, so that a changed config never reports an earlier search's results as its own."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from hpsearch.errors import ConfigError

DEFINING_KEYS = ("space", "constraints", "objective", "model", "peft", "data")
_MISSING = object()


def first_difference(stored: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    """(dotted key, stored value, current value) of the first key where the two differ, or None."""
    stored_items, current_items = dict(_flat(stored)), dict(_flat(current))
    for key in [*current_items, *(key for key in stored_items if key not in current_items)]:
        old, new = stored_items.get(key, _MISSING), current_items.get(key, _MISSING)
        if old != new:
            return key, old, new
    return None


def check_same_study(stored: Mapping[str, Any], current: Mapping[str, Any], study_name: str) -> None:
    difference = first_difference(stored, current)
    if difference is None:
        return
    key, old, new = difference
    raise ConfigError(
        f"{key}: study_name={study_name} was searched with {_text(old)}, this run has {_text(new)}; "
        f"keep the study's {key}, or start a new study with study_name={study_name}-2"
    )


def _flat(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys and their values; an empty mapping (``peft=none``) sets nothing, as in a study kept before
    the group existed."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _flat(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def _text(value: Any) -> str:
    return "nothing" if value is _MISSING else repr(value)
