"""Search-space validation, grids and casting of backend values back to the declared types."""

from __future__ import annotations

import pytest

from hpsearch.errors import ConfigError, SearchSpaceError
from hpsearch.space import CategoricalParam, FixedParam, FloatParam, IntParam, SearchSpace, parse_param

INVALID = [
    ({"type": "float", "low": 1.0, "high": 0.5}, "low must be <= high (low=1.0, high=0.5)"),
    ({"type": "float", "low": 0.0, "high": 0.1, "log": True}, "log scale needs low > 0 (low=0.0, high=0.1)"),
    ({"type": "float", "low": -1.0, "high": 0.1, "log": True}, "log scale needs low > 0 (low=-1.0"),
    ({"type": "float", "low": 0.1, "high": 1.0, "log": True, "step": 0.1}, "step and log cannot be combined"),
    ({"type": "float", "low": 0.0, "high": 1.0, "step": 0.3}, "high - low must be a multiple of step"),
    ({"type": "float", "low": 0.0, "high": 1.0, "step": 0.0}, "step must be a number > 0"),
    ({"type": "float", "low": "a", "high": 1.0}, "low and high must be numbers"),
    ({"type": "int", "low": 5, "high": 1}, "low must be <= high (low=5, high=1)"),
    ({"type": "int", "low": 0, "high": 8, "log": True}, "log scale needs low >= 1 (low=0, high=8)"),
    ({"type": "int", "low": 1, "high": 2.5}, "high must be an integer"),
    ({"type": "int", "low": 1, "high": 10, "step": 2}, "high - low must be a multiple of step"),
    ({"type": "int", "low": 1, "high": 9, "step": 2, "log": True}, "step and log cannot be combined"),
    ({"type": "int", "low": 1, "high": 9, "step": 0}, "step must be >= 1"),
    ({"type": "categorical", "choices": []}, "choices must not be empty"),
    ({"type": "categorical", "choices": "abc"}, "choices must be a list"),
    ({"type": "categorical", "choices": [1, 1]}, "choices must be distinct"),
    ({"type": "categorical", "choices": [1, "1"]}, "choices must differ as strings too"),
    ({"type": "categorical", "choices": [[1, 2]]}, "choices must be None, bool, int, float or str"),
    ({"type": "uniform", "low": 0, "high": 1}, "type must be one of"),
    ({"low": 0, "high": 1}, "type must be one of"),
    ({"type": "float", "low": 0.0}, "type float needs ['high']"),
    ({"type": "float", "low": 0.0, "high": 1.0, "hgh": 2}, "unknown key(s) ['hgh']"),
    ({"type": "float", "low": 0.1, "high": 1.0, "log": "yes"}, "log must be true or false"),
    ("0.1", "expected a mapping with a 'type' key"),
]


@pytest.mark.parametrize(("spec", "message"), INVALID)
def test_invalid_spec_names_parameter_and_values(spec: object, message: str) -> None:
    with pytest.raises(SearchSpaceError) as raised:
        parse_param("lr", spec)
    assert str(raised.value).startswith("space.lr: ")
    assert message in str(raised.value)
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, ConfigError)


def test_empty_space_is_an_error() -> None:
    with pytest.raises(SearchSpaceError, match="search space is empty"):
        SearchSpace.from_config({})


def test_grid_enumerates_closed_ranges_and_rejects_continuous() -> None:
    space = SearchSpace.from_config(
        {
            "n": {"type": "int", "low": 1, "high": 5, "step": 2},
            "d": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
            "c": {"type": "categorical", "choices": ["a", "b"]},
        }
    )
    points = space.grid("backend.sampler=grid")
    assert points["n"] == [1, 3, 5] and points["c"] == ["a", "b"]
    assert points["d"] == pytest.approx([0.0, 0.1, 0.2])
    with pytest.raises(ConfigError, match=r"backend\.sampler=grid: space\.lr has no finite grid"):
        SearchSpace.from_config({"lr": {"type": "float", "low": 0.1, "high": 1.0}}).grid("backend.sampler=grid")


@pytest.mark.parametrize(
    ("param", "raw", "expected"),
    [
        (CategoricalParam("bs", (16, 32)), "32", 32),
        (CategoricalParam("sched", ("linear", "cosine")), "cosine", "cosine"),
        (CategoricalParam("flag", (True, False)), "False", False),
        (CategoricalParam("opt", (None, "adamw")), "None", None),
        (CategoricalParam("ratio", (0.0, 0.1)), "0.1", 0.1),
        (IntParam("n", 1, 4), 3.0, 3),
        (FloatParam("lr", 0.1, 1.0), "0.5", 0.5),
        (FixedParam("seed", 7), None, 7),
    ],
)
def test_cast_recovers_declared_types_from_backend_strings(param: object, raw: object, expected: object) -> None:
    value = param.cast(raw)  # type: ignore[attr-defined]
    assert value == expected and type(value) is type(expected)


def test_cast_rejects_values_outside_choices() -> None:
    with pytest.raises(SearchSpaceError, match="not one of choices"):
        CategoricalParam("bs", (16, 32)).cast("64")
    with pytest.raises(SearchSpaceError, match="non-integer"):
        IntParam("n", 1, 4).cast(2.5)


def test_admits_checks_bounds_step_and_type() -> None:
    stepped = FloatParam("d", 0.0, 0.3, step=0.1)
    assert stepped.admits(0.3) and stepped.admits(0.1) and not stepped.admits(0.15) and not stepped.admits(0.4)
    assert not IntParam("n", 1, 3).admits(3.0) and IntParam("n", 1, 3).admits(3)
    assert CategoricalParam("c", (1, 2)).admits(2) and not CategoricalParam("c", (1, 2)).admits("2")
