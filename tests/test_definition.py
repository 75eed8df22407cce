"""What defines a study, compared key by key (``hpsearch.definition``)."""

from __future__ import annotations

from typing import Any

import pytest

from hpsearch.definition import check_same_study, first_difference
from hpsearch.errors import ConfigError

DIFFERENCES: list[tuple[dict[str, Any], dict[str, Any], tuple[str, Any] | None]] = [  # (key, this run's value)
    ({"data": {"train_size": 256}}, {"data": {"train_size": 256}}, None),
    ({"data": {"train_size": 256}}, {"data": {"train_size": 200}}, ("data.train_size", 200)),
    ({"space": {"lr": {"low": 1, "high": 2}}}, {"space": {"lr": {"low": 1, "high": 3}}}, ("space.lr.high", 3)),
    ({"model": {"a": 1}, "data": {"b": 2}}, {"model": {"a": 1}, "data": {"b": 3}}, ("data.b", 3)),
    ({"space": {"lr": {}}}, {"space": {"lr": {}, "wd": {"low": 0}}}, ("space.wd.low", 0)),  # a new parameter
]


@pytest.mark.parametrize(("stored", "current", "expected"), DIFFERENCES)
def test_the_first_difference_is_named_by_its_dotted_key(
    stored: dict[str, Any], current: dict[str, Any], expected: tuple[str, Any] | None
) -> None:
    found = first_difference(stored, current)
    assert (found[0], found[2]) == expected if found is not None else expected is None


def test_a_removed_parameter_is_a_difference_too() -> None:
    with pytest.raises(ConfigError, match=r"^space\.wd\.low: study_name=s was searched with 0, this run has nothing"):
        check_same_study({"space": {"lr": {"low": 1}, "wd": {"low": 0}}}, {"space": {"lr": {"low": 1}}}, "s")
